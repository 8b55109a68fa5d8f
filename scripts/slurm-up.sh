#!/usr/bin/env bash
# Install (if needed) and start a real single-node Slurm cluster with accounting
# on this machine: munged -> MariaDB -> slurmdbd -> (sacctmgr) -> slurmctld -> slurmd.
#
# Made for Debian 12 (slurm-wlm 22.05), run as root, without systemd. All traffic
# goes over 127.0.0.1 (MariaDB binds only there; the Slurm daemons have no bind
# option and listen on all addresses). Idempotent: when the cluster is already up,
# a run only checks its health (under a second). Stop it with scripts/slurm-down.sh.
#
# It runs only its own daemons: before it writes or starts anything, and again after
# starting each, the Slurm daemon on each of its ports and in each of its pid files must be
# the one started with its config (and the controller must report its ClusterName and
# config). Another Slurm already running here is refused in one line, never stopped.
#
# Environment knobs:
#   BFJOBS_SLURM_CLUSTER  cluster name (default: bfjobs)
#   BFJOBS_SLURM_ACCOUNT  account that root and nobody are added to (default: bfjobs)
#   BFJOBS_SLURM_CPUS     CPUs declared for the node; more than the machine has, so
#                         many small jobs run at once (default: 64)
#   BFJOBS_SLURM_TIMEOUT  seconds to wait for each daemon to come up (default: 90)
#   BFJOBS_SLURM_CONF_DIR  slurm.conf and slurmdbd.conf (default: /etc/slurm)
#   BFJOBS_SLURM_RUN_DIR   pid files (default: /run/slurm)
#   BFJOBS_SLURM_LOG_DIR   daemon logs (default: /var/log/slurm)
#   BFJOBS_SLURM_STATE_DIR controller state (<dir>/slurmctld/<cluster>) and slurmd spool
#                          (<dir>/slurmd) (default: /var/lib/slurm)
#   BFJOBS_SLURM_KEEP_CONFIG=1  keep a config file that differs from what this script
#                          writes (say so, restart nothing): to check a shared cluster
#                          whose config someone else changed, without disturbing it
# munged and MariaDB are the machine's, shared by every instance (their paths are fixed).
set -euo pipefail

CLUSTER=$(printf '%s' "${BFJOBS_SLURM_CLUSTER:-bfjobs}" | tr '[:upper:]' '[:lower:]')
ACCOUNT=${BFJOBS_SLURM_ACCOUNT:-bfjobs}
WANT_CPUS=${BFJOBS_SLURM_CPUS:-64}
TIMEOUT=${BFJOBS_SLURM_TIMEOUT:-90}
NODE=$(hostname -s)

PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)

# ---------------------------------------------------------------- helpers

say() { printf '[slurm-up] %s\n' "$*"; }

# die MESSAGE [LOGFILE...]: print the message and the tail of each log, exit 1.
die() {
    local msg=$1 f
    shift
    printf '[slurm-up] ERROR: %s\n' "$msg" >&2
    if [[ -n ${node_state:-} ]]; then
        printf '[slurm-up] node %s is "%s"; reasons:\n' "$NODE" "$node_state" >&2
        sinfo -R >&2 || true
    fi
    for f in "$@"; do
        if [[ -s $f ]]; then
            printf '[slurm-up] --- last lines of %s ---\n' "$f" >&2
            tail -n 25 "$f" >&2
        fi
    done
    exit 1
}

# SLURM_CONF (exported), DBD_CONF, SLURM_RUN, SLURM_LOG, SLURM_LIB, PORT, MUNGE_PID, MYSQL_*,
# LOCK_FILE, and the helpers pid_of, alive, ours, describe, stop, foreign_slurm.
# shellcheck source=scripts/slurm-lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/slurm-lib.sh"

