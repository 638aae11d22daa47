//! What every attack class shares: a stack started the way production runs
//! (default rate limits and login throttling; only secrets are the test's
//! own), clients that stand for different networks, users, and assertions
//! on problem+json refusals.

pub mod raw;
pub mod report;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use keel_e2e::Stack;
use keel_token::{KeyAlgorithm, SigningKey};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

pub use report::Cases;

pub const SHOPIFY_SECRET: &str = "attack-suite-shopify-secret";
pub const GITHUB_SECRET: &str = "attack-suite-github-secret";
pub const STRIPE_SECRET: &str = "whsec_attack-suite-stripe-secret";
/// Standard Webhooks: `whsec_` + base64 of the key bytes.
pub const STANDARD_SECRET: &str = "whsec_YXR0YWNrLXN1aXRlLXN0YW5kYXJkLXNlY3JldC1rZXk=";
pub const ADMIN_EMAIL: &str = "ops@attacks.example";
pub const ADMIN_PASSWORD: &str = "an admin passphrase nobody guesses 7431";
pub const PASSWORD: &str = "a long and unguessable passphrase 42";

/// The stack of one attack class, and the signing key auth uses (the test
/// made it, so it can sign tokens that differ from genuine ones in exactly
/// one respect).
#[derive(Debug)]
pub struct Env {
    pub stack: Stack,
    pub signing_pem: String,
    pub kid: String,
    gateway: SocketAddr,
}

/// A signed-in user, with the client of the network it signs in from.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub access: String,
    pub refresh: String,
    pub http: Client,
}

/// A loopback address standing for client network `n` (1..=254): every
/// `127.n.0.1` is a different /16 and /24, and none is the gateway's own
/// 127.0.0.1 (which auth trusts as its proxy).
pub fn network(n: u8) -> IpAddr {
    assert!(n > 0, "network 0 is the gateway's own address");
    IpAddr::V4(Ipv4Addr::new(127, n, 0, 1))
}

