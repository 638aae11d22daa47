//! HTTP handlers of `/api/v1/orders`: parse and validate at the edge, call
//! `keel_commerce`, keep the cache coherent, render.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use keel_commerce::orders::domain::{Invalid, NewOrder, OrderStatus, RawNewOrder, Scope, Source};
use keel_commerce::orders::idempotency::{self, Fingerprint, Key, NextAction, StoredResponse};
use keel_commerce::orders::{self, ListQuery};
use keel_db::page::PageRequest;
use serde::Deserialize;
use uuid::Uuid;

use crate::identity::Caller;
use crate::orders::Orders;
use crate::orders::cache::CachedOrder;
use crate::orders::error::OrdersError;

const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
const JSON: &str = "application/json";

fn scope(caller: &Caller) -> Scope {
    if caller.is_admin {
        Scope::All
    } else {
        Scope::User(caller.user_id)
    }
}

/// Ids that are not UUIDs name no order: 404, like a missing one.
fn order_id(raw: &str) -> Result<Uuid, OrdersError> {
    raw.parse().map_err(|_| OrdersError::NotFound)
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, OrdersError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(OrdersError::invalid(
            IDEMPOTENCY_KEY,
            "must be 1 to 255 visible ASCII characters",
        )),
    }
}

/// `POST /orders`. With an `Idempotency-Key`, the key is claimed in the
/// order's own transaction (see `keel_commerce::orders::idempotency`): a retry replays
/// the stored response, a concurrent duplicate waits for the first and then
/// replays it, and another body under the key is refused.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", operation_id = "create_order",
    summary = "Creates an order owned by the caller.",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Retries with the same key (per user, 24 h) get the first response; another body under it → 422.")),
    request_body = keel_commerce::orders::domain::RawNewOrder,
    responses(
        (status = 201, description = "The order; `Location` names it", body = keel_commerce::orders::domain::Order,
            headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 409, description = "external_id already used", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 413, description = "Body too large", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid fields (named), or a reused Idempotency-Key", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The order store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn create(
    req: HttpRequest,
    caller: Caller,
    orders: web::Data<Orders>,
    body: web::Bytes,
) -> Result<HttpResponse, OrdersError> {
    let key = idempotency_key(&req)?;
    let raw: RawNewOrder = keel_http::json::parse(&body).map_err(OrdersError::Body)?;
    let new =
        NewOrder::parse(raw, Some(caller.user_id), Source::Api).map_err(OrdersError::Validation)?;

    let ttl = chrono::Duration::from_std(orders.idempotency_ttl)
        .map_err(|e| OrdersError::Unexpected(e.into()))?;
    let key = key.as_deref().map(|key| Key {
        user_id: caller.user_id,
        key,
        fingerprint: Fingerprint::of("POST", req.path(), &body),
        expires_at: Utc::now() + ttl,
    });
    let location = |id: Uuid| format!("{}/{}", req.path().trim_end_matches('/'), id);
    let (cached, location) = match &key {
        // Without a key the order goes through the group commit: its one
        // statement (order, lines, event) commits, alone or with others
        // that arrived meanwhile, before the answer.
        None => {
            let order = orders.commits.create(new).await?;
            let location = location(order.id);
            (cached_order(order)?, location)
        }
        // With a key, the claim and the stored response commit with it.
        Some(key) => {
            let mut client = orders.pool.get().await.map_err(keel_db::Error::from)?;
            let tx = match idempotency::begin(&mut client, Some(*key)).await? {
                NextAction::Proceed(tx) => tx,
                NextAction::Replay(stored) => return Ok(replay(&stored)),
                NextAction::Conflict => return Err(OrdersError::IdempotencyKeyReused),
            };
            let order = orders::create(&tx, &new).await?;
            let location = location(order.id);
            let cached = cached_order(order)?;
            let stored = StoredResponse {
                status: StatusCode::CREATED.as_u16(),
                body: cached.body.to_vec(),
                location: Some(location.clone()),
            };
            idempotency::complete(&tx, key.user_id, key.key, &stored).await?;
            tx.commit().await.map_err(keel_db::Error::from)?;
            (cached, location)
        }
    };
    // The event's outbox row carries no NOTIFY (it would serialise
    // concurrent commits): raise this process's relay now it is committed.
    orders.waker.wake();
    orders.cache.written(&cached.order).await;

    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, location))
        .insert_header((header::ETAG, cached.etag.clone()))
        .content_type(JSON)
        .body(cached.body.clone()))
}

