//! The exports area: `/api/v1/exports`.
//!
//! # Layout
//! - [`handlers`]: create (202 + `Location`, 422 naming the field, 429
//!   past the active limit), get (with a freshly signed `download_url`),
//!   list, download (streamed with `Content-Length`; signed link or Bearer).
//! - [`signing`]: HMAC-SHA256 download links.
//! - [`error`]: [`error::ExportsError`], the area's answers as problems.
//! - [`settings`]: the `[exports]` section.
//!
//! The domain and queries live in `keel_commerce::exports`; the worker builds
//! the files. Design: `docs/adr/0012-exports.md`.

pub mod error;
pub mod handlers;
pub mod settings;
pub mod signing;

use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use keel_config::Environment;
use keel_db::Pool;
use keel_files::Storage;
use keel_http::Problem;

use crate::exports::settings::{DEVELOPMENT_DOWNLOAD_SECRET, ExportsSettings};
use crate::exports::signing::LinkSigner;

/// What the handlers share (cheap to clone).
#[derive(Debug, Clone)]
pub struct Exports {
    pool: Pool,
    storage: Storage,
    signer: Arc<LinkSigner>,
    max_active: u32,
    retry_after: Duration,
    url_ttl: Duration,
}

impl Exports {
    /// Opens the storage and keys the link signer.
    pub fn build(
        pool: Pool,
        settings: &ExportsSettings,
        environment: Environment,
    ) -> Result<Self, String> {
        if settings.uses_development_secret() {
            // Printed on purpose, like the webhook secrets: anyone can sign
            // links with it. Production never gets here (validation).
            tracing::warn!(
                secret = DEVELOPMENT_DOWNLOAD_SECRET,
                env = "KEEL_EXPORTS__DOWNLOAD_SECRET",
                ?environment,
                "export download links are signed with the development secret; set the env variable to replace it"
            );
        }
        let storage =
            Storage::new(&settings.storage).map_err(|e| format!("exports.storage: {e}"))?;
        let signer = LinkSigner::new(&settings.download_secret)
            .map_err(|e| format!("exports.download_secret: {e}"))?;
        Ok(Self {
            pool,
            storage,
            signer: Arc::new(signer),
            max_active: settings.max_active_per_user,
            retry_after: settings.retry_after,
            url_ttl: settings.download_url_ttl,
        })
    }
}

/// Mounts `/exports`, `/exports/{id}` and `/exports/{id}/download` inside
/// the caller's `/api/v1` scope. The download route also serves requests
/// without a token (signed links): the authentication middleware lets
/// anonymous requests through, and the handler demands a caller or a valid
/// signature.
pub fn configure(cfg: &mut web::ServiceConfig, exports: Exports) {
    cfg.app_data(web::Data::new(exports))
        .service(
            web::resource("/exports")
                .route(web::post().to(handlers::create))
                .route(web::get().to(handlers::list))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/exports/{id}")
                .route(web::get().to(handlers::get))
                .default_service(web::to(method_not_allowed)),
        )
        .service(
            web::resource("/exports/{id}/download")
                .route(web::get().to(handlers::download))
                .default_service(web::to(method_not_allowed)),
        );
}

async fn method_not_allowed() -> actix_web::HttpResponse {
    Problem::method_not_allowed().to_response()
}
