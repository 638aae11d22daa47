#!/usr/bin/env bash
# shellcheck shell=bash
#
# Backing servers for Keel: PostgreSQL, Redis and RabbitMQ, run as plain
# processes on loopback under one folder (no Docker, no systemd).
# Sourced by scripts/up, scripts/test and scripts/bench; every function takes
# the folder and ports as arguments so a development stack and a throwaway test
# stack can run side by side.
#
# Layout under FOLDER:
#   postgres/data   PGDATA (owned by postgres)      postgres/sock  unix socket dir
#   postgres/log    server log
#   redis/          AOF + pidfile + log
#   rabbitmq/       mnesia/, log/, home/ (Erlang cookie), rabbitmq.conf,
#                   enabled_plugins, rabbit.pid — all owned by rabbitmq
#
# Functions (arguments in order):
#   log MSG... / die MSG...                   messages on stderr
#   install_missing_packages                  apt-get only what is missing
#   require_cargo                             fail clearly without cargo
#   pick_free_port                            print a free loopback TCP port
#   pick_free_ports N                         print N distinct free ports
#   pid_alive PID                             running and not a zombie
#   port_open PORT                            is 127.0.0.1:PORT accepting?
#   wait_port PORT TIMEOUT_S NAME             wait until PORT accepts
#   wait_http_ok URL TIMEOUT_S                wait until URL answers 2xx
#   check_reachable_by USER DIR               every parent of DIR traversable by USER
#   keel_data_dir ROOT                        the data folder of up/down (see below)
#   start_postgres FOLDER PORT                initdb if needed, start, create db keel
#   wait_postgres FOLDER PORT TIMEOUT_S
#   stop_postgres FOLDER
#   postgres_running FOLDER
#   start_redis FOLDER PORT
#   wait_redis PORT TIMEOUT_S
#   stop_redis FOLDER PORT
#   redis_running FOLDER PORT
#   start_rabbitmq FOLDER NODE AMQP_PORT DIST_PORT MGMT_PORT PROM_PORT   (returns at once)
#   wait_rabbitmq FOLDER NODE AMQP_PORT MGMT_PORT TIMEOUT_S
#   stop_rabbitmq FOLDER NODE
#   rabbitmq_running FOLDER
#   start_servers FOLDER PG_PORT REDIS_PORT NODE AMQP_PORT DIST_PORT MGMT_PORT PROM_PORT
#   stop_servers FOLDER REDIS_PORT NODE
# Set KEEL_SKIP_POSTGRES / KEEL_SKIP_REDIS / KEEL_SKIP_RABBITMQ=1 to make
# start_servers/stop_servers leave that server alone (an external one is used).

# Guard against double sourcing.
if [[ -n "${KEEL_SERVERS_SH_LOADED:-}" ]]; then return 0; fi
KEEL_SERVERS_SH_LOADED=1

log() { printf '[keel %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '[keel] ERROR: %s\n' "$*" >&2
    exit 1
}

# True when PID runs; a zombie (exited, not yet reaped by its parent) is not
# running, though `kill -0` still succeeds on it.
pid_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)"
    [[ -n "$state" && "$state" != Z ]]
}

# ---------------------------------------------------------------- packages --

# The PostgreSQL server binaries (initdb, pg_ctl, postgres, pgbench) are not on
# PATH on Debian; find the newest installed version's bin directory.
pg_bindir() {
    local d
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    for d in $(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r); do
        if [[ -x "$d/pg_ctl" ]]; then
            echo "$d"
            return 0
        fi
    done
    if command -v pg_config >/dev/null 2>&1; then
        d="$(pg_config --bindir)"
        [[ -x "$d/pg_ctl" ]] && echo "$d" && return 0
    fi
    return 1
}

