//! `/api/v1/admin/*` through the real gateway (real access tokens, the edge
//! middleware, real PostgreSQL and RabbitMQ, RabbitMQ's real management
//! API): role checks, webhook events listed, shown and replayed, dead
//! letters listed and requeued, queue figures, and bad parameters named.

use std::time::Duration;

use keel_dead_letters::NewDeadLetter;
use keel_token::Role;
use keel_webhooks::Scheme;
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::Value;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_behind_proxies_with, spawn_app_with};
use crate::webhooks_support::{self, Delivery, count};

struct Env {
    app: TestApp,
    upstream: FakeUpstream,
    admin: String,
    customer: String,
}

impl Env {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut api_gateway::settings::Settings)) -> Self {
        Self::spawn(false, configure).await
    }

    async fn spawn(
        behind_proxies: bool,
        configure: impl FnOnce(&mut api_gateway::settings::Settings),
    ) -> Self {
        let upstream = FakeUpstream::start().await;
        let settings = |s: &mut api_gateway::settings::Settings| {
            upstream.configure(s);
            webhooks_support::configure(s);
            if let Ok(url) = std::env::var("KEEL_TEST_AMQP_MANAGEMENT_URL") {
                s.amqp_management.url = SecretString::from(url);
            }
            configure(s);
        };
        let app = if behind_proxies {
            spawn_app_behind_proxies_with(settings).await
        } else {
            spawn_app_with(settings).await
        };
        let admin = upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);
        let (_, customer) = upstream.customer_token();
        Self {
            app,
            upstream,
            admin,
            customer,
        }
    }

    async fn send(&self, method: Method, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.address));
        if let Some(token) = token {
            request = request.header("authorization", bearer(token));
        }
        request.send().await.unwrap()
    }

    async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.send(Method::GET, path, Some(&self.admin)).await
    }

    async fn admin_json(&self, path: &str) -> Value {
        let response = self.admin_get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        response.json().await.unwrap()
    }

    async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.send(Method::POST, path, Some(&self.admin)).await
    }

    /// Posts a valid delivery; returns the stored event's id.
    async fn capture(&self, scheme: Scheme) -> Uuid {
        let delivery = Delivery::valid(scheme, &format!("evt_{}", Uuid::new_v4().simple()));
        let response = delivery.post(&self.app).await;
        assert_eq!(response.status(), StatusCode::OK);
        let receipt: Value = response.json().await.unwrap();
        receipt["id"].as_str().unwrap().parse().unwrap()
    }

    async fn stop(self) {
        self.app.stop().await;
        self.upstream.stop().await;
    }
}

/// Asserts a problem answer and returns its body.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

const ROUTES: [(&str, &str); 7] = [
    ("GET", "/api/v1/admin/webhook-events"),
    (
        "GET",
        "/api/v1/admin/webhook-events/0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11",
    ),
    (
        "POST",
        "/api/v1/admin/webhook-events/0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11/replay",
    ),
    ("GET", "/api/v1/admin/dead-letters"),
    (
        "GET",
        "/api/v1/admin/dead-letters/0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11",
    ),
    (
        "POST",
        "/api/v1/admin/dead-letters/0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11/requeue",
    ),
    ("GET", "/api/v1/admin/queues"),
];