# One controller state directory per cluster name: slurmctld refuses to start on
# state saved under another name, and job ids then stay unique per cluster.
STATE_DIR=$SLURM_LIB/slurmctld/$CLUSTER
SPOOL_DIR=$SLURM_LIB/slurmd
MUNGE_KEY=/etc/munge/munge.key
MUNGE_LOG=/var/log/munge/munged.log
MYSQL_SOCK=$MYSQL_RUN/mysqld.sock
MYSQL_LOG=/var/log/mysql/bfjobs-mariadbd.log
DB_NAME=slurm_acct_db
DB_USER=slurm

START_NS=$(date +%s%N)

# ---------------------------------------------------------------- more helpers

# running NAME PIDFILE: true when the pid file names a live process called NAME.
running() { alive "$(pid_of "$2")" "$1"; }

# restart NAME PIDFILE: stop our daemon NAME so that it is started again below.
restart() {
    stop "$1" "$2" || die "$2 names $1 $(describe "$1" "$(pid_of "$2")"), not ours: stop it yourself"
}

# check_ours WHEN: refuse, in one line, when another Slurm holds one of our ports or pid files.
check_ours() {
    local found
    found=$(foreign_slurm)
    [[ -n $found ]] || return 0
    found=$(awk 'NR > 1 { printf "; " } { printf "%s", $0 }' <<<"$found")
    node_state=''  # one line: no node report
    die "$1, another Slurm is running here, not the one $SLURM_CONF (cluster $CLUSTER) describes: \
$found; stop it yourself, or run this cluster on another machine"
}

# check_started NAME: when this run started NAME, check that the daemon answering is the one
# it started (the fast path, which starts nothing, was checked before it began).
started=' '
check_started() { [[ $started != *" $1 "* ]] || check_ours "after starting $1"; }

# check_controller: the controller answering is ours: it reports our ClusterName and config.
check_controller() {
    local answer name conf
    answer=$(scontrol show config 2>&1) || die "scontrol show config failed: $(head -n 1 <<<"$answer")"
    name=$(sed -n 's/^ClusterName *= *//p' <<<"$answer")
    conf=$(sed -n 's/^SLURM_CONF *= *//p' <<<"$answer")
    if [[ $name != "$CLUSTER" || $(realpath -m -- "$conf") != "$OUR_CONF" ]]; then
        die "the controller answering on port ${PORT[slurmctld]} is not ours: it reports cluster '$name' \
and config $conf (ours: $CLUSTER, $SLURM_CONF); stop it yourself, or run this cluster on another machine"
    fi
}

# wait_for WHAT "LOGFILE..." NAME WATCH COMMAND...: poll COMMAND until it succeeds.
# Fails after TIMEOUT seconds, or once daemon NAME has been gone for 3 s (WATCH is its
# pid or the pid file it writes; "-" watches nothing), showing the tail of each log.
wait_for() {
    local what=$1 name=$3 watch=$4 deadline=$((SECONDS + TIMEOUT)) gone=0 pid
    local -a logs
    read -ra logs <<<"$2"
    shift 4
    until "$@" >/dev/null 2>&1; do
        if [[ $watch != - ]]; then
            if [[ $watch =~ ^[0-9]+$ ]]; then pid=$watch; else pid=$(pid_of "$watch"); fi
            if alive "$pid" "$name"; then gone=0; else gone=$((gone + 1)); fi
            ((gone < 15)) || die "$name exited while waiting for $what" "${logs[@]}"
        fi
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what" "${logs[@]}"
        sleep 0.2
    done
}

# install_file PATH OWNER MODE < CONTENT: replace PATH only when CONTENT differs.
# Returns 0 when the file changed, 1 when it was already up to date (or, with
# BFJOBS_SLURM_KEEP_CONFIG=1, when it differs and is kept as it is).
install_file() {
    local path=$1 owner=$2 mode=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [[ -f $path && ${BFJOBS_SLURM_KEEP_CONFIG:-} == 1 ]] && ! cmp -s "$tmp" "$path"; then
        say "keeping $path as it is (BFJOBS_SLURM_KEEP_CONFIG=1): it differs from what this script writes"
        rm -f "$tmp"
        return 1
    fi
    if [[ -f $path ]] && cmp -s "$tmp" "$path"; then
        rm -f "$tmp"
        chown "$owner" "$path"
        chmod "$mode" "$path"
        return 1
    fi
    install -o "${owner%%:*}" -g "${owner##*:}" -m "$mode" "$tmp" "$path"
    rm -f "$tmp"
    return 0
}

