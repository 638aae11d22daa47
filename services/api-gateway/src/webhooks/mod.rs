//! The inbound webhooks area: `POST /webhooks/{source}` (outside `/api/v1`:
//! senders authenticate with signatures, not tokens).
//!
//! # Layout
//! - [`handlers`]: read the raw body within the source's limit, verify,
//!   capture (event + job + `webhook.received` in one transaction), answer.
//! - [`settings`]: the `[webhooks]` section (sources, secrets from the
//!   environment, development secrets refused in production).
//! - [`error`]: [`error::WebhookError`], the area's answers as problems.
//! - [`openapi`]: the ingest endpoint's part of the OpenAPI document.
//! - [`metrics`]: `webhooks_received{source, outcome}`.
//!
//! Captures go through `keel_webhooks::group_commit`: the deliveries that
//! arrive while a commit is in flight share the next one (each answered
//! after its own commit). They write their outbox rows without NOTIFY (it would serialise
//! ingest's commits); the in-process relay is woken after commit
//! (`keel_outbox::Relay::waker`, no database round trip).
//!
//! Schemes, storage and capture live in `keel_webhooks`; the worker applies
//! the captured events. Design: `docs/adr/0011-inbound-webhooks.md`.

pub mod error;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod settings;

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::web;
use keel_config::Environment;
use keel_db::Pool;
use keel_http::Problem;
use keel_webhooks::group_commit::GroupCommit;
use keel_webhooks::{Scheme, Verifier};
use prometheus_client::registry::Registry;

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
        Ok(Self {
            waker,
            captures: GroupCommit::start(pool, settings.group_commit),
            sources: Arc::new(sources),
            metrics: WebhookMetrics::register(registry),
        })
    }
}

/// Mounts `/webhooks/{source}` at the root (no authentication, no rate
/// limit: the signature is the credential, and senders retry on 429s in
/// ways that only delay their own data). Other methods get a 405 problem.
pub fn configure(cfg: &mut web::ServiceConfig, webhooks: Webhooks) {
    cfg.service(
        web::resource("/webhooks/{source}")
            .app_data(web::Data::new(webhooks))
            .route(web::post().to(handlers::receive))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
