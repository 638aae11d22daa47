//! The query API: `GET /api/v1/analytics/summary` and `/timeseries`.
//!
//! Who is asking comes from the gateway, which authenticated the bearer
//! token and names the caller in `X-Keel-User-Id` / `X-Keel-Role` (headers
//! it strips from client requests). See `docs/analytics.md` for why this
//! service trusts them and what that requires of the network.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use keel_db::Pool;
use keel_http::{FieldError, Problem};
use uuid::Uuid;

use super::params::{self, RawParams};
use super::store;
use crate::ingest::event::STORE;
use crate::settings::QuerySettings;

const USER_HEADER: &str = "x-keel-user-id";
const ROLE_HEADER: &str = "x-keel-role";

/// What the query handlers share.
#[derive(Debug, Clone)]
pub struct QueryState {
    pub pool: Pool,
    pub limits: QuerySettings,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no authenticated caller")]
    Unauthenticated,
    #[error("invalid parameters")]
    Validation(Vec<FieldError>),
    #[error("the query string is malformed: {0}")]
    Malformed(String),
    #[error(transparent)]
    Database(#[from] keel_db::Error),
}

impl ResponseError for QueryError {
    fn status_code(&self) -> StatusCode {
        match self {
            QueryError::Unauthenticated => StatusCode::UNAUTHORIZED,
            QueryError::Validation(_) | QueryError::Malformed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            QueryError::Database(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Database(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            QueryError::Unauthenticated => {
                let problem =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized")
                        .with_detail("A valid bearer token is required.");
                problem
                    .response_builder()
                    .insert_header((
                        WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"keel\""),
                    ))
                    .json(&problem)
            }
            QueryError::Validation(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            )
            .with_errors(errors.clone())
            .to_response(),
            QueryError::Malformed(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            )
            .with_detail("The query string could not be read; each parameter may appear once.")
            .to_response(),
            QueryError::Database(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "analytics database unavailable");
                Problem::unavailable("The analytics store is unreachable; retry shortly.")
                    .to_response()
            }
            QueryError::Database(e) => {
                tracing::error!(error = %e, "analytics query failed");
                Problem::internal().to_response()
            }
        }
    }
}

/// Whose figures to read: a customer's own, or the whole store's for an
/// admin.
fn scope(req: &HttpRequest) -> Result<Uuid, QueryError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let user = header(USER_HEADER)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or(QueryError::Unauthenticated)?;
    match header(ROLE_HEADER) {
        Some("admin") => Ok(STORE),
        Some("customer") if !user.is_nil() => Ok(user),
        _ => Err(QueryError::Unauthenticated),
    }
}

fn raw_params(req: &HttpRequest) -> Result<RawParams, QueryError> {
    web::Query::<RawParams>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| QueryError::Malformed(e.to_string()))
}

async fn summary(
    req: HttpRequest,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let scope = scope(&req)?;
    let period = params::summary(&raw_params(&req)?, Utc::now(), &state.limits)
        .map_err(QueryError::Validation)?;
    let client = state.pool.get().await.map_err(keel_db::Error::from)?;
    let summary = store::summary(&client, scope, period).await?;
    Ok(HttpResponse::Ok().json(summary))
}

async fn timeseries(
    req: HttpRequest,
    state: web::Data<QueryState>,
) -> Result<HttpResponse, QueryError> {
    let scope = scope(&req)?;
    let request = params::series(&raw_params(&req)?, Utc::now(), &state.limits)
        .map_err(QueryError::Validation)?;
    let client = state.pool.get().await.map_err(keel_db::Error::from)?;
    let series = store::timeseries(&client, scope, &request).await?;
    Ok(HttpResponse::Ok().json(series))
}

/// Mounts the query API (the gateway forwards `/api/v1/analytics/*` with
/// the path unchanged).
pub fn configure(cfg: &mut web::ServiceConfig, state: QueryState) {
    cfg.app_data(web::Data::new(state)).service(
        web::scope("/api/v1/analytics")
            .route("/summary", web::get().to(summary))
            .route("/timeseries", web::get().to(timeseries)),
    );
}
