//! The analytics service against real PostgreSQL and RabbitMQ: events
//! published on the bus, figures read over HTTP, compared with SQL over the
//! raw events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use analytics::ingest::event::RawEvent;
use analytics::ingest::{IngestHandler, IngestMetrics, store};
use analytics::settings::Settings;
use analytics::startup::migrations;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use keel_contracts::envelope::Envelope;
use keel_contracts::events::{
    DomainEvent, ExportCompleted, OrderSnapshot, OrderUpdated, UserRegistered, WebhookReceived,
};
use keel_db::Pool;
use keel_messaging::{
    BatchConsumer, BatchHandler, BatchOptions, ConsumerMetrics, DecodeError, HandlerError,
    Incoming, Publisher,
};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::ServiceProcess;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_analytics");

/// A test's own database and broker namespace, and a stand-in for auth's
/// JWK Set.
struct Stack {
    db: TestDatabase,
    broker: TestBroker,
    auth: support::FakeAuth,
}

impl Stack {
    async fn new() -> Self {
        let db = TestDatabase::create(analytics::SCHEMA, &migrations()).await;
        let broker = TestBroker::new().await;
        // Declared before anything is published, so no event is unroutable
        // while the service is still starting.
        let channel = broker.channel().await;
        broker
            .topology()
            .declare_event_queue(&channel, "analytics", &["#"])
            .await
            .unwrap();
        let auth = support::FakeAuth::start();
        Self { db, broker, auth }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KEEL_DATABASE__URL", self.db.url()),
            ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
            ("KEEL_AMQP__NAMESPACE", self.broker.namespace().to_owned()),
            ("KEEL_INGEST__BATCH_SIZE", "50".to_owned()),
            ("KEEL_INGEST__BATCH_WAIT", "50ms".to_owned()),
            ("KEEL_AUTHN__JWKS_URL", self.auth.jwks_url.clone()),
        ]
    }

    async fn start(&self) -> ServiceProcess {
        ServiceProcess::start(BINARY, &self.env(), Duration::from_secs(30)).await
    }

    fn pool(&self) -> &Pool {
        self.db.pool()
    }

    async fn publish(&self, events: &[Envelope<DomainEvent>]) {
        let publisher = Publisher::new(self.broker.broker("test-publisher"));
        for event in events {
            publisher.publish_event(event).await.unwrap();
        }
    }

    /// Waits until `id` is stored: batches commit in queue order, so every
    /// event published before it is stored (or recognised as a duplicate).
    async fn wait_stored(&self, id: Uuid) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let client = self.pool().get().await.unwrap();
            let found: i64 = client
                .query_one("SELECT count(*) FROM events WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get(0);
            if found == 1 {
                return;
            }
            assert!(Instant::now() < deadline, "event {id} not stored in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn cleanup(self) {
        self.broker.cleanup().await;
        self.auth.stop().await;
    }
}

fn at(day: NaiveDate, hms: &str) -> DateTime<Utc> {
    format!("{day}T{hms}Z").parse().unwrap()
}

fn order(
    user: Option<Uuid>,
    currency: &str,
    cents: i64,
    when: DateTime<Utc>,
) -> (Envelope<DomainEvent>, OrderSnapshot) {
    let snapshot = OrderSnapshot {
        order_id: Uuid::now_v7(),
        user_id: user,
        status: "pending".to_owned(),
        currency: currency.to_owned(),
        total_cents: cents,
        source: "api".to_owned(),
    };
    (
        Envelope::with_id(
            Uuid::now_v7(),
            when,
            DomainEvent::OrderCreated(snapshot.clone()),
        ),
        snapshot,
    )
}

fn event(when: DateTime<Utc>, body: DomainEvent) -> Envelope<DomainEvent> {
    Envelope::with_id(Uuid::now_v7(), when, body)
}