mysql_root() { mariadb --socket="$MYSQL_SOCK" -uroot; }

# ---------------------------------------------------------------- checks

[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ $CLUSTER =~ ^[a-z0-9_-]+$ ]] || die "BFJOBS_SLURM_CLUSTER must match [a-z0-9_-]+ (got '$CLUSTER')"
[[ $WANT_CPUS =~ ^[0-9]+$ ]] || die "BFJOBS_SLURM_CPUS must be a number (got '$WANT_CPUS')"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "BFJOBS_SLURM_TIMEOUT must be a number (got '$TIMEOUT')"

# Two runs at once (say, two test sessions) would race: take turns. One lock for every
# instance: they share munged, MariaDB and the ports. Opened for appending: an existing lock
# file is not written to. (The daemons started below get "9>&-" so that they do not hold it.)
exec 9>>"$LOCK_FILE"
flock -w 600 9 || die "another slurm-up.sh/slurm-down.sh still holds $LOCK_FILE"

# Before anything is installed, written or started: the Slurm daemons on our ports and in our
# pid files must be ours (an instance in another prefix, or another Slurm, is refused here).
check_ours "before starting anything"

# ---------------------------------------------------------------- packages

install_packages() {
    local missing=() p policy=/usr/sbin/policy-rc.d
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0

    say "installing ${missing[*]}"
    # Keep the packages' maintainer scripts from starting services (no systemd here).
    if [[ -e $policy ]]; then
        mv "$policy" "$policy.bfjobs-saved"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    # shellcheck disable=SC2064  # expand now: the trap must know the path
    trap "rm -f '$policy'; [ -e '$policy.bfjobs-saved' ] && mv '$policy.bfjobs-saved' '$policy'" EXIT

    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq -o DPkg::Lock::Timeout=300 ||
        say "warning: apt-get update failed; trying the package lists already here"
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 \
        "${PACKAGES[@]}" >/tmp/bfjobs-slurm-apt.log 2>&1 ||
        die "apt-get install failed" /tmp/bfjobs-slurm-apt.log

    rm -f "$policy"
    if [[ -e $policy.bfjobs-saved ]]; then
        mv "$policy.bfjobs-saved" "$policy"
    fi
    trap - EXIT
}

install_packages

# ---------------------------------------------------------------- config

# Real memory from slurmd -C; declare 95% of it so the node never reads as "low memory".
hw=$(slurmd -C 2>/dev/null | head -n 1)
real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
hw_cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
[[ -n $real_mem && -n $hw_cpus ]] || die "could not read the hardware from 'slurmd -C' (got: $hw)"
mem_mb=$((real_mem * 95 / 100))
cpus=$((WANT_CPUS > hw_cpus ? WANT_CPUS : hw_cpus))

install -d -o slurm -g slurm -m 0755 "$SLURM_RUN" "$SLURM_LOG" "$SLURM_LIB" "$SLURM_LIB/slurmctld"
install -d -o slurm -g slurm -m 0700 "$STATE_DIR"
install -d -o root -g root -m 0755 "$SPOOL_DIR" "$SLURM_CONF_DIR"

# The database password lives only in slurmdbd.conf: keep the one already there.
db_pass=$(sed -n 's/^StoragePass=//p' "$DBD_CONF" 2>/dev/null || true)
if [[ -z $db_pass ]]; then
    db_pass=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
fi

