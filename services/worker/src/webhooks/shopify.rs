//! Shopify: the order webhook's payload, and the Admin API call that reads
//! an order's fulfilments.
//!
//! Only the fields Keel uses are read (serde ignores the rest), with the
//! names Shopify gives them: `id`, `email`, `currency`, `total_price` (a
//! decimal string), `line_items[].sku / quantity / price`, and `updated_at`
//! (the order's version: an older one never overwrites a newer one).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keel_commerce::orders::domain::{
    Currency, Email, ExternalId, ExternalOrder, FulfillmentStatus, NewItem, Quantity, Sku, Source,
    TotalCents, UnitPriceCents,
};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::settings::ShopifySettings;
use crate::webhooks::money::to_minor_units;

/// The topics that carry an order.
pub const ORDER_TOPICS: [&str; 2] = ["orders/create", "orders/updated"];

/// The part of Shopify's order resource Keel keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct ShopifyOrder {
    pub id: u64,
    #[serde(default)]
    pub email: Option<String>,
    pub currency: String,
    pub total_price: String,
    #[serde(default)]
    pub line_items: Vec<ShopifyLineItem>,
    /// When the order last changed at Shopify (ISO 8601 with an offset,
    /// `2024-01-01T10:00:00-05:00`): the version of this payload.
    #[serde(default)]
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShopifyLineItem {
    pub id: u64,
    /// Often empty or null (custom items): the line's id stands in.
    #[serde(default)]
    pub sku: Option<String>,
    pub quantity: i64,
    pub price: String,
}

/// Why a payload cannot become an order: names the field, for `last_error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {message}")]
pub struct InvalidPayload {
    pub field: String,
    pub message: String,
}

impl InvalidPayload {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl ShopifyOrder {
    pub fn parse(body: &[u8]) -> Result<Self, InvalidPayload> {
        serde_json::from_slice(body).map_err(|e| InvalidPayload::new("body", e.to_string()))
    }

    /// The payload's version (`updated_at`), `None` when it has none.
    /// Shopify's order payloads always carry it; without one the upsert
    /// applies only to an order no versioned payload has reached.
    pub fn version(&self) -> Result<Option<DateTime<Utc>>, InvalidPayload> {
        self.updated_at
            .as_deref()
            .map(|value| {
                DateTime::parse_from_rfc3339(value)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|_| InvalidPayload::new("updated_at", "must be an ISO 8601 date-time"))
            })
            .transpose()
    }

    /// The order as Keel stores it, from source `source_name`.
    pub fn to_external(&self, source_name: &str) -> Result<ExternalOrder, InvalidPayload> {
        let field = |name: String| move |message: String| InvalidPayload::new(name, message);
        let currency = Currency::parse(&self.currency).map_err(field("currency".into()))?;
        let total = to_minor_units(&self.total_price, currency.as_str())
            .and_then(TotalCents::parse)
            .map_err(field("total_price".into()))?;
        let mut items = Vec::with_capacity(self.line_items.len());
        for (i, line) in self.line_items.iter().enumerate() {
            let sku = match line.sku.as_deref() {
                Some(sku) if !sku.is_empty() => sku.to_owned(),
                _ => format!("shopify-line-{}", line.id),
            };
            items.push(NewItem {
                sku: Sku::parse(&sku).map_err(field(format!("line_items[{i}].sku")))?,
                quantity: Quantity::parse(line.quantity)
                    .map_err(field(format!("line_items[{i}].quantity")))?,
                unit_price_cents: to_minor_units(&line.price, currency.as_str())
                    .and_then(UnitPriceCents::parse)
                    .map_err(field(format!("line_items[{i}].price")))?,
            });
        }
        let customer_email = match self.email.as_deref() {
            None | Some("") => None,
            Some(email) => Some(Email::parse(email).map_err(field("email".into()))?),
        };
        Ok(ExternalOrder {
            source: Source::Webhook(source_name.to_owned()),
            external_id: ExternalId::parse(&self.id.to_string()).map_err(field("id".into()))?,
            currency,
            items,
            total_cents: total,
            customer_email,
        })
    }
}

/// `GET .../orders/{id}/fulfillments.json`, the part Keel reads.
#[derive(Debug, Deserialize)]
struct Fulfillments {
    fulfillments: Vec<Fulfillment>,
}

#[derive(Debug, Deserialize)]
struct Fulfillment {
    /// `pending`, `open`, `success`, `cancelled`, `error`, `failure`.
    status: String,
}

