#!/usr/bin/env bash
# Stop the test sshd that scripts/sshd-up.sh started, and nothing else: the pid in its pid file
# is signalled only if that process runs with sshd-up.sh's config. Users, keys and the package
# stay (sshd-up.sh reuses them). Sessions still open end with their clients.
set -euo pipefail
DIR=${BFJOBS_SSHD_DIR:-/etc/bfjobs-test-sshd}
say() { printf '[sshd-down] %s\n' "$*"; }
pid=$(cat "$DIR/sshd.pid" 2>/dev/null) || { say "not running (no $DIR/sshd.pid)"; exit 0; }
if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "-f $DIR/sshd_config"; then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "stopped sshd $pid"
else
    say "pid $pid is not the test sshd (stale pid file): nothing stopped"
fi
