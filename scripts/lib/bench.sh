#!/usr/bin/env bash
# shellcheck shell=bash
#
# Helpers for scripts/bench scenarios. A scenario is one function
# `scenario_<name>` (dashes become underscores) in scripts/lib/bench-<name>.sh;
# scripts/bench sources every such file. A scenario measures things and
# records each measurement with bench_record (or the wrappers below), naming
# the baseline it is compared with; the runner prints and saves the table.
#
# Available to scenarios (set by scripts/bench):
#   BENCH_TMP             scratch folder for this run (deleted afterwards)
#   BENCH_BIN             release binaries folder ($CARGO_TARGET_DIR/release)
#   BENCH_PG_PORT, BENCH_REDIS_PORT, BENCH_AMQP_PORT, BENCH_MGMT_PORT
#   BENCH_PG_URL          postgres://keel@127.0.0.1:PORT/keel
#   BENCH_REDIS_URL, BENCH_AMQP_URL
#   BENCH_CONNECTIONS     concurrency (default 64)
#   BENCH_DURATION        seconds per measurement (default 10)
#
# Functions:
#   bench_record NAME BASELINE UNIT RATE P50 P95 P99 MAX ERRORS TOOL [CPU_MS_PER_OP] [NOTE]
#       one result row; BASELINE is the NAME of another row of the same run
#       ("" for a baseline itself); latencies in ms; "null" when unknown
#   bench_http NAME BASELINE URL [keel-loadgen args...]
#       run keel-loadgen (-c BENCH_CONNECTIONS -d BENCH_DURATION unless given)
#       and record; pass --target-pid PID to get CPU ms per request
#   bench_baseline_http          bare-actix under keel-loadgen (once per run);
#                                its row is named "$BENCH_HTTP_BASELINE"
#   bench_baseline_postgres      pgbench single-row INSERTs (once per run)
#   bench_baseline_redis         redis-benchmark GET and SET (once per run)
#   bench_start_services         release build + migrate + start the four
#                                services against the bench servers; sets
#                                BENCH_GATEWAY_URL and BENCH_PID_<service>;
#                                bootstraps an admin (BENCH_ADMIN_EMAIL/PASSWORD)
#   bench_cpu_ms ROOT...         CPU ms (user+sys) so far of each ROOT (a pid,
#                                or text its command line contains) and all its
#                                descendants, exited children included (the
#                                roots' cutime/cstime): call before and after
#   bench_pg_cpu_ms              the same for the bench PostgreSQL server (the
#                                postmaster and every backend, exited ones too)

if [[ -n "${KEEL_BENCH_SH_LOADED:-}" ]]; then return 0; fi
KEEL_BENCH_SH_LOADED=1

BENCH_HTTP_BASELINE="bare-actix GET /"
BENCH_PG_BASELINE="pgbench INSERT 1 row"
BENCH_REDIS_BASELINE="redis-benchmark GET"

bench_record() {
    local name=$1 baseline=$2 unit=$3 rate=$4 p50=$5 p95=$6 p99=$7 max=$8 errors=$9 tool=${10}
    local cpu=${11:-null} note=${12:-}
    python3 - "$BENCH_TMP/results.jsonl" "$BENCH_SCENARIO" "$name" "$baseline" "$unit" "$rate" \
        "$p50" "$p95" "$p99" "$max" "$errors" "$tool" "$cpu" "$note" <<'PY'
import json, sys
path, scenario, name, baseline, unit, *nums, tool, cpu, note = sys.argv[1:]
def num(v):
    return None if v in ("", "null", "None") else float(v)
rate, p50, p95, p99, mx, errors = (num(v) for v in nums)
row = dict(scenario=scenario, name=name, baseline=baseline or None, unit=unit, rate=rate,
           p50_ms=p50, p95_ms=p95, p99_ms=p99, max_ms=mx,
           errors=None if errors is None else int(errors), tool=tool,
           cpu_ms_per_op=num(cpu), note=note or None)
with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
PY
    log "bench: $name: $rate $unit, p50 $p50 ms, p99 $p99 ms, errors $errors"
}

bench_http() {
    local name=$1 baseline=$2 url=$3
    shift 3
    local args=("$@")
    [[ " ${args[*]} " == *" -c "* || " ${args[*]} " == *" --connections "* ]] || args+=(-c "$BENCH_CONNECTIONS")
    [[ " ${args[*]} " == *" -d "* || " ${args[*]} " == *" -n "* || " ${args[*]} " == *" --requests "* ]] ||
        args+=(-d "$BENCH_DURATION")
    local out="$BENCH_TMP/loadgen-$RANDOM.json"
    log "bench: $name: keel-loadgen ${args[*]} $url"
    "$BENCH_BIN/keel-loadgen" "${args[@]}" "$url" >"$out" || die "keel-loadgen failed for $name"
    local fields
    fields="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
c = r.get("target_cpu_ms_per_request")
print(r["rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"], r["max_ms"], r["errors"],
      "null" if c is None else c, r["errors_status"], r["errors_transport"], r["connections"],
      r["first_error"] or "")
' "$out")"
    local rps p50 p95 p99 max errors cpu es et conns first
    read -r rps p50 p95 p99 max errors cpu es et conns first <<<"$fields"
    local note="c=$conns"
    ((errors > 0)) && note="$note; errors: $es status, $et transport; first: $first"
    bench_record "$name" "$baseline" "req/s" "$rps" "$p50" "$p95" "$p99" "$max" "$errors" keel-loadgen "$cpu" "$note"
}

