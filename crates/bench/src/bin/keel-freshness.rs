//! `keel-freshness`: how soon a write is visible where a user looks for it.
//!
//! Two kinds of probe, sent at a fixed interval while something else loads
//! the stack (the bench runs an open-loop webhook ingest in the background):
//!
//! - **webhook → `GET /api/v1/orders/{id}`**: a signed Shopify
//!   `orders/create` delivery naming a new order; from its `200`, the probe
//!   polls PostgreSQL for the Keel order id (`source = 'webhook:shopify'`,
//!   `external_id` = the Shopify id: the worker's commit), then
//!   `GET /api/v1/orders/{id}` with an admin token until it answers `200`.
//!   Both times are reported, each from the webhook's `200`.
//! - **`POST /api/v1/orders` → analytics**: an order created through the API;
//!   from its `201`, the probe polls analytics' raw event table until the
//!   `order.created` event naming that order id is stored (analytics writes
//!   the raw row and its rollups in one transaction, so a stored row is a
//!   counted one).
//!
//! A probe that does not finish within `--timeout` counts as a sample of
//! that length (so a stall raises the percentiles instead of vanishing) and
//! in `timeouts`. Prints one JSON line.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chrono::Utc;
use clap::Parser;
use hdrhistogram::Histogram;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_postgres::{Client, NoTls, Statement};

/// Webhook and API write freshness probes; prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "keel-freshness", version)]
struct Args {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    gateway: String,
    /// PostgreSQL URL of the database holding the store's and analytics' tables.
    #[arg(long)]
    database_url: String,
    /// Bearer token that may read any order (webhook orders belong to no user).
    #[arg(long)]
    admin_token: String,
    /// Bearer token that creates the API orders.
    #[arg(long)]
    user_token: String,
    /// Shopify webhook secret the gateway verifies with.
    #[arg(long)]
    shopify_secret: String,
    /// Webhook probes to send (0: none).
    #[arg(long, default_value_t = 300)]
    webhook_probes: u64,
    /// API order probes to send (0: none).
    #[arg(long, default_value_t = 300)]
    order_probes: u64,
    /// Milliseconds between two probes of one kind.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// Milliseconds between two polls of one probe.
    #[arg(long, default_value_t = 2)]
    poll_ms: u64,
    /// Seconds after which a probe counts as a timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// The orders table (schema-qualified).
    #[arg(long, default_value = "store.orders")]
    orders_table: String,
    /// Analytics' raw event table (schema-qualified).
    #[arg(long, default_value = "analytics.events")]
    analytics_events_table: String,
}

#[derive(Debug, Serialize)]
struct Stats {
    samples: u64,
    timeouts: u64,
    errors: u64,
    first_error: Option<String>,
    p50_ms: Option<f64>,
    p95_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Webhook `200` → the worker's commit seen in PostgreSQL.
    webhook_to_commit: Stats,
    /// Webhook `200` → `GET /api/v1/orders/{id}` answers `200`.
    webhook_to_get: Stats,
    /// `POST /api/v1/orders` `201` → its `order.created` stored by analytics.
    order_to_analytics: Stats,
    seconds: f64,
}

