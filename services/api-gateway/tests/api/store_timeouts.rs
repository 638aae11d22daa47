//! A statement that runs past `database.statement_timeout` says "not now"
//! (`keel_db::Retryability::Transient`, SQLSTATE 57014), so the admin,
//! exports and events areas answer it as orders do (ADR 0023): a 503
//! problem with `Retry-After`, not a 500. The fault is real: another
//! connection holds the table `ACCESS EXCLUSIVE`, so the area's statement
//! waits in PostgreSQL until the server cancels it.

use std::time::Duration;

use keel_db::Pool;
use keel_token::Role;
use reqwest::Method;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_with};

/// Bounds how long a test waits for an answer; reaching it is the failure.
const PATIENCE: Duration = Duration::from_secs(30);

/// Short, so a statement stuck behind the lock is cancelled quickly.
const STATEMENT_TIMEOUT: Duration = Duration::from_millis(500);

/// A customer's stream position after which the replay reads `exports`
/// (any well-formed id will do).
const LAST_EVENT_ID: &str = "1700000000000000-0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e";

struct Env {
    app: TestApp,
    upstream: FakeUpstream,
}

impl Env {
    async fn start() -> Self {
        let upstream = FakeUpstream::start().await;
        let app = spawn_app_with(|s| {
            upstream.configure(s);
            s.database.statement_timeout = STATEMENT_TIMEOUT;
        })
        .await;
        Self { app, upstream }
    }

    async fn get(&self, path: &str, token: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .request(Method::GET, format!("{}{path}", self.app.address))
            .header("authorization", bearer(token));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        tokio::time::timeout(PATIENCE, request.send())
            .await
            .expect("answered within the patience")
            .unwrap()
    }

    async fn stop(self) {
        self.app.stop().await;
        self.upstream.stop().await;
    }
}

/// A connection holding `tables` locked until [`TableLock::release`].
struct TableLock {
    client: keel_db::Client,
}

impl TableLock {
    async fn take(pool: &Pool, tables: &str) -> Self {
        let client = pool.get().await.unwrap();
        client
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE"
            ))
            .await
            .unwrap();
        Self { client }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// A 503 `unavailable` problem with `Retry-After`, not a 500.
async fn assert_retryable_503(response: reqwest::Response, what: &str) {
    let status = response.status();
    let retry_after = response.headers().get("retry-after").cloned();
    let content_type = response.headers().get("content-type").cloned();
    let body = response.text().await.unwrap();
    assert_eq!(status, 503, "{what}: {body}");
    assert!(retry_after.is_some(), "{what}: no Retry-After");
    assert_eq!(content_type.unwrap(), "application/problem+json", "{what}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 503, "{what}: {problem}");
    assert_eq!(problem["type"], "urn:keel:problem:unavailable", "{what}");
    assert!(
        !body.contains("statement timeout") && !body.contains("canceling"),
        "{what}: no SQL text in the body: {body}"
    );
}

#[tokio::test]
async fn admin_listings_whose_statement_times_out_answer_503_with_retry_after() {
    let env = Env::start().await;
    let admin = env.upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);
    let lock = TableLock::take(env.app.db().pool(), "dead_letters, webhook_events, outbox").await;

    // One per way the admin area reaches the store: keel_db (dead
    // letters), keel_webhooks (webhook events), keel_outbox (parked rows).
    for path in [
        "/api/v1/admin/dead-letters",
        "/api/v1/admin/webhook-events",
        "/api/v1/admin/outbox/parked",
    ] {
        assert_retryable_503(env.get(path, &admin, &[]).await, path).await;
    }

    lock.release().await;
    for path in ["/api/v1/admin/dead-letters", "/api/v1/admin/outbox/parked"] {
        assert_eq!(env.get(path, &admin, &[]).await.status(), 200, "{path}");
    }
    env.stop().await;
}

#[tokio::test]
async fn an_export_listing_whose_statement_times_out_answers_503_with_retry_after() {
    let env = Env::start().await;
    let (_, customer) = env.upstream.customer_token();
    let lock = TableLock::take(env.app.db().pool(), "exports").await;

    assert_retryable_503(
        env.get("/api/v1/exports", &customer, &[]).await,
        "GET /api/v1/exports",
    )
    .await;

    lock.release().await;
    assert_eq!(
        env.get("/api/v1/exports", &customer, &[]).await.status(),
        200
    );
    env.stop().await;
}

#[tokio::test]
async fn an_event_stream_whose_replay_times_out_answers_503_with_retry_after() {
    let env = Env::start().await;
    let (_, customer) = env.upstream.customer_token();
    let lock = TableLock::take(env.app.db().pool(), "exports").await;

    // Resuming replays from `exports` before the stream's head is sent.
    assert_retryable_503(
        env.get(
            "/api/v1/events",
            &customer,
            &[("last-event-id", LAST_EVENT_ID)],
        )
        .await,
        "GET /api/v1/events (resuming)",
    )
    .await;

    lock.release().await;
    let resumed = env
        .get(
            "/api/v1/events",
            &customer,
            &[("last-event-id", LAST_EVENT_ID)],
        )
        .await;
    assert_eq!(resumed.status(), 200);
    drop(resumed);
    env.stop().await;
}
