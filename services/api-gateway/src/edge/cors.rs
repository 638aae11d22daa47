//! CORS for the browser frontend.
//!
//! Only the configured origins get CORS headers, and only they may send
//! credentials; any other origin gets a response without them (the browser
//! then refuses to hand it to the page), never an error, so non-browser
//! clients that happen to send `Origin` keep working.

use std::time::Duration;

use actix_cors::Cors;
use actix_web::http::{Method, header};
use keel_config::{Invalid, Validate};
use serde::Deserialize;

/// The `cors` section.
#[derive(Debug, Clone, Deserialize)]
pub struct CorsSettings {
    /// Exact origins (`scheme://host[:port]`) of the frontends.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Validate for CorsSettings {
    fn validate(&self) -> Result<(), Invalid> {
        for origin in &self.allowed_origins {
            let valid = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && !origin.ends_with('/')
                    && u.query().is_none()
            });
            if !valid {
                return Err(Invalid::new(
                    "allowed_origins",
                    format!("{origin:?} is not an origin like https://shop.example.com (no path, no wildcard)"),
                )
                .within("cors"));
            }
        }
        Ok(())
    }
}

/// Response headers a browser page may read.
pub const EXPOSED_HEADERS: [&str; 8] = [
    "x-request-id",
    "etag",
    "location",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
    "content-disposition",
];

pub fn middleware(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::IF_MATCH,
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
            header::HeaderName::from_static("traceparent"),
            header::HeaderName::from_static("tracestate"),
            // A fetch-based Server-Sent Events client resuming
            // `GET /api/v1/events` (native `EventSource` cannot send the
            // Bearer header, so browsers use one).
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers(EXPOSED_HEADERS)
        .supports_credentials()
        .max_age(usize::try_from(settings.max_age.as_secs()).unwrap_or(usize::MAX));
    for origin in &settings.allowed_origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}