fn cached_order(order: keel_commerce::orders::domain::Order) -> Result<CachedOrder, OrdersError> {
    CachedOrder::new(order).map_err(|e| OrdersError::Unexpected(e.into()))
}

/// The stored first response, marked as a replay (as Stripe does).
fn replay(stored: &StoredResponse) -> HttpResponse {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response
        .content_type(JSON)
        .insert_header(("Idempotent-Replayed", "true"));
    if let Some(location) = &stored.location {
        response.insert_header((header::LOCATION, location.as_str()));
    }
    response.body(stored.body.clone())
}

/// `GET /orders/{id}`: read through the cache, then authorize against the
/// order's owner (on hits too), then honour `If-None-Match`.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "get_order",
    summary = "One order. Someone else's is reported as missing.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("If-None-Match" = Option<String>, Header)),
    responses(
        (status = 200, description = "The order", body = keel_commerce::orders::domain::Order, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The order store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn get(
    req: HttpRequest,
    caller: Caller,
    orders: web::Data<Orders>,
    id: web::Path<String>,
) -> Result<HttpResponse, OrdersError> {
    let id = order_id(&id)?;
    let cached = orders
        .cache
        .get(&orders.pool, id)
        .await?
        .filter(|c| c.order.visible_to(scope(&caller)))
        .ok_or(OrdersError::NotFound)?;
    Ok(respond_with(&req, &cached))
}

fn respond_with(req: &HttpRequest, cached: &Arc<CachedOrder>) -> HttpResponse {
    let etag = HeaderValue::from_str(&cached.etag).ok();
    if let Some(etag) = &etag
        && none_match(req, &cached.etag)
    {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag.clone()))
            .finish();
    }
    let mut response = HttpResponse::Ok();
    if let Some(etag) = etag {
        response.insert_header((header::ETAG, etag));
    }
    response
        // Per user, and always revalidated: the ETag makes that cheap.
        .insert_header((header::CACHE_CONTROL, "private, no-cache"))
        .content_type(JSON)
        .body(cached.body.clone())
}

/// True when `If-None-Match` lists `etag` (weak comparison, as RFC 9110
/// prescribes for this header) or is `*`.
fn none_match(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

/// Query parameters of `GET /orders`, as strings: each is validated below
/// so a bad one is reported by name.
#[derive(Debug, Default, Deserialize)]
struct RawListParams {
    status: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

fn parse_list_params(query: &str) -> Result<ListQuery, OrdersError> {
    let raw: RawListParams = serde_urlencoded_query(query)?;
    let mut errors = Vec::new();
    let mut report = |field: &str, message: String| errors.push(Invalid::new(field, message));
    let status = raw
        .status
        .as_deref()
        .and_then(|s| OrderStatus::parse(s).map_err(|m| report("status", m)).ok());
    let time = |field: &str, value: Option<&str>, report: &mut dyn FnMut(&str, String)| {
        value.and_then(|v| match DateTime::parse_from_rfc3339(v) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(_) => {
                report(field, "must be an RFC 3339 timestamp".to_owned());
                None
            }
        })
    };
    let created_after = time("created_after", raw.created_after.as_deref(), &mut report);
    let created_before = time("created_before", raw.created_before.as_deref(), &mut report);
    let page = PageRequest::parse(raw.limit.as_deref(), raw.cursor.as_deref(), |field, m| {
        report(field, m)
    });
    if !errors.is_empty() {
        return Err(OrdersError::Validation(errors));
    }
    Ok(ListQuery {
        status,
        created_after,
        created_before,
        page,
    })
}

fn serde_urlencoded_query(query: &str) -> Result<RawListParams, OrdersError> {
    web::Query::<RawListParams>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|e| OrdersError::invalid("query", e.to_string()))
}

