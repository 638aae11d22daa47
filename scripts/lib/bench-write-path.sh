#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `write-path` (issue 15): the throughput of everything after
# capture — the worker's drain, order writes, the relay — and end-to-end
# freshness, each next to a baseline measured in the same run. All
# durability on (fsync, synchronous_commit, quorum queues); the four
# services in release as in production: the gateway (with its relay), the
# worker (with its relay), analytics consuming every domain event, auth.
# Rate limits are raised far above the load (the limiter still runs).
#
# Parts, in order (BENCH_WRITE_PATH_PARTS, default all; a part that needs an
# earlier part's figure measures it, or uses the override named below):
#   ingest     webhook ingest with the worker stopped (as the `webhooks`
#              scenario measures it), then the relay publishes its backlog
#              and the job queue is purged
#   drain      a BENCH_DRAIN_JOBS (20,000) backlog of distinct Shopify
#              orders/create events with their jobs, published to RabbitMQ
#              by the gateway's relay before one worker process starts;
#              jobs/s from the worker's start to the last event processed;
#              CPU ms per job of the worker and of PostgreSQL (every process
#              of the server, exited backends included), the gateway, analytics
#              and RabbitMQ, until the relays and analytics have caught up;
#              BENCH_DRAIN_PROCESSES="1 2 4" adds more processes
#   ingest-draining  webhook ingest while that worker drains what it accepts
#   orders     POST /api/v1/orders, Bearer token (also scenario `orders`)
#   burst      BENCH_BURST_SECONDS (60) of ingest at full rate, worker running:
#              the outbox backlog when it stops, in seconds of ingest, the
#              time until it is 0, the relays' rows/s next to bare-publisher
#   freshness  open-loop ingest at half the ingest-draining rate
#              (BENCH_FRESHNESS_RATE overrides) with keel-freshness probes:
#              webhook 200 → GET /api/v1/orders/{id} 200, and
#              POST /api/v1/orders 201 → order.created stored by analytics
#
# Every ingest sends signed Shopify orders/create deliveries naming distinct
# orders (keel-loadgen --unique-body-token, signed per request), so the
# worker's jobs never queue on one order's lock.

BENCH_WP_INGEST_ALONE="webhook ingest, worker stopped"
BENCH_WP_INGEST_DRAINING="webhook ingest while 1 worker drains it"
BENCH_WP_PUBLISHER="bare-publisher (confirmed, quorum queue)"
BENCH_WP_PG_CPU="pgbench INSERT 1 row: PostgreSQL CPU"

bench_wp_psql() {
    "$(pg_bindir)/psql" -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel -c "$1"
}

bench_wp_now() { date +%s.%N; }

# Raised limits, admin and keys: before the services start.
bench_wp_environment() {
    local class
    for class in READ WRITE AUTH WEBHOOKS; do
        export "KEEL_RATE_LIMIT__CLASSES__${class}__LIMIT=1000000"
        export "KEEL_RATE_LIMIT__CLASSES__${class}__PERIOD=1s"
    done
    export KEEL_TOKENS__DEV_KEY_DIR="${KEEL_TOKENS__DEV_KEY_DIR:-$BENCH_TMP/keys}"
}

# pgbench, once per run, with PostgreSQL's CPU per transaction beside it.
bench_wp_pgbench() {
    bench_already_measured "$BENCH_PG_BASELINE" && return 0
    local cpu0 cpu1
    cpu0="$(bench_pg_cpu_ms)"
    bench_baseline_postgres
    cpu1="$(bench_pg_cpu_ms)"
    local txs
    txs="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$BENCH_TMP/pgbench.out")"
    bench_record "$BENCH_WP_PG_CPU" "" "CPU ms/tx" \
        "$(python3 -c "print(($cpu1 - $cpu0) / max(${txs:-0}, 1))")" \
        null null null null 0 "/proc/PID/stat" null \
        "all processes of the PostgreSQL server, exited backends included, over pgbench's run / its transactions"
}