slurm_conf_changed=0
install_file "$SLURM_CONF" root:root 0644 <<EOF && slurm_conf_changed=1
# Written by blackfish-jobs scripts/slurm-up.sh: edit the script, not this file.
# Single-node test cluster on 127.0.0.1, without cgroups, with accounting (slurmdbd).
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
SlurmctldPort=${PORT[slurmctld]}
SlurmdPort=${PORT[slurmd]}
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$SLURM_RUN/slurmctld.pid
SlurmdPidFile=$SLURM_RUN/slurmd.pid
SlurmctldLogFile=$SLURM_LOG/slurmctld.log
SlurmdLogFile=$SLURM_LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups on this machine.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true

# The node declares more CPUs than it has (config_overrides) so that many
# small test jobs run at the same time.
SlurmdParameters=config_overrides
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory

# Schedule fast: tests submit and wait for many short jobs.
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000,sched_interval=5,bf_interval=5,default_queue_depth=500
MinJobAge=300
# The benchmark's status group holds 10,000 live jobs (benchmarks/run.py --live-jobs) while
# tests run: above Slurm's default of 10,000 jobs in the controller.
MaxJobCount=50000
KillWait=5
InactiveLimit=0
Waittime=0

# Accounting through slurmdbd (sacct works). Associations, QOS and partition limits are
# enforced at submit time, as at real sites, so sbatch refuses an unknown account or QOS and
# a time limit over the partition's MaxTime.
AccountingStorageEnforce=associations,limits,qos
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=${PORT[slurmdbd]}
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none

NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem_mb State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE DefMemPerCPU=100 State=UP
PartitionName=datamover Nodes=$NODE Default=NO MaxTime=2-00:00:00 DefMemPerCPU=100 State=UP
# A partition whose jobs get no more than this machine has (its CPUs and the memory the node
# declares): bfjobs' built-in defaults must run here, and a larger request is refused at submit.
PartitionName=small Nodes=$NODE Default=NO MaxTime=2-00:00:00 DefMemPerCPU=100 MaxCPUsPerNode=$hw_cpus MaxMemPerNode=$mem_mb State=UP
EOF

dbd_conf_changed=0
install_file "$DBD_CONF" slurm:slurm 0600 <<EOF && dbd_conf_changed=1
# Written by blackfish-jobs scripts/slurm-up.sh: edit the script, not this file.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=${PORT[slurmdbd]}
SlurmUser=slurm
DebugLevel=info
LogFile=$SLURM_LOG/slurmdbd.log
PidFile=$SLURM_RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB_NAME
StorageUser=$DB_USER
StoragePass=$db_pass
EOF

# A changed config needs a restart of the daemons already running with the old one.
if ((dbd_conf_changed)); then
    restart slurmdbd "$SLURM_RUN/slurmdbd.pid"
fi
if ((slurm_conf_changed)); then
    restart slurmd "$SLURM_RUN/slurmd.pid"
    restart slurmctld "$SLURM_RUN/slurmctld.pid"
fi

# ---------------------------------------------------------------- munge

munge_ok() { munge -n </dev/null | unmunge >/dev/null; }

if ! running munged "$MUNGE_PID"; then
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    if [[ ! -s $MUNGE_KEY ]]; then
        say "creating $MUNGE_KEY"
        mungekey --create --keyfile="$MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 0600 "$MUNGE_KEY"
    say "starting munged"
    # --force: a munged killed hard leaves its socket behind.
    runuser -u munge -- /usr/sbin/munged --force </dev/null >/dev/null 2>&1 9>&- ||
        die "munged failed to start" "$MUNGE_LOG"
fi
wait_for "munged" "$MUNGE_LOG" munged "$MUNGE_PID" munge_ok

# ---------------------------------------------------------------- MariaDB

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" -uroot ping; }

