#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `webhooks`: inbound webhook ingest with all durability on
# (fsync, synchronous_commit: the servers' defaults).
# - Ingest: signed Shopify deliveries (fixed body, so one signature serves
#   them all; a distinct X-Shopify-Event-Id per request, so none takes the
#   duplicate path) through keel-loadgen at BENCH_CONNECTIONS, next to
#   pgbench's single-row INSERT transactions at the same concurrency. Each
#   delivery is stored with its webhook.process job and webhook.received
#   event before its 200; the gateway's group commit stores the deliveries
#   that arrive while a commit is in flight together, in one statement
#   ([webhooks.group_commit]).
# - Group commit: commits per WAL flush during each of the two, from
#   pg_stat_database (xact_commit, all databases) and pg_stat_wal
#   (wal_sync) deltas. One flush per commit is 1.0; PostgreSQL flushing
#   several waiting commits at once pushes it up.
# - Drain: end-to-end jobs/s of `worker` processes (release build, default
#   [jobs.webhook] prefetch/concurrency) with 1, 2 and 4 processes: a
#   backlog of BENCH_DRAIN_JOBS distinct Shopify orders/create events with
#   their webhook.process jobs committed in the outbox (as capture leaves
#   them), then the workers start; measured from their start until every
#   event of the backlog is `processed` — relay publishing, RabbitMQ, the
#   event lock, the order upsert with its order.created outbox row, and the
#   write-through to the gateway's Redis cache included. No Shopify API is
#   configured (no third-party latency). During ingest the worker is
#   stopped, so ingest is measured alone as before.

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
    # Ingest alone: the drain is measured below, on a backlog of its own.
    # shellcheck disable=SC2154 # set by bench_start_services
    bench_kill "$BENCH_PID_worker"
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
    # BENCH_WEBHOOKS_DRAIN=0: ingest only (the drain takes minutes).
    if [[ "${BENCH_WEBHOOKS_DRAIN:-1}" != 0 ]]; then
        bench_webhooks_drain
    fi
}

bench_webhooks_psql() {
    "$(pg_bindir)/psql" -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel -c "$1"
}

# Commits a backlog of N captured Shopify orders/create events named
# drain-TAG-<n>, each with its webhook.process job in the outbox (the rows
# capture writes), distinct order ids so no two jobs touch one order.
bench_webhooks_seed() {
    local tag=$1 n=$2 base=$3
    bench_webhooks_psql "
        WITH events AS (
            INSERT INTO store.webhook_events (id, source, topic, delivery_id, body, headers)
            SELECT gen_random_uuid(), 'shopify', 'orders/create', 'drain-$tag-' || g,
                   convert_to(json_build_object(
                       'id', $base + g, 'email', 'jon@example.com', 'currency', 'EUR',
                       'total_price', '254.98',
                       'line_items', json_build_array(
                           json_build_object('id', 1, 'sku', 'IPOD2008GREEN', 'quantity', 1, 'price', '199.99'),
                           json_build_object('id', 2, 'sku', 'CASE-01', 'quantity', 2, 'price', '24.99')))::text,
                       'UTF8'),
                   '{}'::jsonb
            FROM generate_series(1, $n) AS g
            RETURNING id
        )
        INSERT INTO store.outbox (id, target, routing_key, message_type, payload, headers)
        SELECT job, 'jobs', 'webhook', 'webhook.process',
               jsonb_build_object('id', job, 'occurred_at', now(), 'version', 1,
                                  'type', 'webhook.process', 'data', jsonb_build_object('event_id', id)),
               '{}'::jsonb
        FROM (SELECT id, gen_random_uuid() AS job FROM events) AS e" >/dev/null
}

