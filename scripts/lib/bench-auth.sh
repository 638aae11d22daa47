#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `auth`: the two costs that bound the auth service.
# - Refresh-token rotation (session lookup, user row, RS256 signature, the
#   rotation Lua script) in rotations/s, next to Redis's own round trips/s
#   (redis-benchmark GET, same run, same concurrency).
# - Login latency at the configured argon2id parameters, next to the raw
#   argon2id hash time at the same parameters (auth-bench hash).
# The load comes from the `auth-bench` binary of the auth crate, because
# each refresh must carry the token the previous one returned.

bench_auth_run() {
    local name=$1 baseline=$2 unit=$3
    shift 3
    local out="$BENCH_TMP/auth-bench-$RANDOM.json"
    log "bench: $name: auth-bench $*"
    "$BENCH_BIN/auth-bench" "$@" >"$out" || die "auth-bench failed for $name"
    local fields
    fields="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["rate"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"], r["errors"], r["connections"])
' "$out")"
    local rate p50 p95 p99 max errors conns
    read -r rate p50 p95 p99 max errors conns <<<"$fields"
    bench_record "$name" "$baseline" "$unit" "$rate" "$p50" "$p95" "$p99" "$max" "$errors" auth-bench null "c=$conns"
}

# Builds and starts only the auth service (the scenario needs nothing else,
# and a sibling service that does not build must not stop it).
bench_start_auth() {
    [[ -n "${BENCH_AUTH_URL:-}" ]] && return 0
    keel_target_dir
    log "building auth (release)"
    cargo build --release -p auth || die "release build of auth failed"
    local port
    port="$(pick_free_port)"
    export_service_env "$BENCH_PG_URL" "$BENCH_REDIS_URL" "$BENCH_AMQP_URL" "bench$$" "$port" "$port"
    export RUST_LOG="${BENCH_RUST_LOG:-warn}"
    # Development keys in the run's scratch folder, not the checkout.
    export KEEL_TOKENS__DEV_KEY_DIR="$BENCH_TMP/keys"
    mkdir -p "$BENCH_TMP/logs"
    "$BENCH_BIN/auth" migrate >"$BENCH_TMP/logs/auth.migrate.log" 2>&1 || die "auth migrate failed"
    start_service release auth "$port" "$BENCH_TMP/logs" "$BENCH_TMP/run"
    BENCH_PID_auth="$(cat "$BENCH_TMP/run/auth.pid")"
    echo "$BENCH_PID_auth" >>"$BENCH_TMP/spawned.pids"
    wait_service_ready auth "$port" 60 "$BENCH_TMP/logs" || die "auth not ready"
    BENCH_AUTH_URL="http://127.0.0.1:$port"
    export BENCH_AUTH_URL BENCH_PID_auth
}

scenario_auth() {
    bench_baseline_redis
    bench_start_auth
    local m=19456 t=2 p=1 c=${BENCH_AUTH_CONNECTIONS:-16}
    bench_auth_run "argon2id hash (m=$m t=$t p=$p)" "" "hashes/s" \
        hash --memory-kib "$m" --iterations "$t" --parallelism "$p" -n 40
    bench_auth_run "auth POST /login" "argon2id hash (m=$m t=$t p=$p)" "logins/s" \
        login --url "$BENCH_AUTH_URL" -c 4 -d "$BENCH_DURATION"
    bench_auth_run "auth POST /refresh (rotation)" "$BENCH_REDIS_BASELINE" "rotations/s" \
        refresh --url "$BENCH_AUTH_URL" -c "$c" -d "$BENCH_DURATION"
}