/// The scripted mix: two users, three currencies, every summary metric, a
/// cancellation, minutes, hours and a day boundary; returned shuffled out
/// of time order.
fn script(day: NaiveDate, alice: Uuid, bob: Uuid) -> Vec<Envelope<DomainEvent>> {
    let next = day.succ_opt().unwrap();
    let mut events = vec![
        event(
            at(day, "22:00:05"),
            DomainEvent::UserRegistered(UserRegistered {
                user_id: alice,
                registered_at: at(day, "22:00:05"),
            }),
        ),
        event(
            at(day, "22:10:00"),
            DomainEvent::UserRegistered(UserRegistered {
                user_id: bob,
                registered_at: at(day, "22:10:00"),
            }),
        ),
        order(Some(alice), "EUR", 1250, at(day, "22:15:30")).0,
        order(Some(alice), "EUR", 990, at(day, "22:15:45")).0,
        order(Some(alice), "USD", 5000, at(day, "23:01:00")).0,
        order(Some(bob), "GBP", 700, at(day, "23:30:00")).0,
        order(None, "EUR", 4200, at(day, "23:45:00")).0,
        // Either side of midnight.
        order(Some(bob), "EUR", 300, at(day, "23:59:59")).0,
        order(Some(bob), "EUR", 1100, at(next, "00:00:01")).0,
        event(
            at(day, "22:20:00"),
            DomainEvent::WebhookReceived(WebhookReceived {
                event_id: Uuid::now_v7(),
                source: "shopify".to_owned(),
                topic: Some("orders/create".to_owned()),
            }),
        ),
        event(
            at(next, "00:30:00"),
            DomainEvent::WebhookReceived(WebhookReceived {
                event_id: Uuid::now_v7(),
                source: "stripe".to_owned(),
                topic: None,
            }),
        ),
        event(
            at(day, "23:05:00"),
            DomainEvent::ExportCompleted(ExportCompleted {
                export_id: Uuid::now_v7(),
                user_id: alice,
                rows_written: 10,
                bytes: 1000,
            }),
        ),
        event(
            at(next, "01:10:00"),
            DomainEvent::ExportCompleted(ExportCompleted {
                export_id: Uuid::now_v7(),
                user_id: bob,
                rows_written: 3,
                bytes: 300,
            }),
        ),
    ];
    // A cancellation takes revenue back.
    let (created, snapshot) = order(Some(alice), "USD", 800, at(day, "22:40:00"));
    events.push(created);
    events.push(event(
        at(next, "00:45:00"),
        DomainEvent::OrderUpdated(OrderUpdated {
            order: OrderSnapshot {
                status: "cancelled".to_owned(),
                ..snapshot
            },
            previous_status: "pending".to_owned(),
        }),
    ));
    // Out of order: latest first, then interleaved.
    events.sort_by_key(|e| std::cmp::Reverse(e.occurred_at));
    let (odd, even): (Vec<_>, Vec<_>) = events
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 2 == 1);
    odd.into_iter().chain(even).map(|(_, e)| e).collect()
}

/// The same figures straight from the raw events.
async fn sql_summary(
    pool: &Pool,
    user: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Value {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT type, count(*) FROM events
             WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::uuid IS NULL OR user_id = $3)
             GROUP BY type",
            &[&from, &to, &user],
        )
        .await
        .unwrap();
    let counts: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let rows = client
        .query(
            "SELECT data->>'currency', sum(CASE WHEN type = 'order.created' THEN (data->>'total_cents')::bigint
                                              ELSE -(data->>'total_cents')::bigint END)::bigint
             FROM events
             WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3::uuid IS NULL OR user_id = $3)
               AND (type = 'order.created' OR (type = 'order.updated' AND data->>'status' = 'cancelled'))
             GROUP BY 1",
            &[&from, &to, &user],
        )
        .await
        .unwrap();
    let revenue: BTreeMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let count = |t: &str| counts.get(t).copied().unwrap_or(0);
    json!({
        "orders_created": count("order.created"),
        "revenue_cents": revenue,
        "users_registered": count("user.registered"),
        "webhooks_received": count("webhook.received"),
        "exports_completed": count("export.completed"),
    })
}

/// A timeseries straight from the raw events, zero-filled the same way.
async fn sql_series(
    pool: &Pool,
    user: Option<Uuid>,
    metric: &str,
    currency: Option<&str>,
    grain: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, i64)> {
    let client = pool.get().await.unwrap();
    let rows = client
        .query(
            "SELECT date_trunc($1, occurred_at, 'UTC') AS b,
                    CASE WHEN $2 = 'revenue'
                         THEN coalesce(sum(CASE WHEN type = 'order.created' THEN (data->>'total_cents')::bigint
                                                ELSE -(data->>'total_cents')::bigint END), 0)::bigint
                         ELSE count(*) END
             FROM events
             WHERE occurred_at >= $3 AND occurred_at < $4 AND ($5::uuid IS NULL OR user_id = $5)
               AND CASE WHEN $2 = 'revenue'
                        THEN data->>'currency' = $6
                             AND (type = 'order.created' OR (type = 'order.updated' AND data->>'status' = 'cancelled'))
                        ELSE type = $2 END
             GROUP BY b",
            &[&grain, &metric, &from, &to, &user, &currency.unwrap_or("")],
        )
        .await
        .unwrap();
    let values: HashMap<DateTime<Utc>, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let step = match grain {
        "minute" => TimeDelta::minutes(1),
        "hour" => TimeDelta::hours(1),
        _ => TimeDelta::days(1),
    };
    let mut out = Vec::new();
    let mut ts = from;
    while ts < to {
        out.push((ts, values.get(&ts).copied().unwrap_or(0)));
        ts += step;
    }
    out
}