if ! running mariadbd "$MYSQL_PID"; then
    install -d -o mysql -g mysql -m 0755 "$MYSQL_RUN" /var/log/mysql
    if [[ ! -d $MYSQL_DATA/mysql ]]; then
        say "initialising the MariaDB data directory"
        install -d -o mysql -g mysql -m 0755 "$MYSQL_DATA"
        mariadb-install-db --user=mysql --datadir="$MYSQL_DATA" --skip-test-db \
            --auth-root-authentication-method=socket >"$MYSQL_LOG" 2>&1 ||
            die "mariadb-install-db failed" "$MYSQL_LOG"
    fi
    say "starting mariadbd"
    touch "$MYSQL_LOG"
    chown mysql:mysql "$MYSQL_LOG"
    setsid mariadbd --user=mysql --datadir="$MYSQL_DATA" \
        --bind-address=127.0.0.1 --port=3306 --socket="$MYSQL_SOCK" --pid-file="$MYSQL_PID" \
        --log-error="$MYSQL_LOG" --innodb-lock-wait-timeout=900 \
        </dev/null >>"$MYSQL_LOG" 2>&1 9>&- &
    wait_for "mariadbd" "$MYSQL_LOG" mariadbd "$!" mysql_ok
fi

# ---------------------------------------------------------------- slurmdbd

dbd_ok() { sacctmgr -n -P show cluster format=cluster; }

if ! running slurmdbd "$SLURM_RUN/slurmdbd.pid"; then
    # Database and user: cheap and idempotent, so done at every slurmdbd start.
    mysql_root <<EOF || die "could not create the accounting database" "$MYSQL_LOG"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$db_pass';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF
    say "starting slurmdbd"
    started+="slurmdbd "
    slurmdbd </dev/null >"$SLURM_LOG/slurmdbd.start.log" 2>&1 9>&- ||
        die "slurmdbd failed to start" "$SLURM_LOG/slurmdbd.start.log" "$SLURM_LOG/slurmdbd.log"
fi
wait_for "slurmdbd" "$SLURM_LOG/slurmdbd.start.log $SLURM_LOG/slurmdbd.log" slurmdbd "$SLURM_RUN/slurmdbd.pid" dbd_ok
# The slurmdbd that answered is the one we started (not another that held the port first).
check_started slurmdbd

# ---------------------------------------------------------------- accounting

# Cluster, account and users must exist before slurmctld registers with slurmdbd.
assoc=$(sacctmgr -n -P show assoc format=cluster,account,user) ||
    die "sacctmgr cannot read associations" "$SLURM_LOG/slurmdbd.log"
registered=0
if ! grep -qx "$CLUSTER|root|" <<<"$assoc"; then
    say "registering cluster $CLUSTER"
    sacctmgr -i add cluster "$CLUSTER" >/dev/null ||
        die "sacctmgr could not add cluster $CLUSTER" "$SLURM_LOG/slurmdbd.log"
    registered=1
fi
if ! grep -qx "$CLUSTER|$ACCOUNT|" <<<"$assoc"; then
    say "adding account $ACCOUNT"
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" \
        description="blackfish-jobs tests" organization=bfjobs >/dev/null ||
        die "sacctmgr could not add account $ACCOUNT" "$SLURM_LOG/slurmdbd.log"
    registered=1
fi
for user in root nobody; do
    if ! grep -qx "$CLUSTER|$ACCOUNT|$user" <<<"$assoc"; then
        say "adding user $user to account $ACCOUNT"
        sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null ||
            die "sacctmgr could not add user $user" "$SLURM_LOG/slurmdbd.log"
        registered=1
    fi
done
# A QOS with a per-job limit and without DenyOnLimit: a job over the limit is accepted and pends
# (QOSMaxCpuPerJobLimit) for ever, as at sites with such QOSes; the tests use it for that path.
# slurmdbd pushes QOS changes to a running slurmctld: no restart needed.
QOS=bfjobs-small
if ! sacctmgr -n -P show qos "$QOS" format=name | grep -qx "$QOS"; then
    say "adding QOS $QOS (at most 2 CPUs per job)"
    sacctmgr -i add qos "$QOS" MaxTRESPerJob=cpu=2 description="blackfish-jobs tests: at most 2 CPUs per job" \
        >/dev/null || die "sacctmgr could not add QOS $QOS" "$SLURM_LOG/slurmdbd.log"
