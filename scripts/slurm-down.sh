#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by scripts/slurm-up.sh:
# slurmd -> slurmctld -> slurmdbd -> mariadbd -> munged, each by its pid file,
# after checking /proc/<pid>/comm, so a stale pid file never kills another process.
# Idempotent: daemons that are not running are skipped. Packages, configuration,
# state and the accounting database are kept (slurm-up.sh starts them again).
# Job steps still running (slurmstepd) are left alone, as on a real slurmd restart.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "[slurm-down] ERROR: must run as root" >&2; exit 1; }

say() { printf '[slurm-down] %s\n' "$*"; }

# Take turns with slurm-up.sh.
exec 9>/run/bfjobs-slurm.lock
flock -w 600 9 || { echo "[slurm-down] ERROR: /run/bfjobs-slurm.lock is still held" >&2; exit 1; }

# alive PID NAME: true when PID is a live (not zombie) process called NAME.
# Zombies count as dead: the init here can take seconds to reap exited daemons.
alive() {
    local pid=$1 name=$2 comm stat
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ $comm == "$name" && ${stat:0:1} != Z ]]
}

# stop NAME PIDFILE: TERM the daemon if the pid file names a live NAME, KILL after 20 s.
stop() {
    local name=$1 pidfile=$2 pid i
    if [[ ! -e $pidfile ]]; then
        say "$name: not running (no pid file)"
        return 0
    fi
    pid=$(tr -dc '0-9' 2>/dev/null <"$pidfile" || true)
    if [[ -z $pid ]] || ! alive "$pid" "$name"; then
        say "$name: not running (stale pid file)"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive "$pid" "$name" || break
        sleep 0.1
    done
    if alive "$pid" "$name"; then
        say "$name: still running after 20 s, sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
    say "$name: stopped (pid $pid)"
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
stop mariadbd /run/mysqld/mysqld.pid
stop munged /run/munge/munged.pid
