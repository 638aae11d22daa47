//! The OpenAPI 3.1 document of the public API, generated from the code.
//!
//! The real handlers carry `#[utoipa::path]` annotations and the real types
//! derive `utoipa::ToSchema` (the domain crates behind their `openapi`
//! feature), so there is one copy of each type. The routes the gateway only
//! proxies (auth, analytics, the JWK Set) are described in [`proxied`],
//! where their contract lives from the gateway's point of view. The document
//! is served at `/api/v1/openapi.json` and committed as
//! `proto/openapi/openapi.json`; a test fails when the two drift
//! (`UPDATE_SNAPSHOTS=1` rewrites the file).

pub mod proxied;
pub mod schemas;

pub use schemas::{DeadLetterPage, ExportPage, OrderPage, Problem, WebhookEventPage};

/// The media type of every error response.
pub const PROBLEM: &str = "application/problem+json";

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{HttpResponse, web};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Declares the bearer scheme the annotated paths refer to as `bearer`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from POST /api/v1/auth/login, verified against /.well-known/jwks.json.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Keel API",
        description = "The public HTTP API of Keel's gateway. Errors are application/problem+json; \
            successful responses carry RateLimit-* headers, 429 carries Retry-After.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        proxied::register,
        proxied::login,
        proxied::refresh,
        proxied::logout,
        proxied::logout_all,
        proxied::me,
        proxied::change_password,
        proxied::sessions,
        proxied::revoke_session,
        proxied::set_roles,
        proxied::jwks,
        proxied::analytics_summary,
        proxied::analytics_timeseries,
        openapi_json,
        crate::orders::handlers::create,
        crate::orders::handlers::list,
        crate::orders::handlers::get,
        crate::orders::handlers::update,
        crate::orders::handlers::cancel,
        crate::events::handlers::stream,
        crate::webhooks::handlers::receive,
        crate::exports::handlers::create,
        crate::exports::handlers::list,
        crate::exports::handlers::get,
        crate::exports::handlers::download,
        crate::admin::webhook_events::list,
        crate::admin::webhook_events::get,
        crate::admin::webhook_events::replay,
        crate::admin::dead_letters::list,
        crate::admin::dead_letters::get,
        crate::admin::dead_letters::requeue,
        crate::admin::queues::list,
        crate::admin::outbox::parked,
        crate::admin::outbox::unpark,
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Accounts, tokens and sessions (proxied to the auth service)."),
        (name = "analytics", description = "Store figures (proxied to the analytics service)."),
        (name = "meta", description = "About this API."),
        (name = "orders", description = "Orders: create, list, read (cached, ETag), change status, cancel."),
        (name = "webhooks", description = "Inbound webhooks, authenticated by the sender's signature (no bearer token)."),
        (name = "events", description = "Live notifications (Server-Sent Events)."),
        (name = "exports", description = "Exports: files of your orders built in the background, downloaded by signed link."),
        (name = "admin", description = "Operations (role `admin`): webhook events, dead letters, queues, parked outbox rows."),
    )
)]
struct Api;

/// The whole document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = Api::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The document as served and committed: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"));
    json.push('\n');
    json
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
async fn openapi_json(doc: web::Data<OpenApiJson>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .body(doc.0.clone())
}

/// Rendered once at start-up.
#[derive(Debug, Clone)]
struct OpenApiJson(String);

/// `/openapi.json`, inside the `/api/v1` scope.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::Data::new(OpenApiJson(document_json())))
        // A resource (not `cfg.route`) so other methods get 405, not 404.
        .service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}