/// The order's fulfilment status from its fulfilments: `fulfilled` once one
/// succeeded, `pending` while one is under way, `unfulfilled` when there
/// are none (or only cancelled and failed ones).
fn summarise(fulfillments: &[Fulfillment]) -> &'static str {
    let any = |status: &[&str]| {
        fulfillments
            .iter()
            .any(|f| status.contains(&f.status.as_str()))
    };
    if any(&["success"]) {
        "fulfilled"
    } else if any(&["pending", "open"]) {
        "pending"
    } else {
        "unfulfilled"
    }
}

/// Why the Admin API gave no answer to use.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Network trouble, a timeout, a 5xx, or a 429: try again later.
    #[error("the Shopify API is unavailable: {0}")]
    Unavailable(String),
    /// A 4xx other than 429 (bad token, unknown order) or an answer that is
    /// not what the API documents: retrying changes nothing.
    #[error("the Shopify API refused the request: {0}")]
    Refused(String),
}

/// A client of the Admin API for one shop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShopifyApi {
    http: reqwest::Client,
    base: String,
    version: String,
    token: SecretString,
    max_retry_after_wait: Duration,
    /// No call before this instant: a `Retry-After` is being honoured.
    not_before: std::sync::Arc<Mutex<Option<Instant>>>,
}

impl ShopifyApi {
    /// `None` when no API is configured.
    pub fn from_settings(settings: &ShopifySettings) -> Result<Option<Self>, reqwest::Error> {
        let (Some(base), Some(token)) = (&settings.api_base_url, &settings.access_token) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // Every request carries the shop's access token in a header of
            // Shopify's own, which reqwest would repeat to any host a
            // redirect names: a 3xx is refused as an answer instead.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Some(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            version: settings.api_version.clone(),
            token: token.clone(),
            max_retry_after_wait: settings.max_retry_after_wait,
            not_before: std::sync::Arc::default(),
        }))
    }

    /// The fulfilment status of Shopify order `order_id`.
    pub async fn fulfillment_status(&self, order_id: u64) -> Result<FulfillmentStatus, ApiError> {
        let url = format!(
            "{}/admin/api/{}/orders/{order_id}/fulfillments.json",
            self.base, self.version
        );
        // One wait for a short Retry-After, then one more try: enough for
        // the API's leaky bucket (it asks for about 2 s), without holding
        // the job for long.
        for _ in 0..2 {
            self.wait_turn()?;
            let response = self
                .http
                .get(&url)
                .header("X-Shopify-Access-Token", self.token.expose_secret())
                .header("Accept", "application/json")
                .send()
                .await
                .map_err(|e| ApiError::Unavailable(error_chain(&e)))?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after(response.headers()).unwrap_or(Duration::from_secs(2));
                self.hold_off(wait);
                if wait <= self.max_retry_after_wait {
                    tokio::time::sleep(wait).await;
                    continue;
                }
                return Err(ApiError::Unavailable(format!(
                    "429 Too Many Requests; Retry-After {wait:?}"
                )));
            }
            if status.is_server_error() {
                return Err(ApiError::Unavailable(format!("HTTP {status}")));
            }
            if !status.is_success() {
                return Err(ApiError::Refused(format!("HTTP {status} for {url}")));
            }
            let body: Fulfillments = response
                .json()
                .await
                .map_err(|e| ApiError::Refused(format!("unexpected answer: {e}")))?;
            return FulfillmentStatus::parse(summarise(&body.fulfillments))
                .map_err(ApiError::Refused);
        }
        Err(ApiError::Unavailable(
            "429 Too Many Requests twice in a row".to_owned(),
        ))
    }

    /// Fails fast while an earlier `Retry-After` has not passed (longer
    /// than the job may wait): the attempt is retried later.
    fn wait_turn(&self) -> Result<(), ApiError> {
        let guard = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        match *guard {
            Some(until) if until > Instant::now() + self.max_retry_after_wait => {
                Err(ApiError::Unavailable(format!(
                    "holding off the Shopify API for another {:?} (Retry-After)",
                    until - Instant::now()
                )))
            }
            _ => Ok(()),
        }
    }

    fn hold_off(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }
}

