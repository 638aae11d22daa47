#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `gateway`: the public edge under load, each figure next to its
# same-run baseline, with the gateway's CPU time per request (on two shared
# cores throughput alone mostly measures contention).
# - Authenticated cached GET /api/v1/orders/{id} and the same route without
#   authentication cost, against bare actix-web: bench_gateway_cached (the
#   edge's part; defined when present).
# - Orders writes and uncached reads against PostgreSQL's own ceiling
#   (pgbench single-row INSERT transactions, same concurrency):
#   bench_gateway_orders, below.
#
# Every request is authenticated with a real access token from the auth
# service (register + login once). The rate limiter stays on, with limits
# raised far above the load, so its Redis round trip is part of the cost.

# Registers and logs in a fresh user; sets BENCH_GATEWAY_TOKEN.
bench_gateway_token() {
    [[ -n "${BENCH_GATEWAY_TOKEN:-}" ]] && return 0
    local email="bench-$$-$RANDOM@example.com" password="bench-Password-$RANDOM-$RANDOM"
    local body="{\"email\":\"$email\",\"password\":\"$password\"}"
    # shellcheck disable=SC2154 # BENCH_GATEWAY_URL is set by bench_start_services
    curl -fsS -o /dev/null -H 'content-type: application/json' -d "$body" \
        "$BENCH_GATEWAY_URL/api/v1/auth/register" || die "bench: cannot register a user through the gateway"
    BENCH_GATEWAY_TOKEN="$(curl -fsS -H 'content-type: application/json' -d "$body" \
        "$BENCH_GATEWAY_URL/api/v1/auth/login" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" ||
        die "bench: cannot log in through the gateway"
    export BENCH_GATEWAY_TOKEN
}

BENCH_GATEWAY_ORDER='{"currency":"EUR","items":[{"sku":"TSHIRT-M","quantity":2,"unit_price_cents":1500},{"sku":"MUG","quantity":1,"unit_price_cents":899}]}'

# Writes: each request creates an order with its lines and its order.created
# outbox row (one transaction, all durability on), plus the limiter's Redis
# script and the cache write-through after commit; the gateway's relay
# publishes the event meanwhile. Also `scripts/bench orders` on its own.
bench_gateway_orders_post() {
    bench_baseline_postgres
    bench_gateway_token
    # shellcheck disable=SC2154 # BENCH_PID_api_gateway is set by bench_start_services
    bench_http "api-gateway POST /api/v1/orders" "$BENCH_PG_BASELINE" "$BENCH_GATEWAY_URL/api/v1/orders" \
        -m POST -H "Authorization: Bearer $BENCH_GATEWAY_TOKEN" -H 'Content-Type: application/json' \
        -b "$BENCH_GATEWAY_ORDER" --warmup 1 --target-pid "$BENCH_PID_api_gateway"
}

bench_gateway_orders() {
    bench_gateway_orders_post
    local auth="Authorization: Bearer $BENCH_GATEWAY_TOKEN"
    local order=$BENCH_GATEWAY_ORDER

    # Replays: the same Idempotency-Key every time, so after the first
    # request each one is a key lookup and a stored response.
    bench_http "api-gateway POST /api/v1/orders (Idempotency-Key replay)" "$BENCH_PG_BASELINE" \
        "$BENCH_GATEWAY_URL/api/v1/orders" \
        -m POST -H "$auth" -H 'Content-Type: application/json' -H "Idempotency-Key: bench-$$" -b "$order" \
        --warmup 1 --target-pid "$BENCH_PID_api_gateway"

    # Uncached reads: listings always go to PostgreSQL (one keyset index
    # range scan; items aggregated in the same query).
    local n
    for n in 1 50; do
        bench_http "api-gateway GET /api/v1/orders?limit=$n (uncached)" "$BENCH_PG_BASELINE" \
            "$BENCH_GATEWAY_URL/api/v1/orders?limit=$n" \
            -H "$auth" --warmup 1 --target-pid "$BENCH_PID_api_gateway"
    done
}

scenario_gateway() {
    # Far above the load (a million per second per class), so 429s never
    # end a measurement; the limiter still runs. The limiter needs at least
    # 1 µs per request, hence the one-second period. Only effective if this
    # scenario starts the services.
    local class
    for class in READ WRITE AUTH WEBHOOKS; do
        export "KEEL_RATE_LIMIT__CLASSES__${class}__LIMIT=1000000"
        export "KEEL_RATE_LIMIT__CLASSES__${class}__PERIOD=1s"
    done
    # Development signing keys in the run's scratch folder, not the checkout.
    export KEEL_TOKENS__DEV_KEY_DIR="${KEEL_TOKENS__DEV_KEY_DIR:-$BENCH_TMP/keys}"
    bench_baseline_http
    bench_start_services
    if declare -F bench_gateway_cached >/dev/null; then
        bench_gateway_cached
    fi
    bench_gateway_orders
}