# Installs only the missing system packages, with a single apt-get update.
install_missing_packages() {
    local missing=()
    pg_bindir >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    command -v python3 >/dev/null 2>&1 || missing+=(python3)
    # The commands of docs/getting-started.md read JSON and sign webhooks.
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # The rollout check (scripts/lib/rollout.sh) balances over nginx.
    [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    if ((${#missing[@]} == 0)); then return 0; fi
    [[ "$(id -u)" == 0 ]] || die "missing packages (${missing[*]}); run as root or install them yourself"
    command -v apt-get >/dev/null 2>&1 || die "missing packages (${missing[*]}) and no apt-get to install them"
    log "installing ${missing[*]} (apt-get)"
    # Package post-install scripts try to start the services; there is no
    # init system here, so tell invoke-rc.d not to (we start them ourselves).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    ((created_policy)) && rm -f "$policy"
    pg_bindir >/dev/null || die "PostgreSQL installed but no pg_ctl found under /usr/lib/postgresql"
}

require_cargo() {
    command -v cargo >/dev/null 2>&1 ||
        die "cargo not found: install Rust with rustup (https://rustup.rs) and make sure ~/.cargo/bin is on PATH"
}

# ------------------------------------------------------------------ ports --

# Prints a currently free TCP port on 127.0.0.1 (the kernel picks it).
# Race-prone by nature, but the window is short and the port range is large.
pick_free_port() {
    pick_free_ports 1
}

# Prints N distinct free ports on one line: all sockets are held open until
# every port is picked, so the kernel cannot hand out the same one twice.
pick_free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() {
    local port=$1 timeout=$2 name=$3 waited=0
    until port_open "$port"; do
        ((waited >= timeout * 10)) && {
            log "$name: port $port still closed after ${timeout}s"
            return 1
        }
        sleep 0.1
        waited=$((waited + 1))
    done
}

wait_http_ok() {
    local url=$1 timeout=$2 deadline=$((SECONDS + $2))
    until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
        ((SECONDS >= deadline)) && {
            log "$url: no 2xx after ${timeout}s"
            return 1
        }
        sleep 0.2
    done
}

# ------------------------------------------------------------ permissions --

# PostgreSQL and RabbitMQ run as their own users, which must be able to walk
# down to their folders. A checkout under /root (mode 700) is not walkable.

# Prints the first folder on the way down to DIR that USER cannot enter, or
# nothing when USER reaches DIR.
first_blocking_folder() {
    local user=$1 dir=$2 p="" part
    local -a parts
    IFS=/ read -r -a parts <<<"$(readlink -m "$dir")"
    for part in "${parts[@]}"; do
        [[ -n "$part" ]] || continue
        p="$p/$part"
        # A folder not created yet is judged by its parent, already walked.
        [[ -e "$p" ]] || return 0
        if ! runuser -u "$user" -- test -x "$p" 2>/dev/null; then
            printf '%s\n' "$p"
            return 0
        fi
    done
}

check_reachable_by() {
    local user=$1 dir=$2 blocked
    blocked="$(first_blocking_folder "$user" "$dir")"
    [[ -z "$blocked" ]] ||
        die "user '$user' cannot enter $blocked (needed to reach $dir). Put the data folder elsewhere (e.g. KEEL_DATA_DIR=/var/tmp/keel scripts/up) or allow traversal with 'chmod o+x $blocked'."
}

# Prints the data folder of `up` and `down`: KEEL_DATA_DIR when set, else
# ROOT/.keel. When the servers' users cannot walk down to ROOT (a checkout in
# root's mode-700 home), the data lives in a folder of this checkout's own
# under /var/tmp instead and ROOT/.keel is a link to it, so logs and pidfiles
# are still found at .keel/ and a second checkout never shares the servers.
# The folder printed is the real one: the servers' users could not follow a
# link that sits inside the unwalkable checkout.
keel_data_dir() {
    local root=$1
    if [[ -n "${KEEL_DATA_DIR:-}" ]]; then
        printf '%s\n' "$KEEL_DATA_DIR"
        return 0
    fi
    local here="$root/.keel"
    if [[ -L "$here" ]]; then
        readlink -f "$here"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        printf '%s\n' "$here"
        return 0
    fi
    local user blocked=""
    for user in postgres rabbitmq; do
        id -u "$user" >/dev/null 2>&1 || continue
        blocked="$(first_blocking_folder "$user" "$here")"
        [[ -z "$blocked" ]] || break
    done
    if [[ -z "$blocked" ]]; then
        printf '%s\n' "$here"
        return 0
    fi
    local elsewhere
    elsewhere="/var/tmp/keel-$(printf '%s' "$root" | sha256sum | cut -c1-12)"
    if [[ -d "$here" ]]; then
        # A folder left by an earlier run that could not start the servers.
        [[ ! -e "$elsewhere" ]] || die "both $here and $elsewhere exist; remove one (or set KEEL_DATA_DIR)"
        mv "$here" "$elsewhere"
    fi
    mkdir -p "$elsewhere"
    chmod 755 "$elsewhere"
    ln -s "$elsewhere" "$here"
    log "user '$user' cannot enter $blocked, so the data folder is $elsewhere (linked from $here)"
    printf '%s\n' "$elsewhere"
}

# Runs a PostgreSQL tool as the postgres user from /, so that a working
# directory it cannot enter (a checkout in root's home) draws no warning.
as_postgres() {
    (cd / && runuser -u postgres -- "$@")
}

# Creates DIR owned by USER (mode 700), parents included.
make_owned_dir() {
    local user=$1 dir=$2
    mkdir -p "$dir"
    chown "$user:" "$dir"
    chmod 700 "$dir"
}

# --------------------------------------------------------------- postgres --

postgres_running() {
    local folder=$1 bindir
    bindir="$(pg_bindir)" || return 1
    [[ -f "$folder/postgres/data/postmaster.pid" ]] &&
        as_postgres "$bindir/pg_ctl" -D "$folder/postgres/data" status >/dev/null 2>&1
}

start_postgres() {
    local folder=$1 port=$2 bindir data sock
    bindir="$(pg_bindir)" || die "PostgreSQL is not installed"
    data="$folder/postgres/data"
    sock="$folder/postgres/sock"
    # Unix socket paths are limited to 107 bytes.
    ((${#sock} + 20 < 107)) || die "socket path $sock is too long for a unix socket; use a shorter data folder"
    mkdir -p "$folder/postgres"
    chown postgres: "$folder/postgres"
    chmod 700 "$folder/postgres"
    check_reachable_by postgres "$folder/postgres"
    make_owned_dir postgres "$sock"
    if postgres_running "$folder"; then
        log "postgres: already running ($data)"
    else
        if [[ ! -f "$data/PG_VERSION" ]]; then
            make_owned_dir postgres "$data"
            log "postgres: initdb $data"
            as_postgres "$bindir/initdb" -D "$data" -U keel --auth=trust \
                --encoding=UTF8 --locale=C.UTF-8 >"$folder/postgres/initdb.log" 2>&1 ||
                {
                    tail -n 20 "$folder/postgres/initdb.log" >&2
                    die "initdb failed"
                }
        fi
        log "postgres: starting on 127.0.0.1:$port"
        # -w waits until it accepts connections; listen on loopback only.
        as_postgres "$bindir/pg_ctl" -D "$data" -l "$folder/postgres/log" -w -t 60 \
            -o "-p $port -k $sock -c listen_addresses=127.0.0.1" start >/dev/null ||
            {
                tail -n 20 "$folder/postgres/log" >&2
                die "postgres failed to start (log: $folder/postgres/log)"
            }
    fi
    wait_postgres "$folder" "$port" 30 || die "postgres not ready on port $port"
    ensure_keel_database "$port"
}

wait_postgres() {
    local folder=$1 port=$2 timeout=$3 bindir deadline=$((SECONDS + $3))
    bindir="$(pg_bindir)" || return 1
    until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.2
    done
}

ensure_keel_database() {
    local port=$1 bindir exists
    bindir="$(pg_bindir)"
    exists="$("$bindir/psql" -h 127.0.0.1 -p "$port" -U keel -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'keel'")"
    if [[ "$exists" != 1 ]]; then
        log "postgres: creating database keel"
        "$bindir/psql" -q -h 127.0.0.1 -p "$port" -U keel -d postgres -c "CREATE DATABASE keel" >/dev/null
    fi
}

stop_postgres() {
    local folder=$1 bindir
    bindir="$(pg_bindir)" || return 0
    if postgres_running "$folder"; then
        log "postgres: stopping"
        # fast = disconnect clients, then a clean shutdown checkpoint.
        as_postgres "$bindir/pg_ctl" -D "$folder/postgres/data" -m fast -w -t 60 stop >/dev/null
    fi
}

# ------------------------------------------------------------------ redis --

redis_running() {
    local folder=$1 port=$2 pid
    [[ -f "$folder/redis/redis.pid" ]] || return 1
    pid="$(cat "$folder/redis/redis.pid" 2>/dev/null)" || return 1
    pid_alive "$pid" && redis-cli -p "$port" ping >/dev/null 2>&1
}

start_redis() {
    local folder=$1 port=$2
    mkdir -p "$folder/redis"
    if redis_running "$folder" "$port"; then
        log "redis: already running on 127.0.0.1:$port"
        return 0
    fi
    log "redis: starting on 127.0.0.1:$port"
    # AOF only (no RDB snapshots): data survives a restart of `up`.
    redis-server --port "$port" --bind 127.0.0.1 --dir "$folder/redis" \
        --appendonly yes --save "" --daemonize yes \
        --pidfile "$folder/redis/redis.pid" --logfile "$folder/redis/redis.log" ||
        die "redis failed to start (log: $folder/redis/redis.log)"
}

wait_redis() {
    local port=$1 timeout=$2 deadline=$((SECONDS + $2))
    until [[ "$(redis-cli -p "$port" ping 2>/dev/null)" == PONG ]]; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.1
    done
}

stop_redis() {
    local folder=$1 port=$2 pid=""
    [[ -f "$folder/redis/redis.pid" ]] && pid="$(cat "$folder/redis/redis.pid" 2>/dev/null || true)"
    [[ -n "$pid" ]] && pid_alive "$pid" || return 0
    log "redis: stopping"
    # SHUTDOWN flushes the AOF; fall back to SIGTERM (also a clean shutdown).
    redis-cli -p "$port" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# --------------------------------------------------------------- rabbitmq --

# Runs a RabbitMQ CLI tool as the rabbitmq user with this node's environment.
# The Debian wrappers in /usr/sbin reset HOME (so the Erlang cookie would not
# match ours), hence the direct call into /usr/lib/rabbitmq/bin.
rabbitmq_env() {
    local folder=$1
    shift
    local r="$folder/rabbitmq"
    (cd "$r" && runuser -u rabbitmq -- env \
        HOME="$r/home" \
        RABBITMQ_CONFIG_FILE="$r/rabbitmq" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$r/mnesia" \
        RABBITMQ_LOG_BASE="$r/log" \
        RABBITMQ_PID_FILE="$r/rabbit.pid" \
        "$@")
}

rabbitmq_running() {
    local folder=$1 pid
    [[ -f "$folder/rabbitmq/rabbit.pid" ]] || return 1
    pid="$(cat "$folder/rabbitmq/rabbit.pid" 2>/dev/null)" || return 1
    # After a reboot the pidfile may name an unrelated process.
    [[ -n "$pid" ]] && pid_alive "$pid" && grep -q beam "/proc/$pid/cmdline" 2>/dev/null
}

# Launches the broker in the background and returns at once (it needs ~7 s to
# boot; call wait_rabbitmq). Safe to call again after stop_rabbitmq.
start_rabbitmq() {
    local folder=$1 node=$2 amqp_port=$3 dist_port=$4 mgmt_port=$5 prom_port=$6
    local r="$folder/rabbitmq"
    mkdir -p "$r"
    chown rabbitmq: "$r"
    chmod 700 "$r"
    check_reachable_by rabbitmq "$r"
    local d
    for d in mnesia log home; do make_owned_dir rabbitmq "$r/$d"; done
    if rabbitmq_running "$folder"; then
        log "rabbitmq: already running ($node, amqp 127.0.0.1:$amqp_port)"
        return 0
    fi
    # Loopback only, and distinct management/prometheus ports so a dev broker
    # and a test broker never collide. guest/guest may connect from loopback.
    cat >"$r/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp_port
management.tcp.port = $mgmt_port
management.tcp.ip = 127.0.0.1
prometheus.tcp.port = $prom_port
prometheus.tcp.ip = 127.0.0.1
log.console = false
log.file.level = info
EOF
    echo '[rabbitmq_management,rabbitmq_prometheus].' >"$r/enabled_plugins"
    chown rabbitmq: "$r/rabbitmq.conf" "$r/enabled_plugins"
    rm -f "$r/rabbit.pid"
    log "rabbitmq: starting $node on 127.0.0.1:$amqp_port (management $mgmt_port)"
    # setsid: the broker must not get the terminal's Ctrl-C directly; our trap
    # stops it in order, after the services.
    rabbitmq_env "$folder" \
        RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$dist_port" \
        setsid /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >"$r/stdout.log" 2>&1 &
    disown 2>/dev/null || true
}

wait_rabbitmq() {
    local folder=$1 node=$2 amqp_port=$3 mgmt_port=$4 timeout=$5
    local deadline=$((SECONDS + timeout))
    # The AMQP listener opens at the end of boot; the management listener is
    # what tests use to inspect queues, so wait for both.
    until port_open "$amqp_port" && port_open "$mgmt_port"; do
        if ((SECONDS >= deadline)); then
            log "rabbitmq ($node) not ready after ${timeout}s; last log lines:"
            tail -n 20 "$folder/rabbitmq/stdout.log" "$folder/rabbitmq/log/"*.log 2>/dev/null >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

stop_rabbitmq() {
    local folder=$1 node=$2 pid
    rabbitmq_running "$folder" || return 0
    pid="$(cat "$folder/rabbitmq/rabbit.pid")"
    log "rabbitmq: stopping $node"
    # With the pid file, `stop` also waits for the OS process to exit.
    rabbitmq_env "$folder" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$node" stop \
        "$folder/rabbitmq/rabbit.pid" >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 200; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    log "rabbitmq: $node did not stop in 20 s, killing"
    kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- all three --

# Starts the three servers; RabbitMQ is launched first because it is the slow
# one, and PostgreSQL and Redis start while it boots.
start_servers() {
    local folder=$1 pg_port=$2 redis_port=$3 node=$4 amqp_port=$5 dist_port=$6 mgmt_port=$7 prom_port=$8
    mkdir -p "$folder"
    [[ "${KEEL_SKIP_RABBITMQ:-0}" == 1 ]] || start_rabbitmq "$folder" "$node" "$amqp_port" "$dist_port" "$mgmt_port" "$prom_port"
    [[ "${KEEL_SKIP_REDIS:-0}" == 1 ]] || start_redis "$folder" "$redis_port"
    [[ "${KEEL_SKIP_POSTGRES:-0}" == 1 ]] || start_postgres "$folder" "$pg_port"
    if [[ "${KEEL_SKIP_REDIS:-0}" != 1 ]]; then
        wait_redis "$redis_port" 20 || die "redis not answering on port $redis_port"
    fi
    if [[ "${KEEL_SKIP_RABBITMQ:-0}" != 1 ]]; then
        wait_rabbitmq "$folder" "$node" "$amqp_port" "$mgmt_port" 90 || die "rabbitmq did not start"
    fi
    log "servers ready"
}

stop_servers() {
    local folder=$1 redis_port=$2 node=$3
    # In parallel: RabbitMQ takes a few seconds to stop.
    local pids=()
    if [[ "${KEEL_SKIP_RABBITMQ:-0}" != 1 ]]; then
        stop_rabbitmq "$folder" "$node" &
        pids+=($!)
    fi
    [[ "${KEEL_SKIP_REDIS:-0}" == 1 ]] || stop_redis "$folder" "$redis_port" || true
    [[ "${KEEL_SKIP_POSTGRES:-0}" == 1 ]] || stop_postgres "$folder" || true
    local p
    for p in "${pids[@]}"; do wait "$p" || true; done
}