# Starts a background process, remembering it for the runner's cleanup.
bench_spawn() {
    local logfile=$1
    shift
    "$@" </dev/null >"$logfile" 2>&1 &
    echo $! >>"$BENCH_TMP/spawned.pids"
    BENCH_LAST_PID=$!
}

bench_kill() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    local i
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

bench_already_measured() {
    grep -qF "\"name\": \"$1\"" "$BENCH_TMP/results.jsonl" 2>/dev/null
}

# (a) The HTTP ceiling: bare actix-web (2 workers) answering fixed JSON.
bench_baseline_http() {
    bench_already_measured "$BENCH_HTTP_BASELINE" && return 0
    local port
    port="$(pick_free_port)"
    bench_spawn "$BENCH_TMP/bare-actix.log" "$BENCH_BIN/bare-actix" --port "$port" --workers 2
    local pid=$BENCH_LAST_PID
    wait_http_ok "http://127.0.0.1:$port/" 10 || die "bare-actix did not start"
    bench_http "$BENCH_HTTP_BASELINE" "" "http://127.0.0.1:$port/" --warmup 1 --target-pid "$pid"
    bench_kill "$pid"
}

# (b) PostgreSQL: single-row INSERT transactions (synchronous commit, the
# default), at the same concurrency, from pgbench with a custom script.
bench_baseline_postgres() {
    bench_already_measured "$BENCH_PG_BASELINE" && return 0
    local bindir
    bindir="$(pg_bindir)"
    PGOPTIONS='-c client_min_messages=warning' \
        "$bindir/psql" -q -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel -d keel -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
DROP TABLE IF EXISTS bench_rows;
CREATE TABLE bench_rows (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SQL
    cat >"$BENCH_TMP/insert.sql" <<'SQL'
\set n random(1, 1000000000)
INSERT INTO bench_rows (payload) VALUES (jsonb_build_object('n', :n, 'kind', 'bench'));
SQL
    mkdir -p "$BENCH_TMP/pgbench"
    local jobs=2
    ((BENCH_CONNECTIONS < jobs)) && jobs=$BENCH_CONNECTIONS
    log "bench: $BENCH_PG_BASELINE: pgbench -c $BENCH_CONNECTIONS -j $jobs -T $BENCH_DURATION"
    # --log writes one line per transaction (latency in µs) for percentiles.
    "$bindir/pgbench" -n -h 127.0.0.1 -p "$BENCH_PG_PORT" -U keel \
        -c "$BENCH_CONNECTIONS" -j "$jobs" -T "$BENCH_DURATION" -f "$BENCH_TMP/insert.sql" \
        --log --log-prefix="$BENCH_TMP/pgbench/tx" keel >"$BENCH_TMP/pgbench.out" 2>&1 ||
        {
            cat "$BENCH_TMP/pgbench.out" >&2
            die "pgbench failed"
        }
    local fields
    fields="$(python3 - "$BENCH_TMP/pgbench.out" "$BENCH_TMP/pgbench" <<'PY'
import glob, os, re, sys
out = open(sys.argv[1]).read()
tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out).group(1))
failed = re.search(r"number of failed transactions: (\d+)", out)
avg = re.search(r"latency average = ([0-9.]+) ms", out)
lat = []
for path in glob.glob(os.path.join(sys.argv[2], "tx.*")):
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                lat.append(int(parts[2]) / 1000.0)
lat.sort()
def q(p):
    return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else None
print(tps, q(0.50), q(0.95), q(0.99), lat[-1] if lat else None,
      failed.group(1) if failed else 0, avg.group(1) if avg else None)
PY
)"
    local tps p50 p95 p99 max failed avg
    read -r tps p50 p95 p99 max failed avg <<<"$fields"
    bench_record "$BENCH_PG_BASELINE" "" "tx/s" "$tps" "$p50" "$p95" "$p99" "$max" "$failed" pgbench null \
        "c=$BENCH_CONNECTIONS j=$jobs T=${BENCH_DURATION}s; pgbench latency average $avg ms"
}