# Starts COUNT worker processes on the backlog drain-TAG and records the
# rate at which they emptied it.
bench_webhooks_drain_with() {
    local count=$1 n=$2 baseline=$3 tag="w$1"
    bench_webhooks_seed "$tag" "$n" "$((count * 1000000000))"
    local rundir="$BENCH_TMP/run-drain-$tag" i ports started remaining=1 deadline
    read -r -a ports < <(pick_free_ports "$count")
    started="$(date +%s.%N)"
    for ((i = 0; i < count; i++)); do
        # Each process holds at most ~18 connections (16 jobs, the relay);
        # four fit in PostgreSQL's default 100 with the other services.
        KEEL_DATABASE__MAX_CONNECTIONS=20 start_service release worker "${ports[$i]}" \
            "$BENCH_TMP/logs/drain-$tag-$i" "$rundir/$i"
        # The runner's cleanup stops it too if this scenario dies.
        cat "$rundir/$i/worker.pid" >>"$BENCH_TMP/spawned.pids"
    done
    deadline=$(($(date +%s) + 900))
    while ((remaining > 0)); do
        (($(date +%s) < deadline)) || die "drain with $count workers did not finish in 900 s"
        sleep 0.2
        remaining="$(bench_webhooks_psql \
            "SELECT count(*) FROM store.webhook_events WHERE delivery_id LIKE 'drain-$tag-%' AND status <> 'processed'")"
    done
    local finished load
    finished="$(date +%s.%N)"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    for ((i = 0; i < count; i++)); do stop_services "$rundir/$i"; done
    local span failed
    span="$(bench_webhooks_psql "SELECT extract(epoch FROM max(processed_at) - min(processed_at))
        FROM store.webhook_events WHERE delivery_id LIKE 'drain-$tag-%'")"
    failed="$(bench_webhooks_psql "SELECT count(*) FROM store.webhook_events
        WHERE delivery_id LIKE 'drain-$tag-%' AND attempts <> 1")"
    local fields
    fields="$(python3 - "$n" "$started" "$finished" "$span" "$load" <<'PY'
import sys
n, started, finished, span = int(sys.argv[1]), *map(float, sys.argv[2:5])
wall = finished - started
print(f"{n / wall:.1f}|{n} jobs in {wall:.1f} s from process start (start-up included; "
      f"{n / max(span, 1e-9):,.0f}/s between the first and the last commit); load average {sys.argv[5]} at the end")
PY
)"
    local s
    s=""
    ((count > 1)) && s="es"
    bench_record "worker drain, $count process$s (Shopify orders/create, end to end)" "$baseline" \
        "jobs/s" "${fields%%|*}" null null null null "$failed" "worker" null "${fields#*|}"
}

# Waits until the gateway's relay has published everything the ingest
# wrote (it lags behind a 10 s burst and catches up after), records how
# long that took, then empties the webhook job queue: the drain below
# measures its own backlog, not the ingest's 100,000-odd jobs (which all
# name one Shopify order) ahead of it in the queue.
bench_webhooks_settle() {
    local started left deadline ended
    started="$(date +%s.%N)"
    left="$(bench_webhooks_psql "SELECT count(*) FROM store.outbox WHERE published_at IS NULL")"
    local backlog=$left
    deadline=$(($(date +%s) + 900))
    while ((left > 0)); do
        (($(date +%s) < deadline)) || die "the relay did not publish the ingest backlog in 900 s"
        sleep 0.5
        left="$(bench_webhooks_psql "SELECT count(*) FROM store.outbox WHERE published_at IS NULL")"
    done
    ended="$(date +%s.%N)"
    bench_record "gateway relay: ingest backlog published after the run" "" "rows/s" \
        "$(python3 -c "print($backlog / max($ended - $started, 1e-9))")" null null null null 0 relay null \
        "$backlog outbox rows (job + webhook.received per delivery) unpublished when the ingest ended; all published $(python3 -c "print(round($ended - $started, 1))") s later"
    rabbitmq_env "$BENCH_TMP/servers" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$BENCH_NODE" \
        purge_queue "bench$$.jobs.webhook" >/dev/null ||
        die "cannot purge bench$$.jobs.webhook"
}

bench_webhooks_drain() {
    local n="${BENCH_DRAIN_JOBS:-20000}"
    bench_webhooks_settle
    # The gateway's pool would hold connections the four workers need.
    # shellcheck disable=SC2154 # set by bench_start_services
    bench_kill "$BENCH_PID_api_gateway"
    bench_webhooks_drain_with 1 "$n" "$BENCH_PG_BASELINE"
    local one="worker drain, 1 process (Shopify orders/create, end to end)"
    bench_webhooks_drain_with 2 "$n" "$one"
    bench_webhooks_drain_with 4 "$n" "$one"
}