fi
qos_assoc=$(sacctmgr -n -P show assoc where cluster="$CLUSTER" users=root,nobody format=user,qos) ||
    die "sacctmgr cannot read associations" "$SLURM_LOG/slurmdbd.log"
if grep -qv "[|,]$QOS\(,\|$\)" <<<"$qos_assoc"; then
    say "allowing root and nobody to use QOS $QOS"
    sacctmgr -i modify user where name=root,nobody cluster="$CLUSTER" set qos+="$QOS" >/dev/null ||
        die "sacctmgr could not allow QOS $QOS" "$SLURM_LOG/slurmdbd.log"
fi
if ((registered)); then
    # A controller that started before its cluster existed does not report jobs.
    restart slurmd "$SLURM_RUN/slurmd.pid"
    restart slurmctld "$SLURM_RUN/slurmctld.pid"
fi

# ---------------------------------------------------------------- slurmctld, slurmd

ctld_ok() { scontrol ping | grep -q 'is UP'; }

if ! running slurmctld "$SLURM_RUN/slurmctld.pid"; then
    say "starting slurmctld"
    started+="slurmctld "
    slurmctld </dev/null >"$SLURM_LOG/slurmctld.start.log" 2>&1 9>&- ||
        die "slurmctld failed to start" "$SLURM_LOG/slurmctld.start.log" "$SLURM_LOG/slurmctld.log"
fi
wait_for "slurmctld" "$SLURM_LOG/slurmctld.start.log $SLURM_LOG/slurmctld.log" slurmctld "$SLURM_RUN/slurmctld.pid" ctld_ok
# The controller that answered is ours: it holds the port, and reports our cluster and config.
check_started slurmctld
check_controller

if ! running slurmd "$SLURM_RUN/slurmd.pid"; then
    say "starting slurmd -N $NODE"
    started+="slurmd "
    slurmd -N "$NODE" </dev/null >"$SLURM_LOG/slurmd.start.log" 2>&1 9>&- ||
        die "slurmd failed to start" "$SLURM_LOG/slurmd.start.log" "$SLURM_LOG/slurmd.log"
fi

# ---------------------------------------------------------------- health

# node_usable: true when the node takes jobs. A node left drained or down by an
# earlier run is resumed once, when slurmd is up again.
resumed=0
node_state=
node_usable() {
    node_state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | sort -u | paste -sd' ' -)
    case $node_state in
        *'*'* | *down* | *drain* | *fail* | *unknown* | *not_responding* | *maint* | *reboot* | *future* | "") ;;
        *idle* | *mix* | *alloc* | *complet*) return 0 ;;
    esac
    if [[ $node_state == *drain* || $node_state == down ]] && ((!resumed)) &&
        running slurmd "$SLURM_RUN/slurmd.pid"; then
        scontrol update NodeName="$NODE" State=RESUME || true
        resumed=1
    fi
    return 1
}

if ! node_usable; then
    wait_for "node $NODE to be usable" "$SLURM_LOG/slurmd.start.log $SLURM_LOG/slurmd.log $SLURM_LOG/slurmctld.log" \
        slurmd "$SLURM_RUN/slurmd.pid" node_usable
fi
wait_for "sacct to answer" "$SLURM_LOG/slurmdbd.log $SLURM_LOG/slurmctld.log" - - sacct -n -X -o JobID
check_started slurmd

# ---------------------------------------------------------------- summary

elapsed=$((($(date +%s%N) - START_NS) / 1000000))
say "Slurm is up in $((elapsed / 1000)).$(printf '%03d' $((elapsed % 1000)))s: cluster=$CLUSTER node=$NODE" \
    "slurmctld=$(pid_of "$SLURM_RUN/slurmctld.pid") config=$SLURM_CONF cpus=$cpus mem=${mem_mb}M partitions=$(sinfo -h -o %R | paste -sd, -)"
sinfo
