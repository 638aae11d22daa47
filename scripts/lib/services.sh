#!/usr/bin/env bash
# shellcheck shell=bash
#
# The four Keel services as background processes: build, migrate, start,
# wait for /readyz, stop. Shared by scripts/up, scripts/test (stack check) and
# scripts/bench. Requires scripts/lib/servers.sh (log, die, wait_http_ok).
#
# Functions:
#   keel_target_dir                         export CARGO_TARGET_DIR (shared cache)
#   build_services PROFILE                  PROFILE = release | debug
#   service_bin PROFILE NAME                print the binary path
#   export_service_env PG_URL REDIS_URL AMQP_URL NAMESPACE AUTH_PORT ANALYTICS_PORT [MGMT_URL]
#   migrate_services PROFILE LOGDIR         `<bin> migrate` for each service
#   start_service PROFILE NAME PORT LOGDIR RUNDIR      background, pidfile RUNDIR/NAME.pid
#   wait_service_ready NAME PORT TIMEOUT_S LOGDIR      /readyz 200, log tail on failure
#   stop_services RUNDIR                    SIGTERM every RUNDIR/*.pid, wait, then KILL

if [[ -n "${KEEL_SERVICES_SH_LOADED:-}" ]]; then return 0; fi
KEEL_SERVICES_SH_LOADED=1

# Binary names, in start order (upstreams before the gateway).
KEEL_SERVICES=(auth analytics worker api-gateway)

keel_target_dir() {
    # Outside the clone so CI and every checkout reuse one warm cache.
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/keel/target}"
}

build_services() {
    local profile=$1 flags=()
    [[ "$profile" == release ]] && flags+=(--release)
    keel_target_dir
    log "building services ($profile)"
    cargo build "${flags[@]}" -p api-gateway -p auth -p worker -p analytics
}

service_bin() {
    local profile=$1 name=$2
    echo "$CARGO_TARGET_DIR/$profile/$name"
}

# Exports the configuration every service reads (KEEL_*; `__` nests).
# Secrets and bootstrap settings (KEEL_BOOTSTRAP_ADMIN_*, KEEL_WEBHOOK_SECRET_*)
# are inherited from the caller's environment when set. MGMT_URL is the
# RabbitMQ management API (with credentials) the gateway's
# GET /api/v1/admin/queues reads.
export_service_env() {
    local pg_url=$1 redis_url=$2 amqp_url=$3 namespace=$4 auth_port=$5 analytics_port=$6 mgmt_url=${7:-}
    export KEEL_DATABASE__URL="$pg_url"
    export KEEL_REDIS__URL="$redis_url"
    export KEEL_AMQP__URL="$amqp_url"
    export KEEL_AMQP__NAMESPACE="$namespace"
    # Redis keys under the same name: runs sharing one Redis server (the
    # stack check and the rollout in scripts/test) must not share login
    # throttles, rate limits or sessions.
    export KEEL_REDIS__KEY_PREFIX="$namespace:"
    if [[ -n "$mgmt_url" ]]; then export KEEL_AMQP_MANAGEMENT__URL="$mgmt_url"; fi
    export KEEL_HTTP__HOST="${KEEL_HTTP__HOST:-127.0.0.1}"
    export KEEL_UPSTREAMS__AUTH_URL="http://127.0.0.1:$auth_port"
    export KEEL_UPSTREAMS__ANALYTICS_URL="http://127.0.0.1:$analytics_port"
    # analytics verifies bearer tokens itself, against auth's JWK Set.
    export KEEL_AUTHN__JWKS_URL="http://127.0.0.1:$auth_port/.well-known/jwks.json"
    export KEEL_TELEMETRY__FORMAT="${KEEL_TELEMETRY__FORMAT:-json}"
    export KEEL_ENVIRONMENT="${KEEL_ENVIRONMENT:-development}"
    local v
    for v in KEEL_BOOTSTRAP_ADMIN_EMAIL KEEL_BOOTSTRAP_ADMIN_PASSWORD \
        KEEL_WEBHOOK_SECRET_SHOPIFY KEEL_WEBHOOK_SECRET_GITHUB \
        KEEL_WEBHOOK_SECRET_STRIPE KEEL_WEBHOOK_SECRET_STANDARD \
        KEEL_TELEMETRY__OTLP_ENDPOINT KEEL_CONFIG_FILE; do
        if [[ -n "${!v:-}" ]]; then export "${v?}"; fi
    done
}

migrate_services() {
    local profile=$1 logdir=$2 name
    mkdir -p "$logdir"
    for name in "${KEEL_SERVICES[@]}"; do
        log "$name: migrate"
        if ! "$(service_bin "$profile" "$name")" migrate >"$logdir/$name.migrate.log" 2>&1; then
            tail -n 30 "$logdir/$name.migrate.log" >&2
            die "$name migrate failed (log: $logdir/$name.migrate.log)"
        fi
    done
}

start_service() {
    local profile=$1 name=$2 port=$3 logdir=$4 rundir=$5 bin
    bin="$(service_bin "$profile" "$name")"
    [[ -x "$bin" ]] || die "$bin not found; build it first"
    mkdir -p "$logdir" "$rundir"
    # The port is per process, so it is set for this command only.
    KEEL_HTTP__PORT="$port" "$bin" serve </dev/null >>"$logdir/$name.log" 2>&1 &
    echo $! >"$rundir/$name.pid"
    log "$name: started (pid $!, http://127.0.0.1:$port, log $logdir/$name.log)"
}

wait_service_ready() {
    local name=$1 port=$2 timeout=$3 logdir=$4
    if ! wait_http_ok "http://127.0.0.1:$port/readyz" "$timeout"; then
        log "$name is not ready on port $port; /readyz says:"
        curl -sS --max-time 2 "http://127.0.0.1:$port/readyz" >&2 || true
        echo >&2
        log "last lines of $logdir/$name.log:"
        tail -n 30 "$logdir/$name.log" >&2 || true
        return 1
    fi
}

stop_services() {
    local rundir=$1 f pid pids=()
    [[ -d "$rundir" ]] || return 0
    for f in "$rundir"/*.pid; do
        [[ -e "$f" ]] || continue
        [[ "$(basename "$f")" == servers.pid ]] && continue
        pid="$(cat "$f" 2>/dev/null || true)"
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            log "$(basename "$f" .pid): SIGTERM (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
        rm -f "$f"
    done
    # Graceful shutdown drains in-flight requests; give it 15 s, then KILL.
    local i
    for ((i = 0; i < 150; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
        ((alive)) || return 0
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        if pid_alive "$pid"; then
            log "pid $pid ignored SIGTERM for 15 s, killing"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}