# (c) Redis: GET and SET of a small value, at the same concurrency.
bench_baseline_redis() {
    bench_already_measured "$BENCH_REDIS_BASELINE" && return 0
    local n=${BENCH_REDIS_REQUESTS:-200000} test
    for test in get set; do
        log "bench: redis-benchmark -t $test -c $BENCH_CONNECTIONS -n $n"
        redis-benchmark -h 127.0.0.1 -p "$BENCH_REDIS_PORT" -t "$test" -c "$BENCH_CONNECTIONS" -n "$n" --csv \
            >"$BENCH_TMP/redis-$test.csv" 2>"$BENCH_TMP/redis-$test.err" ||
            {
                cat "$BENCH_TMP/redis-$test.err" >&2
                die "redis-benchmark failed"
            }
        local fields name
        fields="$(python3 - "$BENCH_TMP/redis-$test.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
r = rows[-1]
print(r["rps"], r["p50_latency_ms"], r["p95_latency_ms"], r["p99_latency_ms"], r["max_latency_ms"])
PY
)"
        local rps p50 p95 p99 max
        read -r rps p50 p95 p99 max <<<"$fields"
        name="redis-benchmark ${test^^}"
        bench_record "$name" "" "ops/s" "$rps" "$p50" "$p95" "$p99" "$max" 0 redis-benchmark null \
            "c=$BENCH_CONNECTIONS n=$n, 3-byte value, no pipelining"
    done
}

# For scenarios that measure Keel itself: builds the services in release and
# starts them against the bench servers. Ports are free ones.
bench_cpu_ms() {
    python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the comm: state ppid ... utime(14) stime cutime cstime.
    return int(rest[1]), sum(int(v) for v in rest[11:15])
def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
procs = {}
for name in os.listdir("/proc"):
    if name.isdigit():
        s = stat(name)
        if s:
            procs[int(name)] = s
children = {}
for pid, (ppid, _) in procs.items():
    children.setdefault(ppid, []).append(pid)
roots = set()
for arg in sys.argv[1:]:
    if arg.isdigit():
        roots.add(int(arg))
    else:
        roots |= {p for p in procs if arg in cmdline(p)}
# Keep the topmost matches only: a descendant is counted through its root.
seen, total, todo = set(), 0, sorted(roots)
for root in list(todo):
    p = procs.get(root, (None,))[0]
    while p in procs:
        if p in roots:
            todo.remove(root)
            break
        p = procs[p][0]
while todo:
    pid = todo.pop()
    if pid in seen or pid not in procs:
        continue
    seen.add(pid)
    total += procs[pid][1]
    todo.extend(children.get(pid, []))
print(round(total * 1000 / tick))
PY
}

bench_pg_cpu_ms() {
    bench_cpu_ms "$BENCH_TMP/servers/postgres/data"
}

bench_start_services() {
    [[ -n "${BENCH_GATEWAY_URL:-}" ]] && return 0
    # An admin, so scenarios can read any order (webhook orders have no user).
    export KEEL_BOOTSTRAP_ADMIN_EMAIL="${KEEL_BOOTSTRAP_ADMIN_EMAIL:-bench-admin@example.com}"
    export KEEL_BOOTSTRAP_ADMIN_PASSWORD="${KEEL_BOOTSTRAP_ADMIN_PASSWORD:-bench-Admin-Password-8472}"
    BENCH_ADMIN_EMAIL="$KEEL_BOOTSTRAP_ADMIN_EMAIL"
    BENCH_ADMIN_PASSWORD="$KEEL_BOOTSTRAP_ADMIN_PASSWORD"
    build_services release || die "release build failed"
    local auth_port analytics_port worker_port gateway_port
    read -r auth_port analytics_port worker_port gateway_port < <(pick_free_ports 4)
    export_service_env "$BENCH_PG_URL" "$BENCH_REDIS_URL" "$BENCH_AMQP_URL" "bench$$" "$auth_port" "$analytics_port" \
        "http://guest:guest@127.0.0.1:$BENCH_MGMT_PORT"
    # Logging every request would measure the terminal, not the service.
    export RUST_LOG="${BENCH_RUST_LOG:-warn}"
    migrate_services release "$BENCH_TMP/logs"
    declare -A ports=([auth]=$auth_port [analytics]=$analytics_port [worker]=$worker_port [api-gateway]=$gateway_port)
    local name
    for name in "${KEEL_SERVICES[@]}"; do
        start_service release "$name" "${ports[$name]}" "$BENCH_TMP/logs" "$BENCH_TMP/run"
        printf -v "BENCH_PID_${name//-/_}" '%s' "$(cat "$BENCH_TMP/run/$name.pid")"
    done
    for name in "${KEEL_SERVICES[@]}"; do
        wait_service_ready "$name" "${ports[$name]}" 60 "$BENCH_TMP/logs" || die "$name not ready"
    done
    BENCH_GATEWAY_URL="http://127.0.0.1:$gateway_port"
    BENCH_AUTH_URL="http://127.0.0.1:$auth_port"
    BENCH_ANALYTICS_URL="http://127.0.0.1:$analytics_port"
    export BENCH_GATEWAY_URL BENCH_AUTH_URL BENCH_ANALYTICS_URL
}
