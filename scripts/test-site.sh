#!/usr/bin/env bash
# What the site tests need beyond Slurm, run as root after scripts/slurm-up.sh:
#  - local users: two admins of the shared cache, members of its group, and a researcher who is
#    not; each with a Slurm association, as on a real site (tests/test_shared_group.py);
#  - Environment Modules (Debian's environment-modules), for the install guide's module file;
#  - a wheelhouse (.cache/wheelhouse: the project's dependencies and its build backend as wheels),
#    so the install guide's `pip install` runs in the tests without a network
#    (tests/test_site_install.py). Rebuilt when pyproject.toml is newer.
#  - docker-registry, umoci, skopeo and htpasswd (apache2-utils), for a real OCI registry on
#    127.0.0.1 and images pushed to it (scripts/registry-up.sh, tests/support/registry.py); the
#    package's own registry service (port 5000) is not started.
#
#   group bfcache        the shared cache's group (the site file's shared_group)
#   user  bfadmin1       admin (supplementary group bfcache)
#   user  bfadmin2       admin (supplementary group bfcache)
#   user  bfresearcher   researcher (no group of the cache)
#   user  bfcluster      a researcher's account on "the cluster" their laptop reaches over SSH
#   user  bflaptop       that researcher on the laptop (no Slurm association: the laptop has none)
#  - a real OpenSSH sshd on 127.0.0.1 between the two (scripts/sshd-up.sh, tests/test_remote.py).
#
# Idempotent: existing users, groups, associations and wheels are kept as they are. Undo with
# `userdel -r NAME; groupdel bfcache; sacctmgr -i delete user NAME`.
set -euo pipefail

ACCOUNT=${BFJOBS_SLURM_ACCOUNT:-bfjobs}
CLUSTER=$(printf '%s' "${BFJOBS_SLURM_CLUSTER:-bfjobs}" | tr '[:upper:]' '[:lower:]')
export SLURM_CONF=${BFJOBS_SLURM_CONF_DIR:-/etc/slurm}/slurm.conf
GROUP=bfcache
ADMINS=(bfadmin1 bfadmin2)
RESEARCHERS=(bfresearcher bfcluster)
LAPTOP_USERS=(bflaptop)

say() { printf '[test-site] %s\n' "$*"; }
die() { printf '[test-site] ERROR: %s\n' "$*" >&2; exit 1; }
REPO=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
WHEELHOUSE=$REPO/.cache/wheelhouse

((EUID == 0)) || die "run as root (it adds local users and Slurm associations)"
command -v sacctmgr >/dev/null || die "sacctmgr not found: run scripts/slurm-up.sh first"

if ! getent group "$GROUP" >/dev/null; then
    say "adding group $GROUP"
    groupadd "$GROUP"
fi
for user in "${ADMINS[@]}" "${RESEARCHERS[@]}" "${LAPTOP_USERS[@]}"; do
    if ! getent passwd "$user" >/dev/null; then
        say "adding user $user"
        useradd --create-home --shell /bin/sh "$user"
    fi
done
for user in "${ADMINS[@]}"; do
    id -nG "$user" | tr ' ' '\n' | grep -qx "$GROUP" || usermod -a -G "$GROUP" "$user"
done
for user in "${RESEARCHERS[@]}"; do
    ! id -nG "$user" | tr ' ' '\n' | grep -qx "$GROUP" || die "$user is in $GROUP: remove it (gpasswd -d $user $GROUP)"
done

assoc=$(sacctmgr -n -P show assoc where cluster="$CLUSTER" format=account,user) ||
    die "sacctmgr cannot read associations: is Slurm up (scripts/slurm-up.sh)?"
grep -qx "$ACCOUNT|" <<<"$assoc" || die "account $ACCOUNT does not exist on cluster $CLUSTER: run scripts/slurm-up.sh"
for user in "${ADMINS[@]}" "${RESEARCHERS[@]}"; do
    if ! grep -qx "$ACCOUNT|$user" <<<"$assoc"; then
        say "adding $user to Slurm account $ACCOUNT"
        sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null ||
            die "sacctmgr could not add user $user"
    fi
done
say "users ready: admins ${ADMINS[*]} (group $GROUP), researcher ${RESEARCHERS[*]}"

if [[ ! -r /usr/share/modules/init/bash ]]; then
    say "installing environment-modules"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 environment-modules >/dev/null ||
        die "apt-get could not install environment-modules"
fi

if ! command -v strace >/dev/null; then  # the benchmark counts cache ls' stat calls with it (tests/test_benchmarks.py)
    say "installing strace"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 strace >/dev/null ||
        die "apt-get could not install strace"
fi

# A real OCI registry, images built and pushed to it, bcrypt htpasswd files for its private variant
# (scripts/registry-up.sh, tests/support/registry.py, tests/test_registry_infra.py).
registry_pkgs=()
command -v docker-registry >/dev/null || registry_pkgs+=(docker-registry)
command -v umoci >/dev/null || registry_pkgs+=(umoci)
command -v skopeo >/dev/null || registry_pkgs+=(skopeo)
command -v htpasswd >/dev/null || registry_pkgs+=(apache2-utils)
if ((${#registry_pkgs[@]})); then
    say "installing ${registry_pkgs[*]}"
    # policy-rc.d: docker-registry's package must not start the system's registry on port 5000
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${registry_pkgs[@]}" >/dev/null ||
        die "apt-get could not install ${registry_pkgs[*]}"
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi
# and if the system's registry runs anyway (installed earlier without policy-rc.d), stop it
if pid=$(cat /var/run/docker-registry.pid 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] &&
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q docker-registry; then
    say "stopping the system's docker-registry (pid $pid, port 5000): the tests start their own"
    /etc/init.d/docker-registry stop >/dev/null 2>&1 || kill "$pid"
fi

if [[ ! -e $WHEELHOUSE/.complete || $REPO/pyproject.toml -nt $WHEELHOUSE/.complete ]]; then
    say "building the wheelhouse $WHEELHOUSE"
    rm -rf "$WHEELHOUSE"
    mkdir -p "$WHEELHOUSE"
    log=$REPO/.cache/wheelhouse.log
    { python3 -m pip download -q -d "$WHEELHOUSE" hatchling && python3 -m pip wheel -q -w "$WHEELHOUSE" "$REPO"; } \
        >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "pip could not build the wheelhouse (log: $log)"; }
    rm -f "$WHEELHOUSE"/blackfish_jobs-*.whl  # the tests install the source as it is then
    touch "$WHEELHOUSE/.complete"
fi
say "ready: Environment Modules, wheelhouse $WHEELHOUSE"
bash "$REPO/scripts/sshd-up.sh"
