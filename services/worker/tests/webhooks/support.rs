//! What the webhook tests share: captured events, a fake Shopify Admin API
//! over real HTTP, a worker built in-process, and queries of the effects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use keel_messaging::RetryPolicy;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_webhooks::{NewEvent, capture};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker::settings::Settings;
use worker::startup::Application;

pub const TOKEN: &str = "shpat_test-token";

pub async fn database() -> TestDatabase {
    TestDatabase::create(worker::SCHEMA, &worker::startup::migrations()).await
}

/// A Shopify `orders/create` body with realistic field names.
pub fn shopify_order(id: u64) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "email": "jon@example.com",
        "currency": "EUR",
        "total_price": "254.98",
        "subtotal_price": "249.98",
        "total_tax": "0.00",
        "financial_status": "pending",
        "fulfillment_status": null,
        "line_items": [
            {"id": 466157049, "sku": "IPOD2008GREEN", "quantity": 1, "price": "199.99", "title": "IPod Nano - 8gb"},
            {"id": 518995019, "sku": "CASE-01", "quantity": 2, "price": "24.99"}
        ]
    })
    .to_string()
    .into_bytes()
}

/// Stores a delivery as the gateway would, job and `webhook.received`
/// included; returns the event id.
pub async fn captured(db: &TestDatabase, source: &str, topic: &str, body: &[u8]) -> Uuid {
    let client = db.pool().get().await.unwrap();
    let headers = serde_json::json!({});
    let delivery = Uuid::new_v4().to_string();
    capture(
        &client,
        &NewEvent {
            source,
            topic: Some(topic),
            delivery_id: &delivery,
            body,
            headers: &headers,
        },
    )
    .await
    .unwrap()
    .event_id()
}

/// `(status, attempts, last_error, processed_at is set)` of an event.
pub async fn event_state(db: &TestDatabase, id: Uuid) -> (String, i32, Option<String>, bool) {
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT status, attempts, last_error, processed_at IS NOT NULL FROM webhook_events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Outbox rows of `message_type`.
pub async fn outbox_count(db: &TestDatabase, message_type: &str) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM outbox WHERE message_type = $1",
            &[&message_type],
        )
        .await
        .unwrap()
        .get(0)
}

/// The id of the order stored for a Shopify order id.
pub async fn order_id_for(db: &TestDatabase, shopify_id: u64) -> Option<Uuid> {
    let client = db.pool().get().await.unwrap();
    client
        .query_opt(
            "SELECT id FROM orders WHERE source = 'webhook:shopify' AND external_id = $1",
            &[&shopify_id.to_string()],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

/// Polls `probe` until it is true (panics after `within`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !probe().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the fake Admin API answers.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200 with fulfilments of these statuses, after `delay`.
    Fulfillments {
        statuses: Vec<&'static str>,
        delay: Duration,
    },
    /// This status with an empty body.
    Status(u16),
    /// 429 with this `Retry-After` on the first request, then one
    /// successful fulfilment.
    RateLimitedOnce { retry_after: &'static str },
}

/// A fake Shopify Admin API on a free port, counting requests.
pub struct FakeShopify {
    pub url: String,
    hits: Arc<AtomicUsize>,
    answer: Arc<Mutex<Answer>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeShopify {
    pub async fn start(answer: Answer) -> FakeShopify {
        let hits = Arc::new(AtomicUsize::new(0));
        let answer = Arc::new(Mutex::new(answer));
        let state = (answer.clone(), hits.clone());
        let server = HttpServer::new(move || {
            App::new().app_data(web::Data::new(state.clone())).route(
                "/admin/api/2024-10/orders/{id}/fulfillments.json",
                web::get().to(fulfillments),
            )
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeShopify {
            url: format!("http://127.0.0.1:{port}"),
            hits,
            answer,
            handle,
        }
    }

    /// Answers differently from now on (the API recovers, say).
    pub fn set_answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn fulfillments(
    request: HttpRequest,
    path: web::Path<u64>,
    state: web::Data<(Arc<Mutex<Answer>>, Arc<AtomicUsize>)>,
) -> HttpResponse {
    let (answer, hits) = state.get_ref();
    let hit = hits.fetch_add(1, Ordering::SeqCst) + 1;
    let answer = match answer.lock().unwrap().clone() {
        Answer::RateLimitedOnce { retry_after } if hit == 1 => {
            return HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", retry_after))
                .finish();
        }
        Answer::RateLimitedOnce { .. } => Answer::Fulfillments {
            statuses: vec!["success"],
            delay: Duration::ZERO,
        },
        answer => answer,
    };
    if request
        .headers()
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
        != Some(TOKEN)
    {
        return HttpResponse::Unauthorized().finish();
    }
    match answer {
        Answer::Fulfillments { statuses, delay } => {
            tokio::time::sleep(delay).await;
            let order_id = path.into_inner();
            let fulfillments: Vec<_> = statuses
                .iter()
                .enumerate()
                .map(|(i, status)| {
                    serde_json::json!({
                        "id": 255858046 + i, "order_id": order_id, "status": status,
                        "tracking_company": "UPS", "shipment_status": null
                    })
                })
                .collect();
            HttpResponse::Ok().json(serde_json::json!({ "fulfillments": fulfillments }))
        }
        Answer::RateLimitedOnce { .. } => HttpResponse::InternalServerError().finish(),
        Answer::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).finish()
        }
    }
}

/// Worker settings against the test servers; `shopify`: the fake API's URL.
pub fn settings(db: &TestDatabase, broker: &TestBroker, shopify: Option<&str>) -> Settings {
    let mut settings = Settings::defaults().unwrap();
    settings.http.port = 0;
    settings.database = db.settings();
    settings.amqp = broker.settings();
    settings.shopify.api_base_url = shopify.map(str::to_owned);
    settings.shopify.access_token = Some(SecretString::from(TOKEN));
    settings.outbox.poll_interval = Duration::from_millis(100);
    settings
}

/// A short retry schedule: 100 ms, then 200 ms (three attempts).
pub fn short_retries() -> RetryPolicy {
    RetryPolicy {
        delays: vec![Duration::from_millis(100), Duration::from_millis(200)],
        jitter: 0.0,
    }
}

/// A worker running in-process until the returned token is cancelled.
pub async fn run_worker(settings: Settings) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let identity = keel_telemetry::ServiceIdentity::new(worker::SERVICE, "test");
    let app = Application::build(settings, &identity).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { app.run_until_stopped(shutdown).await.unwrap() }
    });
    (shutdown, task)
}
