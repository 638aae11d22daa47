//! The inbound webhooks area: `POST /webhooks/{source}` (outside `/api/v1`:
//! senders authenticate with signatures, not tokens).
//!
//! # Layout
//! - [`handlers`]: read the raw body within the source's limit, verify,
//!   capture (event + job + `webhook.received` in one transaction), answer.
//! - [`settings`]: the `[webhooks]` section (sources, secrets from the
//!   environment, development secrets refused in production).
//! - [`error`]: [`error::WebhookError`], the area's answers as problems.
//! - [`metrics`]: `webhooks_received{source, outcome}`,
//!   `webhooks_capture_waiting`.
//!
//! Captures go through `keel_webhooks::group_commit`: the deliveries that
//! arrive while a commit is in flight share the next one (each answered
//! after its own commit). They write their outbox rows without NOTIFY (it would serialise
//! ingest's commits); the in-process relay is woken after commit
//! (`keel_outbox::Relay::waker`, no database round trip). Waiting is
//! bounded (ADR 0023): past `group_commit.max_waiting` queued captures or
//! `group_commit.capture_timeout` a delivery gets a 503 with `Retry-After`
//! (it may still be committed; the sender's retry then answers duplicate).
//!
//! Schemes, storage and capture live in `keel_webhooks`; the worker applies
//! the captured events. Design: `docs/adr/0011-inbound-webhooks.md`.

pub mod error;
pub mod handlers;
pub mod metrics;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::dev::ServiceRequest;
use actix_web::middleware::from_fn;
use actix_web::web;
use keel_config::Environment;
use keel_db::Pool;
use keel_http::Problem;
use keel_webhooks::group_commit::GroupCommit;
use keel_webhooks::{Scheme, Verifier};
use prometheus_client::registry::Registry;

use crate::edge::{Edge, rate_limit};
use crate::webhooks::metrics::WebhookMetrics;
use crate::webhooks::settings::WebhooksSettings;
use keel_outbox::RelayWaker;

/// One configured source, ready to verify.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub verifier: Verifier,
    pub body_limit: usize,
}

impl Source {
    pub fn scheme(&self) -> Scheme {
        self.verifier.scheme()
    }
}

/// What the handler shares (cheap to clone).
#[derive(Debug, Clone)]
pub struct Webhooks {
    captures: GroupCommit,
    sources: Arc<HashMap<String, Source>>,
    metrics: WebhookMetrics,
    waker: RelayWaker,
    body_read_timeout: std::time::Duration,
}

impl Webhooks {
    /// Builds every source's verifier. Settings were validated at load, so
    /// a failure here means they were changed after (tests): it is reported
    /// naming the source.
    pub fn build(
        pool: Pool,
        waker: RelayWaker,
        settings: &WebhooksSettings,
        environment: Environment,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        let mut sources = HashMap::new();
        for (name, source) in &settings.sources {
            let secrets = source.effective_secrets();
            if let Some(secret) = source.development_secret(&secrets) {
                // Printed on purpose: developers sign their test deliveries
                // with it. Production never gets here (validation refuses it).
                tracing::warn!(
                    source = %name,
                    secret,
                    env = source.secret_env.as_deref().unwrap_or("-"),
                    ?environment,
                    "webhook source uses its development secret; set the env variable to replace it"
                );
            }
            let verifier = source
                .verifier(&secrets)
                .map_err(|e| format!("webhooks.sources.{name}: {e}"))?;
            sources.insert(
                name.clone(),
                Source {
                    name: name.clone(),
                    verifier,
                    body_limit: source.body_limit,
                },
            );
        }
        let captures = GroupCommit::start(pool, settings.group_commit);
        metrics::register_capture_queue(registry, captures.probe());
        Ok(Self {
            waker,
            body_read_timeout: settings.body_read_timeout,
            captures,
            sources: Arc::new(sources),
            metrics: WebhookMetrics::register(registry),
        })
    }
}

/// Mounts `/webhooks/{source}` at the root. No authentication: the
/// signature is the credential. Rate limited per client address (the
/// `webhooks` class of `[rate_limit]`, the edge's GCRA limiter: 429 +
/// `Retry-After` past it, fail open when Redis is away), before the body is
/// read, so a flood of unsigned or unknown-source posts costs a hash
/// lookup, not a body buffer or a database round trip. The default budget
/// is generous: senders such as Shopify send bursts from a few addresses,
/// and a 429 only delays their own data. Other methods get a 405 problem.
pub fn configure(cfg: &mut web::ServiceConfig, webhooks: Webhooks, edge: &Edge) {
    let limiter = edge.limiter.clone();
    let trusted_proxies = edge.trusted_proxies.clone();
    cfg.service(
        web::resource("/webhooks/{source}")
            .app_data(web::Data::new(webhooks))
            .wrap(from_fn(move |req: ServiceRequest, next| {
                let ip = keel_http::client_ip::of_request(req.request(), &trusted_proxies);
                rate_limit::middleware(limiter.clone(), ip, req, next)
            }))
            .route(web::post().to(handlers::receive))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
