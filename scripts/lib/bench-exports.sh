#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `exports`: one export of BENCH_EXPORT_ORDERS (1,000,000) orders
# to CSV by the `worker` (release build, default [exports] settings, a local
# storage directory under the bench's temp folder), next to psql's
# `\copy (SELECT ...) TO 'file' CSV HEADER` of the same query in the same
# run. The SELECT below is the one keel_commerce::exports::rows::select builds
# for an admin's unfiltered CSV export (every order, oldest first,
# timestamps as RFC 3339 UTC): keep the two in step.
# - Worker rows/s: rows_written / (finished_at - started_at) of the export
#   (from the worker's own start of the job to its commit of `succeeded`:
#   COPY, row counting, SHA-256 and the file written and completed); the
#   note also gives the time from queueing to success (relay and queue
#   included).
# - psql rows/s: rows / wall time of the \copy run (connection included),
#   the baseline; the goal is a ratio of at least 0.5.
# - Worker peak memory: VmHWM of the worker process (/proc/<pid>/status)
#   after the export, against the goal of 100 MiB (no baseline: the figure
#   is absolute); its idle VmHWM before the export is in the note.

BENCH_EXPORT_SELECT="SELECT o.id, o.external_id, o.status, o.currency, o.total_cents, o.customer_email, \
o.user_id, o.source, to_char(o.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at, \
to_char(o.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS updated_at \
FROM orders o ORDER BY o.created_at, o.id"

bench_exports_psql() {
    "$(pg_bindir)/psql" -qAt -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel "$@"
}

# VmHWM (peak resident set) of a process, in KiB.
bench_exports_vmhwm_kib() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