/// One probe's outcome: milliseconds per measured step, or why it failed.
enum Outcome {
    Webhook { commit_ms: f64, get_ms: f64 },
    Order { analytics_ms: f64 },
    Timeout { kind: Kind, commit_ms: Option<f64> },
    Failed { kind: Kind, error: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Order,
}

struct Shared {
    args: Args,
    http: reqwest::Client,
    db: Client,
    find_order: Statement,
    find_event: Statement,
    timeout: Duration,
    poll: Duration,
    /// Shopify ids of this run's probes start here (distinct across runs,
    /// below 2^53 so JSON keeps them exact, apart from keel-loadgen's 10^14+).
    shopify_base: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.timeout <= 0.0 || args.interval_ms == 0 || args.poll_ms == 0 {
        bail!("--timeout, --interval-ms and --poll-ms must be positive");
    }
    let (db, connection) = tokio_postgres::connect(&args.database_url, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("keel-freshness: database connection: {e}");
        }
    });
    let find_order = db
        .prepare(&format!(
            "SELECT id::text FROM {} WHERE source = 'webhook:shopify' AND external_id = $1",
            args.orders_table
        ))
        .await
        .context("preparing the order lookup")?;
    // occurred_at bounds the scan to the probe's own seconds (the table's
    // key starts with it); the event's data names the order.
    let find_event = db
        .prepare(&format!(
            "SELECT 1 FROM {} WHERE occurred_at >= $2 AND type = 'order.created' \
             AND data->>'order_id' = $1 LIMIT 1",
            args.analytics_events_table
        ))
        .await
        .context("preparing the analytics lookup")?;
    let unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let shared = Arc::new(Shared {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs_f64(args.timeout))
            .build()
            .context("building the HTTP client")?,
        timeout: Duration::from_secs_f64(args.timeout),
        poll: Duration::from_millis(args.poll_ms),
        shopify_base: 900_000_000_000_000 + (unix_s % 10_000_000) * 10_000,
        db,
        find_order,
        find_event,
        args,
    });

    let started = Instant::now();
    let mut probes = JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(shared.args.interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let rounds = shared.args.webhook_probes.max(shared.args.order_probes);
    for i in 0..rounds {
        ticker.tick().await;
        if i < shared.args.webhook_probes {
            let shared = Arc::clone(&shared);
            probes.spawn(async move { webhook_probe(&shared, i).await });
        }
        if i < shared.args.order_probes {
            let shared = Arc::clone(&shared);
            probes.spawn(async move { order_probe(&shared).await });
        }
    }

    let mut commit = Collector::new()?;
    let mut get = Collector::new()?;
    let mut analytics = Collector::new()?;
    let timeout_ms = shared.timeout.as_secs_f64() * 1000.0;
    while let Some(joined) = probes.join_next().await {
        match joined.context("a probe panicked")? {
            Outcome::Webhook { commit_ms, get_ms } => {
                commit.record(commit_ms);
                get.record(get_ms);
            }
            Outcome::Order { analytics_ms } => analytics.record(analytics_ms),
            Outcome::Timeout {
                kind: Kind::Webhook,
                commit_ms,
            } => {
                commit.record(commit_ms.unwrap_or(timeout_ms));
                if commit_ms.is_none() {
                    commit.timeouts += 1;
                }
                get.record(timeout_ms);
                get.timeouts += 1;
            }
            Outcome::Timeout {
                kind: Kind::Order, ..
            } => {
                analytics.record(timeout_ms);
                analytics.timeouts += 1;
            }
            Outcome::Failed { kind, error } => {
                let c = if kind == Kind::Webhook {
                    &mut get
                } else {
                    &mut analytics
                };
                c.errors += 1;
                c.first_error.get_or_insert(error);
            }
        }
    }
    let report = Report {
        webhook_to_commit: commit.stats(),
        webhook_to_get: get.stats(),
        order_to_analytics: analytics.stats(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report).context("writing the report")?;
    writeln!(out).context("writing the report")?;
    Ok(())
}

async fn webhook_probe(shared: &Shared, i: u64) -> Outcome {
    let kind = Kind::Webhook;
    let shopify_id = shared.shopify_base + i;
    let body = serde_json::json!({
        "id": shopify_id,
        "email": "probe@bench.example",
        "currency": "EUR",
        "total_price": "199.00",
        "line_items": [{"id": 1, "sku": "TSHIRT-M", "quantity": 2, "price": "99.50"}],
    })
    .to_string();
    let signature = keel_webhooks::sign::shopify(&shared.args.shopify_secret, body.as_bytes());
    let sent = shared
        .http
        .post(format!("{}/webhooks/shopify", shared.args.gateway))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Event-Id", format!("freshness-{shopify_id}"))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status() == StatusCode::OK => {}
        Ok(r) => return failed(kind, format!("webhook answered {}", r.status())),
        Err(e) => return failed(kind, format!("webhook: {e}")),
    }
    let accepted = Instant::now();
    let deadline = accepted + shared.timeout;
    let external = shopify_id.to_string();
    let id: String = loop {
        match shared.db.query_opt(&shared.find_order, &[&external]).await {
            Ok(Some(row)) => break row.get(0),
            Ok(None) => {}
            Err(e) => return failed(kind, format!("order lookup: {e}")),
        }
        if Instant::now() >= deadline {
            return Outcome::Timeout {
                kind,
                commit_ms: None,
            };
        }
        tokio::time::sleep(shared.poll).await;
    };
    let commit_ms = ms_since(accepted);
    let url = format!("{}/api/v1/orders/{id}", shared.args.gateway);
    loop {
        match shared
            .http
            .get(&url)
            .bearer_auth(&shared.args.admin_token)
            .send()
            .await
        {
            Ok(r) if r.status() == StatusCode::OK => {
                return Outcome::Webhook {
                    commit_ms,
                    get_ms: ms_since(accepted),
                };
            }
            // Not visible yet (a stale cache or replica would say 404).
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {}
            Ok(r) => return failed(kind, format!("GET order answered {}", r.status())),
            Err(e) => return failed(kind, format!("GET order: {e}")),
        }
        if Instant::now() >= deadline {
            return Outcome::Timeout {
                kind,
                commit_ms: Some(commit_ms),
            };
        }
        tokio::time::sleep(shared.poll).await;
    }
}