/// (path, query, the field the 422 must name).
type Case = (&'static str, Vec<(&'static str, String)>, &'static str);

struct Caller {
    user: Uuid,
    admin: bool,
}

async fn get(
    service: &ServiceProcess,
    caller: Option<&Caller>,
    path: &str,
    query: &[(&str, String)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(
        url::Url::parse_with_params(
            &service.url(path),
            query.iter().map(|(k, v)| (*k, v.as_str())),
        )
        .unwrap(),
    );
    if let Some(caller) = caller {
        request = request.bearer_auth(support::token(caller.user, caller.admin));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn range(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(&'static str, String)> {
    vec![("from", from.to_rfc3339()), ("to", to.to_rfc3339())]
}

fn points(body: &Value) -> Vec<(DateTime<Utc>, i64)> {
    body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["ts"].as_str().unwrap().parse().unwrap(),
                p["value"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Every figure the API gives `caller` equals SQL over the raw events.
async fn assert_figures_match_raw(
    stack: &Stack,
    service: &ServiceProcess,
    caller: &Caller,
    day: NaiveDate,
) -> Vec<Value> {
    let user = (!caller.admin).then_some(caller.user);
    let from = at(day, "21:37:00");
    let to = at(day.succ_opt().unwrap(), "01:23:00");
    let mut answers = Vec::new();

    let (status, summary) = get(
        service,
        Some(caller),
        "/api/v1/analytics/summary",
        &range(from, to),
    )
    .await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary, sql_summary(stack.pool(), user, from, to).await);
    answers.push(summary);

    // All five kinds of rollup piece: minutes, hours, the whole day, hours,
    // minutes (the period above needs only three).
    let wide_from = at(day.pred_opt().unwrap(), "22:30:00");
    let (status, wide) = get(
        service,
        Some(caller),
        "/api/v1/analytics/summary",
        &range(wide_from, to),
    )
    .await;
    assert_eq!(status, 200, "{wide}");
    assert_eq!(wide, sql_summary(stack.pool(), user, wide_from, to).await);
    answers.push(wide);

    let metrics: [(&str, Option<&str>); 7] = [
        ("order.created", None),
        ("user.registered", None),
        ("webhook.received", None),
        ("export.completed", None),
        ("order.updated", None),
        ("revenue", Some("EUR")),
        ("revenue", Some("USD")),
    ];
    for (metric, currency) in metrics {
        for (grain, from) in [
            ("minute", from),
            ("hour", at(day, "21:00:00")),
            ("day", at(day, "00:00:00")),
        ] {
            let mut query = range(from, to);
            query.push(("metric", metric.to_owned()));
            query.push(("interval", grain.to_owned()));
            if let Some(currency) = currency {
                query.push(("currency", currency.to_owned()));
            }
            let (status, body) = get(
                service,
                Some(caller),
                "/api/v1/analytics/timeseries",
                &query,
            )
            .await;
            assert_eq!(status, 200, "{body}");
            let expected = sql_series(stack.pool(), user, metric, currency, grain, from, to).await;
            assert_eq!(points(&body), expected, "{metric} {currency:?} per {grain}");
            answers.push(body);
        }
    }
    answers
}

#[tokio::test]
async fn figures_equal_sql_over_raw_events_and_redelivery_changes_nothing() {
    let stack = Stack::new().await;
    let service = stack.start().await;
    let day = Utc::now().date_naive() - chrono::Days::new(3);
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    let events = script(day, alice, bob);
    stack.publish(&events).await;
    // Far from the queried period: marks the end of what was published.
    let sentinel = event(
        Utc::now(),
        DomainEvent::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        }),
    );
    stack.publish(std::slice::from_ref(&sentinel)).await;
    stack.wait_stored(sentinel.id).await;

    let admin = Caller {
        user: Uuid::now_v7(),
        admin: true,
    };
    let store_figures = assert_figures_match_raw(&stack, &service, &admin, day).await;
    let alice_figures = assert_figures_match_raw(
        &stack,
        &service,
        &Caller {
            user: alice,
            admin: false,
        },
        day,
    )
    .await;
    assert_figures_match_raw(
        &stack,
        &service,
        &Caller {
            user: bob,
            admin: false,
        },
        day,
    )
    .await;

    // The whole store's figures and a customer's own differ where the
    // script says they must.
    assert_eq!(store_figures[0]["orders_created"], 8);
    assert_eq!(
        store_figures[0]["revenue_cents"],
        json!({"EUR": 1250 + 990 + 4200 + 300 + 1100, "GBP": 700, "USD": 5000})
    );
    assert_eq!(alice_figures[0]["orders_created"], 4);
    assert_eq!(
        alice_figures[0]["revenue_cents"],
        json!({"EUR": 2240, "USD": 5000})
    );
    assert_eq!(alice_figures[0]["webhooks_received"], 0);

    // Either side of midnight, in the right day, though published in
    // reverse order.
    let mut query = range(
        at(day, "00:00:00"),
        at(day.succ_opt().unwrap(), "00:00:00") + TimeDelta::days(1),
    );
    query.push(("metric", "revenue".to_owned()));
    query.push(("currency", "EUR".to_owned()));
    query.push(("interval", "day".to_owned()));
    let (_, body) = get(
        &service,
        Some(&Caller {
            user: bob,
            admin: false,
        }),
        "/api/v1/analytics/timeseries",
        &query,
    )
    .await;
    assert_eq!(
        points(&body).iter().map(|p| p.1).collect::<Vec<_>>(),
        [300, 1100]
    );

    // Everything again, in another order: nothing changes.
    let mut again = events.clone();
    again.reverse();
    stack.publish(&again).await;
    let sentinel = event(
        Utc::now(),
        DomainEvent::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        }),
    );
    stack.publish(std::slice::from_ref(&sentinel)).await;
    stack.wait_stored(sentinel.id).await;
    assert_eq!(
        assert_figures_match_raw(&stack, &service, &admin, day).await,
        store_figures
    );
    assert_eq!(
        assert_figures_match_raw(
            &stack,
            &service,
            &Caller {
                user: alice,
                admin: false
            },
            day
        )
        .await,
        alice_figures
    );

    service.terminate(Duration::from_secs(20)).await;
    stack.cleanup().await;
}

/// Commits the batch, then fails as if the process died before the ack:
/// the broker hands the same batch out again.
struct CommitThenCrash {
    inner: IngestHandler,
    crashes: std::sync::atomic::AtomicU32,
}

impl BatchHandler for CommitThenCrash {
    type Item = RawEvent;

    fn decode(&self, message: &Incoming) -> Result<RawEvent, DecodeError> {
        self.inner.decode(message)
    }

    async fn handle(&self, items: Vec<RawEvent>) -> Result<(), HandlerError> {
        self.inner.handle(items).await?;
        if self
            .crashes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            < 3
        {
            return Err(HandlerError::transient("crashed after commit, before ack"));
        }
        Ok(())
    }
}

/// Rollup rows as a comparable map.
async fn rollups(pool: &Pool) -> BTreeMap<(String, Uuid, String, String, DateTime<Utc>), i64> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT grain, user_id, metric, currency, bucket, value FROM rollups",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)), r.get(5)))
        .collect()
}

