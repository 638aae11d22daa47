#!/usr/bin/env bash
# shellcheck shell=bash
#
# Rolling-update proof with real processes (no cluster): what a Kubernetes
# rollout with maxUnavailable 0 does to the gateway and to auth, done by
# hand behind nginx under constant load, asserting that no request fails.
#
#   rollout_check PG_PORT REDIS_URL AMQP_URL WORKDIR
#       0 when both rollouts served every request: at least
#       ROLLOUT_MIN_REQUESTS (10,000) each, 0 failed.
#   rollout_cleanup WORKDIR   stop what it started (for exit traps)
#
# For each service, two instances run behind one nginx upstream (the
# "ingress", reloaded on every endpoint change); keel-loadgen (crates/bench)
# sends keep-alive requests the whole time through a second nginx in front
# (the "cloud load balancer", never reloaded). The front tier is there
# because an nginx reload closes its idle keep-alive *client* connections,
# and a client that has just sent a request on one sees "connection closed
# before message completed" (measured: 2 of 60,493 requests with loadgen
# straight on the reloaded nginx). That is nginx's reload, not Keel: a
# Kubernetes ingress-nginx changes endpoints without a reload, and a load
# balancer in front retries a request whose cached connection was closed
# under it, as the front nginx here does. Every other failure still reaches
# the client: the front retries only on a connection error, and no tier
# retries a 5xx. Each old instance is replaced the way the Deployment
# controller and the endpoints controller do it:
#   1. start the new instance, wait for its /readyz        (maxSurge 1)
#   2. rewrite the upstream without the old one, `nginx -s reload`
#                                                          (endpoint removed)
#   3. wait ROLLOUT_PRESTOP seconds                        (preStop sleep)
#   4. SIGTERM the old one; it must drain and exit 0       (graceful drain)
# The routes are real ones: the gateway's GET /api/v1/orders/{id} (token
# verification, the order cache, PostgreSQL behind it) and auth's
# GET /api/v1/auth/me (token verification, a PostgreSQL read).
#
# Requires servers.sh and services.sh (debug binaries built by
# build_services debug) and nginx (install_missing_packages).

ROLLOUT_MIN_REQUESTS="${ROLLOUT_MIN_REQUESTS:-10000}"
ROLLOUT_PRESTOP="${ROLLOUT_PRESTOP:-2}"
ROLLOUT_CONNECTIONS="${ROLLOUT_CONNECTIONS:-8}"
# How long the load goes on after the last replacement, so that requests also
# reach the instances that replaced the old ones.
ROLLOUT_TAIL="${ROLLOUT_TAIL:-1}"
# The check can fail: ROLLOUT_PRESTOP=0 ROLLOUT_SIGNAL=KILL loses requests
# (measured 55 of 12,104 through the gateway, all 502), and so does
# ROLLOUT_PRESTOP=0 alone (docs/runbooks/deploying.md says why).
ROLLOUT_SIGNAL="${ROLLOUT_SIGNAL:-TERM}"

declare -A ROLLOUT_PIDS=()

# Starts one instance of NAME on PORT (environment already exported) and
# records its pid under "NAME:PORT".
rollout_start() {
    local name=$1 port=$2 dir=$3 bin
    bin="$(service_bin debug "$name")"
    KEEL_HTTP__PORT="$port" "$bin" serve </dev/null >>"$dir/logs/$name-$port.log" 2>&1 &
    ROLLOUT_PIDS["$name:$port"]=$!
    echo $! >"$dir/run/$name-$port.pid"
    log "rollout: $name started on :$port (pid $!)"
}

# The upstream block's servers: one line per port.
rollout_write_upstream() {
    local file=$1 port
    shift
    : >"$file.tmp"
    for port in "$@"; do
        echo "server 127.0.0.1:$port max_fails=0;" >>"$file.tmp"
    done
    mv "$file.tmp" "$file"
}

