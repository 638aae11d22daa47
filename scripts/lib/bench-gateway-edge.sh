#!/usr/bin/env bash
# shellcheck shell=bash
#
# The edge's part of scenario `gateway` (scripts/lib/bench-gateway.sh calls
# bench_gateway_cached): authenticated cached GET /api/v1/orders/{id}
# against bare actix-web, the same at half that rate for its latency, and
# the cost of authentication itself: the same route on a second gateway
# that identifies the caller by a trusted-proxy header instead of a JWT;
# and the rate limiter's cost (a third gateway with it off).

# The last measured rate (req/s) of NAME in this run.
bench_rate_of() {
    python3 - "$BENCH_TMP/results.jsonl" "$1" <<'PY'
import json, sys
path, name = sys.argv[1:]
rate = 0
for line in open(path):
    row = json.loads(line)
    if row["name"] == name:
        rate = row["rate"]
print(int(rate))
PY
}

# The trusted-proxy gateway believes X-Email only with this shared secret.
BENCH_PROXY_SECRET="bench-proxy-secret-of-at-least-32-characters"

# POSTs one order with the given header (and optional extra header); prints its id.
bench_create_order() {
    local header=$1 url=$2 extra=${3:-X-Bench: 1}
    curl -fsS -H "$header" -H "$extra" -H 'content-type: application/json' \
        -d '{"currency":"EUR","items":[{"sku":"BENCH-1","quantity":1,"unit_price_cents":1000}]}' \
        "$url/api/v1/orders" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# A second gateway on PORT that trusts X-Email from loopback (the caller is
# then known without any token work).
bench_start_trusted_gateway() {
    local port=$1 config="$BENCH_TMP/gateway-trusted-proxy.toml"
    cat >"$config" <<'TOML'
[authn.trusted_proxy]
enabled = true
proxies = ["127.0.0.1/32"]
TOML
    printf 'secret = "%s"\n' "$BENCH_PROXY_SECRET" >>"$config"
    KEEL_CONFIG_FILE="$config" KEEL_HTTP__PORT="$port" \
        bench_spawn "$BENCH_TMP/logs/api-gateway-trusted.log" "$(service_bin release api-gateway)"
    BENCH_PID_gateway_trusted=$BENCH_LAST_PID
    wait_http_ok "http://127.0.0.1:$port/readyz" 60 || die "the trusted-proxy gateway did not become ready"
}

bench_gateway_cached() {
    bench_gateway_token
    local auth="Authorization: Bearer $BENCH_GATEWAY_TOKEN"
    local id name rate
    id="$(bench_create_order "$auth" "$BENCH_GATEWAY_URL")" || die "bench: cannot create an order"

    # Closed loop: as fast as the gateway answers (JWT from the verified-
    # token cache, rate limiter script in Redis, order from the in-process
    # cache, ETag).
    name="api-gateway GET /api/v1/orders/{id} (Bearer, cached)"
    # shellcheck disable=SC2154 # BENCH_PID_api_gateway is set by bench_start_services
    bench_http "$name" "$BENCH_HTTP_BASELINE" "$BENCH_GATEWAY_URL/api/v1/orders/$id" \
        -H "$auth" --warmup 1 --target-pid "$BENCH_PID_api_gateway"

    # Open loop at half that rate: the latency a client sees when the
    # gateway is busy but not saturated.
    # Bare actix-web at the same rate is the control: the tail this machine
    # gives any server at that rate (the 2 cores are shared with the load
    # generator, Redis and whatever else runs).
    rate="$(bench_rate_of "$name")"
    if ((rate > 1)); then
        local half=$((rate / 2)) bare_port bare_pid
        bare_port="$(pick_free_port)"
        bench_spawn "$BENCH_TMP/bare-actix-rate.log" "$BENCH_BIN/bare-actix" --port "$bare_port" --workers 2
        bare_pid=$BENCH_LAST_PID
        wait_http_ok "http://127.0.0.1:$bare_port/" 10 || die "bare-actix did not start"
        bench_http "bare-actix GET / (at $half req/s)" "" "http://127.0.0.1:$bare_port/" \
            --rate "$half" --warmup 1 --target-pid "$bare_pid"
        bench_kill "$bare_pid"
        bench_http "api-gateway GET /api/v1/orders/{id} (Bearer, cached, at $half req/s)" \
            "bare-actix GET / (at $half req/s)" "$BENCH_GATEWAY_URL/api/v1/orders/$id" \
            -H "$auth" --rate "$half" --warmup 1 --target-pid "$BENCH_PID_api_gateway"
    fi

    # The same route without token verification: a gateway that takes the
    # caller from a trusted-proxy header. The ratio Bearer / trusted-proxy
    # is what authentication costs per request.
    local port trusted_url who="X-Email: bench-$$@example.com" tid
    port="$(pick_free_port)"
    bench_start_trusted_gateway "$port"
    trusted_url="http://127.0.0.1:$port"
    tid="$(bench_create_order "$who" "$trusted_url" "X-Keel-Proxy-Secret: $BENCH_PROXY_SECRET")" || die "bench: cannot create an order via the trusted proxy"
    # shellcheck disable=SC2154 # set by bench_start_trusted_gateway
    bench_http "api-gateway GET /api/v1/orders/{id} (trusted-proxy header, cached)" "$BENCH_HTTP_BASELINE" \
        "$trusted_url/api/v1/orders/$tid" -H "$who" -H "X-Keel-Proxy-Secret: $BENCH_PROXY_SECRET" --warmup 1 --target-pid "$BENCH_PID_gateway_trusted"
    # Bearer again, now that both gateways are warm and share the cores the
    # same way, so the pair is measured under the same conditions.
    bench_http "api-gateway GET /api/v1/orders/{id} (Bearer, cached, 2nd gateway up)" \
        "api-gateway GET /api/v1/orders/{id} (trusted-proxy header, cached)" \
        "$BENCH_GATEWAY_URL/api/v1/orders/$id" -H "$auth" --warmup 1 --target-pid "$BENCH_PID_api_gateway"
    bench_kill "$BENCH_PID_gateway_trusted"

    # What the rate limiter costs: the same Bearer read on a gateway with
    # the limiter off.
    port="$(pick_free_port)"
    KEEL_RATE_LIMIT__ENABLED=false KEEL_HTTP__PORT="$port" \
        bench_spawn "$BENCH_TMP/logs/api-gateway-no-limiter.log" "$(service_bin release api-gateway)"
    local unlimited_pid=$BENCH_LAST_PID
    wait_http_ok "http://127.0.0.1:$port/readyz" 60 || die "the limiter-off gateway did not become ready"
    bench_http "api-gateway GET /api/v1/orders/{id} (Bearer, cached, rate limiter off)" \
        "api-gateway GET /api/v1/orders/{id} (Bearer, cached)" \
        "http://127.0.0.1:$port/api/v1/orders/$id" -H "$auth" --warmup 1 --target-pid "$unlimited_pid"
    bench_kill "$unlimited_pid"
}