#[tokio::test]
async fn a_batch_committed_but_not_acknowledged_is_counted_once() {
    let stack = Stack::new().await;
    let day = Utc::now().date_naive() - chrono::Days::new(1);
    let events = script(day, Uuid::now_v7(), Uuid::now_v7());
    stack.publish(&events).await;

    let handler = CommitThenCrash {
        inner: IngestHandler::new(stack.pool().clone(), IngestMetrics::unregistered(), 90),
        crashes: Default::default(),
    };
    let options = BatchOptions {
        max_size: 4,
        max_wait: Duration::from_millis(50),
        prefetch: 4,
        consumer_tag: "test".to_owned(),
    };
    let queue = stack.broker.topology().event_queue("analytics");
    let metrics = ConsumerMetrics::default();
    let consumer = BatchConsumer::new(
        stack.broker.broker("consumer"),
        queue.clone(),
        handler,
        options,
        metrics.clone(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));

    let deadline = Instant::now() + Duration::from_secs(30);
    while metrics.handled(&queue.name, keel_messaging::Outcome::Ok) < events.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "the batches were not all acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metrics.handled(&queue.name, keel_messaging::Outcome::Requeued) > 0,
        "no batch was redelivered"
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let client = stack.pool().get().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, events.len() as i64);
    // What the live path counted equals a recomputation from raw events.
    let live = rollups(stack.pool()).await;
    let mut client = stack.pool().get().await.unwrap();
    store::rebuild(&mut client, day, day.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(rollups(stack.pool()).await, live);
    stack.cleanup().await;
}

