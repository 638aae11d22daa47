//! `/api/v1/admin/webhook-events`: list, show (headers and raw body),
//! replay. The SQL lives in `keel_webhooks::admin`.

use actix_web::{HttpRequest, HttpResponse, web};
use keel_webhooks::admin::{self, EventSummary, ListQuery, STATUSES};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::body::{Body, render};
use crate::admin::error::AdminError;
use crate::admin::params;
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

/// `GET /admin/webhook-events?status=&source=&limit=&cursor=`: newest first.
#[utoipa::path(get, path = "/api/v1/admin/webhook-events", tag = "admin", operation_id = "list_webhook_events",
    summary = "Captured webhook deliveries, newest first, with attempts and last error.",
    security(("bearer" = [])),
    params(
        ("status" = Option<keel_webhooks::admin::StatusSchema>, Query),
        ("source" = Option<String>, Query, description = "A configured source, e.g. `shopify`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of events", body = crate::openapi::WebhookEventPage),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn list(
    req: HttpRequest,
    caller: Caller,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let params = params::parse(req.query_string())?;
    let mut errors = Vec::new();
    let status = params::one_of(&params, "status", &STATUSES, &mut errors);
    let source = params::text(&params, "source", &mut errors);
    let page = params::paging(&params, &mut errors);
    if !errors.is_empty() {
        return Err(AdminError::Validation(errors));
    }
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let page = admin::list(
        &client,
        &ListQuery {
            status,
            source,
            page,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

/// A captured delivery with its stored headers (signatures `[redacted]`,
/// `Authorization` and cookies never stored) and its raw body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookEvent)]
pub struct EventBody {
    #[serde(flatten)]
    summary: EventSummary,
    /// Header name (lower case) → value.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    headers: serde_json::Value,
    #[serde(flatten)]
    body: Body,
}

/// Ids that are not UUIDs name no event: 404, like a missing one.
fn event_id(raw: &str) -> Result<Uuid, AdminError> {
    raw.parse().map_err(|_| AdminError::EventNotFound)
}

/// `GET /admin/webhook-events/{id}`: the event with its stored headers
/// (signatures were redacted at capture) and its body.
#[utoipa::path(get, path = "/api/v1/admin/webhook-events/{id}", tag = "admin", operation_id = "get_webhook_event",
    summary = "One captured delivery: headers (signatures redacted) and the raw body.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The event", body = EventBody),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such event", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn get(
    caller: Caller,
    admin: web::Data<Admin>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let id = event_id(&id)?;
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let event = admin::get(&client, id)
        .await?
        .ok_or(AdminError::EventNotFound)?;
    Ok(HttpResponse::Ok().json(EventBody {
        summary: event.summary,
        headers: event.headers,
        body: render(&event.body),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayAccepted {
    id: Uuid,
    /// Always `received`: the event waits for its new job.
    #[schema(value_type = keel_webhooks::admin::StatusSchema)]
    status: &'static str,
    /// The `webhook.process` message enqueued for it.
    job_id: Uuid,
}

/// `POST /admin/webhook-events/{id}/replay` → 202: back to `received` and a
/// new job, committed together.
#[utoipa::path(post, path = "/api/v1/admin/webhook-events/{id}/replay", tag = "admin", operation_id = "replay_webhook_event",
    summary = "Processes an event again: back to `received`, with a new job, committed together.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, description = "Queued for processing", body = ReplayAccepted),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such event", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
#[tracing::instrument(skip_all, fields(event_id = %id.as_str()))]
pub async fn replay(
    caller: Caller,
    admin: web::Data<Admin>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let id = event_id(&id)?;
    let mut client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let replayed = admin::replay(&tx, id)
        .await?
        .ok_or(AdminError::EventNotFound)?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    tracing::info!(admin = %caller.user_id, job_id = %replayed.job_id, "webhook event replayed");
    Ok(HttpResponse::Accepted().json(ReplayAccepted {
        id: replayed.event_id,
        status: "received",
        job_id: replayed.job_id,
    }))
}