# The rate recorded for NAME in this run.
bench_wp_rate() {
    python3 - "$BENCH_TMP/results.jsonl" "$1" <<'PY'
import json, sys
rate = None
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["name"] == sys.argv[2]:
        rate = r["rate"]
print("" if rate is None else rate)
PY
}

bench_wp_shopify_secret() {
    local secret="${KEEL_WEBHOOK_SECRET_SHOPIFY:-keel-development-shopify-secret}"
    echo "${secret%%,*}"
}

# keel-loadgen arguments for signed deliveries naming distinct orders.
bench_wp_ingest_args() {
    BENCH_WP_ARGS=(-m POST -H 'X-Shopify-Topic: orders/create' -H 'Content-Type: application/json'
        --unique-header X-Shopify-Event-Id --unique-body-token ORDER_ID
        --shopify-secret "$(bench_wp_shopify_secret)"
        -b '{"id":ORDER_ID,"email":"jon@example.com","total_price":"199.00","currency":"EUR","line_items":[{"id":1,"sku":"TSHIRT-M","quantity":2,"price":"99.50"}]}')
}

bench_wp_admin_token() {
    [[ -n "${BENCH_ADMIN_TOKEN:-}" ]] && return 0
    local body
    body="$(EMAIL="$BENCH_ADMIN_EMAIL" PASSWORD="$BENCH_ADMIN_PASSWORD" python3 -c '
import json, os; print(json.dumps({"email": os.environ["EMAIL"], "password": os.environ["PASSWORD"]}))')"
    BENCH_ADMIN_TOKEN="$(curl -fsS -H 'content-type: application/json' -d "$body" \
        "$BENCH_GATEWAY_URL/api/v1/auth/login" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" ||
        die "bench: cannot log in as the bootstrap admin (services started by an earlier scenario without it?)"
}

bench_wp_unpublished() {
    bench_wp_psql "SELECT count(*) FROM store.outbox WHERE published_at IS NULL"
}

# Waits until store.outbox has nothing unpublished; prints the seconds taken.
bench_wp_wait_published() {
    local what=$1 started left deadline
    started="$(bench_wp_now)"
    deadline=$(($(date +%s) + ${BENCH_WP_TIMEOUT:-900}))
    left="$(bench_wp_unpublished)"
    while ((left > 0)); do
        (($(date +%s) < deadline)) || die "$what: the relays left $left rows unpublished"
        sleep 0.2
        left="$(bench_wp_unpublished)"
    done
    python3 -c "print(round($(bench_wp_now) - $started, 2))"
}

bench_wp_purge_jobs() {
    rabbitmq_env "$BENCH_TMP/servers" /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$BENCH_NODE" \
        purge_queue "bench$$.jobs.webhook" >/dev/null || die "cannot purge bench$$.jobs.webhook"
}

# Events received since TIMESTAMP (epoch s) not yet processed.
bench_wp_unprocessed_since() {
    bench_wp_psql "SELECT count(*) FROM store.webhook_events
        WHERE received_at >= to_timestamp($1) AND status = 'received'"
}

bench_wp_worker_stop() {
    if [[ -n "${BENCH_WP_WORKER_DIR:-}" ]]; then
        stop_services "$BENCH_WP_WORKER_DIR"
        BENCH_WP_WORKER_DIR=""
        BENCH_WP_WORKER_PID=""
    fi
    # shellcheck disable=SC2154 # set by bench_start_services
    if [[ -n "${BENCH_PID_worker:-}" ]]; then
        bench_kill "$BENCH_PID_worker"
        BENCH_PID_worker=""
    fi
}

