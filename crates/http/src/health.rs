//! Operational endpoints every service serves.
//!
//! `/healthz` answers as long as the process can serve HTTP (liveness: a
//! restart would help). `/readyz` does a real round trip to each dependency
//! the service uses, concurrently and each within a budget, and answers 503
//! naming the failing ones (readiness: route no traffic here for now, but
//! do not restart; the service reconnects by itself).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, web};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::observe::HttpMetrics;

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency probe. The error string is logged, not returned to the client.
pub trait Check: Send + Sync {
    /// `postgres`, `redis`, `rabbitmq`, ...: the name `/readyz` reports.
    fn name(&self) -> &'static str;
    fn check(&self) -> CheckFuture<'_>;
}

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn Check>>,
    timeout: Duration,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|c| c.name()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

#[derive(Debug, Serialize)]
struct CheckReport {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct ReadinessReport {
    status: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<&'static str>,
    checks: BTreeMap<&'static str, CheckReport>,
}

impl Readiness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Vec::new(),
            timeout,
        }
    }

    pub fn with(mut self, check: impl Check + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Runs every check concurrently; returns the names of the failing ones.
    pub async fn failing(&self) -> Vec<&'static str> {
        self.report().await.failing
    }

    async fn report(&self) -> ReadinessReport {
        let results = futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = tokio::time::timeout(self.timeout, check.check()).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(dependency = check.name(), error = %e, "readiness check failed");
                    Some("unreachable")
                }
                Err(_) => {
                    tracing::warn!(dependency = check.name(), timeout = ?self.timeout, "readiness check timed out");
                    Some("timeout")
                }
            };
            (check.name(), error)
        }))
        .await;

        let mut report = ReadinessReport {
            status: "ok",
            failing: Vec::new(),
            checks: BTreeMap::new(),
        };
        for (name, error) in results {
            if error.is_some() {
                report.failing.push(name);
            }
            report.checks.insert(
                name,
                CheckReport {
                    status: if error.is_some() { "error" } else { "ok" },
                    error,
                },
            );
        }
        if !report.failing.is_empty() {
            report.status = "unavailable";
        }
        report
    }
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"status": "ok"}))
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let report = readiness.report().await;
    let mut response = if report.failing.is_empty() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(report)
}

async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        ))
        .body(keel_telemetry::metrics::render(&registry))
}

/// What the operational endpoints and middleware need, cloned into every
/// actix worker's app.
#[derive(Debug, Clone)]
pub struct Operational {
    readiness: web::Data<Readiness>,
    registry: web::Data<Registry>,
    http_metrics: web::Data<HttpMetrics>,
}

impl Operational {
    /// Registers the HTTP metrics into `registry`, then freezes it for serving.
    pub fn new(readiness: Readiness, mut registry: Registry) -> Self {
        let http_metrics = HttpMetrics::register(&mut registry);
        Self {
            readiness: web::Data::new(readiness),
            registry: web::Data::new(registry),
            http_metrics: web::Data::new(http_metrics),
        }
    }

    /// Mounts `/healthz`, `/readyz` and `/metrics` and the shared data the
    /// [`observe`](crate::observe) middleware reads.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.readiness.clone())
            .app_data(self.registry.clone())
            .app_data(self.http_metrics.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}
