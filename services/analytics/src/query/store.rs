//! Reads from the rollups (never from raw events).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use keel_db::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use super::params::{Period, SeriesRequest, pieces};
use crate::ingest::event::{Grain, REVENUE};

/// `GET /api/v1/analytics/summary`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub orders_created: i64,
    pub revenue_cents: BTreeMap<String, i64>,
    pub users_registered: i64,
    pub webhooks_received: i64,
    pub exports_completed: i64,
}

/// One timeseries point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Point {
    pub ts: DateTime<Utc>,
    pub value: i64,
}

/// `GET /api/v1/analytics/timeseries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeseries {
    pub points: Vec<Point>,
}

const SUMMARY_METRICS: [&str; 5] = [
    "order.created",
    REVENUE,
    "user.registered",
    "webhook.received",
    "export.completed",
];

/// The summary statement: one range per rollup piece (at most five, see
/// [`pieces`]; unused ones get an empty range). PostgreSQL answers it with
/// one bitmap index scan per range, OR-ed, then reads the few heap pages
/// they point to.
const SUMMARY_SQL: &str = "SELECT metric, currency, sum(value)::bigint FROM rollups
    WHERE user_id = $1 AND metric = ANY($2) AND (
           (grain = $3 AND bucket >= $4 AND bucket < $5)
        OR (grain = $6 AND bucket >= $7 AND bucket < $8)
        OR (grain = $9 AND bucket >= $10 AND bucket < $11)
        OR (grain = $12 AND bucket >= $13 AND bucket < $14)
        OR (grain = $15 AND bucket >= $16 AND bucket < $17))
    GROUP BY metric, currency";

/// Sums the summary's metrics over `period` for `scope` (a user, or the
/// nil UUID for the store): one index range per rollup piece.
///
/// Each piece's bounds are their own parameters rather than rows joined
/// from arrays (`unnest` + `LATERAL`, before): with arrays the planner
/// cannot see the ranges, guessed about 12,000 rows per piece over the
/// bench's 25 million rollup rows, and the resulting cost (≈ 116,000)
/// crossed `jit_above_cost` (100,000), so every admin summary paid 15-35 ms
/// of JIT compilation to read about 700 rows in under a millisecond
/// (docs/benchmarks.md, Analytics). With the bounds visible the plan costs
/// about half the threshold over that data set. The statement is sent unnamed (not
/// `prepare_cached`) so every execution is planned with its own bounds; a
/// cached statement may switch to a generic plan after five executions,
/// which is blind to them again.
pub async fn summary(
    client: &impl GenericClient,
    scope: Uuid,
    period: Period,
) -> keel_db::Result<Summary> {
    let pieces = pieces(period);
    // `pieces` yields at most five ranges (minutes, hours, days, hours,
    // minutes); unused slots keep an empty range, which reads nothing.
    debug_assert!(
        pieces.len() <= 5,
        "more pieces than SUMMARY_SQL has branches"
    );
    let mut slots = [(Grain::Minute.as_str(), period.to, period.to); 5];
    for (slot, (grain, start, stop)) in slots.iter_mut().zip(pieces) {
        *slot = (grain.as_str(), start, stop);
    }
    let metrics: Vec<&str> = SUMMARY_METRICS.to_vec();
    let [
        (g0, s0, e0),
        (g1, s1, e1),
        (g2, s2, e2),
        (g3, s3, e3),
        (g4, s4, e4),
    ] = slots;
    let rows = client
        .query(
            SUMMARY_SQL,
            &[
                &scope, &metrics, &g0, &s0, &e0, &g1, &s1, &e1, &g2, &s2, &e2, &g3, &s3, &e3, &g4,
                &s4, &e4,
            ],
        )
        .await?;
    let mut summary = Summary::default();
    for row in rows {
        let metric: &str = row.get(0);
        let currency: String = row.get(1);
        let value: i64 = row.get(2);
        match metric {
            "order.created" => summary.orders_created = value,
            REVENUE => {
                summary.revenue_cents.insert(currency, value);
            }
            "user.registered" => summary.users_registered = value,
            "webhook.received" => summary.webhooks_received = value,
            "export.completed" => summary.exports_completed = value,
            _ => {}
        }
    }
    Ok(summary)
}

/// One point per bucket of the request, zero where nothing happened.
pub async fn timeseries(
    client: &impl GenericClient,
    scope: Uuid,
    request: &SeriesRequest,
) -> keel_db::Result<Timeseries> {
    let rows = client
        .query(
            "SELECT bucket, value FROM rollups
             WHERE grain = $1 AND user_id = $2 AND metric = $3 AND currency = $4
               AND bucket >= $5 AND bucket < $6",
            &[
                &request.grain.as_str(),
                &scope,
                &request.metric,
                &request.currency,
                &request.period.from,
                &request.period.to,
            ],
        )
        .await?;
    let values: HashMap<DateTime<Utc>, i64> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let points = request
        .points()
        .into_iter()
        .map(|ts| Point {
            ts,
            value: values.get(&ts).copied().unwrap_or(0),
        })
        .collect();
    Ok(Timeseries { points })
}