# One worker process for the parts after the drain (started by the drain).
bench_wp_worker_start() {
    [[ -n "${BENCH_WP_WORKER_PID:-}" ]] && pid_alive "$BENCH_WP_WORKER_PID" && return 0
    bench_wp_worker_stop
    local port
    port="$(pick_free_port)"
    BENCH_WP_WORKER_DIR="$BENCH_TMP/run-wp-worker-$RANDOM"
    start_service release worker "$port" "$BENCH_TMP/logs/wp-worker" "$BENCH_WP_WORKER_DIR"
    BENCH_WP_WORKER_PID="$(cat "$BENCH_WP_WORKER_DIR/worker.pid")"
    echo "$BENCH_WP_WORKER_PID" >>"$BENCH_TMP/spawned.pids"
    wait_service_ready worker "$port" 60 "$BENCH_TMP/logs/wp-worker" || die "worker not ready"
}

bench_wp_part_ingest() {
    bench_wp_worker_stop
    bench_wp_ingest_args
    # shellcheck disable=SC2154 # set by bench_start_services
    bench_http "$BENCH_WP_INGEST_ALONE" "$BENCH_PG_BASELINE" "$BENCH_GATEWAY_URL/webhooks/shopify" \
        "${BENCH_WP_ARGS[@]}" --warmup 1 --target-pid "$BENCH_PID_api_gateway"
    local backlog secs
    backlog="$(bench_wp_unpublished)"
    secs="$(bench_wp_wait_published "ingest")"
    bench_record "relays: ingest backlog published after it ended" "$BENCH_WP_PUBLISHER" "rows/s" \
        "$(python3 -c "print($backlog / max($secs, 1e-9))")" null null null null 0 relay null \
        "$backlog outbox rows unpublished when the ingest ended; all published $secs s later (the gateway's relay)"
    # The drain measures its own backlog, not these jobs ahead of it.
    bench_wp_purge_jobs
}

