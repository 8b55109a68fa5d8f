# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this
# Shared by scripts/slurm-up.sh and scripts/slurm-down.sh (sourced, not run): where the test
# cluster's files are, and how to tell its own daemons from another Slurm's on this machine.
# The sourcing script defines say() and die().

# ---------------------------------------------------------------- locations

# Slurm's own files follow the knobs (defaults: the Debian locations), so a second instance can
# live in a prefix of its own. munged and MariaDB are the machine's: shared by every instance.
SLURM_CONF_DIR=${BFJOBS_SLURM_CONF_DIR:-/etc/slurm}
SLURM_RUN=${BFJOBS_SLURM_RUN_DIR:-/run/slurm}
SLURM_LOG=${BFJOBS_SLURM_LOG_DIR:-/var/log/slurm}
SLURM_LIB=${BFJOBS_SLURM_STATE_DIR:-/var/lib/slurm}
for _dir in "$SLURM_CONF_DIR" "$SLURM_RUN" "$SLURM_LOG" "$SLURM_LIB"; do
    [[ $_dir == /* ]] || die "BFJOBS_SLURM_*_DIR must be absolute paths (got '$_dir')"
done
unset _dir
# Clients and the daemons started here read this file (slurmdbd finds slurmdbd.conf beside it).
export SLURM_CONF=$SLURM_CONF_DIR/slurm.conf
DBD_CONF=$SLURM_CONF_DIR/slurmdbd.conf
# The same, as absolute paths without symlinks: what the daemons' own paths are compared with.
OUR_CONF=$(realpath -m -- "$SLURM_CONF")
OUR_DBD_CONF=$(realpath -m -- "$DBD_CONF")
# What a Slurm daemon started without -f or SLURM_CONF reads (Debian's compiled-in path).
DEFAULT_SLURM_CONF=/etc/slurm/slurm.conf
# The ports the slurm.conf and slurmdbd.conf that slurm-up.sh writes name.
declare -A PORT=([slurmctld]=6817 [slurmd]=6818 [slurmdbd]=6819)
MUNGE_PID=/run/munge/munged.pid
MYSQL_DATA=/var/lib/mysql
MYSQL_RUN=/run/mysqld
MYSQL_PID=$MYSQL_RUN/mysqld.pid
LOCK_FILE=/run/bfjobs-slurm.lock

# ---------------------------------------------------------------- processes

# pid_of PIDFILE: the pid written in PIDFILE, or nothing.
pid_of() { tr -dc '0-9' 2>/dev/null <"$1" || true; }

# alive PID NAME: true when PID is a live process called NAME (checked in /proc).
# A zombie counts as dead: the init here can take seconds to reap exited daemons.
alive() {
    local pid=$1 name=$2 comm stat
    [[ -n $pid ]] || return 1
    { read -r comm <"/proc/$pid/comm" && read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
    stat=${stat##*) }
    [[ $comm == "$name" && ${stat:0:1} != Z ]]
}

# cmdline_of PID: the process's command line, its arguments joined by spaces.
cmdline_of() {
    local arg cmd=''
    while IFS= read -r -d '' arg; do
        cmd+=${cmd:+ }$arg
    done 2>/dev/null <"/proc/$1/cmdline"
    printf '%s' "$cmd"
}

# conf_of NAME PID: the config file Slurm daemon NAME (pid PID) was started with: slurm.conf
# from its -f argument, else SLURM_CONF from its environment, else the compiled-in default;
# for slurmdbd the slurmdbd.conf beside that slurm.conf. Printed as an absolute path.
conf_of() {
    local name=$1 pid=$2 arg prev='' conf=''
    while IFS= read -r -d '' arg; do
        if [[ $prev == -f ]]; then
            conf=$arg
        elif [[ $arg == -f?* ]]; then
            conf=${arg#-f}
        fi
        prev=$arg
    done 2>/dev/null <"/proc/$pid/cmdline"
    [[ $name != slurmdbd ]] || conf=''  # slurmdbd has no -f
    if [[ -z $conf ]]; then
        while IFS= read -r -d '' arg; do
            if [[ $arg == SLURM_CONF=* ]]; then
                conf=${arg#SLURM_CONF=}
                break
            fi
        done 2>/dev/null <"/proc/$pid/environ"
    fi
    conf=${conf:-$DEFAULT_SLURM_CONF}
    if [[ $conf != /* ]]; then
        conf=$(readlink "/proc/$pid/cwd" 2>/dev/null)/$conf
    fi
    if [[ $name == slurmdbd ]]; then
        conf=${conf%/*}/slurmdbd.conf
    fi
    realpath -m -- "$conf"
}

# cluster_of CONF: the ClusterName in slurm.conf CONF (or beside slurmdbd.conf CONF), if readable.
cluster_of() {
    local conf=$1
    [[ $conf != */slurmdbd.conf ]] || conf=${conf%/slurmdbd.conf}/slurm.conf
    sed -n 's/^[[:space:]]*[Cc][Ll][Uu][Ss][Tt][Ee][Rr][Nn][Aa][Mm][Ee][[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/p' \
        "$conf" 2>/dev/null | tail -n 1 || true
}

