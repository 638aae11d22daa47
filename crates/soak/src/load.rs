//! The mixed load: signed webhooks from four sources with redeliveries and
//! sender retries, orders under `Idempotency-Key` with client retries,
//! exports, logins and refreshes, analytics reads. Every 2xx goes into the
//! ledger; every request's outcome into the samples the report windows.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::ledger::Ledger;

/// What a request was for (the report's rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Webhook,
    Order,
    Export,
    Login,
    Refresh,
    AnalyticsRead,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Webhook,
        Op::Order,
        Op::Export,
        Op::Login,
        Op::Refresh,
        Op::AnalyticsRead,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Webhook => "webhook",
            Op::Order => "order",
            Op::Export => "export",
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::AnalyticsRead => "analytics read",
        }
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A 4xx the contract allows under load (429 limits, 409 in flight).
    Refused,
    /// 5xx, timeout, connection refused or reset.
    Error,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub at_ms: u64,
    pub op: Op,
    pub outcome: Outcome,
}

/// The webhook secrets (the same `KEEL_WEBHOOK_SECRET_*` the gateways read).
#[derive(Debug, Clone)]
pub struct Secrets {
    pub shopify: String,
    pub github: String,
    pub stripe: String,
    pub standard: String,
}

impl Secrets {
    pub fn from_env() -> Result<Secrets> {
        let get = |name: &str| {
            std::env::var(name).with_context(|| format!("{name} is not set (scripts/soak sets it)"))
        };
        Ok(Secrets {
            shopify: get("KEEL_WEBHOOK_SECRET_SHOPIFY")?,
            github: get("KEEL_WEBHOOK_SECRET_GITHUB")?,
            stripe: get("KEEL_WEBHOOK_SECRET_STRIPE")?,
            standard: get("KEEL_WEBHOOK_SECRET_STANDARD")?,
        })
    }
}

/// A customer of the load.
#[derive(Debug)]
pub struct User {
    pub email: String,
    pub password: String,
    pub access: RwLock<String>,
    pub refresh: Mutex<String>,
}