/// A client connecting from `from`; redirects are not followed (a refusal
/// must be seen as it is).
pub fn client_from(from: IpAddr) -> Client {
    Client::builder()
        .local_address(from)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

impl Env {
    /// Starts the stack with the suite's secrets plus `extra`.
    pub async fn start(extra: &[(&str, String)]) -> Env {
        let signing_pem = SigningKey::generate_pem(KeyAlgorithm::Rs256).expect("a signing key");
        let kid = SigningKey::from_pem(KeyAlgorithm::Rs256, signing_pem.as_bytes(), None)
            .expect("the key loads")
            .kid()
            .to_owned();
        let mut env = vec![
            ("KEEL_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
            ("KEEL_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
            ("KEEL_WEBHOOK_SECRET_SHOPIFY", SHOPIFY_SECRET.to_owned()),
            ("KEEL_WEBHOOK_SECRET_GITHUB", GITHUB_SECRET.to_owned()),
            ("KEEL_WEBHOOK_SECRET_STRIPE", STRIPE_SECRET.to_owned()),
            ("KEEL_WEBHOOK_SECRET_STANDARD", STANDARD_SECRET.to_owned()),
            ("KEEL_TOKENS__SIGNING_KEY", signing_pem.clone()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
        let stack = Stack::start(&env).await;
        let gateway = stack
            .gateway("")
            .trim_start_matches("http://")
            .parse()
            .expect("the gateway listens on an address");
        Env {
            stack,
            signing_pem,
            kid,
            gateway,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.stack.gateway(path)
    }

    /// The gateway's address, for raw requests.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway
    }

    /// Sends raw bytes to the gateway and reads the answer.
    pub async fn raw(&self, request: &[u8]) -> Result<raw::RawResponse, String> {
        raw::send(self.gateway, request, Duration::from_secs(15)).await
    }

    pub fn logs(&self) -> String {
        self.stack.log_tails()
    }

    /// A connection to this stack's database (`store` schema).
    pub async fn db(&self) -> keel_db::Client {
        self.stack
            .database()
            .pool()
            .get()
            .await
            .expect("a database connection")
    }

    /// Registers `email` from network `n` and signs in.
    pub async fn register(&self, n: u8, email: &str) -> User {
        let http = client_from(network(n));
        let response = http
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("register answers");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "register {email}\n{}",
            self.logs()
        );
        let body: Value = response.json().await.expect("a user");
        let mut user = self.login_from(n, email, PASSWORD).await;
        user.id = body["id"].as_str().expect("an id").to_owned();
        user
    }

    /// Signs in as `email` from network `n` (must succeed).
    pub async fn login_from(&self, n: u8, email: &str, password: &str) -> User {
        let http = client_from(network(n));
        let response = http
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login answers");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "login {email}\n{}",
            self.logs()
        );
        let body: Value = response.json().await.expect("a token pair");
        let access = body["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned();
        let me: Value = http
            .get(self.url("/api/v1/auth/me"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("me answers")
            .json()
            .await
            .expect("a user");
        User {
            id: me["id"].as_str().unwrap_or_default().to_owned(),
            email: email.to_owned(),
            access,
            refresh: body["refresh_token"]
                .as_str()
                .expect("a refresh token")
                .to_owned(),
            http,
        }
    }

    /// The bootstrap admin, signed in from network `n`.
    pub async fn admin(&self, n: u8) -> User {
        self.login_from(n, ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    /// Creates an order for `user` (must succeed) and returns it.
    pub async fn order(&self, user: &User, body: Value) -> Value {
        let response = user
            .http
            .post(self.url("/api/v1/orders"))
            .bearer_auth(&user.access)
            .json(&body)
            .send()
            .await
            .expect("create order answers");
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "create order {body}\n{}",
            self.logs()
        );
        response.json().await.expect("an order")
    }

    /// A one-line EUR order.
    pub async fn simple_order(&self, user: &User) -> Value {
        self.order(
            user,
            json!({"currency": "EUR", "items": [{"sku": "MUG-1", "quantity": 2, "unit_price_cents": 1250}]}),
        )
        .await
    }

    /// The order row as stored (status, total_cents, user_id, source).
    pub async fn stored_order(
        &self,
        id: &str,
    ) -> Option<(String, i64, Option<uuid::Uuid>, String)> {
        let id: uuid::Uuid = id.parse().ok()?;
        self.db()
            .await
            .query_opt(
                "SELECT status, total_cents, user_id, source FROM orders WHERE id = $1",
                &[&id],
            )
            .await
            .expect("orders are readable")
            .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
    }

    /// Requests an export for `user` and waits until it has succeeded.
    pub async fn finished_export(&self, user: &User, format: &str) -> Value {
        let response = user
            .http
            .post(self.url("/api/v1/exports"))
            .bearer_auth(&user.access)
            .json(&json!({"resource": "orders", "format": format}))
            .send()
            .await
            .expect("export answers");
        assert_eq!(response.status(), StatusCode::ACCEPTED, "{}", self.logs());
        let id = response.json::<Value>().await.expect("an export")["id"]
            .as_str()
            .expect("an export id")
            .to_owned();
        eventually(
            self,
            "the export to succeed",
            Duration::from_secs(60),
            || async {
                let (_, export) = get_json(
                    &user.http,
                    &self.url(&format!("/api/v1/exports/{id}")),
                    &user.access,
                )
                .await;
                (export["status"] == "succeeded").then_some(export)
            },
        )
        .await
    }
}

/// Polls `probe` until it returns `Some`, failing with the services' logs
/// after `within`.
pub async fn eventually<T, F, Fut>(env: &Env, what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn get_json(client: &Client, url: &str, token: &str) -> (StatusCode, Value) {
    let response = client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Asserts that `response` is the problem `status` + `urn:keel:problem:<slug>`
/// and returns its body.
pub async fn expect_problem(response: Response, status: u16, slug: &str) -> Value {
    let got = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    assert_eq!(got, status, "expected {status} {slug}, got {got}: {text}");
    assert!(
        content_type.starts_with("application/problem+json"),
        "expected a problem+json body, got {content_type:?}: {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(
        body["type"],
        format!("urn:keel:problem:{slug}"),
        "expected problem type {slug}: {text}"
    );
    body
}

/// Asserts a raw response is a problem with one of `statuses`. A 400 with no body
/// is the HTTP parser refusing the request before any route runs: a
/// refusal too, without a problem body.
pub fn expect_raw_refusal(response: &raw::RawResponse, statuses: &[u16]) {
    if response.status == 400 && response.body.is_empty() && statuses.contains(&400) {
        return;
    }
    assert!(
        statuses.contains(&response.status),
        "expected one of {statuses:?}, got {}: {}",
        response.status,
        response.text()
    );
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/problem+json")),
        "expected a problem+json body with {}, got {:?}: {}",
        response.status,
        response.header("content-type"),
        response.text()
    );
}
