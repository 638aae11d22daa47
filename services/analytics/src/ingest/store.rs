//! Writing a batch: raw rows and rollup increments in one transaction, and
//! recomputing rollups from raw rows (`rebuild`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use keel_db::{Client, GenericClient};
use uuid::Uuid;

use super::event::{ACTIVE_USERS, Grain, RawEvent, STORE, Series};

/// One rollup row's key.
pub type RollupKey = (Grain, Series, DateTime<Utc>);

/// What a batch changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Events stored for the first time (and counted).
    pub inserted: usize,
    /// Events already stored (a redelivery): counted before, ignored now.
    pub duplicates: usize,
}

/// Sums what `events` add to each rollup row. Pure, so the arithmetic is
/// tested without a database.
pub fn aggregate<'a>(events: impl IntoIterator<Item = &'a RawEvent>) -> BTreeMap<RollupKey, i64> {
    let mut sums = BTreeMap::new();
    for event in events {
        for (series, amount) in event.contributions() {
            for grain in Grain::ALL {
                let sum = sums
                    .entry((grain, series.clone(), grain.bucket(event.occurred_at)))
                    .or_insert(0i64);
                // Saturating: real totals (at most 10^15 an order) never get
                // near i64's limits; forged ones must not panic the batch
                // (the database's bigint addition then refuses the row).
                *sum = sum.saturating_add(amount);
            }
        }
    }
    sums
}

/// The (day, user) pairs `events` make active.
pub fn active_users<'a>(
    events: impl IntoIterator<Item = &'a RawEvent>,
) -> BTreeSet<(NaiveDate, Uuid)> {
    events
        .into_iter()
        .filter_map(|e| e.user_id().map(|u| (e.occurred_at.date_naive(), u)))
        .collect()
}

/// Creates the daily partition of `day` when missing (its own statement,
/// outside the batch transaction: DDL locks the parent table briefly).
pub async fn ensure_partition(client: &impl GenericClient, day: NaiveDate) -> keel_db::Result<()> {
    client
        .execute("SELECT ensure_event_partition($1)", &[&day])
        .await?;
    Ok(())
}

/// `events` must be [normalized](RawEvent::normalize).
///
/// Stores `events` and adds the newly stored ones to the rollups, in one
/// transaction. An event already stored (same occurred_at and id) adds
/// nothing, so a redelivered batch changes no figure.
pub async fn apply_batch(client: &mut Client, events: &[RawEvent]) -> keel_db::Result<Applied> {
    let tx = client.transaction().await?;
    let insert = tx
        .prepare_cached(
            "INSERT INTO events (occurred_at, id, type, version, user_id, data)
             SELECT * FROM unnest($1::timestamptz[], $2::uuid[], $3::text[], $4::int2[],
                                  $5::uuid[], $6::jsonb[])
             ON CONFLICT DO NOTHING
             RETURNING occurred_at, id",
        )
        .await?;
    // In key order: concurrent batches (ingest.consumers) that share an
    // event (a redelivery) then wait on each other in one direction only,
    // and the primary key is filled in order.
    let mut ordered: Vec<&RawEvent> = events.iter().collect();
    ordered.sort_unstable_by_key(|e| (e.occurred_at, e.id));
    let occurred: Vec<DateTime<Utc>> = ordered.iter().map(|e| e.occurred_at).collect();
    let ids: Vec<Uuid> = ordered.iter().map(|e| e.id).collect();
    let kinds: Vec<&str> = ordered.iter().map(|e| e.kind.as_str()).collect();
    let versions: Vec<i16> = ordered.iter().map(|e| e.version).collect();
    let users: Vec<Option<Uuid>> = ordered.iter().map(|e| e.user_id()).collect();
    let data: Vec<&serde_json::Value> = ordered.iter().map(|e| &e.data).collect();
    let rows = tx
        .query(
            &insert,
            &[&occurred, &ids, &kinds, &versions, &users, &data],
        )
        .await?;
    let stored: HashSet<(DateTime<Utc>, Uuid)> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    // The same event twice in one batch is stored (and counted) once.
    let mut counted = HashSet::with_capacity(stored.len());
    let fresh: Vec<&RawEvent> = events
        .iter()
        .filter(|e| {
            stored.contains(&(e.occurred_at, e.id)) && counted.insert((e.occurred_at, e.id))
        })
        .collect();

    let mut sums = aggregate(fresh.iter().copied());
    for (day, user_id) in claim_active_users(&tx, &active_users(fresh.iter().copied())).await? {
        let bucket = Grain::Day.bucket(day_start(day));
        for scope in [STORE, user_id] {
            let series = Series {
                user_id: scope,
                metric: ACTIVE_USERS.to_owned(),
                currency: String::new(),
            };
            *sums.entry((Grain::Day, series, bucket)).or_insert(0) += 1;
        }
    }
    add_to_rollups(&tx, &sums).await?;
    tx.commit().await?;
    Ok(Applied {
        inserted: fresh.len(),
        duplicates: events.len() - fresh.len(),
    })
}

