//! Reads from the rollups (never from raw events).

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use keel_db::GenericClient;
use serde::Serialize;
use uuid::Uuid;

use super::params::{Period, SeriesRequest, pieces};
use crate::ingest::event::REVENUE;

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

/// Sums the summary's metrics over `period` for `scope` (a user, or the
/// nil UUID for the store): one index range per rollup piece.
pub async fn summary(
    client: &impl GenericClient,
    scope: Uuid,
    period: Period,
) -> keel_db::Result<Summary> {
    let pieces = pieces(period);
    let grains: Vec<&str> = pieces.iter().map(|(g, _, _)| g.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = pieces.iter().map(|(_, s, _)| *s).collect();
    let ends: Vec<DateTime<Utc>> = pieces.iter().map(|(_, _, e)| *e).collect();
    let metrics: Vec<&str> = SUMMARY_METRICS.to_vec();
    // LATERAL per piece: each is an index range scan on the primary key
    // (grain, user_id, metric = ANY, bucket range).
    let rows = client
        .query(
            "SELECT r.metric, r.currency, sum(r.value)::bigint
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS p(grain, start, stop)
             CROSS JOIN LATERAL (
                 SELECT metric, currency, value FROM rollups
                 WHERE grain = p.grain AND user_id = $4 AND metric = ANY($5)
                   AND bucket >= p.start AND bucket < p.stop
             ) r
             GROUP BY r.metric, r.currency",
            &[&grains, &starts, &ends, &scope, &metrics],
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
