//! `/api/v1/admin/webhook-events`: list, show (headers and raw body),
//! replay. The SQL lives in `keel_webhooks::admin`.

use actix_web::{HttpRequest, HttpResponse, web};
use keel_webhooks::admin::{self, EventSummary, ListQuery, STATUSES};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::body::{Body, render};
use crate::admin::error::AdminError;
use crate::admin::params::{self, PageBody};
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

/// `GET /admin/webhook-events?status=&source=&limit=&cursor=`: newest first.
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
    let (cursor, limit) = params::paging(&params, &mut errors);
    if !errors.is_empty() {
        return Err(AdminError::Validation(errors));
    }
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let page = admin::list(
        &client,
        &ListQuery {
            status,
            source,
            cursor,
            limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(PageBody::new(page.items, page.next_cursor)))
}

/// One event as captured.
#[derive(Debug, Serialize)]
struct EventBody {
    #[serde(flatten)]
    summary: EventSummary,
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

#[derive(Debug, Serialize)]
struct ReplayAccepted {
    id: Uuid,
    status: &'static str,
    /// The `webhook.process` message enqueued for it.
    job_id: Uuid,
}

/// `POST /admin/webhook-events/{id}/replay` → 202: back to `received` and a
/// new job, committed together.
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
