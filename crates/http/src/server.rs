//! Binding and running an actix-web server under an explicit shutdown token.
//!
//! Binding happens before running so callers (and tests binding port 0)
//! know the port. actix's own signal handling is disabled by the caller
//! (`HttpServer::disable_signals`): the binary turns SIGTERM into a
//! cancelled token, so one process can host several servers (tests) and
//! shutdown order stays explicit.

use std::net::{SocketAddr, TcpListener};

use tokio_util::sync::CancellationToken;

use crate::HttpSettings;

#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    port: u16,
}

impl Server {
    pub fn bind(settings: &HttpSettings) -> std::io::Result<Self> {
        let listener = TcpListener::bind(settings.address())?;
        let port = listener.local_addr()?.port();
        Ok(Self { listener, port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn into_listener(self) -> TcpListener {
        self.listener
    }
}

/// Applies Keel's server settings: no signal handling of its own, the
/// configured worker count and shutdown grace.
#[macro_export]
macro_rules! configure_server {
    ($server:expr, $settings:expr) => {{
        let settings: &$crate::HttpSettings = $settings;
        let mut server = $server
            .disable_signals()
            .shutdown_timeout(settings.shutdown_grace.as_secs().max(1));
        if settings.workers > 0 {
            server = server.workers(settings.workers);
        }
        server
    }};
}

/// Awaits `server` and, when `shutdown` is cancelled, stops accepting and
/// lets in-flight requests finish within the configured grace.
pub async fn run_until_stopped(
    server: actix_web::dev::Server,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let handle = server.handle();
    let stopper = tokio::spawn(async move {
        shutdown.cancelled().await;
        tracing::info!("HTTP server draining in-flight requests");
        handle.stop(true).await;
    });
    let result = server.await;
    stopper.abort();
    result
}

/// Address helper for logs and tests.
pub fn base_url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
