#!/usr/bin/env bash
# Stop the registry that scripts/registry-up.sh started on ROOT, and nothing else: the pid in
# ROOT/pid is signalled only if that process serves ROOT/config.yml. Its data stays in ROOT.
#
#   registry-down.sh ROOT
set -euo pipefail
say() { printf '[registry-down] %s\n' "$*"; }
(($# == 1)) || { printf '[registry-down] ERROR: usage: registry-down.sh ROOT\n' >&2; exit 1; }
ROOT=$(cd "$1" 2>/dev/null && pwd) || { say "not running (no directory $1)"; exit 0; }
pid=$(cat "$ROOT/pid" 2>/dev/null) || { say "not running (no $ROOT/pid)"; exit 0; }
if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "serve $ROOT/config.yml"; then
    # gone, or a zombie: its parent exited at start-up, so it waits for init to reap it
    alive() { [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) =~ ^[^Z]$ ]]; }
    kill "$pid"
    for _ in $(seq 1 50); do alive || break; sleep 0.1; done
    if alive; then kill -KILL "$pid"; fi
    rm -f "$ROOT/pid"
    say "stopped registry $pid"
else
    rm -f "$ROOT/pid"
    say "pid $pid is not this registry (stale pid file): nothing stopped"
fi