/// `GET /orders`: the caller's orders (an admin's: everyone's), newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", operation_id = "list_orders",
    summary = "The caller's orders (an admin's: everyone's), newest first.",
    security(("bearer" = [])),
    params(
        ("status" = Option<keel_commerce::orders::domain::OrderStatus>, Query),
        ("created_after" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Inclusive, RFC 3339."),
        ("created_before" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Exclusive, RFC 3339."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of orders", body = crate::openapi::OrderPage),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The order store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn list(
    req: HttpRequest,
    caller: Caller,
    orders: web::Data<Orders>,
) -> Result<HttpResponse, OrdersError> {
    let query = parse_list_params(req.query_string())?;
    let client = orders.pool.get().await.map_err(keel_db::Error::from)?;
    let page = orders::list(&client, scope(&caller), &query).await?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StatusChange {
    #[schema(value_type = OrderStatus)]
    status: String,
}

/// `PATCH /orders/{id}` `{status}`: a state-machine transition.
///
/// - Someone else's order (or none): 404, whatever the status asked for,
///   so the answer never tells a customer that an id exists.
/// - A customer may only cancel their own pending order. Any other status
///   (`paid` and `fulfilled` come from the payment and fulfilment webhooks
///   or an admin) is 403 `forbidden`, whatever the order's state; so is
///   cancelling a paid order, which an admin may do (a refund follows).
/// - What nobody may do (cancelling a fulfilled or cancelled order,
///   `pending → fulfilled`) is 409 `illegal-transition`, for admins and
///   customers alike: a 403 would suggest that someone else could.
/// - An admin may make any legal transition.
///
/// Only a committed change is written through to the cache; a refusal
/// rolls back and leaves every cached copy as it is.
#[utoipa::path(patch, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "update_order",
    summary = "Moves an order along `pending → paid → fulfilled`, or to `cancelled`.",
    description = "Customers may only cancel their own pending order; `paid` and
`fulfilled` come from the payment and fulfilment webhooks or an admin.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The changed order", body = keel_commerce::orders::domain::Order, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "A status a customer may not set: anything but `cancelled`, or cancelling a paid order", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 409, description = "Illegal transition, whoever asks", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 413, description = "Body too large", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Unknown status", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The order store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn update(
    req: HttpRequest,
    caller: Caller,
    orders: web::Data<Orders>,
    id: web::Path<String>,
    body: keel_http::json::Json<StatusChange>,
) -> Result<HttpResponse, OrdersError> {
    let id = order_id(&id)?;
    let next = OrderStatus::parse(&body.status).map_err(|m| OrdersError::invalid("status", m))?;
    let mut client = orders.pool.get().await.map_err(keel_db::Error::from)?;
    let order = orders::update_status(&mut client, id, scope(&caller), next).await?;
    drop(client);
    match orders.cache.written(&order).await {
        Some(cached) => Ok(respond_with(&req, &cached)),
        None => Ok(HttpResponse::Ok().json(order)),
    }
}

/// `DELETE /orders/{id}`: cancels (the order stays, `cancelled`) → 204;
/// again → 204. The rules of [`update`] apply: a customer cancels only
/// their own pending order (a paid one → 403, a fulfilled one → 409).
#[utoipa::path(delete, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "cancel_order",
    summary = "Cancels an order (it stays, with status `cancelled`); repeating is harmless.",
    description = "Customers may only cancel their own pending order.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "A customer cancelling a paid order (an admin may)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 409, description = "Already fulfilled", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The order store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn cancel(
    caller: Caller,
    orders: web::Data<Orders>,
    id: web::Path<String>,
) -> Result<HttpResponse, OrdersError> {
    let id = order_id(&id)?;
    let mut client = orders.pool.get().await.map_err(keel_db::Error::from)?;
    let order = orders::cancel(&mut client, id, scope(&caller)).await?;
    drop(client);
    orders.cache.written(&order).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_list_parameters_are_reported_by_name() {
        let Err(OrdersError::Validation(errors)) =
            parse_list_params("status=lost&limit=501&created_after=yesterday&cursor=zz")
        else {
            panic!("expected a validation error");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["status", "created_after", "limit", "cursor"]);
    }

    #[test]
    fn list_parameters_default_to_fifty_newest() {
        let query = parse_list_params("").unwrap();
        assert_eq!(query.page.limit, keel_db::page::DEFAULT_LIMIT);
        assert!(query.status.is_none() && query.page.cursor.is_none());
    }
}
