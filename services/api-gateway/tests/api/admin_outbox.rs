//! `/api/v1/admin/outbox/*` through the real gateway (real access tokens,
//! the edge middleware, the gateway's own outbox relay, real PostgreSQL and
//! RabbitMQ): admin only, bad parameters and bodies named, and a row the
//! relay really parked (its routing key bound to no queue) listed with its
//! reason, then — once a queue takes its key — unparked through the API
//! and published by the relay (ADR 0024).

use std::time::Duration;

use keel_db::Pool;
use keel_messaging::{AmqpSettings, Topology};
use keel_outbox::RelayOptions;
use keel_token::Role;
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_with};

const PARKED: &str = "/api/v1/admin/outbox/parked";
const UNPARK: &str = "/api/v1/admin/outbox/unpark";

/// Bounds every wait for the relay; reaching it is the failure.
const PATIENCE: Duration = Duration::from_secs(30);

struct Env {
    app: TestApp,
    upstream: FakeUpstream,
    amqp: AmqpSettings,
    admin: String,
    customer: String,
}

impl Env {
    async fn start() -> Self {
        let upstream = FakeUpstream::start().await;
        let mut amqp = None;
        let app = spawn_app_with(|s| {
            upstream.configure(s);
            // Refused rows are retried at once and parked after two
            // refusals, so the test need not wait out the real backoff.
            s.outbox = RelayOptions {
                max_rejections: 2,
                rejection_backoff_min: Duration::from_millis(10),
                rejection_backoff_max: Duration::from_millis(20),
                poll_interval: Duration::from_millis(100),
                ..s.outbox.clone()
            };
            amqp = Some(s.amqp.clone());
        })
        .await;
        let admin = upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);
        let (_, customer) = upstream.customer_token();
        Self {
            app,
            upstream,
            amqp: amqp.unwrap(),
            admin,
            customer,
        }
    }

    fn pool(&self) -> &Pool {
        self.app.db().pool()
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .request(method, format!("{}{path}", self.app.address));
        if let Some(token) = token {
            request = request.header("authorization", bearer(token));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        request.send().await.unwrap()
    }

    async fn parked(&self, query: &str) -> Value {
        let response = self
            .send(
                Method::GET,
                &format!("{PARKED}{query}"),
                Some(&self.admin),
                None,
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn unpark(&self, body: &Value) -> Value {
        let response = self
            .send(
                Method::POST,
                UNPARK,
                Some(&self.admin),
                Some(&body.to_string()),
            )
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        response.json().await.unwrap()
    }

    /// A channel of the test's own on the app's broker.
    async fn channel(&self) -> Channel {
        Connection::connect(
            self.amqp.url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await
        .unwrap()
        .create_channel()
        .await
        .unwrap()
    }

    /// The app's namespace stops refusing `routing_key`: a queue takes it.
    async fn bind_queue(&self, channel: &Channel, routing_key: &str) -> String {
        let topology = Topology::new(self.amqp.namespace.clone(), &self.amqp.retry);
        // Named in the namespace, so the app's cleanup deletes it.
        let queue = format!("{}.jobs.{routing_key}", self.amqp.namespace);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                topology.jobs_exchange().as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        queue
    }

    async fn stop(self) {
        self.app.stop().await;
        self.upstream.stop().await;
    }
}

/// Asserts a problem answer; the fields it names.
async fn problem_fields(response: reqwest::Response, status: StatusCode) -> Vec<String> {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
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

/// A job row whose routing key no queue binds (the soak's poison), written
/// as a producer writes it; the app's relay takes it from here.
async fn enqueue_unroutable_job(pool: &Pool, routing_key: &str) -> Uuid {
    let id = Uuid::new_v4();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (id, target, routing_key, message_type, payload) \
             VALUES ($1, 'jobs', $2, 'test.unroutable', '{}'::jsonb)",
            &[&id, &routing_key],
        )
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_notify('outbox_' || current_schema(), '')")
        .await
        .unwrap();
    id
}

async fn is_published(pool: &Pool, id: Uuid) -> bool {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT published_at IS NOT NULL FROM outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

fn ids(listing: &Value) -> Vec<Uuid> {
    listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_outbox_routes_are_admin_only_and_name_bad_parameters_and_bodies() {
    let env = Env::start().await;
    for (method, path) in [(Method::GET, PARKED), (Method::POST, UNPARK)] {
        let body = Some(r#"{"all":true}"#);
        let anonymous = env.send(method.clone(), path, None, body).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "{path}");
        let customer = env
            .send(method.clone(), path, Some(&env.customer), body)
            .await;
        assert_eq!(customer.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // Another method: a 405 problem.
    let put = env.send(Method::PUT, UNPARK, Some(&env.admin), None).await;
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Nothing parked yet.
    assert_eq!(
        env.parked("").await,
        json!({"schema": "store", "items": [], "more": false})
    );

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=ten", "limit"),
        // Not paged: saying so beats a client looping on the first page.
        ("?cursor=abc", "cursor"),
    ] {
        let response = env
            .send(
                Method::GET,
                &format!("{PARKED}{query}"),
                Some(&env.admin),
                None,
            )
            .await;
        assert_eq!(
            problem_fields(response, StatusCode::UNPROCESSABLE_ENTITY).await,
            [field],
            "{query}"
        );
    }

    let too_many: Vec<Uuid> = (0..501).map(|_| Uuid::new_v4()).collect();
    let too_many = json!({ "ids": too_many }).to_string();
    let one = json!({"ids": [Uuid::new_v4()], "all": true}).to_string();
    for (body, status, field) in [
        ("{}", StatusCode::UNPROCESSABLE_ENTITY, Some("ids")),
        (
            r#"{"ids":[]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("ids"),
        ),
        (
            too_many.as_str(),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("ids"),
        ),
        (
            r#"{"ids":["nope"]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("ids[0]"),
        ),
        (
            r#"{"all":false}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("all"),
        ),
        (one.as_str(), StatusCode::UNPROCESSABLE_ENTITY, Some("all")),
        (r#"{"every":true}"#, StatusCode::UNPROCESSABLE_ENTITY, None),
        ("not json", StatusCode::BAD_REQUEST, None),
    ] {
        let response = env
            .send(Method::POST, UNPARK, Some(&env.admin), Some(body))
            .await;
        let fields = problem_fields(response, status).await;
        if let Some(field) = field {
            assert_eq!(fields, [field], "{body}");
        }
    }
    env.stop().await;
}

#[tokio::test]
async fn a_row_the_relay_parked_is_listed_with_its_reason_and_once_unparked_is_published() {
    let env = Env::start().await;
    let fixed_key = format!("late-{}", Uuid::new_v4().simple());
    let still_broken_key = format!("missing-{}", Uuid::new_v4().simple());
    let fixed = enqueue_unroutable_job(env.pool(), &fixed_key).await;
    let still_broken = enqueue_unroutable_job(env.pool(), &still_broken_key).await;

    // The relay refuses both twice and parks them with their reason.
    let listing = tokio::time::timeout(PATIENCE, async {
        loop {
            let listing = env.parked("").await;
            if ids(&listing).len() == 2 {
                return listing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay parks both unroutable rows");
    assert_eq!(listing["schema"], "store");
    assert_eq!(listing["more"], false);
    let row = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["id"] == fixed.to_string())
        .unwrap();
    assert_eq!(row["target"], "jobs");
    assert_eq!(row["routing_key"], fixed_key.as_str());
    assert_eq!(row["message_type"], "test.unroutable");
    assert_eq!(row["rejections"], 2);
    assert!(row["parked_at"].is_string() && row["created_at"].is_string());
    let reason = row["last_error"].as_str().unwrap();
    assert!(reason.contains("unroutable"), "{reason}");
    // A smaller page says there is more.
    let first = env.parked("?limit=1").await;
    assert_eq!(ids(&first).len(), 1);
    assert_eq!(first["more"], true);

    // The cause of one is fixed; unparking it (by id) sends it out.
    let channel = env.channel().await;
    let queue = env.bind_queue(&channel, &fixed_key).await;
    assert!(!is_published(env.pool(), fixed).await, "parked rows wait");
    assert_eq!(
        env.unpark(&json!({"ids": [fixed]})).await,
        json!({"unparked": 1})
    );
    tokio::time::timeout(PATIENCE, async {
        while !is_published(env.pool(), fixed).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the relay publishes the unparked row");
    let delivered = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the published job is in the queue that now takes its key");
    assert_eq!(
        delivered
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str()),
        Some(fixed.to_string().as_str())
    );

    // The other stays parked; unparking a row that is not parked counts 0.
    assert_eq!(ids(&env.parked("").await), [still_broken]);
    assert_eq!(
        env.unpark(&json!({"ids": [fixed]})).await,
        json!({"unparked": 0})
    );
    // `all` returns every parked row to the relay (this one is refused
    // again, so it is parked again later: its cause is not fixed).
    assert_eq!(
        env.unpark(&json!({"all": true})).await,
        json!({"unparked": 1})
    );
    assert!(!is_published(env.pool(), still_broken).await);
    env.stop().await;
}
