//! After the faults: wait for quiet, then read what the system holds (SQL,
//! the RabbitMQ management API, the public API) into an [`Observed`] and
//! the invariants that are not ledger arithmetic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::faults::Poison;
use crate::ledger::{Observed, StoredDelivery, StoredExport};
use crate::load::Shared;

/// A connection to the stack's database, straight to the server; retried
/// for a few seconds (it may be restarting, or briefly full).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let mut tries = 0;
    let (client, connection) = loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok(pair) => break pair,
            Err(error) if tries < 10 => {
                tries += 1;
                eprintln_soak(&format!("database connection failed ({error}); retrying"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error).with_context(|| format!("connecting to {url}")),
        }
    };
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The management API, for queue depths.
#[derive(Debug, Clone)]
pub struct Broker {
    pub management_url: String,
    pub namespace: String,
}

impl Broker {
    /// `(queue, messages)` of this run's queues.
    pub async fn queues(&self, client: &reqwest::Client) -> Result<Vec<(String, u64)>> {
        let url = reqwest::Url::parse(&self.management_url)?;
        let user = url.username().to_owned();
        let password = url.password().unwrap_or_default().to_owned();
        let mut api = url.clone();
        let _ = api.set_username("");
        let _ = api.set_password(None);
        let api = api.join("/api/queues?columns=name,messages")?;
        let queues: Vec<Value> = client
            .get(api)
            .basic_auth(user, Some(password))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let prefix = format!("{}.", self.namespace);
        Ok(queues
            .iter()
            .filter_map(|q| {
                let name = q["name"].as_str()?;
                name.starts_with(&prefix)
                    .then(|| (name.to_owned(), q["messages"].as_u64().unwrap_or(0)))
            })
            .collect())
    }
}