rollout_nginx_conf() {
    local dir=$1 gateway_port=$2 auth_port=$3 inner_gateway_port=$4 inner_auth_port=$5
    local tier
    for tier in ingress front; do
        mkdir -p "$dir/$tier/tmp"
        chmod 777 "$dir/$tier/tmp"
    done
    # Keep-alive on both sides of each tier. The ingress never retries: a
    # request an instance drops (reset, refused, cut off) or fails (5xx)
    # while it shuts down reaches the client as a 502 or that 5xx, so the
    # count of failures is the services' own. The front retries only when
    # its cached connection to the ingress was closed (the reload artefact).
    rollout_nginx_http_conf "$dir/ingress" "off" \
        "gateway" "include $dir/ingress/gateway.upstream;" "$inner_gateway_port" \
        "auth" "include $dir/ingress/auth.upstream;" "$inner_auth_port"
    rollout_nginx_http_conf "$dir/front" "error timeout" \
        "gateway" "server 127.0.0.1:$inner_gateway_port max_fails=0;" "$gateway_port" \
        "auth" "server 127.0.0.1:$inner_auth_port max_fails=0;" "$auth_port"
}

# Writes PREFIX/nginx.conf: proxy_next_upstream RETRY, then upstreams
# (NAME, SERVERS, LISTEN_PORT each).
rollout_nginx_http_conf() {
    local prefix=$1 retry=$2 user="nobody"
    shift 2
    getent group nogroup >/dev/null && user="nobody nogroup"
    {
        echo "worker_processes 1;"
        ((EUID == 0)) && echo "user $user;"
        echo "pid $prefix/nginx.pid;"
        echo "error_log $prefix/error.log warn;"
        echo "events { worker_connections 1024; }"
        echo "http {"
        echo "    access_log off;"
        local t
        for t in client_body proxy fastcgi uwsgi scgi; do echo "    ${t}_temp_path $prefix/tmp/$t;"; done
        while (($#)); do
            cat <<EOF
    upstream $1 {
        $2
        keepalive 16;
    }
    server {
        listen 127.0.0.1:$3;
        location / {
            proxy_pass http://$1;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_next_upstream $retry;
        }
    }
EOF
            shift 3
        done
        echo "}"
    } >"$prefix/nginx.conf"
}

# rollout_nginx PREFIX ARGS...: runs nginx on PREFIX/nginx.conf.
rollout_nginx() {
    /usr/sbin/nginx -p "$1" -c "$1/nginx.conf" "${@:2}"
}

# Replaces the instances of NAME listed in OLD_PORTS one at a time by new
# ones on NEW_PORTS while the load runs. The upstream file always lists the
# instances that currently take traffic.
rollout_replace() {
    local dir=$1 name=$2 upstream=$3 old_ports=$4 new_ports=$5
    local -a olds news current
    read -r -a olds <<<"$old_ports"
    read -r -a news <<<"$new_ports"
    current=("${olds[@]}")
    local i old new pid rc
    for i in "${!olds[@]}"; do
        old=${olds[$i]} new=${news[$i]}
        rollout_start "$name" "$new" "$dir"
        wait_service_ready "$name" "$new" 60 "$dir/logs" || return 1
        # The old instance must have been serving the load until now.
        local served
        served="$(rollout_requests_served "$old")"
        log "rollout: $name :$old served $served requests before its replacement"
        ((served > 0)) || {
            log "rollout: $name :$old served no request: the load is not reaching it"
            return 1
        }
        local next=()
        for p in "${current[@]}"; do [[ "$p" == "$old" ]] || next+=("$p"); done
        next+=("$new")
        current=("${next[@]}")
        rollout_write_upstream "$upstream" "${current[@]}"
        rollout_nginx "$dir/ingress" -s reload || return 1
        log "rollout: $name upstream is now ${current[*]} (nginx reloaded)"
        sleep "$ROLLOUT_PRESTOP"
        pid=${ROLLOUT_PIDS["$name:$old"]}
        log "rollout: $name :$old SIG$ROLLOUT_SIGNAL (pid $pid)"
        kill -"$ROLLOUT_SIGNAL" "$pid"
        rc=0
        wait "$pid" || rc=$?
        if ((rc != 0)) && [[ "$ROLLOUT_SIGNAL" == TERM ]]; then
            log "rollout: $name :$old exited $rc after SIGTERM (expected 0)"
            tail -n 20 "$dir/logs/$name-$old.log" >&2
            return 1
        fi
        rm -f "$dir/run/$name-$old.pid"
        log "rollout: $name :$old drained and exited 0"
    done
}

# keel_http_requests_total summed over the instance's /api routes.
rollout_requests_served() {
    curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" 2>/dev/null |
        awk '/^keel_http_requests_total\{.*route="\/api/ { n += $NF } END { printf "%d\n", n }'
}

# Runs the load against URL during one rollout and checks the result.
# Prints nothing; logs the figures; 0 when none failed and enough were sent.
rollout_under_load() {
    local dir=$1 what=$2 url=$3 token=$4 name=$5 upstream=$6 old_ports=$7 new_ports=$8
    local loadgen report="$dir/$what.json"
    loadgen="$(service_bin debug keel-loadgen)"
    # Neither a fixed count nor a fixed duration: the machine's speed varies
    # more than tenfold (a fixed 20,000 requests once ended before the
    # rollout did). The load runs until it is told to stop after the rollout,
    # and at least ROLLOUT_MIN_REQUESTS are sent whatever the speed.
    timeout 600 "$loadgen" "$url" -c "$ROLLOUT_CONNECTIONS" -n "$ROLLOUT_MIN_REQUESTS" \
        --until-signal --timeout 10 -H "Authorization: Bearer $token" \
        >"$report" 2>"$dir/logs/$what-loadgen.err" &
    local load_pid=$! ok=1
    sleep 3
    rollout_replace "$dir" "$name" "$upstream" "$old_ports" "$new_ports" || ok=0
    if pid_alive "$load_pid"; then
        sleep "$ROLLOUT_TAIL"
        kill -TERM "$load_pid" 2>/dev/null || true
    else
        log "rollout: $what: keel-loadgen exited during the rollout (see $dir/logs/$what-loadgen.err)"
        ok=0
    fi
    wait "$load_pid" || ok=0
    python3 - "$report" "$what" "$ROLLOUT_MIN_REQUESTS" <<'PY' || ok=0
import json, sys
path, what, minimum = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(path))
print(f"rollout: {what}: sent {r['requests']}, failed {r['errors']} "
      f"(status {r['errors_status']}, transport {r['errors_transport']}), "
      f"{r['rps']:.0f} req/s, p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.1f} ms"
      + (f"; first error: {r['first_error']}" if r['first_error'] else ""), file=sys.stderr)
sys.exit(0 if r["errors"] == 0 and r["requests"] >= minimum else 1)
PY
    ((ok))
}

rollout_check() {
    local pg_port=$1 redis_url=$2 amqp_url=$3 dir=$4
    mkdir -p "$dir/logs" "$dir/run" "$dir/keys"
    log "rollout: building keel-loadgen"
    cargo build -q -p keel-bench --bin keel-loadgen || return 1
    local db="keel_rollout_$$" bindir
    bindir="$(pg_bindir)"
    "$bindir/psql" -q -h 127.0.0.1 -p "$pg_port" -U keel -d postgres -c "CREATE DATABASE $db" >/dev/null || return 1
    local g1 g2 g3 g4 a1 a2 a3 a4 ngx_gateway ngx_auth inner_gateway inner_auth
    read -r g1 g2 g3 g4 a1 a2 a3 a4 ngx_gateway ngx_auth inner_gateway inner_auth < <(pick_free_ports 12)
    (
        export_service_env "postgres://keel@127.0.0.1:$pg_port/$db" "$redis_url" "$amqp_url" \
            "rollout$$" "$ngx_auth" "$ngx_auth" "${KEEL_TEST_AMQP_MANAGEMENT_URL:-}"
        # Every auth instance signs with the same development key, as replicas
        # share the mounted signing key in a cluster.
        export KEEL_TOKENS__DEV_KEY_DIR="$dir/keys"
        # One user sends all the load: lift its per-user read budget.
        export KEEL_RATE_LIMIT__CLASSES__READ__LIMIT=100000000 \
            KEEL_RATE_LIMIT__CLASSES__AUTH__LIMIT=100000000
        # A short drain budget keeps a stuck request from hiding behind it.
        export KEEL_HTTP__SHUTDOWN_GRACE=10s
        local name
        for name in auth api-gateway; do
            "$(service_bin debug "$name")" migrate >"$dir/logs/$name.migrate.log" 2>&1 || {
                tail -n 20 "$dir/logs/$name.migrate.log" >&2
                exit 1
            }
        done
        mkdir -p "$dir/ingress"
        rollout_write_upstream "$dir/ingress/auth.upstream" "$a1" "$a2"
        rollout_write_upstream "$dir/ingress/gateway.upstream" "$g1" "$g2"
        rollout_nginx_conf "$dir" "$ngx_gateway" "$ngx_auth" "$inner_gateway" "$inner_auth"
        local tier
        for tier in ingress front; do
            rollout_nginx "$dir/$tier" -t -q || exit 1
            rollout_nginx "$dir/$tier" || exit 1
        done
        # auth first (the gateways fetch its JWK Set through nginx), one at a
        # time: the first generates the development key the second loads.
        rollout_start auth "$a1" "$dir"
        wait_service_ready auth "$a1" 60 "$dir/logs" || exit 1
        rollout_start auth "$a2" "$dir"
        rollout_start api-gateway "$g1" "$dir"
        rollout_start api-gateway "$g2" "$dir"
        wait_service_ready auth "$a2" 60 "$dir/logs" || exit 1
        for port in "$g1" "$g2"; do wait_service_ready api-gateway "$port" 60 "$dir/logs" || exit 1; done

        # A user with one order, through the balanced gateway.
        local base="http://127.0.0.1:$ngx_gateway" email token order
        email="rollout-$$@example.com"
        curl -fsS -o /dev/null --max-time 10 -H 'content-type: application/json' \
            -d "{\"email\":\"$email\",\"password\":\"rollout-Password-$$-x\"}" "$base/api/v1/auth/register" || exit 1
        token="$(curl -fsS --max-time 10 -H 'content-type: application/json' \
            -d "{\"email\":\"$email\",\"password\":\"rollout-Password-$$-x\"}" "$base/api/v1/auth/login" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" || exit 1
        order="$(curl -fsS --max-time 10 -H 'content-type: application/json' -H "Authorization: Bearer $token" \
            -d '{"currency":"EUR","items":[{"sku":"ROLL-1","quantity":1,"unit_price_cents":1000}]}' \
            "$base/api/v1/orders" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" || exit 1
        log "rollout: user and order $order ready; gateway behind nginx :$ngx_gateway, auth behind :$ngx_auth"

        local rc=0
        rollout_under_load "$dir" gateway "$base/api/v1/orders/$order" "$token" \
            api-gateway "$dir/ingress/gateway.upstream" "$g1 $g2" "$g3 $g4" || rc=1
        rollout_under_load "$dir" auth "http://127.0.0.1:$ngx_auth/api/v1/auth/me" "$token" \
            auth "$dir/ingress/auth.upstream" "$a1 $a2" "$a3 $a4" || rc=1
        exit "$rc"
    )
    local rc=$?
    rollout_cleanup "$dir"
    # Leave the servers as found: the database and the broker namespace.
    "$bindir/psql" -q -h 127.0.0.1 -p "$pg_port" -U keel -d postgres \
        -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rollout_drop_namespace "rollout$$"
    return "$rc"
}

# Deletes the queues and exchanges of NAMESPACE through the management API
# named by KEEL_TEST_AMQP_MANAGEMENT_URL (nothing to do without it).
rollout_drop_namespace() {
    [[ -n "${KEEL_TEST_AMQP_MANAGEMENT_URL:-}" ]] || return 0
    python3 - "$KEEL_TEST_AMQP_MANAGEMENT_URL" "$1." <<'PY' || log "rollout: could not delete the broker namespace $1"
import base64, json, sys, urllib.parse, urllib.request
url, prefix = sys.argv[1], sys.argv[2]
parts = urllib.parse.urlsplit(url)
base = f"{parts.scheme}://{parts.hostname}:{parts.port}"
auth = base64.b64encode(f"{parts.username}:{parts.password}".encode()).decode()
def call(method, path):
    request = urllib.request.Request(base + path, method=method, headers={"Authorization": f"Basic {auth}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")
for kind in ("queues", "exchanges"):
    for item in call("GET", f"/api/{kind}?columns=name,vhost"):
        if item["name"].startswith(prefix):
            vhost = urllib.parse.quote(item["vhost"], safe="")
            call("DELETE", f"/api/{kind}/{vhost}/{urllib.parse.quote(item['name'], safe='')}")
PY
}

# Stops whatever rollout_check left running (for the caller's exit trap).
rollout_cleanup() {
    local dir=$1 tier
    [[ -d "$dir" ]] || return 0
    for tier in front ingress; do
        [[ -f "$dir/$tier/nginx.pid" ]] && rollout_nginx "$dir/$tier" -s quit 2>/dev/null
    done
    stop_services "$dir/run"
}