# Seeds a backlog named drain-TAG (bench_webhooks_seed), waits until the
# gateway's relay has published its jobs, then starts COUNT worker processes
# and times them until the backlog is processed.
bench_wp_drain_with() {
    local count=$1 n=$2 tag="wp$1-$RANDOM"
    bench_wp_worker_stop
    bench_webhooks_seed "$tag" "$n" "$((count * 1000000000 + 10000000000))"
    bench_wp_wait_published "drain seed" >/dev/null
    local analytics0 gw0 an0 rmq0 pg0 rundir="$BENCH_TMP/run-wp-drain-$tag" i ports started
    analytics0="$(bench_wp_psql "SELECT count(*) FROM analytics.events WHERE type = 'order.created'")"
    # shellcheck disable=SC2154 # set by bench_start_services
    gw0="$(bench_cpu_ms "$BENCH_PID_api_gateway")"
    # shellcheck disable=SC2154
    an0="$(bench_cpu_ms "$BENCH_PID_analytics")"
    rmq0="$(bench_cpu_ms "$BENCH_NODE")"
    pg0="$(bench_pg_cpu_ms)"
    read -r -a ports < <(pick_free_ports "$count")
    # More processes share PostgreSQL's 100 connections with the services.
    local conns=20
    ((count > 2)) && conns=$((60 / count))
    started="$(bench_wp_now)"
    for ((i = 0; i < count; i++)); do
        KEEL_DATABASE__MAX_CONNECTIONS=$conns start_service release worker "${ports[$i]}" \
            "$BENCH_TMP/logs/wp-drain-$tag-$i" "$rundir/$i"
        cat "$rundir/$i/worker.pid" >>"$BENCH_TMP/spawned.pids"
    done
    local remaining=1 deadline=$(($(date +%s) + 900))
    while ((remaining > 0)); do
        (($(date +%s) < deadline)) || die "drain with $count workers did not finish in 900 s"
        sleep 0.1
        remaining="$(bench_webhooks_psql \
            "SELECT count(*) FROM store.webhook_events WHERE delivery_id LIKE 'drain-$tag-%' AND status <> 'processed'")"
    done
    local finished load
    finished="$(bench_wp_now)"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    # The job's whole cost: until the relays have published its order.created
    # and analytics has stored it.
    bench_wp_wait_published "drain" >/dev/null
    local analytics_left=1 caught_up
    deadline=$(($(date +%s) + 300))
    while ((analytics_left > 0)) && (($(date +%s) < deadline)); do
        analytics_left="$(bench_wp_psql "SELECT $n - (count(*) - $analytics0) FROM analytics.events WHERE type = 'order.created'")"
        ((analytics_left > 0)) && sleep 0.2
    done
    caught_up="$(bench_wp_now)"
    local worker_cpu=0 gw1 an1 rmq1 pg1
    for ((i = 0; i < count; i++)); do
        worker_cpu=$((worker_cpu + $(bench_cpu_ms "$(cat "$rundir/$i/worker.pid")")))
    done
    gw1="$(bench_cpu_ms "$BENCH_PID_api_gateway")"
    an1="$(bench_cpu_ms "$BENCH_PID_analytics")"
    rmq1="$(bench_cpu_ms "$BENCH_NODE")"
    pg1="$(bench_pg_cpu_ms)"
    local failed span
    failed="$(bench_wp_psql "SELECT count(*) FROM store.webhook_events
        WHERE delivery_id LIKE 'drain-$tag-%' AND attempts <> 1")"
    span="$(bench_wp_psql "SELECT extract(epoch FROM max(processed_at) - min(processed_at))
        FROM store.webhook_events WHERE delivery_id LIKE 'drain-$tag-%'")"
    local s="" name
    ((count > 1)) && s="es"
    name="worker drain, $count process$s, 20k distinct orders"
    [[ "$n" == 20000 ]] || name="worker drain, $count process$s, $n distinct orders"
    local rate
    rate="$(python3 -c "print($n / ($finished - $started))")"
    bench_record "$name" "$BENCH_PG_BASELINE" "jobs/s" "$rate" null null null null "$failed" worker \
        "$(python3 -c "print($worker_cpu / $n)")" \
        "$n jobs in $(python3 -c "print(round($finished - $started, 1))") s from process start ($(python3 -c "print(f'{$n / max($span, 1e-9):,.0f}')")/s first→last commit); jobs published to RabbitMQ before the start; gateway, analytics running; $conns DB connections per process; analytics stored all order.created $(python3 -c "print(round($caught_up - $finished, 1))") s after the last job (${analytics_left} missing); CPU ms/op = worker CPU per job; load average $load at the end; errors = events with attempts <> 1"
    local window="from the worker's start until relays and analytics caught up"
    bench_record "$name: PostgreSQL CPU per job" "$BENCH_WP_PG_CPU" "CPU ms/job" \
        "$(python3 -c "print(($pg1 - $pg0) / $n)")" null null null null 0 "/proc/PID/stat" null \
        "every process of the server, exited backends included, $window (worker, relays, analytics, gateway)"
    bench_record "$name: gateway CPU per job" "" "CPU ms/job" "$(python3 -c "print(($gw1 - $gw0) / $n)")" \
        null null null null 0 "/proc/PID/stat" null "the gateway process (its relay publishes part of the outbox), $window"
    bench_record "$name: analytics CPU per job" "" "CPU ms/job" "$(python3 -c "print(($an1 - $an0) / $n)")" \
        null null null null 0 "/proc/PID/stat" null "analytics storing the order.created events, $window"
    bench_record "$name: RabbitMQ CPU per job" "" "CPU ms/job" "$(python3 -c "print(($rmq1 - $rmq0) / $n)")" \
        null null null null 0 "/proc/PID/stat" null "the broker node and its children, $window"
    if ((count == 1)); then
        # Kept for the later parts, as a production worker.
        BENCH_WP_WORKER_DIR="$rundir/0"
        BENCH_WP_WORKER_PID="$(cat "$rundir/0/worker.pid")"
    else
        for ((i = 0; i < count; i++)); do stop_services "$rundir/$i"; done
    fi
}