/// Schemas that have an outbox table.
async fn outbox_schemas(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    Ok(db
        .query(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' \
             ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect())
}

/// What is still moving: unpublished outbox rows (the poison excluded),
/// webhook events not yet done, messages in the run's queues.
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    pub outbox: BTreeMap<String, i64>,
    pub webhooks_pending: i64,
    pub queues: Vec<(String, u64)>,
}

impl Backlog {
    pub fn quiet(&self) -> bool {
        self.outbox.values().all(|n| *n == 0)
            && self.webhooks_pending == 0
            && self.queues.iter().all(|(_, n)| *n == 0)
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .outbox
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(schema, n)| format!("{schema}.outbox {n} unpublished"))
            .collect();
        if self.webhooks_pending > 0 {
            parts.push(format!("{} webhook events pending", self.webhooks_pending));
        }
        parts.extend(
            self.queues
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(q, n)| format!("{q} {n}")),
        );
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

pub async fn backlog(
    db: &tokio_postgres::Client,
    broker: &Broker,
    client: &reqwest::Client,
    poison: &Poison,
) -> Result<Backlog> {
    let mut backlog = Backlog::default();
    for schema in outbox_schemas(db).await? {
        let sql = format!(
            "SELECT count(*) FROM \"{schema}\".outbox WHERE published_at IS NULL AND id <> ALL($1)"
        );
        let n: i64 = db.query_one(&sql, &[&poison.unroutable_rows]).await?.get(0);
        backlog.outbox.insert(schema, n);
    }
    backlog.webhooks_pending = db
        .query_one(
            "SELECT count(*) FROM store.webhook_events WHERE status = 'received'",
            &[],
        )
        .await?
        .get(0);
    backlog.queues = broker.queues(client).await?;
    Ok(backlog)
}

/// Polls until the backlog is empty three times in a row (the management
/// API's figures lag a few seconds) or `bound` passes; the last backlog
/// and how long it took.
pub async fn wait_quiet(
    db: &tokio_postgres::Client,
    broker: &Broker,
    client: &reqwest::Client,
    poison: &Poison,
    bound: Duration,
) -> (Backlog, Duration) {
    let started = Instant::now();
    let mut quiet_in_a_row = 0;
    let mut last = Backlog::default();
    loop {
        match backlog(db, broker, client, poison).await {
            Ok(now) => {
                quiet_in_a_row = if now.quiet() { quiet_in_a_row + 1 } else { 0 };
                last = now;
            }
            Err(error) => {
                quiet_in_a_row = 0;
                eprintln_soak(&format!("backlog unreadable: {error:#}"));
            }
        }
        if quiet_in_a_row >= 3 || started.elapsed() > bound {
            return (last, started.elapsed());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub fn eprintln_soak(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "[soak] {message}");
}

/// Reads what the ledger is held against.
pub async fn observe(
    db: &tokio_postgres::Client,
    shared: &Shared,
    poison: &Poison,
) -> Result<Observed> {
    let mut observed = Observed::default();
    for row in db
        .query(
            "SELECT source, delivery_id, count(*), max(status) FROM store.webhook_events \
             GROUP BY 1, 2",
            &[],
        )
        .await?
    {
        let rows: i64 = row.get(2);
        observed.deliveries.insert(
            (row.get(0), row.get(1)),
            StoredDelivery {
                rows: rows as u64,
                status: row.get(3),
            },
        );
    }
    for row in db
        .query(
            "SELECT external_id, count(*) FROM store.orders \
             WHERE source = 'webhook:shopify' AND external_id IS NOT NULL GROUP BY 1",
            &[],
        )
        .await?
    {
        let n: i64 = row.get(1);
        observed.webhook_orders.insert(row.get(0), n as u64);
    }
    for row in db
        .query(
            "SELECT DISTINCT substr(i.sku, 2), o.id FROM store.orders o \
             JOIN store.order_items i ON i.order_id = o.id \
             WHERE o.source = 'api' AND i.sku LIKE 'K%'",
            &[],
        )
        .await?
    {
        observed
            .orders_by_key
            .entry(row.get(0))
            .or_insert_with(BTreeSet::new)
            .insert(row.get(1));
    }
    let owners: HashMap<Uuid, usize> = shared
        .export_owners
        .lock()
        .map(|o| o.iter().copied().collect())
        .unwrap_or_default();
    for row in db
        .query("SELECT id, status, sha256 FROM store.exports", &[])
        .await?
    {
        let id: Uuid = row.get(0);
        let status: String = row.get(1);
        let sha256: Option<String> = row.get(2);
        let checksum_matches = if status == "succeeded" {
            Some(match (owners.get(&id), sha256) {
                (Some(user), Some(stored)) => download_sha256(shared, *user, id)
                    .await
                    .is_ok_and(|actual| actual == stored),
                _ => false,
            })
        } else {
            None
        };
        observed.exports.insert(
            id,
            StoredExport {
                status,
                checksum_matches,
            },
        );
    }
    let count = |sql: &'static str| async move {
        let row = db.query_one(sql, &[]).await?;
        Ok::<u64, tokio_postgres::Error>(row.get::<_, i64>(0) as u64)
    };
    let poison_events = &poison.failing_events;
    let analytics = |kind: &'static str| async move {
        let row = db
            .query_one(
                "SELECT count(*) FROM analytics.events WHERE type = $1 AND id <> ALL($2)",
                &[&kind, poison_events],
            )
            .await?;
        Ok::<u64, tokio_postgres::Error>(row.get::<_, i64>(0) as u64)
    };
    observed.event_counts.insert(
        "order.created".to_owned(),
        (
            count("SELECT count(*) FROM store.orders").await?,
            analytics("order.created").await?,
        ),
    );
    observed.event_counts.insert(
        "webhook.received".to_owned(),
        (
            count("SELECT count(*) FROM store.webhook_events").await?,
            analytics("webhook.received").await?,
        ),
    );
    Ok(observed)
}

/// The export's file through the public API (the owner's signed link),
/// hashed.
async fn download_sha256(shared: &Shared, user: usize, id: Uuid) -> Result<String> {
    let token = shared.users[user]
        .access
        .read()
        .map(|t| t.clone())
        .unwrap_or_default();
    let export: Value = shared
        .client
        .get(shared.gateway(&format!("/api/v1/exports/{id}")))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let link = export["download_url"].as_str().context("no download_url")?;
    let url = if link.starts_with("http") {
        link.to_owned()
    } else {
        shared.gateway(link)
    };
    let bytes = shared
        .client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Analytics' day rollups of the whole store against a count over the raw
/// events, per event type: the mismatches.
pub async fn analytics_rebuild(db: &tokio_postgres::Client) -> Result<Vec<String>> {
    let rows = db
        .query(
            "WITH raw AS ( \
                 SELECT type AS metric, date_trunc('day', occurred_at AT TIME ZONE 'UTC') AS day, \
                        count(*) AS n \
                 FROM analytics.events GROUP BY 1, 2), \
             rolled AS ( \
                 SELECT metric, bucket AT TIME ZONE 'UTC' AS day, sum(value)::int8 AS n \
                 FROM analytics.rollups \
                 WHERE grain = 'day' AND user_id = '00000000-0000-0000-0000-000000000000' \
                   AND currency = '' AND metric NOT IN ('revenue', 'active_users') \
                 GROUP BY 1, 2) \
             SELECT coalesce(raw.metric, rolled.metric), coalesce(raw.n, 0), \
                    coalesce(rolled.n, 0) \
             FROM raw FULL JOIN rolled ON raw.metric = rolled.metric AND raw.day = rolled.day \
             WHERE coalesce(raw.n, 0) <> coalesce(rolled.n, 0)",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let metric: String = row.get(0);
            let raw: i64 = row.get(1);
            let rolled: i64 = row.get(2);
            format!("{metric}: rollup {rolled}, raw events {raw}")
        })
        .collect())
}