#[tokio::test]
async fn a_consumer_killed_mid_stream_double_counts_nothing() {
    let stack = Stack::new().await;
    let day = Utc::now().date_naive() - chrono::Days::new(1);
    let mut events = Vec::new();
    for i in 0..40 {
        events.extend(
            script(day, Uuid::now_v7(), Uuid::now_v7())
                .into_iter()
                .map(|mut e| {
                    e.occurred_at += TimeDelta::seconds(i);
                    e
                }),
        );
    }
    let service = stack.start().await;
    stack.publish(&events).await;
    // SIGKILL as soon as some batches are in: whatever was committed and
    // not acknowledged comes back to the restarted service.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let client = stack.pool().get().await.unwrap();
        let stored: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        if stored > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing was stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(service);
    let service = stack.start().await;
    let sentinel = event(
        Utc::now(),
        DomainEvent::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        }),
    );
    stack.publish(std::slice::from_ref(&sentinel)).await;
    stack.wait_stored(sentinel.id).await;

    let client = stack.pool().get().await.unwrap();
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM events WHERE id <> $1",
            &[&sentinel.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, events.len() as i64);
    let live = rollups(stack.pool()).await;
    let mut client = stack.pool().get().await.unwrap();
    store::rebuild(&mut client, day, Utc::now().date_naive())
        .await
        .unwrap();
    assert_eq!(rollups(stack.pool()).await, live);
    service.terminate(Duration::from_secs(20)).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn rebuild_reproduces_the_rollups_and_export_writes_each_day() {
    let stack = Stack::new().await;
    let service = stack.start().await;
    let day = Utc::now().date_naive() - chrono::Days::new(5);
    let events = script(day, Uuid::now_v7(), Uuid::now_v7());
    stack.publish(&events).await;
    let sentinel = event(
        Utc::now(),
        DomainEvent::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        }),
    );
    stack.publish(std::slice::from_ref(&sentinel)).await;
    stack.wait_stored(sentinel.id).await;
    service.terminate(Duration::from_secs(20)).await;

    let live = rollups(stack.pool()).await;
    let client = stack.pool().get().await.unwrap();
    client
        .batch_execute("DELETE FROM rollups; DELETE FROM daily_users")
        .await
        .unwrap();
    let next = day.succ_opt().unwrap();
    let output = std::process::Command::new(BINARY)
        .args([
            "rebuild",
            "--from",
            &day.to_string(),
            "--to",
            &Utc::now().date_naive().to_string(),
        ])
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(rollups(stack.pool()).await, live);

    let dir = std::env::temp_dir().join(format!("keel-analytics-export-{}", Uuid::new_v4()));
    let output = std::process::Command::new(BINARY)
        .args([
            "export-raw",
            "--from-date",
            &day.to_string(),
            "--to-date",
            &next.to_string(),
            "--dir",
        ])
        .arg(&dir)
        .envs(stack.env())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut exported = 0;
    for d in [day, next] {
        let text = std::fs::read_to_string(dir.join(format!("dt={d}/events.ndjson"))).unwrap();
        for line in text.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            let occurred: DateTime<Utc> = row["occurred_at"].as_str().unwrap().parse().unwrap();
            assert_eq!(occurred.date_naive(), d);
            let id: Uuid = row["id"].as_str().unwrap().parse().unwrap();
            let original = events.iter().find(|e| e.id == id).unwrap();
            assert_eq!(occurred, original.occurred_at);
            assert_eq!(row["type"], original.message_type());
            exported += 1;
        }
    }
    assert_eq!(exported, events.len());
    std::fs::remove_dir_all(&dir).unwrap();
    stack.cleanup().await;
}