bench_wp_part_drain() {
    local n="${BENCH_DRAIN_JOBS:-20000}" count processes=(${BENCH_DRAIN_PROCESSES:-1})
    for count in "${processes[@]}"; do
        [[ "$count" == 1 ]] && continue
        bench_wp_drain_with "$count" "$n"
    done
    # One process last: it stays running for the following parts.
    bench_wp_drain_with 1 "$n"
}

bench_wp_part_ingest_draining() {
    bench_wp_worker_start
    local since processed0 processed1 left secs t1
    since="$(bench_wp_now)"
    processed0="$(bench_wp_psql "SELECT count(*) FROM store.webhook_events WHERE status = 'processed'")"
    local cpu0
    cpu0="$(bench_cpu_ms "$BENCH_WP_WORKER_PID")"
    bench_wp_ingest_args
    bench_http "$BENCH_WP_INGEST_DRAINING" "$BENCH_PG_BASELINE" "$BENCH_GATEWAY_URL/webhooks/shopify" \
        "${BENCH_WP_ARGS[@]}" --target-pid "$BENCH_PID_api_gateway"
    t1="$(bench_wp_now)"
    processed1="$(bench_wp_psql "SELECT count(*) FROM store.webhook_events WHERE status = 'processed'")"
    left="$(bench_wp_unprocessed_since "$since")"
    local cpu1
    cpu1="$(bench_cpu_ms "$BENCH_WP_WORKER_PID")"
    local done_during=$((processed1 - processed0))
    bench_record "worker drain during that ingest" "$BENCH_WP_INGEST_DRAINING" "jobs/s" \
        "$(python3 -c "print($done_during / ($t1 - $since))")" null null null null 0 worker \
        "$(python3 -c "print(($cpu1 - $cpu0) / max($done_during, 1))")" \
        "$done_during events processed during the ingest; $left accepted but not processed when it ended"
    # Leave nothing behind for the next part; how long it takes is a figure.
    local deadline=$(($(date +%s) + 900)) start
    start="$(bench_wp_now)"
    while ((left > 0)); do
        (($(date +%s) < deadline)) || die "the worker did not catch up with the ingest in 900 s"
        sleep 0.5
        left="$(bench_wp_unprocessed_since "$since")"
    done
    secs="$(python3 -c "print(round($(bench_wp_now) - $start, 1))")"
    bench_wp_wait_published "ingest-draining" >/dev/null
    log "bench: the worker caught up with the ingest $secs s after it ended"
    bench_record "ingest backlog processed after the ingest ended" "" "s" "$secs" null null null null 0 worker null \
        "time from the ingest's end until every event it stored was processed (one worker)"
}

bench_wp_part_orders() {
    bench_gateway_orders_post
}

