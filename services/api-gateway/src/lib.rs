//! The API gateway: Keel's public HTTP edge.
//!
//! # Layout
//! - [`authn`]: bearer tokens verified against the auth service's JWK Set
//!   (cached, and published at `/.well-known/jwks.json` from that copy),
//!   session revocation (on by default), trusted-proxy identities.
//! - [`edge`]: the `/api/v1` scope and its middleware: CORS, authentication,
//!   GCRA rate limiting in Redis.
//! - [`proxy`]: `/api/v1/auth/*` and `/api/v1/analytics/*` streamed to
//!   their services.
//! - [`openapi`]: the OpenAPI 3.1 document served at `/api/v1/openapi.json`
//!   (committed under `proto/openapi/`).
//! - [`orders`]: `/api/v1/orders` — create, list, get (read-through cache
//!   with cross-instance invalidation, ETags), status changes, cancel;
//!   `Idempotency-Key` on create. The domain and queries live in `keel_commerce`.
//! - [`webhooks`]: `POST /webhooks/{source}` — inbound webhooks verified
//!   over the raw body and captured with their job in one transaction; the
//!   schemes and storage live in `keel_webhooks`.
//! - [`exports`]: `/api/v1/exports` — request an export (queued with its
//!   job), read it with a freshly signed `download_url`, list, download the
//!   file streamed from object storage; the domain lives in
//!   `keel_commerce::exports`, the worker builds the files.
//! - [`events`]: `GET /api/v1/events` — the caller's export outcomes as
//!   Server-Sent Events, fed by this instance's own queue on the events
//!   exchange, resumable with `Last-Event-ID`.
//! - [`admin`]: `/api/v1/admin/*` (role `admin`) — webhook events (list,
//!   show, replay), dead letters (list, show, requeue), queue figures from
//!   the RabbitMQ management API.
//! - [`identity`]: [`identity::Caller`], the authenticated caller handlers
//!   extract (set by the authentication middleware).
//! - [`settings`]: configuration (defaults in `config/defaults.toml`).
//! - [`startup`]: [`startup::Application`] wires pools, the broker, the
//!   outbox relay and the HTTP server; [`startup::build_app`] is the one app
//!   factory used by the server and the tests.
//!
//! `main.rs` only parses the command line and calls into here, so tests
//! start the real application in-process on port 0.

pub mod admin;
pub mod authn;
pub mod edge;
pub mod events;
pub mod exports;
pub mod identity;
pub mod openapi;
pub mod orders;
pub mod proxy;
pub mod settings;
pub mod startup;
pub mod webhooks;

/// This service's name in logs, traces, metrics and AMQP connection names.
pub const SERVICE: &str = "api-gateway";
/// The PostgreSQL schema the gateway owns (orders, exports, webhooks, outbox).
pub const SCHEMA: &str = "store";
