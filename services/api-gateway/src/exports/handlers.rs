//! HTTP handlers of `/api/v1/exports`: validate at the edge, call
//! `keel_commerce::exports`, mint signed links, stream files from storage.

use actix_web::http::header::{self, ContentDisposition, DispositionParam, DispositionType};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use futures::TryStreamExt;
use keel_commerce::exports::{self, Export, ExportStatus, NewExport, RawNewExport};
use keel_commerce::orders::domain::Scope;
use keel_db::page::{Page, PageRequest};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::exports::Exports;
use crate::exports::error::ExportsError;
use crate::identity::Caller;

fn scope(caller: &Caller) -> Scope {
    if caller.is_admin {
        Scope::All
    } else {
        Scope::User(caller.user_id)
    }
}

/// Ids that are not UUIDs name no export: 404, like a missing one.
fn export_id(raw: &str) -> Result<Uuid, ExportsError> {
    raw.parse().map_err(|_| ExportsError::NotFound)
}

/// An export as the API shows it: the stored export plus, once it has
/// succeeded, a freshly signed `download_url`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Export)]
pub struct ExportView<'a> {
    #[serde(flatten)]
    export: &'a Export,
    /// Once succeeded: a signed link to the file, valid for minutes, that
    /// needs no Bearer token. A new one comes with every GET.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    download_url: Option<String>,
}

impl Exports {
    /// What `GET /exports/{id}` answers with; also the `data` of the
    /// export's Server-Sent Event (`crate::events`).
    pub fn view<'a>(&self, export: &'a Export) -> ExportView<'a> {
        ExportView {
            export,
            download_url: self.download_url(export),
        }
    }

    /// A link valid for `download_url_ttl`, never past the export's expiry;
    /// none unless the file can be downloaded now.
    fn download_url(&self, export: &Export) -> Option<String> {
        if export.status != ExportStatus::Succeeded {
            return None;
        }
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.url_ttl).ok()?;
        let until = export.expires_at.map_or(now + ttl, |e| e.min(now + ttl));
        let expires = until.timestamp();
        if expires <= now.timestamp() {
            return None;
        }
        let signature = self.signer.sign(export.id, expires);
        Some(format!(
            "/api/v1/exports/{}/download?expires={expires}&signature={signature}",
            export.id
        ))
    }
}