async fn order_probe(shared: &Shared) -> Outcome {
    let kind = Kind::Order;
    // occurred_at is stamped by the gateway, on this machine's clock, after
    // the request was sent; a second of slack covers clock granularity.
    let since = Utc::now() - chrono::Duration::seconds(1);
    let sent = shared
        .http
        .post(format!("{}/api/v1/orders", shared.args.gateway))
        .bearer_auth(&shared.args.user_token)
        .json(&serde_json::json!({
            "currency": "EUR",
            "items": [{"sku": "TSHIRT-M", "quantity": 2, "unit_price_cents": 1500}],
        }))
        .send()
        .await;
    let response = match sent {
        Ok(r) if r.status() == StatusCode::CREATED => r,
        Ok(r) => return failed(kind, format!("POST order answered {}", r.status())),
        Err(e) => return failed(kind, format!("POST order: {e}")),
    };
    let created = Instant::now();
    let order: serde_json::Value = match response.json().await {
        Ok(v) => v,
        Err(e) => return failed(kind, format!("POST order body: {e}")),
    };
    let Some(id) = order["id"].as_str().map(str::to_owned) else {
        return failed(kind, format!("POST order body has no id: {order}"));
    };
    let deadline = created + shared.timeout;
    loop {
        match shared
            .db
            .query_opt(&shared.find_event, &[&id, &since])
            .await
        {
            Ok(Some(_)) => {
                return Outcome::Order {
                    analytics_ms: ms_since(created),
                };
            }
            Ok(None) => {}
            Err(e) => return failed(kind, format!("analytics lookup: {e}")),
        }
        if Instant::now() >= deadline {
            return Outcome::Timeout {
                kind,
                commit_ms: None,
            };
        }
        tokio::time::sleep(shared.poll).await;
    }
}

fn failed(kind: Kind, error: String) -> Outcome {
    Outcome::Failed { kind, error }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

struct Collector {
    histogram: Histogram<u64>,
    timeouts: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Collector {
    fn new() -> Result<Self> {
        Ok(Self {
            // Microseconds, 1 µs .. 10 min, 3 significant digits.
            histogram: Histogram::new_with_bounds(1, 600_000_000, 3)
                .context("creating a histogram")?,
            timeouts: 0,
            errors: 0,
            first_error: None,
        })
    }

    fn record(&mut self, ms: f64) {
        // Whole microseconds are precision enough for latencies of milliseconds.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micros = (ms * 1000.0).max(1.0) as u64;
        self.histogram.saturating_record(micros);
    }

    fn stats(&self) -> Stats {
        let empty = self.histogram.is_empty();
        let at = |q: f64| (!empty).then(|| self.histogram.value_at_quantile(q) as f64 / 1000.0);
        Stats {
            samples: self.histogram.len(),
            timeouts: self.timeouts,
            errors: self.errors,
            first_error: self.first_error.clone(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: (!empty).then(|| self.histogram.max() as f64 / 1000.0),
        }
    }
}