bench_wp_part_burst() {
    bench_wp_worker_start
    local seconds="${BENCH_BURST_SECONDS:-60}" started ended backlog inserted published_during
    # The broker's ceiling first, on an idle broker, with the relay's message size.
    local size
    size="$(bench_wp_psql "SELECT coalesce(round(avg(octet_length(payload::text))), 400)::int
        FROM (SELECT payload FROM store.outbox ORDER BY created_at DESC LIMIT 1000) AS recent")"
    local out="$BENCH_TMP/bare-publisher.json"
    log "bench: $BENCH_WP_PUBLISHER: bare-publisher -n ${BENCH_PUBLISHER_MESSAGES:-100000} -s $size"
    "$BENCH_BIN/bare-publisher" --url "$BENCH_AMQP_URL" --namespace "bench$$-bare" \
        -n "${BENCH_PUBLISHER_MESSAGES:-100000}" -s "$size" >"$out" || die "bare-publisher failed"
    local fields
    fields="$(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
g = r.get
print(r["rate"], "%s messages of %s B in %.2f s; batch %s, %s batches in flight, %s channels"
      % (g("messages"), g("message_bytes"), g("seconds"), g("batch"), g("concurrent_batches"), g("channels")))
' "$out")"
    bench_record "$BENCH_WP_PUBLISHER" "" "msgs/s" "${fields%% *}" null null null null 0 bare-publisher null \
        "${fields#* }; persistent, publisher confirms, to a durable quorum queue of the same broker"

    started="$(bench_wp_now)"
    bench_wp_ingest_args
    local save=$BENCH_DURATION
    BENCH_DURATION=$seconds
    bench_http "burst: ${seconds} s webhook ingest, worker running" "$BENCH_PG_BASELINE" \
        "$BENCH_GATEWAY_URL/webhooks/shopify" "${BENCH_WP_ARGS[@]}" --target-pid "$BENCH_PID_api_gateway"
    BENCH_DURATION=$save
    ended="$(bench_wp_now)"
    backlog="$(bench_wp_unpublished)"
    local drain_started left deadline=$(($(date +%s) + 900))
    drain_started="$(bench_wp_now)"
    left=$backlog
    while ((left > 0)); do
        (($(date +%s) < deadline)) || die "burst: the relays left $left rows unpublished after 900 s"
        sleep 0.2
        left="$(bench_wp_unpublished)"
    done
    local to_zero
    to_zero="$(python3 -c "print($(bench_wp_now) - $drain_started)")"
    # Published rows stay (retention of days), so SQL says what was written
    # and published during the ingest.
    read -r inserted published_during < <(bench_wp_psql "SELECT
        count(*) FILTER (WHERE created_at BETWEEN to_timestamp($started) AND to_timestamp($ended)),
        count(*) FILTER (WHERE published_at BETWEEN to_timestamp($started) AND to_timestamp($ended))
        FROM store.outbox" | tr '|' ' ')
    local per_s
    per_s="$(python3 -c "print($inserted / ($ended - $started))")"
    bench_record "burst: outbox backlog when the ingest stopped" "" "s of ingest" \
        "$(python3 -c "print($backlog / max($per_s, 1e-9))")" null null null null 0 SQL null \
        "$backlog unpublished rows (all of store.outbox) when the ingest stopped; $inserted rows written during it ($(python3 -c "print(round($per_s))")/s: jobs, webhook.received, the worker's order.created); goal < 1 s"
    bench_record "burst: backlog reached 0 after the ingest stopped" "" "s" "$to_zero" null null null null 0 SQL null \
        "polled every 0.2 s"
    bench_record "relays publishing during the burst" "$BENCH_WP_PUBLISHER" "rows/s" \
        "$(python3 -c "print($published_during / ($ended - $started))")" null null null null 0 relay null \
        "$published_during rows published during the ${seconds} s ingest (gateway's and worker's relays together)"
    bench_record "relays publishing the backlog after the burst" "$BENCH_WP_PUBLISHER" "rows/s" \
        "$(python3 -c "print($backlog / max($to_zero, 1e-9))")" null null null null 0 relay null \
        "$backlog rows in $(python3 -c "print(round($to_zero, 1))") s, ingest stopped (the worker still applying jobs)"
    # The worker catches up before the next part.
    local since_left
    deadline=$(($(date +%s) + 900))
    since_left="$(bench_wp_unprocessed_since "$started")"
    while ((since_left > 0)); do
        (($(date +%s) < deadline)) || die "burst: the worker did not catch up in 900 s"
        sleep 0.5
        since_left="$(bench_wp_unprocessed_since "$started")"
    done
    bench_wp_wait_published "burst" >/dev/null
}

bench_wp_part_freshness() {
    bench_wp_worker_start
    bench_wp_admin_token
    bench_gateway_token
    local max rate
    max="$(bench_wp_rate "$BENCH_WP_INGEST_DRAINING")"
    rate="${BENCH_FRESHNESS_RATE:-}"
    if [[ -z "$rate" ]]; then
        [[ -n "$max" ]] || die "freshness needs the part ingest-draining first, or BENCH_FRESHNESS_RATE"
        rate="$(python3 -c "print(round($max / 2))")"
    fi
    local probes="${BENCH_FRESHNESS_PROBES:-300}" interval=50
    local seconds=$((probes * interval / 1000 + 15))
    bench_wp_ingest_args
    local bg="$BENCH_TMP/freshness-background.json"
    log "bench: freshness: background ingest, open loop at $rate/s for $seconds s"
    bench_spawn "$bg" "$BENCH_BIN/keel-loadgen" "${BENCH_WP_ARGS[@]}" -c "$BENCH_CONNECTIONS" \
        -r "$rate" -d "$seconds" "$BENCH_GATEWAY_URL/webhooks/shopify"
    local bg_pid=$BENCH_LAST_PID
    sleep 5
    local out="$BENCH_TMP/freshness.json"
    "$BENCH_BIN/keel-freshness" --gateway "$BENCH_GATEWAY_URL" --database-url "$BENCH_PG_URL" \
        --admin-token "$BENCH_ADMIN_TOKEN" --user-token "$BENCH_GATEWAY_TOKEN" \
        --shopify-secret "$(bench_wp_shopify_secret)" --webhook-probes "$probes" --order-probes "$probes" \
        --interval-ms "$interval" >"$out" || die "keel-freshness failed"
    local i
    for ((i = 0; i < 600; i++)); do
        pid_alive "$bg_pid" || break
        sleep 0.1
    done
    local bg_name="freshness: background ingest, open loop at half the max ($rate/s)"
    local fields
    fields="$(python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"], r["errors"])
