//! Per-request span and metrics.
//!
//! The span continues the caller's W3C `traceparent`, so a trace runs from
//! the browser's request through every service it touches.
//!
//! Every label comes from a closed set, so no client can mint time series
//! (each one costs memory in this process and in Prometheus for good):
//! the route is the matched *pattern* (`/api/v1/orders/{id}`), or
//! `unmatched` when nothing matched, never the raw path; the method is one
//! of [`METHODS`] or `OTHER` (actix accepts any token as a method); the
//! status is a three-digit number.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::HeaderMap;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use opentelemetry::propagation::Extractor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::request_id::RequestId;

/// The method label values besides `OTHER`.
pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The method as a label: one of [`METHODS`], else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("OTHER")
}

/// The route label of a request that matched no pattern.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// Request counters and latency histograms; register once per app.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 0.5 ms .. ~8 s: cached reads sit at the bottom, exports at the top.
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 15))
        });
        registry.register(
            "http_requests",
            "HTTP requests by method, route pattern and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route pattern",
            duration.clone(),
        );
        Self { requests, duration }
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware (`actix_web::middleware::from_fn(observe::middleware)`); wrap
/// it inside the request-id middleware so the id is known here.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = method_label(req.method());
    // Before routing this is what the resource map makes of the path as it
    // arrived; the response's request knows the pattern that was routed.
    let route = req.match_pattern().unwrap_or_else(|| UNMATCHED.to_owned());
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)
        .unwrap_or_default();
    let metrics = req.app_data::<web::Data<HttpMetrics>>().cloned();

    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(req.headers()))
    });
    // A missing or malformed traceparent simply starts a new trace.
    let _ = span.set_parent(parent);

    let result = next.call(req).instrument(span.clone()).await;
    let (status, route) = match &result {
        Ok(res) => (
            res.status().as_u16(),
            res.request()
                .match_pattern()
                .unwrap_or_else(|| UNMATCHED.to_owned()),
        ),
        Err(e) => (e.as_response_error().status_code().as_u16(), route),
    };
    span.record("http.response.status_code", status);
    span.record("http.route", route.as_str());
    span.record("otel.name", format!("{method} {route}").as_str());
    if status >= 500 {
        tracing::warn!(parent: &span, status, "request failed");
    }
    if let Some(metrics) = metrics {
        metrics
            .requests
            .get_or_create(&RequestLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        metrics
            .duration
            .get_or_create(&RouteLabels { method, route })
            .observe(started.elapsed().as_secs_f64());
    }
    result
}
