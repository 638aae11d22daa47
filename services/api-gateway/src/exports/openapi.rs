//! The exports area's part of the OpenAPI document. The schemas mirror
//! `keel_store::exports` (which stays free of documentation dependencies);
//! the functions are never called: they carry the path annotations.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::openapi::schemas::Problem;
use crate::orders::openapi::OrderStatus;

const PROBLEM: &str = "application/problem+json";

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Expired,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportResource {
    Orders,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportCompression {
    None,
    Gzip,
}

/// Which orders the file holds; absent fields do not filter.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExportFilter {
    #[schema(nullable = false)]
    pub status: Option<OrderStatus>,
    /// Inclusive, RFC 3339 (years 0001-9999).
    #[schema(nullable = false)]
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Exclusive, RFC 3339; later than `created_after`.
    #[schema(nullable = false)]
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NewExport {
    pub resource: ExportResource,
    pub format: ExportFormat,
    /// Default `none`.
    #[schema(nullable = false)]
    pub compression: Option<ExportCompression>,
    #[schema(nullable = false)]
    pub filter: Option<ExportFilter>,
}

/// An export. A customer's holds their own orders, an admin's every order;
/// one row per order, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub id: uuid::Uuid,
    pub resource: ExportResource,
    pub format: ExportFormat,
    pub compression: ExportCompression,
    pub filter: ExportFilter,
    pub status: ExportStatus,
    /// Rows in the file so far (updated about once a second while running).
    pub rows_written: i64,
    /// Size of the file in bytes; 0 until it has succeeded.
    pub bytes: i64,
    /// Hex SHA-256 of the file (the compressed bytes when gzip).
    #[schema(nullable = false, pattern = "^[0-9a-f]{64}$")]
    pub sha256: Option<String>,
    /// Why it failed, written for people.
    #[schema(nullable = false)]
    pub error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    #[schema(nullable = false)]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the file is removed.
    #[schema(nullable = false)]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Once succeeded: a signed link to the file, valid for minutes, that
    /// needs no Bearer token. A new one comes with every GET.
    #[schema(nullable = false)]
    pub download_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportPage {
    pub items: Vec<Export>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// Requests an export; the worker builds the file in the background.
#[utoipa::path(post, path = "/api/v1/exports", tag = "exports", operation_id = "create_export",
    security(("bearer" = [])),
    request_body = NewExport,
    responses(
        (status = 202, description = "Queued; `Location` names the export", body = Export,
            headers(("Location" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body too large", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid fields (named)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many active exports, or rate limited (Retry-After)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The export store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn create_export() {}

/// The caller's exports, newest first.
#[utoipa::path(get, path = "/api/v1/exports", tag = "exports", operation_id = "list_exports",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of exports", body = ExportPage),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The export store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn list_exports() {}

/// One export, with a fresh `download_url` once it has succeeded. Someone
/// else's is reported as missing.
#[utoipa::path(get, path = "/api/v1/exports/{id}", tag = "exports", operation_id = "get_export",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The export", body = Export),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such export (or not yours)", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The export store is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn get_export() {}

/// The export's file, streamed with `Content-Length`. Authorized by the
/// owner's (or an admin's) Bearer token, or by the signed `expires` +
/// `signature` of a `download_url` without any token.
#[utoipa::path(get, path = "/api/v1/exports/{id}/download", tag = "exports", operation_id = "download_export",
    security((), ("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path),
        ("expires" = Option<i64>, Query, description = "From `download_url`: expiry, unix seconds."),
        ("signature" = Option<String>, Query, description = "From `download_url`: hex HMAC-SHA256."),
    ),
    responses(
        (status = 200, description = "The file (text/csv, application/x-ndjson or application/gzip)",
            content(
                (Vec<u8> = "text/csv; charset=utf-8"),
                (Vec<u8> = "application/x-ndjson"),
                (Vec<u8> = "application/gzip"),
            ),
            headers(("Content-Length" = u64), ("Content-Disposition" = String), ("X-Content-SHA256" = String))),
        (status = 401, description = "Neither a token nor a signed link", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Tampered or expired link", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such export (or not yours)", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Not succeeded (yet)", body = Problem, content_type = PROBLEM),
        (status = 410, description = "Expired: the file was removed", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
        (status = 503, description = "The export store or storage is unreachable", body = Problem, content_type = PROBLEM),
    ))]
pub fn download_export() {}

#[derive(Debug, OpenApi)]
#[openapi(
    paths(create_export, list_exports, get_export, download_export),
    tags((name = "exports", description = "Exports: files of your orders built in the background, downloaded by signed link."))
)]
pub struct ExportsApi;
