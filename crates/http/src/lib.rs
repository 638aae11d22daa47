//! HTTP plumbing shared by every service's actix-web app.
//!
//! # Layout
//! - [`settings`]: the `http` configuration section (bind address, limits,
//!   shutdown grace).
//! - [`problem`]: RFC 9457 `application/problem+json` bodies, carrying the
//!   request id.
//! - [`request_id`]: accepts a sane `X-Request-Id` or makes one, echoes it on
//!   every response and exposes it to error rendering.
//! - [`conventions`]: security headers on every response, and actix's own
//!   bare 405/413 answers rewritten as problems.
//! - [`observe`]: one span per request (continuing the caller's
//!   `traceparent`) and request count/duration metrics by route pattern.
//! - [`canonical`]: one canonical spelling of every request path before
//!   routing (unreserved escapes decoded; dot segments, empty segments,
//!   encoded separators and control characters refused with a 400).
//! - [`body_deadline`]: every request body must arrive within
//!   `http.body_read_timeout` of its head, else a 408 and a closed connection.
//! - [`request_deadline`]: every request must have its response head within
//!   `http.request_timeout`, else a 503 problem with `Retry-After`
//!   (streamed bodies are not cut).
//! - [`client_ip`]: the client's address behind trusted reverse proxies.
//! - [`health`]: `/healthz` (503 once the runtime's heartbeat stalls),
//!   `/readyz` (real round trips to each dependency: 503 naming a failing
//!   required one, 200 reporting a failing one a path survives as
//!   degraded) and `/metrics`.
//! - [`server`]: the one app factory every service uses, and a server that
//!   binds first (port 0 in tests) and runs until a shutdown token is
//!   cancelled, draining in-flight requests.

pub mod body_deadline;
pub mod canonical;
pub mod client_ip;
pub mod conventions;
pub mod health;
pub mod json;
pub mod observe;
pub mod problem;
pub mod request_deadline;
pub mod request_id;
pub mod server;
pub mod settings;

pub use health::{Check, CheckFuture, Liveness, Operational, Readiness};
pub use problem::{FieldError, Problem};
pub use request_id::RequestId;
pub use server::{Routes, Server, app, serve};
pub use settings::HttpSettings;