/// `POST /exports`: 202 with the queued export and its `Location`.
#[utoipa::path(post, path = "/api/v1/exports", tag = "exports", operation_id = "create_export",
    summary = "Requests an export; the worker builds the file in the background.",
    security(("bearer" = [])),
    request_body = keel_commerce::exports::RawNewExport,
    responses(
        (status = 202, description = "Queued; `Location` names the export", body = ExportView<'static>,
            headers(("Location" = String))),
        (status = 400, description = "Malformed JSON", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 413, description = "Body too large", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid fields (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Too many active exports, or rate limited (Retry-After)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The export store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn create(
    req: HttpRequest,
    caller: Caller,
    area: web::Data<Exports>,
    body: web::Bytes,
) -> Result<HttpResponse, ExportsError> {
    let raw: RawNewExport = keel_http::json::parse(&body).map_err(ExportsError::Body)?;
    // Admins export the whole store, as they list it.
    let new =
        NewExport::parse(raw, caller.user_id, caller.is_admin).map_err(ExportsError::Validation)?;
    let mut client = area.pool.get().await.map_err(keel_db::Error::from)?;
    let export = match exports::create(&mut client, &new, area.max_active).await {
        Ok(export) => export,
        Err(exports::Error::TooManyActive { limit }) => {
            return Err(ExportsError::TooManyActive {
                limit,
                retry_after: area.retry_after,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let location = format!("{}/{}", req.path().trim_end_matches('/'), export.id);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(area.view(&export)))
}

/// `GET /exports/{id}`: the export; a new `download_url` on every call.
#[utoipa::path(get, path = "/api/v1/exports/{id}", tag = "exports", operation_id = "get_export",
    summary = "One export, with a fresh `download_url` once it has succeeded. Someone
else's is reported as missing.",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses(
        (status = 200, description = "The export", body = ExportView<'static>),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such export (or not yours)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The export store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn get(
    caller: Caller,
    area: web::Data<Exports>,
    id: web::Path<String>,
) -> Result<HttpResponse, ExportsError> {
    let id = export_id(&id)?;
    let client = area.pool.get().await.map_err(keel_db::Error::from)?;
    let export = exports::get(&client, id, scope(&caller)).await?;
    Ok(HttpResponse::Ok()
        // The body holds a bearer link: keep it out of shared caches.
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .json(area.view(&export)))
}

#[derive(Debug, Default, Deserialize)]
struct RawListParams {
    cursor: Option<String>,
    limit: Option<String>,
}

/// `GET /exports`: the caller's own exports, newest first.
#[utoipa::path(get, path = "/api/v1/exports", tag = "exports", operation_id = "list_exports",
    summary = "The caller's exports, newest first.",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 500, description = "Default 50."),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page."),
    ),
    responses(
        (status = 200, description = "A page of exports", body = crate::openapi::ExportPage),
        (status = 401, description = "Not authenticated", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 422, description = "Invalid parameters (named)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The export store is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn list(
    req: HttpRequest,
    caller: Caller,
    area: web::Data<Exports>,
) -> Result<HttpResponse, ExportsError> {
    let raw = web::Query::<RawListParams>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ExportsError::invalid("query", e.to_string()))?;
    let mut errors = Vec::new();
    let page = PageRequest::parse(raw.limit.as_deref(), raw.cursor.as_deref(), |name, m| {
        errors.push(keel_commerce::orders::domain::Invalid::new(name, m))
    });
    if !errors.is_empty() {
        return Err(ExportsError::Validation(errors));
    }
    let client = area.pool.get().await.map_err(keel_db::Error::from)?;
    let page = exports::list(&client, caller.user_id, page).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .json(Page {
            items: page.items.iter().map(|e| area.view(e)).collect(),
            next_cursor: page.next_cursor,
        }))
}

/// The query of a signed link.
#[derive(Debug, Default, Deserialize)]
struct LinkParams {
    expires: Option<String>,
    signature: Option<String>,
}

/// `GET /exports/{id}/download`: the file, streamed. Either a signed link
/// (no Bearer needed: a browser follows it) or the owner's / an admin's
/// token authorizes it.
#[utoipa::path(get, path = "/api/v1/exports/{id}/download", tag = "exports", operation_id = "download_export",
    summary = "The export's file, streamed with `Content-Length`. Authorized by the
owner's (or an admin's) Bearer token, or by the signed `expires` +
`signature` of a `download_url` without any token.",
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
        (status = 401, description = "Neither a token nor a signed link", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 403, description = "Tampered or expired link", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 404, description = "No such export (or not yours)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 409, description = "Not succeeded (yet)", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 410, description = "Expired: the file was removed", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 429, description = "Rate limited", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
        (status = 503, description = "The export store or storage is unreachable", body = crate::openapi::Problem, content_type = crate::openapi::PROBLEM),
    ))]
pub async fn download(
    req: HttpRequest,
    caller: Option<Caller>,
    area: web::Data<Exports>,
    id: web::Path<String>,
) -> Result<HttpResponse, ExportsError> {
    let id = export_id(&id)?;
    let link = web::Query::<LinkParams>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let scope = match (&link.expires, &link.signature) {
        (None, None) => scope(caller.as_ref().ok_or(ExportsError::Unauthenticated)?),
        (Some(expires), Some(signature)) => {
            let expires: i64 = expires
                .parse()
                .map_err(|_| ExportsError::Link(crate::exports::signing::LinkRefused::Invalid))?;
            area.signer
                .verify(id, expires, signature, Utc::now().timestamp())?;
            // The signature names the export: whoever holds the link may
            // fetch that file and nothing else.
            Scope::All
        }
        _ => return Err(crate::exports::signing::LinkRefused::Invalid.into()),
    };
    let client = area.pool.get().await.map_err(keel_db::Error::from)?;
    let export = exports::get(&client, id, scope).await?;
    drop(client);
    match export.status {
        ExportStatus::Succeeded => {}
        ExportStatus::Expired => return Err(ExportsError::Expired),
        other => return Err(ExportsError::NotReady(other)),
    }
    if export.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(ExportsError::Expired);
    }
    let file = area.storage.open(&export.object_key).await?;
    let disposition = ContentDisposition {
        disposition: DispositionType::Attachment,
        parameters: vec![DispositionParam::Filename(export.file_name())],
    };
    let stream = file.stream.inspect_err(move |e| {
        // Headers are gone already: the client sees a short body.
        tracing::warn!(export_id = %id, error = %e, "export download broke off");
    });
    Ok(HttpResponse::Ok()
        .content_type(export.content_type())
        .insert_header(disposition)
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .insert_header((
            "X-Content-SHA256",
            export.sha256.clone().unwrap_or_default(),
        ))
        // The size is known: Content-Length instead of chunked encoding.
        .no_chunking(file.size)
        .streaming(stream))
}