/// `Retry-After` in seconds; Shopify sends decimals (`2.0`). HTTP dates are
/// not used by Shopify and fall back to the caller's default.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// The error with its causes (reqwest's own message omits them).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ORDER: &str = r#"{
        "id": 820982911946154508,
        "email": "jon@example.com",
        "currency": "USD",
        "total_price": "409.94",
        "financial_status": "pending",
        "line_items": [
            {"id": 466157049, "sku": "IPOD2008GREEN", "quantity": 1, "price": "199.00"},
            {"id": 518995019, "sku": null, "quantity": 2, "price": "100.47"}
        ]
    }"#;

    #[test]
    fn a_shopify_order_becomes_an_external_order() {
        let order = ShopifyOrder::parse(ORDER.as_bytes())
            .unwrap()
            .to_external("shopify")
            .unwrap();
        assert_eq!(order.external_id.as_str(), "820982911946154508");
        assert_eq!(order.source, Source::Webhook("shopify".into()));
        assert_eq!(order.total_cents.get(), 40_994);
        assert_eq!(order.items.len(), 2);
        assert_eq!(order.items[0].sku.as_str(), "IPOD2008GREEN");
        assert_eq!(order.items[1].sku.as_str(), "shopify-line-518995019");
        assert_eq!(order.items[1].unit_price_cents.get(), 10_047);
        assert_eq!(order.items[1].quantity.get(), 2);
        assert_eq!(order.customer_email.unwrap().as_str(), "jon@example.com");
    }

    #[test]
    fn the_version_is_updated_at_in_utc() {
        let with = |updated_at: &str| {
            let body = ORDER.replace(
                "\"financial_status\"",
                &format!("\"updated_at\": {updated_at}, \"financial_status\""),
            );
            ShopifyOrder::parse(body.as_bytes()).unwrap().version()
        };
        assert_eq!(
            with("\"2024-01-01T06:00:00-05:00\"").unwrap(),
            Some("2024-01-01T11:00:00Z".parse().unwrap())
        );
        assert_eq!(with("null").unwrap(), None);
        assert_eq!(
            ShopifyOrder::parse(ORDER.as_bytes())
                .unwrap()
                .version()
                .unwrap(),
            None
        );
        assert_eq!(with("\"yesterday\"").unwrap_err().field, "updated_at");
    }

    #[test]
    fn an_invalid_field_is_named() {
        let body = ORDER.replace("\"199.00\"", "\"1.999\"");
        let error = ShopifyOrder::parse(body.as_bytes())
            .unwrap()
            .to_external("shopify")
            .unwrap_err();
        assert_eq!(error.field, "line_items[0].price");
        let error = ShopifyOrder::parse(b"{\"id\": 1}").unwrap_err();
        assert_eq!(error.field, "body");
    }

    /// A one-answer HTTP server on a free port: `answer(port_of_self)` is
    /// written to every connection; returns its base URL and a hit counter.
    async fn serve(answer: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn a_redirect_is_refused_not_followed_so_the_access_token_stays_with_the_api() {
        let body = r#"{"fulfillments":[{"status":"success"}]}"#;
        let (elsewhere, elsewhere_hits) = serve(format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;
        let (api_url, api_hits) = serve(format!(
            "HTTP/1.1 302 Found\r\nLocation: {elsewhere}/collect\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ))
        .await;
        let api = ShopifyApi::from_settings(&ShopifySettings {
            api_base_url: Some(api_url),
            access_token: Some(SecretString::from("shpat_not-for-anyone-else")),
            api_version: "2024-10".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_retry_after_wait: Duration::from_secs(1),
        })
        .unwrap()
        .unwrap();

        let answer = api.fulfillment_status(450789469).await;
        assert!(
            matches!(&answer, Err(ApiError::Refused(reason)) if reason.contains("302")),
            "{answer:?}"
        );
        assert_eq!(api_hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "the redirect was followed (with the access token)"
        );
    }

    #[test]
    fn the_fulfilment_status_follows_the_most_advanced_fulfilment() {
        let of = |statuses: &[&str]| {
            summarise(
                &statuses
                    .iter()
                    .map(|s| Fulfillment {
                        status: (*s).to_owned(),
                    })
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(of(&[]), "unfulfilled");
        assert_eq!(of(&["cancelled", "failure"]), "unfulfilled");
        assert_eq!(of(&["open"]), "pending");
        assert_eq!(of(&["cancelled", "success"]), "fulfilled");
    }

    #[test]
    fn retry_after_is_read_in_seconds_with_decimals() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(reqwest::header::RETRY_AFTER, "2.0".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }
}