/// The dead letters against the poison: `(expected found, missing,
/// unexpected)` as lines.
pub async fn dead_letters(
    db: &tokio_postgres::Client,
    poison: &Poison,
) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let rows = db
        .query(
            "SELECT id, message_type, routing_key, death_reason, coalesce(last_error, ''), \
                    encode(body, 'escape') FROM store.dead_letters WHERE status = 'dead'",
            &[],
        )
        .await?;
    let mut found = Vec::new();
    let mut unexpected = Vec::new();
    let mut matched_events = BTreeSet::new();
    let mut matched_jobs = BTreeSet::new();
    for row in &rows {
        let id: Uuid = row.get(0);
        let kind: String = row.get(1);
        let reason: String = row.get(3);
        let error: String = row.get(4);
        let body: String = row.get(5);
        let line = format!(
            "{id} {kind} ({reason}): {}",
            error.chars().take(120).collect::<String>()
        );
        if poison.failing_events.contains(&id) {
            matched_events.insert(id);
            found.push(line);
        } else if let Some(event) = poison
            .failing_webhook_events
            .iter()
            .find(|e| body.contains(&e.to_string()))
        {
            matched_jobs.insert(*event);
            found.push(line);
        } else {
            unexpected.push(line);
        }
    }
    let mut missing: Vec<String> = poison
        .failing_events
        .iter()
        .filter(|id| !matched_events.contains(id))
        .map(|id| format!("poison event {id} is not a dead letter"))
        .collect();
    missing.extend(
        poison
            .failing_webhook_events
            .iter()
            .filter(|id| !matched_jobs.contains(id))
            .map(|id| format!("the job of poison webhook event {id} is not a dead letter")),
    );
    Ok((found, missing, unexpected))
}

/// Where each unroutable outbox row ended: held with its reason (good) or
/// marked published although nobody could receive it (dropped).
pub async fn unroutable_rows(
    db: &tokio_postgres::Client,
    poison: &Poison,
) -> Result<Vec<(Uuid, bool, String)>> {
    let mut out = Vec::new();
    for id in &poison.unroutable_rows {
        let row = db
            .query_opt(
                "SELECT published_at IS NOT NULL, to_jsonb(o)::text FROM store.outbox o WHERE id = $1",
                &[id],
            )
            .await?;
        match row {
            Some(row) => out.push((*id, row.get::<_, bool>(0), row.get(1))),
            None => out.push((*id, true, "row gone (pruned as published)".to_owned())),
        }
    }
    Ok(out)
}
