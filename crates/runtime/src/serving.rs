//! The end of every service's `run_until_stopped`: serve HTTP until the
//! shutdown token is cancelled (or the server fails), then stop the
//! background tasks and close the broker connection, in that order — the
//! tasks may still need the broker to finish their batch or nack.

use std::time::Duration;

use keel_http::{HttpSettings, Operational, Routes, Server};
use keel_messaging::Broker;

use crate::background::Background;

/// Time the background tasks get after the HTTP drain, beyond
/// `http.shutdown_grace`, for what follows their in-flight work (closing
/// channels, a relay's last confirm).
const AFTER_GRACE: Duration = Duration::from_secs(5);

/// Why a service stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// Logged with the task's name when it happened.
    #[error("a background task ended while the service was running")]
    BackgroundTaskEnded,
}

/// Serves `routes` (and the operational endpoints) until the background's
/// shutdown token is cancelled, then stops the background tasks (waiting
/// up to `http.shutdown_grace` plus a few seconds) and closes `broker`.
///
/// The liveness heartbeat runs as one of the background tasks, on the
/// runtime calling this (the one doing the service's work): `/healthz`,
/// answered by actix's own threads, fails once that runtime stops running
/// it for `http.liveness_stall_after`.
///
/// The server can also end on its own (a fatal I/O error): the rest stops
/// with it rather than leave a half-alive process.
pub async fn serve_until_stopped(
    server: Server,
    http: &HttpSettings,
    operational: Operational,
    routes: Routes,
    mut background: Background,
    broker: &Broker,
) -> Result<(), RunError> {
    let shutdown = background.token().clone();
    background.spawn(
        "liveness heartbeat",
        operational
            .liveness()
            .run(http.liveness_stall_after, shutdown.clone()),
    );
    let served = keel_http::serve(server, http, operational, routes, shutdown).await;
    let background_ok = background.shutdown(http.shutdown_grace + AFTER_GRACE).await;
    broker.close().await;
    served.map_err(RunError::Serve)?;
    if background_ok {
        Ok(())
    } else {
        Err(RunError::BackgroundTaskEnded)
    }
}
