//! `/api/v1/admin/dead-letters`: list, show, requeue. The archive and its
//! queries live in `keel_dead_letters`; the worker fills it.

use actix_web::{HttpRequest, HttpResponse, web};
use keel_dead_letters::queries::{self, ListQuery};
use keel_dead_letters::{DeadLetter, Status, requeue};
use serde::Serialize;
use uuid::Uuid;

use crate::admin::body::{Body, render};
use crate::admin::error::AdminError;
use crate::admin::params::{self, PageBody};
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

const STATUSES: [&str; 2] = ["dead", "requeued"];

/// `GET /admin/dead-letters?status=&message_type=&limit=&cursor=`: newest
/// deaths first.
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
    let (cursor, limit) = params::paging(&params, &mut errors);
    if !errors.is_empty() {
        return Err(AdminError::Validation(errors));
    }
    let client = admin.pool.get().await.map_err(keel_db::Error::from)?;
    let page = queries::list(
        &client,
        &ListQuery {
            status,
            message_type,
            cursor,
            limit,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(PageBody::new(page.items, page.next_cursor)))
}

fn letter_id(raw: &str) -> Result<Uuid, AdminError> {
    raw.parse().map_err(|_| AdminError::DeadLetterNotFound)
}

#[derive(Debug, Serialize)]
struct DeadLetterBody {
    #[serde(flatten)]
    letter: DeadLetter,
    headers: serde_json::Value,
    #[serde(flatten)]
    body: Body,
}

/// `GET /admin/dead-letters/{id}`: with its AMQP headers and body.
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

#[derive(Debug, Serialize)]
struct RequeueAccepted {
    id: Uuid,
    status: Status,
    /// The id of the new message carrying the job.
    message_id: Uuid,
}

/// `POST /admin/dead-letters/{id}/requeue` → 202: marked `requeued` and its
/// job enqueued again (a new envelope) in one transaction.
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
