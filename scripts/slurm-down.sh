#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm-up.sh:
# slurmd -> slurmctld -> slurmdbd -> mariadbd -> munged, each by its pid file, and only
# when /proc/<pid> shows the daemon as slurm-up.sh starts it (its name, and for the Slurm
# daemons the config it was started with), so neither a stale pid file nor a pid file that
# names another Slurm's daemon ever stops a process this cluster did not start. mariadbd
# and munged are the machine's: they are left running while another Slurm's daemons run.
# Idempotent: daemons that are not running are skipped. Packages, configuration,
# state and the accounting database are kept (slurm-up.sh starts them again).
# Job steps still running (slurmstepd) are left alone, as on a real slurmd restart.
# Environment knobs: BFJOBS_SLURM_CONF_DIR and BFJOBS_SLURM_RUN_DIR, as for slurm-up.sh.
# Exit status 1 when a pid file names a daemon that is not ours (left running).
set -euo pipefail

say() { printf '[slurm-down] %s\n' "$*"; }
die() {
    printf '[slurm-down] ERROR: %s\n' "$1" >&2
    exit 1
}

# SLURM_CONF, DBD_CONF, SLURM_RUN, MUNGE_PID, MYSQL_PID, LOCK_FILE, and the helpers
# pid_of, alive, ours, describe, daemons_running, stop.
# shellcheck source=scripts/slurm-lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/slurm-lib.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root"

# Take turns with slurm-up.sh.
exec 9>>"$LOCK_FILE"
flock -w 600 9 || die "$LOCK_FILE is still held"

refused=0

# down NAME PIDFILE: stop the daemon the pid file names, if it is ours.
down() {
    local name=$1 pidfile=$2 pid rc=0
    if [[ ! -e $pidfile ]]; then
        say "$name: not running (no pid file)"
        return 0
    fi
    pid=$(pid_of "$pidfile")
    if ! alive "$pid" "$name"; then
        say "$name: not running (stale pid file)"
        rm -f "$pidfile"
        return 0
    fi
    stop "$name" "$pidfile" || rc=$?
    if ((rc == 2)); then
        printf '[slurm-down] ERROR: %s names %s %s, which is not ours (ours: %s): left running; stop it yourself\n' \
            "$pidfile" "$name" "$(describe "$name" "$pid")" \
            "$([[ $name == slurmdbd ]] && echo "$DBD_CONF" || echo "$SLURM_CONF")" >&2
        refused=1
        return 0
    fi
    rm -f "$pidfile"
    say "$name: stopped (pid $pid)"
}

# shared NAME PIDFILE DAEMON...: stop machine-wide NAME unless one of DAEMONS still runs.
shared() {
    local name=$1 pidfile=$2 others
    shift 2
    others=$(daemons_running "$@" | paste -sd, - | sed 's/,/, /g')
    if [[ -n $others ]] && alive "$(pid_of "$pidfile")" "$name"; then
        say "$name: left running (pid $(pid_of "$pidfile")): another Slurm's daemons still run ($others)"
        return 0
    fi
    down "$name" "$pidfile"
}

down slurmd "$SLURM_RUN/slurmd.pid"
down slurmctld "$SLURM_RUN/slurmctld.pid"
down slurmdbd "$SLURM_RUN/slurmdbd.pid"
shared mariadbd "$MYSQL_PID" slurmdbd
shared munged "$MUNGE_PID" slurmctld slurmd slurmdbd
exit "$refused"