/// Everything the load tasks share.
#[derive(Debug)]
pub struct Shared {
    pub client: Client,
    pub gateways: Vec<String>,
    next_gateway: AtomicUsize,
    pub secrets: Secrets,
    pub users: Vec<User>,
    pub ledger: Mutex<Ledger>,
    /// Export id → the user (index) who asked, to read it back.
    pub export_owners: Mutex<Vec<(Uuid, usize)>>,
    samples: Mutex<Vec<Sample>>,
    pub started: Instant,
    /// Set when the fault schedule ends: tasks finish what they started
    /// (retries included) and return.
    pub stopping: AtomicBool,
    counter: AtomicU64,
    pub requests: AtomicU64,
    /// Webhook deliveries and orders the sender gave up on after its
    /// retries (never acknowledged, so not a loss, but reported).
    pub gave_up: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const PASSWORD: &str = "soak passphrase long enough 2026";
/// Sender retries per delivery / order (with backoff): a real sender gives
/// up eventually, and a give-up is not an acknowledgement.
const ATTEMPTS: u32 = 10;

impl Shared {
    pub fn new(gateways: Vec<String>, secrets: Secrets, users: usize) -> Result<Shared> {
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        let run = Uuid::new_v4().simple().to_string();
        let users = (0..users)
            .map(|i| User {
                email: format!("soak-{i}-{}@soak.example", &run[..8]),
                password: PASSWORD.to_owned(),
                access: RwLock::new(String::new()),
                refresh: Mutex::new(String::new()),
            })
            .collect();
        Ok(Shared {
            client,
            gateways,
            next_gateway: AtomicUsize::new(0),
            secrets,
            users,
            ledger: Mutex::new(Ledger::default()),
            export_owners: Mutex::new(Vec::new()),
            samples: Mutex::new(Vec::new()),
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The next gateway, round robin (clients with two addresses and no
    /// balancer: a dead gateway costs them errors, as it would).
    pub fn gateway(&self, path: &str) -> String {
        let i = self.next_gateway.fetch_add(1, Ordering::Relaxed) % self.gateways.len();
        format!("{}{path}", self.gateways[i])
    }

    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    pub fn ledger(&self) -> MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).clone()
    }

    fn record(&self, op: Op, outcome: Outcome) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let sample = Sample {
            at_ms: self.now_ms(),
            op,
            outcome,
        };
        lock(&self.samples).push(sample);
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    fn access(&self, user: usize) -> String {
        self.users[user]
            .access
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Sends `request`, records its outcome; `None` on a transport error.
    async fn send(&self, op: Op, request: RequestBuilder) -> Option<(StatusCode, Value)> {
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                let outcome = if status.is_success() {
                    Outcome::Ok
                } else if status.is_server_error() {
                    Outcome::Error
                } else {
                    Outcome::Refused
                };
                self.record(op, outcome);
                Some((status, body))
            }
            Err(_) => {
                self.record(op, Outcome::Error);
                None
            }
        }
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((250u64 << attempt.min(4)).min(4_000))
}

/// Registers every user and logs each in (before the faults start).
pub async fn setup_users(shared: &Shared) -> Result<()> {
    for (i, user) in shared.users.iter().enumerate() {
        let response = shared
            .client
            .post(shared.gateway("/api/v1/auth/register"))
            .json(&json!({"email": user.email, "password": user.password}))
            .send()
            .await?;
        if response.status() != StatusCode::CREATED {
            bail!(
                "registering {}: {} {}",
                user.email,
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        if !login(shared, i).await {
            bail!("{} cannot log in", user.email);
        }
    }
    Ok(())
}

/// Logs user `i` in; true on success.
async fn login(shared: &Shared, i: usize) -> bool {
    let user = &shared.users[i];
    let request = shared
        .client
        .post(shared.gateway("/api/v1/auth/login"))
        .json(&json!({"email": user.email, "password": user.password}));
    match shared.send(Op::Login, request).await {
        Some((status, body)) if status.is_success() => store_tokens(user, &body),
        _ => false,
    }
}

fn store_tokens(user: &User, body: &Value) -> bool {
    let (Some(access), Some(refresh)) = (
        body["access_token"].as_str(),
        body["refresh_token"].as_str(),
    ) else {
        return false;
    };
    if let Ok(mut slot) = user.access.write() {
        *slot = access.to_owned();
    }
    *lock(&user.refresh) = refresh.to_owned();
    true
}

/// One webhook delivery as its sender would send it (and resend it).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub source: &'static str,
    pub delivery_id: String,
    pub body: String,
    /// Shopify orders: the order id the delivery must create once.
    pub external_order: Option<String>,
}

impl Delivery {
    pub fn new(source: &'static str, n: u64) -> Delivery {
        let id = Uuid::new_v4();
        match source {
            "shopify" => {
                // A unique, stable external order id per delivery.
                let order = (u64::from_be_bytes(id.as_bytes()[..8].try_into().unwrap_or([1; 8]))
                    >> 12)
                    .max(1);
                let price = format!("{}.{:02}", 5 + n % 90, n % 100);
                let body = json!({
                    "id": order,
                    "email": format!("buyer-{n}@soak.example"),
                    "currency": "EUR",
                    "total_price": price,
                    "updated_at": chrono::Utc::now().to_rfc3339(),
                    "line_items": [{"id": n + 1, "sku": "SOAK-LAMP", "quantity": 1, "price": price}],
                });
                Delivery {
                    source,
                    delivery_id: id.to_string(),
                    body: body.to_string(),
                    external_order: Some(order.to_string()),
                }
            }
            "stripe" => {
                let event = format!("evt_{}", id.simple());
                let body = json!({
                    "id": event,
                    "type": "customer.updated",
                    "data": {"object": {"id": format!("cus_{n}"), "object": "customer"}},
                });
                Delivery {
                    source,
                    delivery_id: event,
                    body: body.to_string(),
                    external_order: None,
                }
            }
            "github" => Delivery {
                source,
                delivery_id: id.to_string(),
                body: json!({"ref": "refs/heads/main", "after": format!("{:040x}", n)}).to_string(),
                external_order: None,
            },
            _ => Delivery {
                source: "standard",
                delivery_id: format!("msg_{}", id.simple()),
                body: json!({"type": "invoice.paid", "data": {"n": n}}).to_string(),
                external_order: None,
            },
        }
    }

    /// A Shopify order whose price is not a number: stored (200), then
    /// failed permanently by the worker on every attempt.
    pub fn poison() -> Delivery {
        let mut delivery = Delivery::new("shopify", 7);
        let mut body: Value = serde_json::from_str(&delivery.body).unwrap_or(Value::Null);
        body["total_price"] = json!("not-a-price");
        delivery.body = body.to_string();
        delivery
    }

    /// The request, signed now (Stripe and Standard Webhooks sign a
    /// timestamp, so each retry is signed afresh, as their senders do).
    fn request(&self, shared: &Shared, url: String) -> RequestBuilder {
        let s = &shared.secrets;
        let now = chrono::Utc::now().timestamp();
        let body = self.body.as_bytes();
        let request = shared
            .client
            .post(url)
            .header("Content-Type", "application/json");
        let request = match self.source {
            "shopify" => request
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Event-Id", &self.delivery_id)
                .header(
                    "X-Shopify-Hmac-Sha256",
                    keel_webhooks::sign::shopify(&s.shopify, body),
                ),
            "stripe" => request.header(
                "Stripe-Signature",
                keel_webhooks::sign::stripe(&s.stripe, now, body),
            ),
            "github" => request
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", &self.delivery_id)
                .header(
                    "X-Hub-Signature-256",
                    keel_webhooks::sign::github(&s.github, body),
                ),
            _ => request
                .header("webhook-id", &self.delivery_id)
                .header("webhook-timestamp", now.to_string())
                .header(
                    "webhook-signature",
                    keel_webhooks::sign::standard(&s.standard, &self.delivery_id, now, body)
                        .unwrap_or_default(),
                ),
        };
        request.body(self.body.clone())
    }

    /// One attempt at `url`; records a 200 in the ledger. `Some(true)`
    /// acknowledged, `Some(false)` refused for good, `None` retry.
    async fn attempt(&self, shared: &Shared, url: String, poison: bool) -> Option<bool> {
        let (status, body) = shared.send(Op::Webhook, self.request(shared, url)).await?;
        if status == StatusCode::OK {
            let event_id = body["id"].as_str().and_then(|id| id.parse().ok());
            let duplicate = body["duplicate"].as_bool().unwrap_or(false);
            let mut ledger = shared.ledger();
            let ack = ledger.delivery(self.source, &self.delivery_id, event_id, duplicate);
            ack.external_order = self.external_order.clone();
            ack.poison |= poison;
            return Some(true);
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        tracing_refusal("webhook", self.source, status, &body);
        Some(false)
    }

    /// Sends until acknowledged (retrying errors and timeouts with
    /// backoff, as senders do) or out of attempts; the event id on success.
    pub async fn deliver(&self, shared: &Shared, poison: bool) -> bool {
        for attempt in 0..ATTEMPTS {
            match self
                .attempt(
                    shared,
                    shared.gateway(&format!("/webhooks/{}", self.source)),
                    poison,
                )
                .await
            {
                Some(done) => return done,
                None => tokio::time::sleep(backoff(attempt)).await,
            }
        }
        shared.gave_up.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// One attempt at a given gateway (the recovery probe).
    pub async fn probe(&self, shared: &Shared, gateway: &str) -> bool {
        self.attempt(shared, format!("{gateway}/webhooks/{}", self.source), false)
            .await
            == Some(true)
    }
}

fn tracing_refusal(what: &str, detail: &str, status: StatusCode, body: &Value) {
    let mut err = std::io::stderr();
    let _ = std::io::Write::write_fmt(
        &mut err,
        format_args!("[soak] {what} {detail} refused: {status} {body}\n"),
    );
}

/// Signed webhooks from the four sources in turn; one in ten acknowledged
/// deliveries is delivered again (the sender never saw the 200).
pub async fn webhooks(shared: Arc<Shared>, pace: Duration) {
    const SOURCES: [&str; 4] = ["shopify", "stripe", "github", "standard"];
    while !shared.stopping() {
        let n = shared.next();
        let delivery = Delivery::new(SOURCES[(n % 4) as usize], n);
        if delivery.deliver(&shared, false).await && n % 10 == 3 {
            delivery.deliver(&shared, false).await;
        }
        tokio::time::sleep(pace).await;
    }
}

/// `POST /api/v1/orders` under a fresh `Idempotency-Key`, retried with the
/// same key and body until answered; one in ten is sent again after its
/// 201 (a client that lost the response).
pub async fn orders(shared: Arc<Shared>, pace: Duration) {
    while !shared.stopping() {
        let n = shared.next();
        let user = (n as usize) % shared.users.len();
        let key = Uuid::new_v4().simple().to_string();
        let body = json!({
            "currency": "EUR",
            "items": [{"sku": format!("K{key}"), "quantity": 1 + n % 3, "unit_price_cents": 100 + n % 900}],
        });
        let sends = if n % 10 == 7 { 2 } else { 1 };
        for _ in 0..sends {
            if !place_order(&shared, user, &key, &body).await {
                break;
            }
        }
        tokio::time::sleep(pace).await;
    }
}

async fn place_order(shared: &Shared, user: usize, key: &str, body: &Value) -> bool {
    for attempt in 0..ATTEMPTS {
        let request = shared
            .client
            .post(shared.gateway("/api/v1/orders"))
            .bearer_auth(shared.access(user))
            .header("Idempotency-Key", key)
            .json(body);
        match shared.send(Op::Order, request).await {
            Some((status, answer)) if status.is_success() => {
                if let Some(id) = answer["id"].as_str().and_then(|id| id.parse().ok()) {
                    shared.ledger().order(key, id);
                }
                return true;
            }
            Some((StatusCode::UNAUTHORIZED, _)) => {
                login(shared, user).await;
            }
            Some((status, answer))
                if !(status.is_server_error()
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::CONFLICT) =>
            {
                tracing_refusal("order", key, status, &answer);
                return false;
            }
            _ => {}
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    shared.gave_up.fetch_add(1, Ordering::Relaxed);
    false
}

/// An export now and then (the per-user active limit answers 429 past it).
pub async fn exports(shared: Arc<Shared>, pace: Duration) {
    while !shared.stopping() {
        let n = shared.next();
        let user = (n as usize) % shared.users.len();
        let format = if n.is_multiple_of(2) { "csv" } else { "ndjson" };
        let request = shared
            .client
            .post(shared.gateway("/api/v1/exports"))
            .bearer_auth(shared.access(user))
            .json(&json!({"resource": "orders", "format": format}));
        match shared.send(Op::Export, request).await {
            Some((status, body)) if status.is_success() => {
                if let Some(id) = body["id"].as_str().and_then(|id| id.parse().ok()) {
                    shared.ledger().exports.insert(id);
                    lock(&shared.export_owners).push((id, user));
                }
            }
            Some((StatusCode::UNAUTHORIZED, _)) => {
                login(&shared, user).await;
            }
            _ => {}
        }
        tokio::time::sleep(pace).await;
    }
}

/// Logins and refresh-token rotations, user by user.
pub async fn sessions(shared: Arc<Shared>, pace: Duration) {
    while !shared.stopping() {
        let n = shared.next();
        let user = (n as usize) % shared.users.len();
        if n.is_multiple_of(3) {
            login(&shared, user).await;
        } else {
            let refresh = lock(&shared.users[user].refresh).clone();
            let request = shared
                .client
                .post(shared.gateway("/api/v1/auth/refresh"))
                .json(&json!({"refresh_token": refresh}));
            match shared.send(Op::Refresh, request).await {
                Some((status, body)) if status.is_success() => {
                    store_tokens(&shared.users[user], &body);
                }
                // A refresh lost to a fault may have rotated the token
                // (or revoked the session as reuse): start over.
                Some(_) | None => {
                    login(&shared, user).await;
                }
            }
        }
        tokio::time::sleep(pace).await;
    }
}

/// The analytics summary of today, as a customer reads it.
pub async fn analytics(shared: Arc<Shared>, pace: Duration) {
    while !shared.stopping() {
        let n = shared.next();
        let user = (n as usize) % shared.users.len();
        let day = chrono::Utc::now().date_naive();
        let path = format!(
            "/api/v1/analytics/summary?from={day}T00:00:00Z&to={}T00:00:00Z",
            day.succ_opt().unwrap_or(day)
        );
        let request = shared
            .client
            .get(shared.gateway(&path))
            .bearer_auth(shared.access(user));
        if let Some((StatusCode::UNAUTHORIZED, _)) = shared.send(Op::AnalyticsRead, request).await {
            login(&shared, user).await;
        }
        tokio::time::sleep(pace).await;
    }
}
