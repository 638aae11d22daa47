//! `/api/v1/admin/outbox/*`: the parked rows of the gateway's outbox (the
//! `store` schema, which the worker's relays publish from as well), and
//! unparking them once their cause is fixed (ADR 0024).
//!
//! A row is parked after `outbox.max_rejections` refusals by the broker
//! (usually a queue or binding missing after a deployment). Parked rows
//! are meant to be few (the first one opens a ticket), so the listing is
//! one bounded page, oldest first, not a paged history; unparking returns
//! rows to the relay, which publishes them on its next pass. The work is
//! `keel_outbox::parked` / `keel_outbox::unpark`; auth's and analytics'
//! outboxes live in their own schemas, out of this pool's reach (the
//! runbook `docs/runbooks/rabbitmq-outage.md` says what to do there).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_db::page::PageRequest;
use keel_http::FieldError;
use keel_outbox::ParkedRow;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::admin::error::AdminError;
use crate::admin::params;
use crate::admin::{Admin, admin_only};
use crate::identity::Caller;

/// Most ids one unpark request may name (the listing's page bound).
pub const MAX_UNPARK_IDS: usize = keel_db::page::MAX_LIMIT as usize;

/// A parked outbox row: what it carries and why the broker refused it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ParkedOutboxRow)]
pub struct ParkedRowView {
    id: Uuid,
    /// Where it goes: `jobs` (the jobs exchange) or `events` (the events
    /// exchange).
    target: String,
    routing_key: String,
    /// The job kind or event type, e.g. `webhook.process`, `order.created`.
    message_type: String,
    created_at: DateTime<Utc>,
    parked_at: DateTime<Utc>,
    /// Publish attempts, broker outages included.
    attempts: i32,
    /// Refusals by the broker (unroutable, nacked) or by the relay (an
    /// unreadable row) since it was last unparked.
    rejections: i32,
    /// The last refusal's reason.
    last_error: Option<String>,
}

impl From<ParkedRow> for ParkedRowView {
    fn from(row: ParkedRow) -> Self {
        Self {
            id: row.id,
            target: row.target,
            routing_key: row.routing_key,
            message_type: row.message_type,
            created_at: row.created_at,
            parked_at: row.parked_at,
            attempts: row.attempts,
            rejections: row.rejections,
            last_error: row.last_error,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ParkedOutboxRows)]
pub struct ParkedRowsBody {
    /// The PostgreSQL schema whose outbox this is (`store`: the gateway's
    /// and the worker's).
    schema: &'static str,
    /// Oldest parked first, at most `limit`.
    items: Vec<ParkedRowView>,
    /// `true` when more rows are parked than listed: unpark these, or ask
    /// for a larger `limit` (up to 500).
    more: bool,
}

/// `GET /admin/outbox/parked?limit=`: parked rows, oldest first.
#[utoipa::path(get, path = "/api/v1/admin/outbox/parked", tag = "admin", operation_id = "list_parked_outbox_rows",
    summary = "Outbox rows the broker kept refusing, parked with their reason (oldest first; not paged: parked rows are few).",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
    ),
    responses(
        (status = 200, description = "The parked rows", body = ParkedRowsBody),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable or busy", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn parked(
    req: HttpRequest,
    caller: Caller,
    admin: web::Data<Admin>,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let params = params::parse(req.query_string())?;
    let mut errors = Vec::new();
    let limit = PageRequest::parse(
        params.get("limit").map(String::as_str),
        None,
        |name, message| {
            errors.push(FieldError::new(name, message));
        },
    )
    .limit;
    if params.contains_key("cursor") {
        // Saying so beats ignoring it: a client paging would loop forever
        // on the first page.
        errors.push(FieldError::new(
            "cursor",
            "parked rows are not paged: unpark the listed ones or raise limit (up to 500)",
        ));
    }
    if !errors.is_empty() {
        return Err(AdminError::Validation(errors));
    }
    // One more than asked for tells whether there are more.
    let mut rows = keel_outbox::parked(&admin.pool, i64::from(limit) + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(HttpResponse::Ok().json(ParkedRowsBody {
        schema: crate::SCHEMA,
        items: rows.into_iter().map(ParkedRowView::from).collect(),
        more,
    }))
}

/// Which parked rows to return to the relay: `ids`, or `all`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnparkRequest {
    /// The parked rows to unpark (1 to 500 ids from the listing). Ids of
    /// rows that are not parked (published, unparked already, unknown)
    /// are skipped.
    #[serde(default)]
    ids: Option<Vec<Uuid>>,
    /// `true`: every parked row. Give either `ids` or `all`, not both.
    #[serde(default)]
    all: Option<bool>,
}

/// Which rows one valid request names.
enum Selection {
    Ids(Vec<Uuid>),
    All,
}

impl UnparkRequest {
    fn selection(self) -> Result<Selection, AdminError> {
        match (self.ids, self.all) {
            (Some(_), Some(_)) => Err(AdminError::invalid(
                "all",
                "give either ids or all, not both",
            )),
            (None, Some(true)) => Ok(Selection::All),
            (None, Some(false)) => Err(AdminError::invalid(
                "all",
                "must be true (or name the rows in ids instead)",
            )),
            (None, None) => Err(AdminError::invalid(
                "ids",
                "name the rows to unpark, or send {\"all\": true}",
            )),
            (Some(ids), None) if ids.is_empty() || ids.len() > MAX_UNPARK_IDS => Err(
                AdminError::invalid("ids", format!("must hold 1 to {MAX_UNPARK_IDS} ids")),
            ),
            (Some(ids), None) => Ok(Selection::Ids(ids)),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UnparkAccepted {
    /// Rows returned to the relay; it publishes them on its next pass.
    unparked: u64,
}

/// `POST /admin/outbox/unpark` → 202 `{unparked}`: the rows' refusals start
/// again from zero and the relays are woken.
#[utoipa::path(post, path = "/api/v1/admin/outbox/unpark", tag = "admin", operation_id = "unpark_outbox_rows",
    summary = "Returns parked outbox rows to the relay (after fixing why the broker refused them); they are published on its next pass.",
    security(("bearer" = [])),
    request_body = UnparkRequest,
    responses(
        (status = 202, description = "Unparked; publishing follows", body = UnparkAccepted),
        (status = 400, description = "Malformed JSON", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Not an admin", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 413, description = "Body too large", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Neither or both of ids and all, or a bad id (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The database is unreachable or busy", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn unpark(
    caller: Caller,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    admin_only(&caller)?;
    let request: UnparkRequest = keel_http::json::parse(&body).map_err(AdminError::Body)?;
    let unparked = match request.selection()? {
        Selection::All => keel_outbox::unpark(&admin.pool, None).await?,
        Selection::Ids(ids) => keel_outbox::unpark(&admin.pool, Some(&ids)).await?,
    };
    tracing::info!(admin = %caller.user_id, unparked, "outbox rows unparked");
    Ok(HttpResponse::Accepted().json(UnparkAccepted { unparked }))
}
