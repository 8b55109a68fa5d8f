#!/usr/bin/env bash
# A real OpenSSH sshd (Debian's openssh-server) on 127.0.0.1 for the remote-profile tests
# (tests/test_remote.py): the cluster a researcher's laptop reaches, as on a real site. Run as
# root after scripts/test-site.sh has added the users (it calls this script at its end).
#
#   sshd          127.0.0.1:$BFJOBS_SSHD_PORT (default 2222) only, its own host key and config
#                 in $BFJOBS_SSHD_DIR (default /etc/bfjobs-test-sshd), key-only logins, only
#                 the cluster user; pid file $BFJOBS_SSHD_DIR/sshd.pid, log sshd.log beside it
#   bfcluster     the cluster user: the laptop user's key in ~/.ssh/authorized_keys
#   bflaptop      the laptop user: a key, ~/.ssh/config with the alias `bfcluster` (HostName
#                 127.0.0.1, the port, User bfcluster), ~/.ssh/known_hosts with the host key
#
# Idempotent: a running sshd started from this config is left alone (a check, under a second);
# another process on the port is refused in one line, never stopped. Stop it with
# `kill "$(cat /etc/bfjobs-test-sshd/sshd.pid)"`.
set -euo pipefail

PORT=${BFJOBS_SSHD_PORT:-2222}
DIR=${BFJOBS_SSHD_DIR:-/etc/bfjobs-test-sshd}
CLUSTER_USER=bfcluster
LAPTOP_USER=bflaptop
ALIAS=bfcluster

say() { printf '[sshd-up] %s\n' "$*"; }
die() { printf '[sshd-up] ERROR: %s\n' "$*" >&2; exit 1; }

((EUID == 0)) || die "run as root (it starts sshd and writes the test users' ~/.ssh)"
[[ $PORT =~ ^[0-9]+$ ]] || die "BFJOBS_SSHD_PORT must be a port number, not '$PORT'"
for user in "$CLUSTER_USER" "$LAPTOP_USER"; do
    getent passwd "$user" >/dev/null || die "user $user does not exist: run scripts/test-site.sh"
done

if [[ ! -x /usr/sbin/sshd ]]; then
    say "installing openssh-server"
    # policy-rc.d: the package must not start the system's own sshd on port 22
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 openssh-server >/dev/null || die "apt-get could not install openssh-server"
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
fi

install -d -m 755 "$DIR" /run/sshd
[[ -e $DIR/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C bfjobs-test-host -f "$DIR/host_ed25519"
# another key, which no sshd here has: what a laptop that knew a different host key would hold
[[ -e $DIR/other_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -C bfjobs-test-other -f "$DIR/other_ed25519"
cat >"$DIR/sshd_config.new" <<CONF
# written by scripts/sshd-up.sh
ListenAddress 127.0.0.1:$PORT
HostKey $DIR/host_ed25519
PidFile $DIR/sshd.pid
AllowUsers $CLUSTER_USER
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin no
StrictModes yes
AuthorizedKeysFile .ssh/authorized_keys
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxSessions 10
CONF
mv "$DIR/sshd_config.new" "$DIR/sshd_config"

user_home() { getent passwd "$1" | cut -d: -f6; }
usermod -p '*' "$CLUSTER_USER"  # no password, but not locked: sshd without PAM refuses locked accounts

laptop_home=$(user_home "$LAPTOP_USER")
install -d -m 700 -o "$LAPTOP_USER" -g "$LAPTOP_USER" "$laptop_home/.ssh"
for key in id_ed25519 id_other; do
    if [[ ! -e $laptop_home/.ssh/$key ]]; then
        runuser -u "$LAPTOP_USER" -- ssh-keygen -q -t ed25519 -N '' -C "$LAPTOP_USER@laptop" -f "$laptop_home/.ssh/$key"
    fi
done
cat >"$laptop_home/.ssh/config" <<CONF
# written by scripts/sshd-up.sh: the cluster, as a researcher's ~/.ssh/config names it
Host $ALIAS
    HostName 127.0.0.1
    Port $PORT
    User $CLUSTER_USER
    IdentityFile ~/.ssh/id_ed25519
    IdentitiesOnly yes

# the same cluster, as a laptop that recorded another host key sees it (a changed key)
Host $ALIAS-wrongkey
    HostName 127.0.0.1
    Port $PORT
    User $CLUSTER_USER
    IdentityFile ~/.ssh/id_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile ~/.ssh/known_hosts_wrongkey

# the same cluster with a key it does not know (not in bfcluster's authorized_keys)
Host $ALIAS-otherkey
    HostName 127.0.0.1
    Port $PORT
    User $CLUSTER_USER
    IdentityFile ~/.ssh/id_other
    IdentitiesOnly yes

# the same cluster while its login node is down (nothing listens on port 1)
Host $ALIAS-down
    HostName 127.0.0.1
    Port 1
    User $CLUSTER_USER
    IdentityFile ~/.ssh/id_ed25519
    IdentitiesOnly yes
CONF
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$DIR/host_ed25519.pub")" >"$laptop_home/.ssh/known_hosts"
printf '[127.0.0.1]:%s %s\n' "$PORT" "$(cut -d' ' -f1,2 "$DIR/other_ed25519.pub")" >"$laptop_home/.ssh/known_hosts_wrongkey"
chown "$LAPTOP_USER:$LAPTOP_USER" "$laptop_home/.ssh/config" "$laptop_home/.ssh/known_hosts" \
    "$laptop_home/.ssh/known_hosts_wrongkey"
chmod 600 "$laptop_home/.ssh/config"
chmod 644 "$laptop_home/.ssh/known_hosts"

cluster_home=$(user_home "$CLUSTER_USER")
install -d -m 700 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$cluster_home/.ssh"
install -m 600 -o "$CLUSTER_USER" -g "$CLUSTER_USER" "$laptop_home/.ssh/id_ed25519.pub" "$cluster_home/.ssh/authorized_keys"

/usr/sbin/sshd -t -f "$DIR/sshd_config" || die "sshd refuses its config $DIR/sshd_config"

ours() {  # is the pid file's process our sshd, started with our config?
    local pid
    pid=$(cat "$DIR/sshd.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f $DIR/sshd_config"
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

if ours; then
    kill -HUP "$(cat "$DIR/sshd.pid")"  # re-read the config (as written now)
    say "sshd already up on 127.0.0.1:$PORT (config re-read)"
else
    listening && die "something else listens on 127.0.0.1:$PORT: set BFJOBS_SSHD_PORT to a free port"
    /usr/sbin/sshd -f "$DIR/sshd_config" -E "$DIR/sshd.log"
    for _ in $(seq 1 50); do listening && break; sleep 0.1; done
    ours && listening || die "sshd did not come up on 127.0.0.1:$PORT (log: $DIR/sshd.log)"
    say "sshd up on 127.0.0.1:$PORT"
fi

out=$(runuser -u "$LAPTOP_USER" -- ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 \
    "$ALIAS" echo ok 2>&1) || die "$LAPTOP_USER cannot log in as $CLUSTER_USER over ssh: $out"
[[ $out == ok ]] || die "unexpected answer over ssh: $out"
say "ready: $LAPTOP_USER -> ssh $ALIAS -> $CLUSTER_USER@127.0.0.1:$PORT"
