//! Signed deliveries for the webhook tests: each scheme's headers and body,
//! signed with `keel_webhooks::sign` (the sender's side), and the test
//! configuration of the four sources.

use std::time::Duration;

use api_gateway::settings::Settings;
use keel_webhooks::{Scheme, sign};
use secrecy::SecretString;

use crate::helpers::TestApp;

pub const SCHEMES: [Scheme; 4] = [
    Scheme::Shopify,
    Scheme::Github,
    Scheme::Stripe,
    Scheme::Standard,
];

/// Per-source body limit in the tests (small, so the oversized body is cheap).
pub const BODY_LIMIT: usize = 16 * 1024;

/// Which of a source's secrets signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// Configured, listed first.
    Current,
    /// Configured too, still active during a rotation.
    Previous,
    /// Was configured once and has been removed.
    Retired,
    /// Never configured.
    Wrong,
}

pub fn secret(scheme: Scheme, key: Key) -> String {
    match (scheme, key) {
        (Scheme::Standard, Key::Current) => "whsec_Y3VycmVudC1zdGFuZGFyZC1rZXktMDAwMQ==".into(),
        (Scheme::Standard, Key::Previous) => "whsec_cHJldmlvdXMtc3RhbmRhcmQta2V5LTAwMg==".into(),
        (Scheme::Standard, Key::Retired) => "whsec_cmV0aXJlZC1zdGFuZGFyZC1rZXktMDAwMw==".into(),
        // Valid base64, another key.
        (Scheme::Standard, Key::Wrong) => "whsec_d3Jvbmctc3RhbmRhcmQta2V5".into(),
        (Scheme::Stripe, key) => format!("whsec_{key:?}-stripe-secret").to_lowercase(),
        (scheme, key) => format!("{key:?}-{}-secret", scheme.as_str()).to_lowercase(),
    }
}

/// The four sources, named after their schemes, with the current and the
/// previous secret active; the environment plays no part.
pub fn configure(settings: &mut Settings) {
    for scheme in SCHEMES {
        let source = settings
            .webhooks
            .sources
            .get_mut(scheme.as_str())
            .expect("the defaults define one source per scheme");
        source.secret_env = None;
        source.secrets = vec![
            SecretString::from(secret(scheme, Key::Current)),
            SecretString::from(secret(scheme, Key::Previous)),
        ];
        source.body_limit = BODY_LIMIT;
        source.tolerance = Duration::from_secs(300);
    }
}

/// A delivery as a sender would post it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub scheme: Scheme,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Delivery {
    /// A valid delivery of `delivery_id`, signed with `key` at `timestamp`.
    pub fn signed(scheme: Scheme, key: Key, delivery_id: &str, timestamp: i64) -> Self {
        let body = match scheme {
            Scheme::Shopify => {
                format!(r#"{{"id":820982911946154508,"email":"jon@example.com","note":"{delivery_id}"}}"#)
            }
            Scheme::Github => format!(r#"{{"zen":"Keep it logically awesome.","hook_id":"{delivery_id}"}}"#),
            Scheme::Stripe => format!(
                r#"{{"id":"{delivery_id}","object":"event","type":"payment_intent.succeeded"}}"#
            ),
            Scheme::Standard => r#"{"type":"order.paid","data":{"amount":100}}"#.to_owned(),
        }
        .into_bytes();
        Self::sign(scheme, key, delivery_id, timestamp, body)
    }

    /// `body` signed with `key` (the delivery id goes where the scheme
    /// carries it, except Stripe's, which is the body's `id`).
    pub fn sign(
        scheme: Scheme,
        key: Key,
        delivery_id: &str,
        timestamp: i64,
        body: Vec<u8>,
    ) -> Self {
        let secret = secret(scheme, key);
        let pairs: Vec<(&str, String)> = match scheme {
            Scheme::Shopify => vec![
                ("X-Shopify-Hmac-Sha256", sign::shopify(&secret, &body)),
                ("X-Shopify-Event-Id", delivery_id.to_owned()),
                ("X-Shopify-Topic", "orders/create".to_owned()),
            ],
            Scheme::Github => vec![
                ("X-Hub-Signature-256", sign::github(&secret, &body)),
                ("X-GitHub-Delivery", delivery_id.to_owned()),
                ("X-GitHub-Event", "ping".to_owned()),
            ],
            Scheme::Stripe => vec![("Stripe-Signature", sign::stripe(&secret, timestamp, &body))],
            Scheme::Standard => vec![
                ("webhook-id", delivery_id.to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                (
                    "webhook-signature",
                    sign::standard(&secret, delivery_id, timestamp, &body).unwrap(),
                ),
            ],
        };
        let mut headers: Vec<(String, String)> =
            pairs.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        headers.push(("Content-Type".into(), "application/json".into()));
        headers.push(("Authorization".into(), "Bearer not-for-storage".into()));
        Self {
            scheme,
            headers,
            body,
        }
    }

    pub fn valid(scheme: Scheme, delivery_id: &str) -> Self {
        Self::signed(scheme, Key::Current, delivery_id, now())
    }

    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    pub async fn post(&self, app: &TestApp) -> reqwest::Response {
        let mut request =
            app.client
                .post(format!("{}/webhooks/{}", app.address, self.scheme.as_str()));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .body(self.body.clone())
            .send()
            .await
            .expect("request reaches the gateway")
    }
}

pub async fn count(app: &TestApp, sql: &str) -> i64 {
    let client = app.db().pool().get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

pub async fn stored_events(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) FROM webhook_events").await
}

pub async fn outbox_rows(app: &TestApp) -> i64 {
    count(app, "SELECT count(*) FROM outbox").await
}
