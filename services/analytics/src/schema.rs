//! The `analytics` schema: raw events partitioned by day, rollups by minute,
//! hour and day (store-wide and per user), distinct users per day.
//!
//! Decisions and their reasons: `docs/adr/` (analytics ingestion).

use keel_db::{Migration, MigrationSet};

/// Migrations of the analytics component.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "analytics",
    migrations: &[
        Migration {
            version: 1,
            name: "raw_events_and_rollups",
            sql: r#"
-- Every domain event as it arrived, one partition per UTC day. The key is
-- (occurred_at, id): a unique constraint on a partitioned table must contain
-- the partition key, and occurred_at is part of the immutable envelope, so a
-- redelivery carries the same pair and conflicts inside the same partition.
CREATE TABLE events (
    occurred_at timestamptz NOT NULL,
    id          uuid        NOT NULL,
    type        text        NOT NULL,
    version     smallint    NOT NULL,
    -- The user the event is about, when it has one.
    user_id     uuid,
    data        jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (occurred_at, id)
) PARTITION BY RANGE (occurred_at);

-- Rows arrive roughly in time order, so a BRIN index over occurred_at is
-- tiny and prunes blocks for range scans (the primary key already serves
-- narrow ones); user scans are per partition and rare (rebuild, export).
CREATE INDEX events_occurred_at_brin ON events USING brin (occurred_at);

-- Pre-aggregated figures. user_id is the nil UUID for the whole store, else
-- the user the figures belong to; metric is an event type (count of events)
-- or 'revenue' (cents, per currency; currency is '' for counts).
CREATE TABLE rollups (
    grain    text        NOT NULL CHECK (grain IN ('minute', 'hour', 'day')),
    user_id  uuid        NOT NULL,
    metric   text        NOT NULL,
    currency text        NOT NULL DEFAULT '',
    bucket   timestamptz NOT NULL,
    value    bigint      NOT NULL,
    PRIMARY KEY (grain, user_id, metric, currency, bucket)
);

-- Exact distinct users per day: a row the first time a user appears on a
-- day, which is when that day's 'active_users' rollup grows by one.
CREATE TABLE daily_users (
    day     date NOT NULL,
    user_id uuid NOT NULL,
    PRIMARY KEY (day, user_id)
);

-- The partition of `day`, created when missing. Safe to race: a concurrent
-- creator wins and this call returns quietly.
CREATE FUNCTION ensure_event_partition(day date) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := 'events_' || to_char(day, 'YYYYMMDD');
BEGIN
    IF to_regclass(quote_ident(name)) IS NOT NULL THEN
        RETURN;
    END IF;
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
        name,
        (day::timestamp AT TIME ZONE 'UTC'),
        ((day + 1)::timestamp AT TIME ZONE 'UTC')
    );
EXCEPTION WHEN duplicate_table OR unique_violation THEN
    NULL;
END;
$$;

-- Partitions from yesterday to `ahead_days` after `today` exist afterwards;
-- partitions wholly before `today - retention_days` are dropped, along with
-- their distinct-user rows. Returns the names of the dropped partitions.
CREATE FUNCTION maintain_event_partitions(today date, ahead_days int, retention_days int)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    cutoff date := today - retention_days;
    part record;
BEGIN
    FOR d IN -1..ahead_days LOOP
        PERFORM ensure_event_partition(today + d);
    END LOOP;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = to_regclass('events')
          AND c.relname ~ '^events_[0-9]{8}$'
          AND to_date(substr(c.relname, 8), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        RETURN NEXT part.relname;
    END LOOP;
    DELETE FROM daily_users WHERE day < cutoff;
END;
$$;
"#,
        },
        Migration {
            version: 2,
            name: "rollups_key_bucket_before_currency",
            sql: r#"
-- Bucket before currency in the key: a summary reads several metrics over
-- a bucket range without naming currencies, and with currency ahead of
-- bucket the range could not bound the index scan (the store's minute rows
-- of a metric were read whole; measured in docs/benchmarks.md).
ALTER TABLE rollups DROP CONSTRAINT rollups_pkey;
ALTER TABLE rollups ADD PRIMARY KEY (grain, user_id, metric, bucket, currency);
"#,
        },
    ],
};