#[tokio::test]
async fn partitions_are_created_ahead_and_dropped_past_retention() {
    let db = TestDatabase::create(analytics::SCHEMA, &migrations()).await;
    let mut settings = Settings::defaults().unwrap().retention;
    settings.raw_days = 30;
    settings.partitions_ahead = 3;
    let today: NaiveDate = "2026-03-10".parse().unwrap();
    let client = db.pool().get().await.unwrap();
    // An event 31 days back: its partition exists until maintenance runs.
    let old_day = today - chrono::Days::new(31);
    store::ensure_partition(&client, old_day).await.unwrap();
    drop(client);
    let old: RawEvent = serde_json::from_value(json!({
        "id": Uuid::now_v7(), "type": "user.registered", "version": 1,
        "occurred_at": format!("{old_day}T12:00:00Z"),
        "data": {"user_id": Uuid::now_v7(), "registered_at": format!("{old_day}T12:00:00Z")},
    }))
    .unwrap();
    let mut client = db.pool().get().await.unwrap();
    store::apply_batch(&mut client, &[old]).await.unwrap();

    let dropped = analytics::ingest::maintenance::maintain(&client, today, &settings)
        .await
        .unwrap();
    assert_eq!(dropped, ["events_20260207"]);
    let names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        names,
        [
            "events_20260309",
            "events_20260310",
            "events_20260311",
            "events_20260312",
            "events_20260313"
        ]
    );
    let users: i64 = client
        .query_one("SELECT count(*) FROM daily_users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        users, 0,
        "distinct-user rows past retention go with their partition"
    );
    // Rollups outlive the raw rows.
    let rollup: i64 = client
        .query_one("SELECT value FROM rollups WHERE grain = 'day' AND metric = 'user.registered' AND user_id = $1", &[&Uuid::nil()])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rollup, 1);
    // A second run changes nothing.
    assert!(
        analytics::ingest::maintenance::maintain(&client, today, &settings)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn bad_parameters_are_422_naming_the_field_and_strangers_401() {
    let stack = Stack::new().await;
    let service = stack.start().await;
    let admin = Caller {
        user: Uuid::now_v7(),
        admin: true,
    };
    let cases: [Case; 6] = [
        (
            "/api/v1/analytics/timeseries",
            vec![
                ("metric", "order.created".into()),
                ("interval", "week".into()),
            ],
            "interval",
        ),
        (
            "/api/v1/analytics/timeseries",
            vec![("metric", "orders".into()), ("interval", "day".into())],
            "metric",
        ),
        (
            "/api/v1/analytics/timeseries",
            vec![("metric", "revenue".into()), ("interval", "day".into())],
            "currency",
        ),
        (
            "/api/v1/analytics/timeseries",
            vec![
                ("metric", "order.created".into()),
                ("interval", "minute".into()),
                ("from", "2026-01-01T00:00:00Z".into()),
                ("to", "2026-01-08T00:00:00Z".into()),
            ],
            "interval",
        ),
        (
            "/api/v1/analytics/summary",
            vec![
                ("from", "2026-01-02T00:00:00Z".into()),
                ("to", "2026-01-01T00:00:00Z".into()),
            ],
            "to",
        ),
        (
            "/api/v1/analytics/summary",
            vec![("from", "last tuesday".into())],
            "from",
        ),
    ];
    for (path, query, field) in cases {
        let (status, body) = get(&service, Some(&admin), path, &query).await;
        assert_eq!(status, 422, "{query:?}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query:?}: {body}");
    }
    let (status, body) = get(
        &service,
        Some(&admin),
        "/api/v1/analytics/timeseries",
        &[
            ("metric", "order.created".into()),
            ("interval", "minute".into()),
            ("from", "2026-01-01T00:00:00Z".into()),
            ("to", "2026-01-08T00:00:00Z".into()),
        ],
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1500"),
        "{body}"
    );

    let (status, body) = get(&service, None, "/api/v1/analytics/summary", &[]).await;
    assert_eq!(status, 401, "{body}");
    service.terminate(Duration::from_secs(20)).await;
    stack.cleanup().await;
}

/// JIT is off on every service connection unless `database.jit` asks for
/// it: the summary once spent 45 ms compiling a 0.5 ms read.
#[tokio::test]
async fn service_connections_run_without_jit_unless_configured() {
    let db = TestDatabase::create(analytics::SCHEMA, &migrations()).await;
    let jit = |pool: Pool| async move {
        let client = pool.get().await.unwrap();
        let row = client.query_one("SHOW jit", &[]).await.unwrap();
        row.get::<_, String>(0)
    };
    assert_eq!(jit(db.pool().clone()).await, "off");

    let mut settings = db.settings();
    settings.jit = true;
    let pool = keel_db::connect(&settings, analytics::SCHEMA, "analytics-test").unwrap();
    assert_eq!(jit(pool).await, "on");
}

/// A GET of `path` with exactly `headers`: (status, headers, body).
async fn get_with(
    service: &ServiceProcess,
    path: &str,
    query: &[(&str, String)],
    headers: &[(&str, String)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = reqwest::Client::new().get(
        url::Url::parse_with_params(
            &service.url(path),
            query.iter().map(|(k, v)| (*k, v.as_str())),
        )
        .unwrap(),
    );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap())
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

#[tokio::test]
async fn the_caller_comes_from_the_verified_token_and_identity_headers_are_ignored() {
    let stack = Stack::new().await;
    let service = stack.start().await;
    let day = Utc::now().date_naive() - chrono::Days::new(3);
    let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
    stack.publish(&script(day, alice, bob)).await;
    let sentinel = event(
        Utc::now(),
        DomainEvent::UserRegistered(UserRegistered {
            user_id: Uuid::now_v7(),
            registered_at: Utc::now(),
        }),
    );
    stack.publish(std::slice::from_ref(&sentinel)).await;
    stack.wait_stored(sentinel.id).await;
    let (from, to) = (
        at(day, "00:00:00"),
        at(day, "00:00:00") + TimeDelta::days(2),
    );
    let period = range(from, to);
    let path = "/api/v1/analytics/summary";
    let forged = |user: Uuid| {
        [
            ("x-keel-user-id", user.to_string()),
            ("x-keel-role", "admin".to_owned()),
        ]
    };

    // An admin's token: the whole store's figures.
    let admin = support::token(Uuid::now_v7(), true);
    let (status, _, store_wide) = get_with(&service, path, &period, &[bearer(&admin)]).await;
    assert_eq!(status, 200, "{store_wide}");
    assert_eq!(store_wide, sql_summary(stack.pool(), None, from, to).await);

    // A customer's token: their own figures, whatever headers claim.
    let own = sql_summary(stack.pool(), Some(alice), from, to).await;
    assert_ne!(own["orders_created"], store_wide["orders_created"]);
    let alice_token = support::token(alice, false);
    let (status, _, body) = get_with(&service, path, &period, &[bearer(&alice_token)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, own);
    let mut headers = forged(bob).to_vec();
    headers.push(bearer(&alice_token));
    let (status, _, body) = get_with(&service, path, &period, &headers).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body, own,
        "the identity headers changed whose figures were read"
    );

    // Identity headers alone: nobody.
    let (status, answer, body) = get_with(&service, path, &period, &forged(bob)).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["type"].as_str().unwrap().ends_with("unauthenticated"),
        "{body}"
    );
    assert!(answer.contains_key("www-authenticate"));

    // A well-formed token of a key auth never published: nobody.
    let stranger = support::new_signer("test-key");
    let foreign = support::token_signed_by(&stranger, alice, vec![keel_token::Role::Admin]);
    let (status, answer, body) = get_with(&service, path, &period, &[bearer(&foreign)]).await;
    assert_eq!(status, 401, "{body}");
    assert!(answer.contains_key("www-authenticate"));
    let unknown_kid = support::new_signer("another-key");
    let foreign = support::token_signed_by(&unknown_kid, alice, vec![keel_token::Role::Admin]);
    let (status, _, body) = get_with(&service, path, &period, &[bearer(&foreign)]).await;
    assert_eq!(status, 401, "{body}");

    service.terminate(Duration::from_secs(20)).await;
    stack.cleanup().await;
}

#[tokio::test]
async fn without_a_reachable_jwk_set_tokens_are_a_503_with_retry_after() {
    let stack = Stack::new().await;
    // A port nobody listens on: auth is down.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut env = stack.env();
    env.retain(|(key, _)| *key != "KEEL_AUTHN__JWKS_URL");
    env.push((
        "KEEL_AUTHN__JWKS_URL",
        format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
    ));
    let service = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    let token = support::token(Uuid::now_v7(), true);
    let (status, answer, body) = get_with(
        &service,
        "/api/v1/analytics/summary",
        &[],
        &[bearer(&token)],
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(answer.contains_key("retry-after"), "{answer:?}");
    service.terminate(Duration::from_secs(20)).await;
    stack.cleanup().await;
}

/// Counts the batches the handler was given, successful or not.
struct CountingHandler {
    inner: IngestHandler,
    calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl BatchHandler for CountingHandler {
    type Item = RawEvent;

    fn decode(&self, message: &Incoming) -> Result<RawEvent, DecodeError> {
        self.inner.decode(message)
    }

    async fn handle(&self, items: Vec<RawEvent>) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.handle(items).await
    }
}

/// A batch consumer of the stack's analytics queue with fast pauses
/// (50..200 ms), so a few seconds of outage are many failed attempts.
fn fast_consumer<H: BatchHandler>(
    stack: &Stack,
    handler: H,
) -> (
    keel_messaging::QueueSpec,
    ConsumerMetrics,
    CancellationToken,
    tokio::task::JoinHandle<keel_messaging::Result<()>>,
) {
    let mut amqp = stack.broker.settings();
    amqp.reconnect = keel_messaging::ReconnectSettings {
        min: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    let options = BatchOptions {
        max_size: 50,
        max_wait: Duration::from_millis(50),
        prefetch: 50,
        consumer_tag: "test".to_owned(),
    };
    let queue = stack.broker.topology().event_queue("analytics");
    let metrics = ConsumerMetrics::default();
    let consumer = BatchConsumer::new(
        keel_messaging::Broker::new(amqp, "consumer"),
        queue.clone(),
        handler,
        options,
        metrics.clone(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    (queue, metrics, shutdown, running)
}

/// Ready messages in the namespace's dead queue.
async fn dead_letters_ready(stack: &Stack) -> u32 {
    let channel = stack.broker.channel().await;
    channel
        .queue_declare(
            stack.broker.topology().dead_queue().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_database_outage_longer_than_the_delivery_limit_dead_letters_nothing_and_counts_everything_once_after()
 {
    use secrecy::{ExposeSecret, SecretString};
    let stack = Stack::new().await;
    let day = Utc::now().date_naive() - chrono::Days::new(1);
    let events = script(day, Uuid::now_v7(), Uuid::now_v7());

    // The consumer reaches PostgreSQL through a proxy the test cuts.
    let mut settings = stack.db.settings();
    let mut url = url::Url::parse(settings.url.expose_secret()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = keel_testkit::proxy::TcpProxy::start(upstream.parse().unwrap()).await;
    url.set_port(Some(proxy.addr().port())).unwrap();
    settings.url = SecretString::from(url.to_string());
    let pool = keel_db::connect(&settings, analytics::SCHEMA, "analytics-outage-test").unwrap();
    proxy.cut();

    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let handler = CountingHandler {
        inner: IngestHandler::new(pool, IngestMetrics::unregistered(), 90),
        calls: calls.clone(),
    };
    let (queue, metrics, shutdown, running) = fast_consumer(&stack, handler);
    stack.publish(&events).await;
    // More failed attempts than the queue's delivery limit allows
    // redeliveries: counted as deliveries, they would dead-letter it all.
    let limit = u32::try_from(keel_messaging::topology::DELIVERY_LIMIT).unwrap();
    wait_until("attempts past the delivery limit", async || {
        calls.load(std::sync::atomic::Ordering::SeqCst) > limit + 5
    })
    .await;
    proxy.restore();

    let total = events.len() as u64;
    wait_until("every event acknowledged", async || {
        metrics.handled(&queue.name, keel_messaging::Outcome::Ok) >= total
    })
    .await;
    assert_eq!(
        dead_letters_ready(&stack).await,
        0,
        "an outage dead-lettered events"
    );
    assert_eq!(
        metrics.handled(&queue.name, keel_messaging::Outcome::Dead),
        0
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let client = stack.pool().get().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, events.len() as i64);
    let live = rollups(stack.pool()).await;
    let mut client = stack.pool().get().await.unwrap();
    store::rebuild(&mut client, day, day.succ_opt().unwrap())
        .await
        .unwrap();
    assert_eq!(
        rollups(stack.pool()).await,
        live,
        "an event was counted twice or not at all"
    );
    stack.cleanup().await;
}

#[tokio::test]
async fn one_event_that_fails_in_sql_is_dead_lettered_alone_and_its_batch_is_counted() {
    let stack = Stack::new().await;
    let day = Utc::now().date_naive() - chrono::Days::new(1);
    let when = at(day, "12:00:00");
    // Booked first: the poison's revenue then overflows this rollup's
    // bigint in SQL (SQLSTATE 22003), which no decode check sees.
    let (first, _) = order(None, "XPX", 1, when);
    let handler = IngestHandler::new(stack.pool().clone(), IngestMetrics::unregistered(), 90);
    let (queue, metrics, shutdown, running) = fast_consumer(&stack, handler);
    stack.publish(std::slice::from_ref(&first)).await;
    stack.wait_stored(first.id).await;

    let (poison, _) = order(None, "XPX", i64::MAX, when + TimeDelta::seconds(1));
    let mut batch = script(day, Uuid::now_v7(), Uuid::now_v7());
    let middle = batch.len() / 2;
    batch.insert(middle, poison.clone());
    stack.publish(&batch).await;

    // The first order and every event of the batch but the poison.
    let good = batch.len() as u64;
    wait_until("the good events acknowledged", async || {
        metrics.handled(&queue.name, keel_messaging::Outcome::Ok) >= good
    })
    .await;
    wait_until("the poison dead-lettered", async || {
        dead_letters_ready(&stack).await == 1
    })
    .await;
    assert_eq!(
        metrics.handled(&queue.name, keel_messaging::Outcome::Dead),
        1
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();

    let channel = stack.broker.channel().await;
    let dead = channel
        .basic_get(
            stack.broker.topology().dead_queue().into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        poison.id.to_string()
    );
    let client = stack.pool().get().await.unwrap();
    let stored: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        batch.len() as i64,
        "every event but the poison, once"
    );
    let poison_stored: i64 = client
        .query_one("SELECT count(*) FROM events WHERE id = $1", &[&poison.id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(poison_stored, 0);
    stack.cleanup().await;
}
