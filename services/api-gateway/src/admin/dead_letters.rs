//! `/api/v1/admin/dead-letters`: list, show, requeue. The archive and its
//! queries live in `keel_dead_letters`; the worker fills it.

use actix_web::{HttpRequest, HttpResponse, web};
use keel_dead_letters::queries::{self, ListQuery};
use keel_dead_letters::{DeadLetter, Status, requeue};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::body::{Body, render};
use crate::admin::error::AdminError;
use crate::admin::params;
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

const STATUSES: [&str; 2] = ["dead", "requeued"];

/// `GET /admin/dead-letters?status=&message_type=&limit=&cursor=`: newest
/// deaths first.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters", tag = "admin", operation_id = "list_dead_letters",
    summary = "Messages that exhausted their retries or failed for good, newest first.",
    security(("bearer" = [])),
    params(
        ("status" = Option<keel_dead_letters::Status>, Query),
        ("message_type" = Option<String>, Query, description = "e.g. `webhook.process`."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of dead letters", body = crate::openapi::DeadLetterPage),
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
    let status = params::one_of(&params, "status", &STATUSES, &mut errors).and_then(Status::parse);
    let message_type = params::text(&params, "message_type", &mut errors);
    let page = params::paging(&params, &mut errors);
    if !errors.is_empty() {
        return Err(AdminError::Validation(errors));
    }
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let page = queries::list(
        &client,
        &ListQuery {
            status,
            message_type,
            page,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(page))
}

fn letter_id(raw: &str) -> Result<Uuid, AdminError> {
    raw.parse().map_err(|_| AdminError::DeadLetterNotFound)
}

/// A dead letter with its AMQP headers (as JSON) and body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterBody {
    #[serde(flatten)]
    letter: DeadLetter,
    /// Every header of the dead message (`x-keel-*`, `x-death`, trace context).
    #[schema(value_type = Object)]
    headers: serde_json::Value,
    #[serde(flatten)]
    body: Body,
}

/// `GET /admin/dead-letters/{id}`: with its AMQP headers and body.
#[utoipa::path(get, path = "/api/v1/admin/dead-letters/{id}", tag = "admin", operation_id = "get_dead_letter",
    summary = "One dead letter with its headers and body.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterBody),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such dead letter", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn get(
    caller: Caller,
    admin: web::Data<Admin>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let id = letter_id(&id)?;
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let stored = queries::get(&client, id)
        .await?
        .ok_or(AdminError::DeadLetterNotFound)?;
    Ok(HttpResponse::Ok().json(DeadLetterBody {
        letter: stored.letter,
        headers: stored.headers,
        body: render(&stored.body),
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequeueAccepted {
    id: Uuid,
    /// Always `requeued`.
    status: Status,
    /// The id of the new message carrying the job.
    message_id: Uuid,
}

/// `POST /admin/dead-letters/{id}/requeue` → 202: marked `requeued` and its
/// job enqueued again (a new envelope) in one transaction.
#[utoipa::path(post, path = "/api/v1/admin/dead-letters/{id}/requeue", tag = "admin", operation_id = "requeue_dead_letter",
    summary = "Sends a dead job back to its queue (as a new message), once.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 202, description = "Requeued", body = RequeueAccepted),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such dead letter", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 409, description = "Already requeued, or not a job", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
#[tracing::instrument(skip_all, fields(dead_letter = %id.as_str()))]
pub async fn requeue(
    caller: Caller,
    admin: web::Data<Admin>,
    id: web::Path<String>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let id = letter_id(&id)?;
    let mut client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let requeued = requeue::requeue(&tx, id, Some(caller.user_id)).await?;
    tx.commit().await.map_err(keel_db::Error::from)?;
    tracing::info!(admin = %caller.user_id, message_id = %requeued.message_id, "dead letter requeued");
    Ok(HttpResponse::Accepted().json(RequeueAccepted {
        id: requeued.id,
        status: Status::Requeued,
        message_id: requeued.message_id,
    }))
}