# ours NAME PID: true when PID is the daemon NAME as this script starts it: a Slurm daemon
# started with our config, mariadbd with our data directory and pid file, munged with --force.
ours() {
    local name=$1 pid=$2 cmd
    case $name in
        slurmctld | slurmd) [[ $(conf_of "$name" "$pid") == "$OUR_CONF" ]] ;;
        slurmdbd) [[ $(conf_of "$name" "$pid") == "$OUR_DBD_CONF" ]] ;;
        mariadbd)
            cmd=" $(cmdline_of "$pid") "
            [[ $cmd == *" --datadir=$MYSQL_DATA "* && $cmd == *" --pid-file=$MYSQL_PID "* ]]
            ;;
        munged) [[ " $(cmdline_of "$pid") " == *"munged --force "* ]] ;;
        *) return 1 ;;
    esac
}

# describe NAME PID: "pid N (COMMAND; config FILE, cluster C)" for messages.
describe() {
    local name=$1 pid=$2 conf cluster
    case $name in
        slurmctld | slurmd | slurmdbd)
            conf=$(conf_of "$name" "$pid")
            cluster=$(cluster_of "$conf")
            printf 'pid %s (%s; config %s%s)' "$pid" "$(cmdline_of "$pid")" "$conf" "${cluster:+, cluster $cluster}"
            ;;
        *) printf 'pid %s (%s)' "$pid" "$(cmdline_of "$pid")" ;;
    esac
}

# daemons_running NAME...: "NAME pid N" for each live process called NAME, one a line.
daemons_running() {
    local dir comm want
    for dir in /proc/[0-9]*; do
        read -r comm 2>/dev/null <"$dir/comm" || continue
        for want in "$@"; do
            if [[ $comm == "$want" ]] && alive "${dir#/proc/}" "$want"; then
                printf '%s pid %s\n' "$want" "${dir#/proc/}"
            fi
        done
    done
}

# stop NAME PIDFILE: TERM the daemon the pid file names, KILL after 20 s. Returns 0 when it is
# stopped or was not running, 2 (touching nothing) when it is not ours (see ours).
stop() {
    local name=$1 pidfile=$2 pid i
    pid=$(pid_of "$pidfile")
    alive "$pid" "$name" || return 0
    ours "$name" "$pid" || return 2
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 200; i++)); do
        alive "$pid" "$name" || return 0
        sleep 0.1
    done
    say "$name: still running after 20 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.2
}

# ---------------------------------------------------------------- ports

# listeners: "PORT PID" for each process holding a listening TCP socket ("PORT ?" when no
# process can be named), from ss if present, else from /proc/net/tcp{,6} and /proc/<pid>/fd.
listeners() {
    if command -v ss >/dev/null 2>&1; then
        ss -Htlnp 2>/dev/null | awk '{
            port = $4; sub(/.*:/, "", port); rest = $0; n = 0
            while (match(rest, /pid=[0-9]+/)) {
                print port, substr(rest, RSTART + 4, RLENGTH - 4); n++
                rest = substr(rest, RSTART + RLENGTH)
            }
            if (!n) print port, "?"
        }'
        return 0
    fi
    local -A port_of=()
    local sl addr st inode fd link named=" "
    while read -r sl addr _ st _ _ _ _ _ inode _; do
        [[ $sl != sl && $st == 0A ]] || continue
        port_of[$inode]=$((16#${addr##*:}))
    done < <(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null)
    while read -r fd link; do
        inode=${link#socket:[}
        inode=${inode%]}
        [[ -n ${port_of[$inode]:-} ]] || continue
        fd=${fd#/proc/}
        printf '%s %s\n' "${port_of[$inode]}" "${fd%%/*}"
        named+="$inode "
    done < <(find /proc/[0-9]*/fd -maxdepth 1 -lname 'socket:\[*' -printf '%h %l\n' 2>/dev/null)
    for inode in "${!port_of[@]}"; do
        [[ $named == *" $inode "* ]] || printf '%s ?\n' "${port_of[$inode]}"
    done
}

# foreign_slurm: one phrase per Slurm daemon port or pid file of ours that another Slurm holds
# (a process not started with our config, or not the one our pid file names); nothing when
# every daemon answering on our ports and named by our pid files is ours.
foreign_slurm() {
    local ports name port pidfile own pid pids first comm
    ports=$(listeners)
    for name in slurmctld slurmd slurmdbd; do
        port=${PORT[$name]}
        pidfile=$SLURM_RUN/$name.pid
        own=$(pid_of "$pidfile")
        read -ra pids <<<"$(awk -v p="$port" '$1 == p { printf "%s ", $2 }' <<<"$ports")"
        if ((${#pids[@]})) && ! { [[ -n $own && " ${pids[*]} " == *" $own "* ]] &&
            alive "$own" "$name" && ours "$name" "$own"; }; then
            # Name the process a person would look for: the daemon, else whatever holds the port.
            first=${pids[0]}
            for pid in "${pids[@]}"; do
                if alive "$pid" "$name"; then
                    first=$pid
                    break
                fi
            done
            comm=$(cat "/proc/$first/comm" 2>/dev/null) || comm=''
            if [[ -z $comm ]]; then
                printf 'port %s (%s) is held by a process this script cannot see\n' "$port" "$name"
            elif [[ $comm == "$name" ]] && ours "$name" "$first"; then
                printf '%s %s holds port %s, but %s names %s\n' "$name" "$(describe "$name" "$first")" \
                    "$port" "$pidfile" "${own:-no process}"
            else
                printf '%s %s holds port %s\n' "$comm" "$(describe "$comm" "$first")" "$port"
            fi
        fi
        if [[ -n $own && " ${pids[*]} " != *" $own "* ]] && alive "$own" "$name" && ! ours "$name" "$own"; then
            printf '%s names %s %s\n' "$pidfile" "$name" "$(describe "$name" "$own")"
        fi
    done
}
