#!/usr/bin/env bash
# A real OCI registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 for the tests of
# images pinned by digest (tests/support/registry.py starts one per test session).
#
#   registry-up.sh ROOT PORT [HTPASSWD_FILE]
#
#   ROOT/config.yml     written here: storage in ROOT/data, 127.0.0.1:PORT only, plain HTTP (no
#                       TLS), deletes disabled; with HTPASSWD_FILE (bcrypt, `htpasswd -nbB`) every
#                       request needs HTTP basic auth (realm bfjobs-test). Plain HTTP with htpasswd
#                       works in distribution 2.8: no TLS is required, and it warns about nothing.
#   ROOT/registry.log   the registry's log
#   ROOT/pid            its pid (stop it with scripts/registry-down.sh ROOT)
#
# Waits until GET /v2/ answers (200, or 401 with auth) and fails with the log's tail otherwise.
# Needs no root. Refuses to start a second registry on the same ROOT while the first runs.
set -euo pipefail

say() { printf '[registry-up] %s\n' "$*"; }
die() { printf '[registry-up] ERROR: %s\n' "$*" >&2; exit 1; }

(($# == 2 || $# == 3)) || die "usage: registry-up.sh ROOT PORT [HTPASSWD_FILE]"
ROOT=$1 PORT=$2 HTPASSWD=${3:-}
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || die "PORT must be a port number, not '$PORT'"
command -v docker-registry >/dev/null || die "docker-registry not found: run scripts/test-site.sh (as root)"
mkdir -p "$ROOT/data"
ROOT=$(cd "$ROOT" && pwd)
if [[ -n $HTPASSWD ]]; then
    [[ -r $HTPASSWD ]] || die "no htpasswd file $HTPASSWD"
    HTPASSWD=$(cd "$(dirname -- "$HTPASSWD")" && pwd)/$(basename -- "$HTPASSWD")
fi

ours() {  # is the pid file's process a registry serving this ROOT's config?
    local pid
    pid=$(cat "$ROOT/pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q -- "serve $ROOT/config.yml"
}
status() {  # the HTTP status of GET /v2/, empty when nothing answers
    local line
    trap '' PIPE  # a listener that hangs up must not kill this script
    {
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" &&
            printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$PORT" >&3 &&
            IFS=' ' read -r -t 5 _ line _ <&3 && printf '%s' "$line"
    } 2>/dev/null || true
}

ours && die "a registry already serves $ROOT (pid $(cat "$ROOT/pid")): stop it with scripts/registry-down.sh $ROOT"
[[ -z $(status) ]] || die "something already answers on 127.0.0.1:$PORT"

{
    printf '# written by scripts/registry-up.sh\nversion: 0.1\n'
    printf 'log:\n  level: info\n  accesslog:\n    disabled: false\n'
    printf 'storage:\n  filesystem:\n    rootdirectory: %s/data\n  delete:\n    enabled: false\n' "$ROOT"
    printf 'http:\n  addr: 127.0.0.1:%s\n  secret: bfjobs-test-%s\n' "$PORT" "$PORT"
    printf 'health:\n  storagedriver:\n    enabled: false\n'
    if [[ -n $HTPASSWD ]]; then
        printf 'auth:\n  htpasswd:\n    realm: bfjobs-test\n    path: %s\n' "$HTPASSWD"
    fi
} >"$ROOT/config.yml"

rm -f "$ROOT/pid"
setsid docker-registry serve "$ROOT/config.yml" >"$ROOT/registry.log" 2>&1 </dev/null &
echo $! >"$ROOT/pid"
want=200
[[ -n $HTPASSWD ]] && want=401
got=
for _ in $(seq 1 100); do
    got=$(status)
    [[ -n $got ]] && break
    [[ $(awk '{print $3}' "/proc/$(cat "$ROOT/pid")/stat" 2>/dev/null) =~ ^[^Z]$ ]] || break  # exited (or a zombie)
    sleep 0.05
done
if [[ $got != "$want" ]]; then
    tail -n 20 "$ROOT/registry.log" >&2 || true
    kill "$(cat "$ROOT/pid")" 2>/dev/null || true
    rm -f "$ROOT/pid"
    die "the registry did not come up on 127.0.0.1:$PORT (GET /v2/ answered '${got:-nothing}', wanted $want; log: $ROOT/registry.log)"
fi
say "registry up on 127.0.0.1:$PORT (pid $(cat "$ROOT/pid"), root $ROOT${HTPASSWD:+, htpasswd auth})"
