//! Schemas of bodies whose types the gateway cannot derive from: problems
//! (built by `keel_http`, which stays free of documentation dependencies)
//! and the page envelopes of `keel_db::page::Page`, named per item type.

use serde::Serialize;
use utoipa::ToSchema;

use keel_commerce::orders::domain::Order;
use keel_dead_letters::DeadLetter;
use keel_webhooks::admin::EventSummary;

use crate::exports::handlers::ExportView;

/// One offending input field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// An `application/problem+json` error body (RFC 9457).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A stable identifier of the error kind, e.g. `urn:keel:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[schema(nullable = false)]
    pub detail: Option<String>,
    pub request_id: Option<String>,
    #[schema(nullable = false)]
    pub errors: Option<Vec<FieldError>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub items: Vec<Order>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportPage {
    pub items: Vec<ExportView<'static>>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventPage {
    pub items: Vec<EventSummary>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub items: Vec<DeadLetter>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}
