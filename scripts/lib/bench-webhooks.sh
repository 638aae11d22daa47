#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `webhooks`: inbound webhook ingest with all durability on
# (fsync, synchronous_commit: the servers' defaults).
# - Ingest: signed Shopify deliveries (fixed body, so one signature serves
#   them all; a distinct X-Shopify-Event-Id per request, so none takes the
#   duplicate path) through keel-loadgen at BENCH_CONNECTIONS, next to
#   pgbench's single-row INSERT transactions at the same concurrency. Each
#   ingest is one transaction: the event row, the webhook.process job and
#   the webhook.received event (three pipelined INSERTs), then COMMIT.
# - Group commit: commits per WAL flush during each of the two, from
#   pg_stat_database (xact_commit, all databases) and pg_stat_wal
#   (wal_sync) deltas. One flush per commit is 1.0; PostgreSQL flushing
#   several waiting commits at once pushes it up.
# The worker's drain figures belong to the worker (not measured here).

# Cluster-wide `xact_commit wal_sync` now. Statistics reach the shared
# counters asynchronously (at most ~1 s late), hence the pause first.
bench_webhooks_wal_counters() {
    sleep 1.5
    "$(pg_bindir)/psql" -qAt -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel -F ' ' -c \
        "SELECT (SELECT sum(xact_commit) FROM pg_stat_database), wal_sync FROM pg_stat_wal"
}

bench_webhooks_count_events() {
    "$(pg_bindir)/psql" -qAt -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel -c \
        "SELECT count(*) FROM store.webhook_events"
}

# Records "NAME: commits per WAL flush" from two counter snapshots.
bench_webhooks_record_flushes() {
    local name=$1 before=$2 after=$3 rows=${4:-}
    local fields
    fields="$(python3 - "$before" "$after" "$rows" <<'PY'
import sys
(c0, s0), (c1, s1) = (map(int, v.split()) for v in sys.argv[1:3])
commits, syncs = c1 - c0, s1 - s0
rows = sys.argv[3]
note = f"{commits} commits (all databases), {syncs} WAL flushes (wal_sync)"
if rows:
    note += f"; {rows} webhook events stored, {int(rows) / max(syncs, 1):.1f} per flush"
print(f"{commits / max(syncs, 1):.2f}|{note}")
PY
)"
    bench_record "$name: commits per WAL flush" "" "commits/flush" "${fields%%|*}" null null null null 0 \
        pg_stat_wal null "${fields#*|}"
}

scenario_webhooks() {
    local before after

    # pgbench first (its own figures plus its flush ratio), unless an
    # earlier scenario of this run measured it already.
    if ! bench_already_measured "$BENCH_PG_BASELINE"; then
        before="$(bench_webhooks_wal_counters)"
        bench_baseline_postgres
        after="$(bench_webhooks_wal_counters)"
        bench_webhooks_record_flushes "$BENCH_PG_BASELINE" "$before" "$after"
    fi

    bench_start_services
    # The services use KEEL_WEBHOOK_SECRET_SHOPIFY when the caller set it,
    # else the development secret: sign with the same.
    local secret="${KEEL_WEBHOOK_SECRET_SHOPIFY:-keel-development-shopify-secret}"
    local body='{"id":820982911946154508,"email":"jon@example.com","total_price":"199.00","currency":"EUR","line_items":[{"sku":"TSHIRT-M","quantity":2,"price":"99.50"}]}'
    local signature
    signature="$(BODY="$body" SECRET="${secret%%,*}" python3 -c '
import base64, hashlib, hmac, os
print(base64.b64encode(hmac.new(os.environ["SECRET"].encode(), os.environ["BODY"].encode(), hashlib.sha256).digest()).decode())')"

    local events_before events_after
    events_before="$(bench_webhooks_count_events)"
    before="$(bench_webhooks_wal_counters)"
    # shellcheck disable=SC2154 # BENCH_PID_api_gateway is set by bench_start_services
    bench_http "api-gateway POST /webhooks/shopify (signed ingest)" "$BENCH_PG_BASELINE" \
        "$BENCH_GATEWAY_URL/webhooks/shopify" \
        -m POST -H "X-Shopify-Hmac-Sha256: $signature" -H 'X-Shopify-Topic: orders/create' \
        -H 'Content-Type: application/json' --unique-header X-Shopify-Event-Id -b "$body" \
        --warmup 1 --target-pid "$BENCH_PID_api_gateway"
    after="$(bench_webhooks_wal_counters)"
    events_after="$(bench_webhooks_count_events)"
    bench_webhooks_record_flushes "api-gateway POST /webhooks/shopify" "$before" "$after" \
        "$((events_after - events_before))"
}
