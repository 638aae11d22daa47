#!/usr/bin/env bash
# shellcheck shell=bash
#
# Scenario `baseline`: what the machine and the engines can do without Keel,
# measured at the same concurrency Keel scenarios use. Every Keel scenario
# compares itself with these rows (measured again in the same run).
#   (a) bare actix-web under keel-loadgen   — the HTTP framework's ceiling
#   (b) pgbench single-row INSERTs          — PostgreSQL's durable-write ceiling
#   (c) redis-benchmark GET / SET           — Redis round-trip ceiling
# pgbench runs last: PostgreSQL keeps writing (WAL, checkpoints) for a while
# after it, which would steal CPU from a measurement that follows.

scenario_baseline() {
    bench_baseline_http
    bench_baseline_redis
    bench_baseline_postgres
}