#[tokio::test]
async fn every_admin_route_answers_401_without_a_token_and_403_to_a_customer() {
    let env = Env::start().await;
    for (method, path) in ROUTES {
        let method: Method = method.parse().unwrap();
        let anonymous = env.send(method.clone(), path, None).await;
        assert!(
            anonymous.headers().contains_key("www-authenticate"),
            "{path}"
        );
        problem(anonymous, StatusCode::UNAUTHORIZED).await;
        problem(
            env.send(method, path, Some(&env.customer)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    assert_eq!(
        env.admin_get("/api/v1/admin/webhook-events").await.status(),
        StatusCode::OK
    );
    env.stop().await;
}

#[tokio::test]
async fn webhook_events_are_listed_newest_first_filtered_by_status_and_source_and_paged() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for scheme in [Scheme::Shopify, Scheme::Shopify, Scheme::Github] {
        ids.push(env.capture(scheme).await);
    }
    // As the worker would record a failed attempt.
    let client = env.app.db().pool().get().await.unwrap();
    client
        .execute(
            "UPDATE webhook_events SET status = 'failed', attempts = 6, last_error = 'shop answered 503' \
             WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();

    let all = env.admin_json("/api/v1/admin/webhook-events").await;
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<String> = ids.iter().rev().map(Uuid::to_string).collect();
    assert_eq!(listed, newest_first);
    assert!(all["next_cursor"].is_null());
    assert!(all["items"][0].get("body").is_none(), "no body in the list");

    let failed = env
        .admin_json("/api/v1/admin/webhook-events?status=failed")
        .await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert_eq!(failed["items"][0]["attempts"], 6);
    assert_eq!(failed["items"][0]["last_error"], "shop answered 503");
    let github = env
        .admin_json("/api/v1/admin/webhook-events?source=github")
        .await;
    assert_eq!(github["items"][0]["id"], ids[2].to_string());
    assert_eq!(github["items"].as_array().unwrap().len(), 1);

    let first = env.admin_json("/api/v1/admin/webhook-events?limit=2").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = env
        .admin_json(&format!(
            "/api/v1/admin/webhook-events?limit=2&cursor={cursor}"
        ))
        .await;
    assert_eq!(second["items"][0]["id"], ids[0].to_string());
    assert!(second["next_cursor"].is_null());

    let invalid = problem(
        env.admin_get("/api/v1/admin/webhook-events?status=done&limit=501&cursor=zz")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&invalid), ["status", "limit", "cursor"]);
    env.stop().await;
}

#[tokio::test]
async fn an_event_is_shown_with_its_raw_body_and_its_signature_redacted() {
    let env = Env::start().await;
    let delivery = Delivery::valid(Scheme::Shopify, "evt-show-1");
    let receipt: Value = delivery.post(&env.app).await.json().await.unwrap();
    let id = receipt["id"].as_str().unwrap();

    let event = env
        .admin_json(&format!("/api/v1/admin/webhook-events/{id}"))
        .await;
    assert_eq!(event["id"], id);
    assert_eq!(event["source"], "shopify");
    assert_eq!(event["delivery_id"], "evt-show-1");
    assert_eq!(event["topic"], "orders/create");
    assert_eq!(event["status"], "received");
    assert_eq!(event["body_encoding"], "utf-8");
    assert_eq!(
        event["body"].as_str().unwrap().as_bytes(),
        delivery.body.as_slice(),
        "the body byte for byte"
    );
    assert_eq!(event["headers"]["x-shopify-hmac-sha256"], "[redacted]");
    assert!(event["headers"].get("authorization").is_none());
    assert_eq!(event["headers"]["x-shopify-topic"], "orders/create");

    for missing in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let body = problem(
            env.admin_get(&format!("/api/v1/admin/webhook-events/{missing}"))
                .await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("webhook-event-not-found"),
            "{body}"
        );
    }
    env.stop().await;
}

#[tokio::test]
async fn replaying_an_event_sets_it_back_to_received_and_enqueues_a_new_job_in_one_commit() {
    let env = Env::start().await;
    let id = env.capture(Scheme::Shopify).await;
    let client = env.app.db().pool().get().await.unwrap();
    // As the worker would leave it.
    client
        .execute(
            "UPDATE webhook_events SET status = 'processed', attempts = 1, processed_at = now() \
             WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();

    let response = env
        .admin_post(&format!("/api/v1/admin/webhook-events/{id}/replay"))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["id"], id.to_string());
    assert_eq!(accepted["status"], "received");
    let job_id: Uuid = accepted["job_id"].as_str().unwrap().parse().unwrap();

    let row = client
        .query_one(
            "SELECT status, attempts, processed_at IS NULL FROM webhook_events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "received");
    assert_eq!(row.get::<_, i32>(1), 1, "attempts are history: kept");
    assert!(row.get::<_, bool>(2));
    let jobs = count(
        &env.app,
        &format!(
            "SELECT count(*) FROM outbox WHERE message_type = 'webhook.process' \
             AND payload->'data'->>'event_id' = '{id}'"
        ),
    )
    .await;
    assert_eq!(jobs, 2, "the capture's job and the replay's");
    let replayed = count(
        &env.app,
        &format!("SELECT count(*) FROM outbox WHERE id = '{job_id}' AND routing_key = 'webhook'"),
    )
    .await;
    assert_eq!(replayed, 1);

    let missing = Uuid::new_v4();
    problem(
        env.admin_post(&format!("/api/v1/admin/webhook-events/{missing}/replay"))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    env.stop().await;
}

/// A dead message as the worker's archiver reads it off the dead queue.
fn dead(id: Uuid, message_type: &str, data: Value) -> (NewDeadLetter, Value) {
    let envelope = serde_json::json!({
        "id": id,
        "occurred_at": "2026-11-22T03:00:00Z",
        "version": 1,
        "type": message_type,
        "data": data,
    });
    let letter = NewDeadLetter {
        id,
        message_type: message_type.to_owned(),
        routing_key: "webhook".to_owned(),
        body: serde_json::to_vec(&envelope).unwrap(),
        headers: serde_json::json!({
            "x-keel-death-reason": "retries-exhausted",
            "x-keel-last-error": "the shop answered 503",
            "x-keel-attempt": 6,
        }),
        death_reason: "retries-exhausted".to_owned(),
        last_error: Some("the shop answered 503".to_owned()),
        attempts: 6,
        queue: Some("t.jobs.webhook".to_owned()),
    };
    (letter, envelope)
}

#[tokio::test]
async fn dead_letters_are_listed_shown_and_a_job_is_requeued_exactly_once() {
    let env = Env::start().await;
    let client = env.app.db().pool().get().await.unwrap();
    let event_id = Uuid::new_v4();
    let (job, job_body) = dead(
        Uuid::now_v7(),
        "webhook.process",
        serde_json::json!({"event_id": event_id}),
    );
    let (domain_event, _) = dead(
        Uuid::now_v7(),
        "webhook.received",
        serde_json::json!({"event_id": event_id, "source": "shopify", "topic": null}),
    );
    // As the worker's archiver stores what it takes off the dead queue.
    keel_dead_letters::archive::archive(&client, &job)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    keel_dead_letters::archive::archive(&client, &domain_event)
        .await
        .unwrap();

    let all = env.admin_json("/api/v1/admin/dead-letters").await;
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["id"], domain_event.id.to_string(), "newest first");
    assert_eq!(items[1]["death_reason"], "retries-exhausted");
    assert_eq!(items[1]["attempts"], 6);
    assert_eq!(items[1]["status"], "dead");
    let jobs_only = env
        .admin_json("/api/v1/admin/dead-letters?message_type=webhook.process")
        .await;
    assert_eq!(jobs_only["items"].as_array().unwrap().len(), 1);

    let shown = env
        .admin_json(&format!("/api/v1/admin/dead-letters/{}", job.id))
        .await;
    assert_eq!(shown["body_encoding"], "utf-8");
    let body: Value = serde_json::from_str(shown["body"].as_str().unwrap()).unwrap();
    assert_eq!(body, job_body);
    assert_eq!(
        shown["headers"]["x-keel-last-error"],
        "the shop answered 503"
    );

    let response = env
        .admin_post(&format!("/api/v1/admin/dead-letters/{}/requeue", job.id))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "requeued");
    let message_id = accepted["message_id"].as_str().unwrap();
    assert_ne!(message_id, job.id.to_string(), "a new envelope");
    let queued = count(
        &env.app,
        &format!(
            "SELECT count(*) FROM outbox WHERE id = '{message_id}' \
             AND message_type = 'webhook.process' AND routing_key = 'webhook' \
             AND payload->'data'->>'event_id' = '{event_id}'"
        ),
    )
    .await;
    assert_eq!(queued, 1, "the job is enqueued again");

    let again = problem(
        env.admin_post(&format!("/api/v1/admin/dead-letters/{}/requeue", job.id))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        again["type"]
            .as_str()
            .unwrap()
            .ends_with("dead-letter-already-requeued")
    );
    // A domain event goes back to the events exchange (analytics' dead
    // letters, ADR 0022); only a body that is neither job nor event is refused.
    let event_requeue = env
        .admin_post(&format!(
            "/api/v1/admin/dead-letters/{}/requeue",
            domain_event.id
        ))
        .await;
    assert_eq!(event_requeue.status(), StatusCode::ACCEPTED);
    let (mut garbage, _) = dead(Uuid::now_v7(), "webhook.process", Value::Null);
    garbage.body = b"not an envelope".to_vec();
    keel_dead_letters::archive::archive(&client, &garbage)
        .await
        .unwrap();
    let not_a_job = problem(
        env.admin_post(&format!(
            "/api/v1/admin/dead-letters/{}/requeue",
            garbage.id
        ))
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    assert!(
        not_a_job["type"]
            .as_str()
            .unwrap()
            .ends_with("dead-letter-not-a-job")
    );
    problem(
        env.admin_post(&format!(
            "/api/v1/admin/dead-letters/{}/requeue",
            Uuid::new_v4()
        ))
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let outbox_jobs = count(
        &env.app,
        "SELECT count(*) FROM outbox WHERE message_type = 'webhook.process'",
    )
    .await;
    assert_eq!(outbox_jobs, 1, "the refused requeues enqueued nothing");

    let requeued = env
        .admin_json("/api/v1/admin/dead-letters?status=requeued")
        .await;
    let requeued_job = requeued["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == job.id.to_string())
        .expect("the requeued job is listed as requeued");
    assert_eq!(requeued_job["requeued_as"], message_id);
    let invalid = problem(
        env.admin_get("/api/v1/admin/dead-letters?status=gone&limit=x")
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(fields(&invalid), ["status", "limit"]);
    env.stop().await;
}

#[tokio::test]
async fn queue_figures_come_from_the_real_management_api() {
    let env = Env::start().await;
    // A captured delivery's job is published to the webhook queue, where
    // nothing consumes it in this test.
    env.capture(Scheme::Github).await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let namespace = loop {
        let listed = env.admin_json("/api/v1/admin/queues").await;
        let namespace = listed["namespace"].as_str().unwrap().to_owned();
        let queues = listed["items"].as_array().unwrap();
        assert!(
            queues.iter().all(|q| q["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{namespace}."))),
            "only this namespace's queues: {listed}"
        );
        let webhook = queues
            .iter()
            .find(|q| q["name"] == format!("{namespace}.jobs.webhook"));
        // The broker samples its statistics every few seconds.
        if let Some(webhook) = webhook
            && webhook["ready"] == 1
        {
            assert_eq!(webhook["type"], "quorum");
            assert_eq!(webhook["unacked"], 0);
            assert_eq!(webhook["messages"], 1);
            assert_eq!(webhook["consumers"], 0);
            assert!(webhook["rates"]["publish"].is_number());
            assert!(
                queues
                    .iter()
                    .any(|q| q["name"] == format!("{namespace}.dead"))
            );
            break namespace;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never showed in the queue figures: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(namespace.starts_with("t-"), "the test's own namespace");
    env.stop().await;
}

#[tokio::test]
async fn an_unreachable_management_api_is_a_503_naming_it() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env = Env::start_with(|s| {
        s.amqp_management.url = SecretString::from(format!("http://guest:guest@127.0.0.1:{port}"));
        s.amqp_management.timeout = Duration::from_secs(1);
    })
    .await;
    let response = env.admin_get("/api/v1/admin/queues").await;
    assert!(response.headers().contains_key("retry-after"));
    let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("rabbitmq-management-unavailable"),
        "{body}"
    );
    assert!(body["detail"].as_str().unwrap().contains("management API"));
    assert!(
        !body.to_string().contains("guest"),
        "no credentials in the answer"
    );
    env.stop().await;
}

#[tokio::test]
async fn admin_listings_answer_503_while_postgresql_is_unreachable_and_recover() {
    let env = Env::spawn(true, |_| {}).await;
    let proxies = env.app.proxies.as_ref().unwrap();
    proxies.postgres.cut();
    for path in ["/api/v1/admin/webhook-events", "/api/v1/admin/dead-letters"] {
        let response = env.admin_get(path).await;
        assert!(response.headers().contains_key("retry-after"), "{path}");
        let body = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert!(
            !body.to_string().contains("postgres"),
            "no internals: {body}"
        );
    }
    proxies.postgres.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while env.admin_get("/api/v1/admin/dead-letters").await.status() != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listing never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.stop().await;
}
