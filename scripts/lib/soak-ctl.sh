#!/usr/bin/env bash
# shellcheck shell=bash
#
# Restarts one of the soak's backing servers; called by keel-soak (the
# fault schedule) as `bash scripts/lib/soak-ctl.sh ACTION`, with the
# folder and ports in the environment scripts/soak exported:
#   SOAK_SERVERS SOAK_PG_PORT SOAK_REDIS_PORT SOAK_NODE SOAK_AMQP_PORT
#   SOAK_DIST_PORT SOAK_MGMT_PORT SOAK_PROM_PORT
# Actions:
#   restart-postgres   pg_ctl restart -m immediate (a crash: no checkpoint,
#                      every connection dropped, recovery from WAL)
#   restart-redis      SHUTDOWN (AOF flushed), start again
#   restart-rabbitmq   rabbitmqctl stop, start again, wait for AMQP and
#                      management listeners
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck source=scripts/lib/servers.sh
source "$ROOT/scripts/lib/servers.sh"

: "${SOAK_SERVERS:?set by scripts/soak}"

case "${1:-}" in
    restart-postgres)
        bindir="$(pg_bindir)"
        as_postgres "$bindir/pg_ctl" -D "$SOAK_SERVERS/postgres/data" -l "$SOAK_SERVERS/postgres/log" \
            -m immediate -w -t 60 restart >/dev/null
        wait_postgres "$SOAK_SERVERS" "$SOAK_PG_PORT" 60
        ;;
    restart-redis)
        stop_redis "$SOAK_SERVERS" "$SOAK_REDIS_PORT"
        start_redis "$SOAK_SERVERS" "$SOAK_REDIS_PORT"
        wait_redis "$SOAK_REDIS_PORT" 20
        ;;
    restart-rabbitmq)
        stop_rabbitmq "$SOAK_SERVERS" "$SOAK_NODE"
        start_rabbitmq "$SOAK_SERVERS" "$SOAK_NODE" "$SOAK_AMQP_PORT" "$SOAK_DIST_PORT" "$SOAK_MGMT_PORT" "$SOAK_PROM_PORT"
        wait_rabbitmq "$SOAK_SERVERS" "$SOAK_NODE" "$SOAK_AMQP_PORT" "$SOAK_MGMT_PORT" 90
        ;;
    *) die "usage: soak-ctl.sh restart-postgres|restart-redis|restart-rabbitmq" ;;
esac
