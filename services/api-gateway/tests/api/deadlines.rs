//! Bounded waiting at the edge (ADR 0023): a full capture queue, a commit
//! that hangs, a request stuck behind a lock, a statement timeout and an
//! exhausted pool are each answered with a 503 problem and `Retry-After`,
//! never by waiting without bound. The faults are real: a connection
//! holding `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`, or the test proxy in
//! front of PostgreSQL silently dropping everything.

use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use keel_db::Pool;
use keel_webhooks::Scheme;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{spawn_app_behind_proxies_with, spawn_app_with};
use crate::orders_support::{As, OrdersEnv, sample_order};
use crate::webhooks_support::{self, Delivery, stored_events};

/// Bounds how long a test waits for something that must happen; reaching
/// it is the failure ("still waiting"), never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A connection holding `table` locked until [`TableLock::release`]: every
/// statement touching it waits in PostgreSQL.
struct TableLock {
    client: keel_db::Client,
}

impl TableLock {
    async fn take(pool: &Pool, table: &str) -> Self {
        let client = pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .unwrap();
        Self { client }
    }

    /// Waits until `count` statements are queued behind the lock.
    async fn wait_for_waiters(&self, pool: &Pool, table: &str, count: i64) {
        let client = pool.get().await.unwrap();
        tokio::time::timeout(PATIENCE, async {
            loop {
                let waiting: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                         WHERE NOT l.granted AND c.relname = $1 \
                           AND l.database = (SELECT oid FROM pg_database \
                                             WHERE datname = current_database())",
                        &[&table],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if waiting >= count {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("statements queue behind the lock");
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// A 503 problem with `Retry-After`; its problem `type`.
async fn assert_retryable_503(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 503);
    assert!(
        response.headers().contains_key("retry-after"),
        "{:?}",
        response.headers()
    );
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["status"], 503, "{problem}");
    problem["type"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn captures_past_the_waiting_bound_get_a_503_with_retry_after_at_once() {
    let app = spawn_app_with(|s| {
        webhooks_support::configure(s);
        // One delivery committing, one waiting: the rest are refused.
        s.webhooks.group_commit.max_batch = 1;
        s.webhooks.group_commit.concurrent_batches = 1;
        s.webhooks.group_commit.max_waiting = 1;
        s.webhooks.group_commit.capture_timeout = PATIENCE;
        s.http.request_timeout = PATIENCE * 2;
    })
    .await;
    let lock = TableLock::take(app.db().pool(), "webhook_events").await;

    let mut answers: FuturesUnordered<_> = (0..6)
        .map(|n| {
            let delivery = Delivery::valid(Scheme::Shopify, &format!("bound-{n}"));
            let app = &app;
            async move { delivery.post(app).await }
        })
        .collect();
    // At most two deliveries are held (one committing, one waiting), so
    // at least four are answered while the commit still hangs: none of
    // them waited for the lock or the capture deadline.
    for _ in 0..4 {
        let response = tokio::time::timeout(PATIENCE, answers.next())
            .await
            .expect("a delivery past the bound is answered while the commit hangs")
            .unwrap();
        assert_eq!(
            assert_retryable_503(response).await,
            "urn:keel:problem:unavailable"
        );
    }

    // Each refusal is counted, and the queue's depth is there to alert on.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"webhooks_received_total{source="shopify",outcome="saturated"}"#),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("webhooks_capture_waiting ") && !l.starts_with('#')),
        "{metrics}"
    );

    lock.release().await;
    let mut stored = 0;
    while let Some(response) = answers.next().await {
        match response.status().as_u16() {
            200 => stored += 1,
            503 => {}
            other => panic!("unexpected {other}"),
        }
    }
    drop(answers);
    assert!(stored >= 1, "the held deliveries are stored");
    assert_eq!(stored_events(&app).await, stored);
    app.stop().await;
}

#[tokio::test]
async fn a_capture_whose_commit_hangs_answers_503_within_its_deadline() {
    let app = spawn_app_behind_proxies_with(|s| {
        webhooks_support::configure(s);
        s.webhooks.group_commit.capture_timeout = Duration::from_secs(1);
    })
    .await;
    let delivery = Delivery::valid(Scheme::Github, "hangs-1");
    // Warm the pool: the commit below meets a live connection that goes
    // silent, not a connect timeout.
    assert_eq!(
        Delivery::valid(Scheme::Github, "warm-up")
            .post(&app)
            .await
            .status(),
        200
    );

    let postgres = &app.proxies.as_ref().unwrap().postgres;
    postgres.blackhole();
    let response = tokio::time::timeout(PATIENCE, delivery.post(&app))
        .await
        .expect("the sender is answered while the database is silent");
    assert_eq!(
        assert_retryable_503(response).await,
        "urn:keel:problem:unavailable"
    );

    // The link comes back: the abandoned commit may land after all, and
    // the sender's retry is stored once either way.
    postgres.restore();
    let retry = tokio::time::timeout(PATIENCE, async {
        loop {
            let response = delivery.post(&app).await;
            if response.status() == 200 {
                return response;
            }
            assert_eq!(response.status(), 503, "only 503 while recovering");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the retry is stored once the database answers");
    let receipt: serde_json::Value = retry.json().await.unwrap();
    assert!(receipt["id"].is_string(), "{receipt}");
    assert_eq!(
        webhooks_support::count(
            &app,
            "SELECT count(*) FROM webhook_events WHERE delivery_id = 'hangs-1'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn an_order_stuck_behind_a_lock_gets_the_request_deadlines_503_with_retry_after() {
    let env = OrdersEnv::new().await;
    let app = env
        .spawn_with(|s| {
            s.http.body_read_timeout = Duration::from_secs(1);
            s.http.request_timeout = Duration::from_secs(2);
            // Longer than the request deadline: the deadline answers.
            s.database.statement_timeout = PATIENCE;
        })
        .await;
    let lock = TableLock::take(env.pool(), "orders").await;

    let response = tokio::time::timeout(PATIENCE, app.create(As::customer(), &sample_order()))
        .await
        .expect("the client is answered while the insert still waits");
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(
        assert_retryable_503(response).await,
        "urn:keel:problem:deadline-exceeded"
    );

    lock.release().await;
    app.create_ok(As::customer()).await;
}

#[tokio::test]
async fn an_order_whose_statement_times_out_gets_a_503_with_retry_after() {
    let env = OrdersEnv::new().await;
    let app = env
        .spawn_with(|s| s.database.statement_timeout = Duration::from_millis(500))
        .await;
    let lock = TableLock::take(env.pool(), "orders").await;

    let response = tokio::time::timeout(PATIENCE, app.create(As::customer(), &sample_order()))
        .await
        .expect("answered");
    // A statement timeout says "not now": 503 and a retry, not a 500.
    assert_eq!(
        assert_retryable_503(response).await,
        "urn:keel:problem:unavailable"
    );

    lock.release().await;
    app.create_ok(As::customer()).await;
}

#[tokio::test]
async fn an_order_finding_the_pool_exhausted_gets_a_503_with_retry_after_without_queueing() {
    let env = OrdersEnv::new().await;
    let app = env
        .spawn_with(|s| {
            s.database.max_connections = 1;
            s.database.acquire_timeout = Duration::from_millis(300);
            s.database.statement_timeout = PATIENCE;
        })
        .await;
    let lock = TableLock::take(env.pool(), "orders").await;

    // The first order holds the pool's only connection, waiting on the lock.
    let first = tokio::spawn({
        let request = app
            .request(reqwest::Method::POST, "/api/v1/orders", As::customer())
            .json(&sample_order());
        async move { request.send().await.unwrap() }
    });
    lock.wait_for_waiters(env.pool(), "orders", 1).await;

    // The second finds no connection and is answered after the acquire
    // timeout, while the first still waits.
    let second = tokio::time::timeout(PATIENCE, app.create(As::customer(), &sample_order()))
        .await
        .expect("answered while the pool's connection is busy");
    assert_eq!(
        assert_retryable_503(second).await,
        "urn:keel:problem:unavailable"
    );
    assert!(!first.is_finished());

    lock.release().await;
    assert_eq!(first.await.unwrap().status(), 201);
}

#[tokio::test]
async fn the_event_stream_is_not_cut_by_the_request_deadline() {
    let upstream = FakeUpstream::start().await;
    let deadline = Duration::from_secs(1);
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.events.heartbeat_interval = Duration::from_millis(200);
        // Every inner deadline below the request deadline, as validation
        // requires.
        s.http.body_read_timeout = deadline;
        s.http.request_timeout = deadline;
        s.upstreams.connect_timeout = deadline / 2;
        s.upstreams.request_timeout = deadline / 2;
        s.webhooks.group_commit.capture_timeout = deadline / 2;
    })
    .await;
    let (_, token) = upstream.customer_token();
    let response = app
        .client
        .get(format!("{}/api/v1/events", app.address))
        .header("authorization", bearer(&token))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The deadline bounds the wait for the response head, not the body:
    // the stream keeps writing heartbeats long after it.
    let mut body = response.bytes_stream();
    let opened = std::time::Instant::now();
    let mut heartbeats_after_the_deadline = 0;
    while opened.elapsed() < deadline * 3 {
        let chunk = tokio::time::timeout(PATIENCE, body.next())
            .await
            .expect("the stream keeps writing")
            .expect("the stream stays open past the request deadline")
            .unwrap();
        if opened.elapsed() > deadline {
            heartbeats_after_the_deadline +=
                String::from_utf8_lossy(&chunk).matches(": ping").count();
        }
    }
    assert!(heartbeats_after_the_deadline > 0);
    drop(body);
    app.stop().await;
}
