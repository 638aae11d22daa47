//! The events area: `GET /api/v1/events`, the caller's export outcomes as
//! Server-Sent Events.
//!
//! ```text
//! worker ─outbox─► {ns}.events ─export.*─► {ns}.events.gateway.<id> (one per instance)
//!        └► Subscription (main runtime) ─► Hub: one broadcast per user
//!              └► each open EventStream of that user: load the export, write it
//! ```
//!
//! # Layout
//! - [`handlers`]: the endpoint: resume position, per-user cap, response.
//! - [`stream`]: one open stream: replay, live events, heartbeats, frames.
//! - [`hub`]: in-process fan-out to the streams of the event's user.
//! - [`subscription`]: this instance's exclusive queue on the broker.
//! - [`event_id`]: `<finished_at µs>-<export id>`, resumable from PostgreSQL.
//! - [`position`]: a stream's cursor and de-duplication.
//! - [`metrics`], [`error`], [`settings`] (`[events]`).
//!
//! Design and trade-offs: `docs/adr/0013-server-sent-events.md`.

pub mod error;
pub mod event_id;
pub mod handlers;
pub mod hub;
pub mod metrics;
pub mod position;
pub mod settings;
pub mod stream;
pub mod subscription;

use actix_web::web;
use keel_db::Pool;
use keel_http::Problem;
use keel_messaging::Broker;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::events::hub::Hub;
use crate::events::metrics::EventsMetrics;
use crate::events::settings::EventsSettings;
use crate::events::stream::{ExportRenderer, StreamOptions};
use crate::events::subscription::Subscription;

/// What the handler shares (cheap to clone).
#[derive(Debug, Clone)]
pub struct Events {
    pool: Pool,
    hub: Hub,
    options: StreamOptions,
    /// Cancelled when the gateway stops: every open stream ends, so none
    /// holds the HTTP server's drain (`http.shutdown_grace`) hostage.
    closing: CancellationToken,
    metrics: EventsMetrics,
}

/// The area, built at start-up: its state for the route, and the broker
/// subscription to run on the main runtime.
#[derive(Debug)]
pub struct EventsArea {
    pub state: Events,
    pub subscription: Subscription,
}

impl EventsArea {
    /// `render` writes an export as its event's `data` (the exports area's
    /// view, with `download_url`; [`ExportRenderer::stored`] without).
    pub fn build(
        pool: Pool,
        broker: Broker,
        settings: &EventsSettings,
        render: ExportRenderer,
        registry: &mut Registry,
    ) -> Self {
        let metrics = EventsMetrics::register(registry);
        let hub = Hub::new(
            settings.max_streams_per_user,
            settings.buffer,
            metrics.clone(),
        );
        Self {
            subscription: Subscription::new(broker, hub.clone()),
            state: Events {
                pool,
                hub,
                options: StreamOptions {
                    heartbeat: settings.heartbeat_interval,
                    retry: settings.retry,
                    replay_batch: settings.replay_batch,
                    render,
                },
                closing: CancellationToken::new(),
                metrics,
            },
        }
    }
}

impl Events {
    /// The area's background work until `shutdown`: the broker
    /// subscription, and ending every open stream once `shutdown` comes.
    /// Spawn it on the main runtime (lapin's I/O must outlive actix workers).
    pub async fn run_background(self, subscription: Subscription, shutdown: CancellationToken) {
        let closing = self.closing.clone();
        tokio::join!(subscription.run(shutdown.clone()), async move {
            shutdown.cancelled().await;
            closing.cancel();
        });
    }
}

/// Mounts `/events` inside the caller's `/api/v1` scope (which
/// authenticates: every stream belongs to a [`crate::identity::Caller`]).
pub fn configure(cfg: &mut web::ServiceConfig, events: Events) {
    cfg.app_data(web::Data::new(events)).service(
        web::resource("/events")
            .route(web::get().to(handlers::stream))
            .default_service(web::to(method_not_allowed)),
    );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