/// Records (day, user) pairs; returns those seen for the first time.
async fn claim_active_users(
    tx: &keel_db::Transaction<'_>,
    pairs: &BTreeSet<(NaiveDate, Uuid)>,
) -> keel_db::Result<Vec<(NaiveDate, Uuid)>> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let (days, users): (Vec<NaiveDate>, Vec<Uuid>) = pairs.iter().copied().unzip();
    let statement = tx
        .prepare_cached(
            "INSERT INTO daily_users (day, user_id)
             SELECT * FROM unnest($1::date[], $2::uuid[])
             ON CONFLICT DO NOTHING
             RETURNING day, user_id",
        )
        .await?;
    let rows = tx.query(&statement, &[&days, &users]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// One upsert for all the batch's rollup rows, in key order so concurrent
/// batches lock shared rows in the same order (no deadlocks).
async fn add_to_rollups(
    tx: &keel_db::Transaction<'_>,
    sums: &BTreeMap<RollupKey, i64>,
) -> keel_db::Result<()> {
    if sums.is_empty() {
        return Ok(());
    }
    let mut grains = Vec::with_capacity(sums.len());
    let mut users = Vec::with_capacity(sums.len());
    let mut metrics = Vec::with_capacity(sums.len());
    let mut currencies = Vec::with_capacity(sums.len());
    let mut buckets = Vec::with_capacity(sums.len());
    let mut values = Vec::with_capacity(sums.len());
    for ((grain, series, bucket), value) in sums {
        grains.push(grain.as_str());
        users.push(series.user_id);
        metrics.push(series.metric.as_str());
        currencies.push(series.currency.as_str());
        buckets.push(*bucket);
        values.push(*value);
    }
    let statement = tx
        .prepare_cached(
            "INSERT INTO rollups AS r (grain, user_id, metric, currency, bucket, value)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[],
                                  $5::timestamptz[], $6::int8[])
             ON CONFLICT (grain, user_id, metric, currency, bucket)
             DO UPDATE SET value = r.value + EXCLUDED.value",
        )
        .await?;
    tx.execute(
        &statement,
        &[&grains, &users, &metrics, &currencies, &buckets, &values],
    )
    .await?;
    Ok(())
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// What `rebuild` recomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub events: i64,
    pub rollup_rows: u64,
}

/// Recomputes every rollup and distinct-user row of the days `from..=to`
/// from the raw events, in one transaction. The definitions mirror
/// [`RawEvent::contributions`] and [`RawEvent::revenue`].
pub async fn rebuild(
    client: &mut Client,
    from: NaiveDate,
    to: NaiveDate,
) -> keel_db::Result<Rebuilt> {
    let start = day_start(from);
    let end = day_start(to + chrono::Days::new(1));
    let tx = client.transaction().await?;
    // An operator's command over millions of rows: the service's
    // per-statement budget (`database.statement_timeout`) does not apply.
    tx.batch_execute("SET LOCAL statement_timeout = 0").await?;
    // Live batches wait (their upserts need ROW EXCLUSIVE) until the
    // recomputed figures are committed, then add to them; readers go on.
    tx.batch_execute("LOCK TABLE rollups, daily_users IN EXCLUSIVE MODE")
        .await?;
    tx.execute(
        "DELETE FROM rollups WHERE bucket >= $1 AND bucket < $2",
        &[&start, &end],
    )
    .await?;
    tx.execute(
        "DELETE FROM daily_users WHERE day >= $1 AND day <= $2",
        &[&from, &to],
    )
    .await?;
    let events: i64 = tx
        .query_one(
            "SELECT count(*) FROM events WHERE occurred_at >= $1 AND occurred_at < $2",
            &[&start, &end],
        )
        .await?
        .get(0);
    let counted = tx
        .execute(
            "WITH facts AS (
                SELECT e.occurred_at, s.user_id, f.metric, f.currency, f.amount
                FROM events e
                CROSS JOIN LATERAL (
                    SELECT e.type AS metric, '' AS currency, 1::bigint AS amount
                    UNION ALL
                    SELECT 'revenue', e.data->>'currency',
                           CASE WHEN e.type = 'order.created' THEN (e.data->>'total_cents')::bigint
                                ELSE -(e.data->>'total_cents')::bigint END
                    WHERE jsonb_typeof(e.data->'currency') = 'string'
                      AND jsonb_typeof(e.data->'total_cents') = 'number'
                      AND jsonb_typeof(e.data->'status') = 'string'
                      AND (e.type = 'order.created'
                           OR (e.type = 'order.updated'
                               AND e.data->>'status' = 'cancelled'
                               AND e.data->>'previous_status' IS DISTINCT FROM 'cancelled'))
                ) f
                CROSS JOIN LATERAL (
                    SELECT '00000000-0000-0000-0000-000000000000'::uuid AS user_id
                    UNION ALL
                    SELECT e.user_id WHERE e.user_id IS NOT NULL
                ) s
                WHERE e.occurred_at >= $1 AND e.occurred_at < $2
            )
            INSERT INTO rollups (grain, user_id, metric, currency, bucket, value)
            SELECT g.grain, f.user_id, f.metric, f.currency,
                   date_trunc(g.grain, f.occurred_at, 'UTC'), sum(f.amount)
            FROM facts f CROSS JOIN (VALUES ('minute'), ('hour'), ('day')) AS g(grain)
            GROUP BY 1, 2, 3, 4, 5",
            &[&start, &end],
        )
        .await?;
    tx.execute(
        "INSERT INTO daily_users (day, user_id)
         SELECT DISTINCT (occurred_at AT TIME ZONE 'UTC')::date, user_id
         FROM events
         WHERE occurred_at >= $1 AND occurred_at < $2 AND user_id IS NOT NULL",
        &[&start, &end],
    )
    .await?;
    let active = tx
        .execute(
            "INSERT INTO rollups (grain, user_id, metric, currency, bucket, value)
             SELECT 'day', '00000000-0000-0000-0000-000000000000'::uuid, 'active_users', '',
                    day::timestamp AT TIME ZONE 'UTC', count(*)
             FROM daily_users WHERE day >= $1 AND day <= $2 GROUP BY day
             UNION ALL
             SELECT 'day', user_id, 'active_users', '', day::timestamp AT TIME ZONE 'UTC', 1
             FROM daily_users WHERE day >= $1 AND day <= $2",
            &[&from, &to],
        )
        .await?;
    tx.commit().await?;
    Ok(Rebuilt {
        events,
        rollup_rows: counted + active,
    })
}
