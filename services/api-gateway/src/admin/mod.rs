//! The admin area: `/api/v1/admin/*` (role `admin`; the edge answers 401
//! without a token and 403 for other roles, and every handler checks again).
//!
//! # Layout
//! - [`webhook_events`]: list (status, source), show (headers, raw body),
//!   replay (202) — over `keel_webhooks::admin`.
//! - [`dead_letters`]: list (status, message type), show, requeue (202) —
//!   over `keel_dead_letters` (the worker archives `{ns}.dead` there).
//! - [`queues`]: the namespace's queues from the RabbitMQ management API
//!   ([`management`], configured by [`settings`]).
//! - [`outbox`]: parked outbox rows of the `store` schema listed and
//!   unparked — over `keel_outbox::parked` / `unpark` (ADR 0024).
//! - [`params`]: `limit` / `cursor` and filters, named when invalid.
//! - [`body`]: stored bodies as UTF-8 text or base64.
//! - [`error`]: [`error::AdminError`], the area's answers as problems.
//!
//! Design: `docs/adr/0017-dead-letter-archive.md`,
//! `docs/adr/0024-outbox-parking-and-unroutable-events.md`.

pub mod body;
pub mod dead_letters;
pub mod error;
pub mod management;
pub mod outbox;
pub mod params;
pub mod queues;
pub mod settings;
pub mod webhook_events;

use actix_web::web;
use keel_db::Pool;
use keel_http::Problem;
use keel_messaging::AmqpSettings;

use crate::admin::error::AdminError;
use crate::admin::management::Management;
use crate::admin::settings::AmqpManagementSettings;
use crate::identity::Caller;

/// What the handlers share (cheap to clone).
#[derive(Debug, Clone)]
pub struct Admin {
    pool: Pool,
    management: Management,
}

impl Admin {
    pub fn build(
        pool: Pool,
        management: &AmqpManagementSettings,
        amqp: &AmqpSettings,
    ) -> Result<Self, String> {
        Ok(Self {
            pool,
            management: Management::new(management, amqp)?,
        })
    }
}

/// 403 unless the caller is an admin.
fn admin_only(caller: &Caller) -> Result<(), AdminError> {
    caller
        .require_admin()
        .map_err(|problem| AdminError::Forbidden(Box::new(problem)))
}

/// Mounts the admin routes inside the caller's `/api/v1` scope; other
/// methods get a 405 problem.
pub fn configure(cfg: &mut web::ServiceConfig, admin: Admin) {
    cfg.app_data(web::Data::new(admin))
        .service(
            web::resource("/admin/webhook-events")
                .route(web::get().to(webhook_events::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/webhook-events/{id}")
                .route(web::get().to(webhook_events::get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/webhook-events/{id}/replay")
                .route(web::post().to(webhook_events::replay))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/dead-letters")
                .route(web::get().to(dead_letters::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/dead-letters/{id}")
                .route(web::get().to(dead_letters::get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/dead-letters/{id}/requeue")
                .route(web::post().to(dead_letters::requeue))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/queues")
                .route(web::get().to(queues::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/outbox/parked")
                .route(web::get().to(outbox::parked))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/admin/outbox/unpark")
                .route(web::post().to(outbox::unpark))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