' "$bg")"
    local rps p50 p95 p99 mx errors
    read -r rps p50 p95 p99 mx errors <<<"$fields"
    bench_record "$bg_name" "$BENCH_WP_INGEST_DRAINING" "req/s" "$rps" "$p50" "$p95" "$p99" "$mx" "$errors" \
        keel-loadgen null "c=$BENCH_CONNECTIONS, -r $rate for $seconds s, distinct orders; one worker draining; probes ran inside it"
    local key name
    for key in webhook_to_get webhook_to_commit order_to_analytics; do
        case $key in
            webhook_to_get) name="freshness: webhook 200 → GET /api/v1/orders/{id} 200" ;;
            webhook_to_commit) name="freshness: webhook 200 → worker's commit seen in SQL" ;;
            order_to_analytics) name="freshness: POST /api/v1/orders 201 → order.created stored by analytics" ;;
        esac
        fields="$(python3 -c '
import json, sys
s = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]]
n = lambda v: "null" if v is None else v
note = "%s samples (%s timeouts counted as 30 s), %s failed probes" % (s["samples"], s["timeouts"], s["errors"])
if s["first_error"]: note += "; first: %s" % s["first_error"]
print(n(s["p50_ms"]), n(s["p95_ms"]), n(s["p99_ms"]), n(s["max_ms"]), s["timeouts"] + s["errors"], note)
' "$out" "$key")"
        read -r p50 p95 p99 mx errors note <<<"$fields"
        bench_record "$name" "$bg_name" "samples" null "$p50" "$p95" "$p99" "$mx" "$errors" keel-freshness null \
            "$note; one probe every ${interval} ms, polled every 2 ms"
    done
}

scenario_write_path() {
    bench_wp_environment
    bench_wp_pgbench
    bench_start_services
    local parts=(${BENCH_WRITE_PATH_PARTS:-ingest drain ingest-draining orders burst freshness}) part
    for part in "${parts[@]}"; do
        declare -F "bench_wp_part_${part//-/_}" >/dev/null || die "write-path: unknown part '$part'"
        log "── write-path: $part"
        "bench_wp_part_${part//-/_}"
    done
}

# `scripts/bench orders`: POST /api/v1/orders alone, against pgbench (~1 min).
scenario_orders() {
    bench_wp_environment
    bench_wp_pgbench
    bench_start_services
    bench_gateway_orders_post
}
