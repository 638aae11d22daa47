#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `gateway-healthz`: the cost of Keel's HTTP stack (middleware,
# request ids, metrics, telemetry) on the cheapest endpoint, against the
# bare actix-web ceiling measured in the same run. Also the template for
# endpoint scenarios: measure the baseline, start the services, measure.

scenario_gateway_healthz() {
    bench_baseline_http
    bench_start_services
    # shellcheck disable=SC2154 # BENCH_PID_api_gateway is set by bench_start_services
    bench_http "api-gateway GET /healthz" "$BENCH_HTTP_BASELINE" "$BENCH_GATEWAY_URL/healthz" \
        --warmup 1 --target-pid "$BENCH_PID_api_gateway"
}
