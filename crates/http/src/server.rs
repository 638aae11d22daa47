//! Binding and running an actix-web server under an explicit shutdown token.
//!
//! Binding happens before running so callers (and tests binding port 0)
//! know the port. actix's own signal handling is disabled: the binary turns
//! SIGTERM into a cancelled token, so one process can host several servers
//! (tests) and shutdown order stays explicit.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio_util::sync::CancellationToken;

use crate::{
    HttpSettings, Operational, body_deadline, canonical, conventions, observe, problem,
    request_deadline, request_id,
};

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

/// A service's own routes, mounted next to the operational endpoints.
pub type Routes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// The app factory every service uses: operational endpoints, the
/// service's routes, body limits (size and read deadline), a deadline on
/// every request (503 past it), problem+json 404/405/408/413s, security
/// headers, canonical request paths, and request-id and observability
/// middleware. Tests get exactly what
/// production runs.
pub fn app(
    operational: Operational,
    body_limit: usize,
    body_read_timeout: Duration,
    request_timeout: Duration,
    routes: Routes,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .configure(|cfg| operational.configure(cfg))
        .configure(move |cfg| routes(cfg))
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(web::JsonConfig::default().limit(body_limit))
        .default_service(web::to(problem::not_found))
        // Innermost: whatever reads a body (an extractor, the proxy) reads
        // it through the deadline, and its failure becomes the 408.
        .wrap(from_fn(move |req, next| {
            body_deadline::middleware(body_read_timeout, req, next)
        }))
        // Around routing, the service's own middleware (rate limits,
        // authentication) and the handler: the whole wait for an answer.
        .wrap(from_fn(move |req, next| {
            request_deadline::middleware(request_timeout, req, next)
        }))
        // Registered first = runs last, right before routing: every
        // middleware of the service and the router see the canonical path,
        // while a refused path is still observed, carries the request id
        // and gets the security headers.
        .wrap(from_fn(canonical::middleware))
        // Registered last = runs first: the request id exists before the
        // span and metrics middleware reads it, and before conventions
        // renders problems that carry it.
        .wrap(from_fn(conventions::middleware))
        .wrap(from_fn(observe::middleware))
        .wrap(from_fn(request_id::middleware))
}

/// Serves [`app`] on `server` until `shutdown` is cancelled, then stops
/// accepting and lets in-flight requests finish within
/// `settings.shutdown_grace`. actix's own signal handling is off: the
/// binary owns signals and cancels the token.
pub async fn serve(
    server: Server,
    settings: &HttpSettings,
    operational: Operational,
    routes: Routes,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let running = start(server, settings, operational, routes)?;
    run_until_stopped(running, shutdown).await
}

/// Builds the actix server outside any `async` block: the builder holds
/// non-`Send` app factories, and keeping it out of [`serve`]'s state
/// machine keeps that future `Send` (spawnable).
fn start(
    server: Server,
    settings: &HttpSettings,
    operational: Operational,
    routes: Routes,
) -> std::io::Result<actix_web::dev::Server> {
    let (body_limit, body_read_timeout, request_timeout) = (
        settings.body_limit,
        settings.body_read_timeout,
        settings.request_timeout,
    );
    let mut builder = HttpServer::new(move || {
        app(
            operational.clone(),
            body_limit,
            body_read_timeout,
            request_timeout,
            routes.clone(),
        )
    })
    .disable_signals()
    .shutdown_timeout(settings.shutdown_grace.as_secs().max(1));
    if settings.workers > 0 {
        builder = builder.workers(settings.workers);
    }
    Ok(builder.listen(server.into_listener())?.run())
}

/// Awaits `server`; when `shutdown` is cancelled, stops accepting and lets
/// in-flight requests finish within the configured grace.
async fn run_until_stopped(
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
    tracing::debug!("HTTP server stopped");
    stopper.abort();
    result
}