scenario_exports() {
    local n="${BENCH_EXPORT_ORDERS:-1000000}"
    bench_start_services
    # Only the worker matters here; the one bench_start_services started
    # uses the default storage directory, so it is replaced by one writing
    # under the bench's temp folder.
    # shellcheck disable=SC2154 # set by bench_start_services
    bench_kill "$BENCH_PID_worker"
    # shellcheck disable=SC2154
    bench_kill "$BENCH_PID_api_gateway"

    log "bench: seeding $n orders"
    bench_exports_psql -c "
        INSERT INTO store.orders (id, external_id, status, currency, total_cents, customer_email,
                                  user_id, source, created_at, updated_at)
        SELECT gen_random_uuid(), CASE WHEN g % 10 = 0 THEN 'ext-' || g END,
               (ARRAY['pending', 'paid', 'fulfilled', 'cancelled'])[1 + g % 4],
               'EUR', (g::bigint * 7919) % 100000, 'customer' || (g % 1000) || '@example.com',
               ('00000000-0000-0000-0000-' || lpad((g % 1000)::text, 12, '0'))::uuid, 'api',
               timestamptz '2026-01-01' + g * interval '1 second',
               timestamptz '2026-01-01' + g * interval '1 second' + interval '5 minutes'
        FROM generate_series(1, $n) AS g" >/dev/null
    bench_exports_psql -c "VACUUM ANALYZE store.orders" >/dev/null

    # Baseline: psql's \copy of the same SELECT to a local file.
    local started finished rows
    started="$(date +%s.%N)"
    bench_exports_psql -c "SET search_path TO store" \
        -c "\\copy ($BENCH_EXPORT_SELECT) TO '$BENCH_TMP/psql-export.csv' WITH (FORMAT csv, HEADER true)" >/dev/null
    finished="$(date +%s.%N)"
    rows=$(($(wc -l <"$BENCH_TMP/psql-export.csv") - 1))
    local psql_name="psql \\copy (SELECT ...) TO file CSV ($n orders)"
    local fields
    fields="$(python3 -c '
import sys
rows, t0, t1, size = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
print(f"{rows / (t1 - t0):.0f}|{rows} rows, {size / 1048576:.1f} MiB in {t1 - t0:.2f} s")
' "$rows" "$started" "$finished" "$(stat -c %s "$BENCH_TMP/psql-export.csv")")"
    bench_record "$psql_name" "" "rows/s" "${fields%%|*}" null null null null 0 psql null "${fields#*|}"
    rm -f "$BENCH_TMP/psql-export.csv"

    # The worker, on its own storage directory.
    local port rundir="$BENCH_TMP/run-exports" pid
    read -r port < <(pick_free_ports 1)
    KEEL_EXPORTS__STORAGE__ROOT="$BENCH_TMP/exports" start_service release worker "$port" \
        "$BENCH_TMP/logs/exports" "$rundir"
    pid="$(cat "$rundir/worker.pid")"
    echo "$pid" >>"$BENCH_TMP/spawned.pids"
    wait_service_ready worker "$port" 60 "$BENCH_TMP/logs/exports" || die "worker not ready"
    local idle_kib
    idle_kib="$(bench_exports_vmhwm_kib "$pid")"

    # Queue the export as POST /api/v1/exports does: the row and its
    # export.run job in the outbox, one transaction (an admin's export:
    # every order).
    local id user=00000000-0000-0000-0000-00000000ad01
    id="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    bench_exports_psql -c "
        BEGIN;
        INSERT INTO store.exports (id, user_id, all_orders, resource, format, compression, filter, status, object_key)
        VALUES ('$id', '$user', true, 'orders', 'csv', 'none', '{}', 'queued', 'exports/$user/$id.csv');
        INSERT INTO store.outbox (id, target, routing_key, message_type, payload, headers)
        SELECT job, 'jobs', 'export', 'export.run',
               jsonb_build_object('id', job, 'occurred_at', now(), 'version', 1,
                                  'type', 'export.run', 'data', jsonb_build_object('export_id', '$id')),
               '{}'::jsonb
        FROM (SELECT gen_random_uuid() AS job) AS j;
        COMMIT;" >/dev/null
    local queued status="queued" deadline
    queued="$(date +%s.%N)"
    deadline=$(($(date +%s) + 900))
    while [[ "$status" != succeeded ]]; do
        [[ "$status" == failed ]] && die "the export failed: $(bench_exports_psql -c "SELECT error FROM store.exports WHERE id = '$id'")"
        (($(date +%s) < deadline)) || die "the export did not finish in 900 s"
        sleep 0.1
        status="$(bench_exports_psql -c "SELECT status FROM store.exports WHERE id = '$id'")"
    done
    finished="$(date +%s.%N)"
    local peak_kib load summary
    peak_kib="$(bench_exports_vmhwm_kib "$pid")"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    summary="$(bench_exports_psql -c "SELECT rows_written, bytes, extract(epoch FROM finished_at - started_at)
        FROM store.exports WHERE id = '$id'")"
    fields="$(python3 -c '
import sys
rows, size, span = sys.argv[1].split("|")
rows, size, span = int(rows), int(size), float(span)
queued, done = float(sys.argv[2]), float(sys.argv[3])
print(f"{rows / span:.0f}|{rows} rows, {size / 1048576:.1f} MiB in {span:.2f} s (job start to commit; "
      f"{done - queued:.2f} s from queueing); load average {sys.argv[4]} at the end")
' "$summary" "$queued" "$finished" "$load")"
    bench_record "worker export.run: $n orders to CSV (COPY, SHA-256, local storage)" "$psql_name" \
        "rows/s" "${fields%%|*}" null null null null 0 worker null "${fields#*|}"
    bench_record "worker peak resident memory (VmHWM) after the export" "" "MiB" \
        "$(python3 -c "print(round($peak_kib / 1024, 1))")" null null null null 0 /proc/pid/status null \
        "goal < 100 MiB; $(python3 -c "print(round($idle_kib / 1024, 1))") MiB when idle before the export"
    stop_services "$rundir"
}
