//! The orders area's part of the OpenAPI document. The schemas mirror
//! `keel_store::domain` (which stays free of documentation dependencies);
//! the functions are never called: they carry the path annotations.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::openapi::schemas::Problem;

const PROBLEM: &str = "application/problem+json";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Paid,
    Fulfilled,
    Cancelled,
}

/// One line of an order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderItem {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub sku: String,
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i32,
    /// Minor units of `currency`.
    #[schema(minimum = 0, maximum = 1_000_000_000_i64)]
    pub unit_price_cents: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Order {
    pub id: uuid::Uuid,
    pub external_id: Option<String>,
    pub status: OrderStatus,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    pub total_cents: i64,
    pub items: Vec<OrderItem>,
    pub customer_email: Option<String>,
    pub user_id: Option<uuid::Uuid>,
    /// `api` or `webhook:<source>`.
    pub source: String,
    /// The shop's fulfilment status of a webhook order (`unfulfilled`,
    /// `pending`, `fulfilled`), recorded by the worker from the shop's API;
    /// `null` when unknown (API orders, or no shop API configured).
    #[schema(pattern = "^[a-z_]{1,32}$")]
    pub fulfillment_status: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewOrder {
    /// ISO 4217, e.g. `EUR`.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<OrderItem>,
    /// Your own reference; unique among your orders (409 when reused).
    #[schema(nullable = false, min_length = 1, max_length = 255)]
    pub external_id: Option<String>,
    #[schema(nullable = false, format = Email)]
    pub customer_email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusChange {
    pub status: OrderStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Creates an order owned by the caller.
#[utoipa::path(post, path = "/api/v1/orders", tag = "orders", operation_id = "create_order",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "Retries with the same key (per user, 24 h) get the first response; another body under it → 422.")),
    request_body = NewOrder,
    responses(
        (status = 201, description = "The order; `Location` names it", body = Order,
            headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 409, description = "external_id already used", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body too large", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields (named), or a reused Idempotency-Key", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The order store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn create_order() {}

/// The caller's orders (an admin's: everyone's), newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", operation_id = "list_orders",
    security(("bearer" = [])),
    params(
        ("status" = Option<OrderStatus>, Query),
        ("created_after" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Inclusive, RFC 3339."),
        ("created_before" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Exclusive, RFC 3339."),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of orders", body = OrderPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The order store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn list_orders() {}

/// One order. Someone else's is reported as missing.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "get_order",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("If-None-Match" = Option<String>, Header)),
    responses(
        (status = 200, description = "The order", body = Order, headers(("ETag" = String))),
        (status = 304, description = "Unchanged since the ETag given"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The order store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn get_order() {}

/// Moves an order along `pending → paid → fulfilled`, or to `cancelled`.
///
/// Customers may only cancel their own pending order; `paid` and
/// `fulfilled` come from the payment and fulfilment webhooks or an admin.
#[utoipa::path(patch, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "update_order",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The changed order", body = Order, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A status a customer may not set: anything but `cancelled`, or cancelling a paid order", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Illegal transition, whoever asks", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body too large", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Unknown status", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The order store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn update_order() {}

/// Cancels an order (it stays, with status `cancelled`); repeating is harmless.
///
/// Customers may only cancel their own pending order.
#[utoipa::path(delete, path = "/api/v1/orders/{id}", tag = "orders", operation_id = "cancel_order",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 204, description = "Cancelled"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "A customer cancelling a paid order (an admin may)", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such order (or not yours)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Already fulfilled", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The order store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn cancel_order() {}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(create_order, list_orders, get_order, update_order, cancel_order),
    tags((name = "orders", description = "Orders: create, list, read (cached, ETag), change status, cancel."))
)]
pub struct OrdersApi;
