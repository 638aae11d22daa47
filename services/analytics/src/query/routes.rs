//! The query API: `GET /api/v1/analytics/summary` and `/timeseries`.
//!
//! Who is asking is decided here, from the request's own bearer token
//! (which the gateway forwards unchanged), verified against the auth
//! service's JWK Set ([`RemoteJwks`]): the caller is the token's `sub`, an
//! admin if its `roles` say so. Identity headers (`X-Keel-User-Id`,
//! `X-Keel-Role`) are never read: anything that reaches this service
//! directly (another pod, a compromised service, a network policy gone
//! wrong) could write them. A missing or invalid token is a 401; a JWK Set
//! never fetched because auth is unreachable is a 503 with `Retry-After`.
//!
//! Session revocation is the gateway's check, not repeated here: a revoked
//! but unexpired token sent to analytics directly still reads its own
//! user's figures until it expires (at most the access-token lifetime);
//! the API is read-only. See `docs/analytics.md` and ADR 0020.

use actix_web::http::StatusCode;
use std::sync::Arc;

use actix_web::http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use chrono::Utc;
use keel_db::Pool;
use keel_http::{FieldError, Problem};
use keel_token::Role;
use keel_token::remote::{RemoteJwks, RemoteJwksError, RemoteJwksOptions};
use uuid::Uuid;

use super::params::{self, RawParams};
use super::store;
use crate::ingest::event::STORE;
use crate::settings::{AuthnSettings, QuerySettings};

/// Seconds a client is asked to wait while the JWK Set cannot be fetched.
const KEYS_RETRY_AFTER_SECS: u32 = 5;

/// What the query handlers share.
#[derive(Debug, Clone)]
pub struct QueryState {
    pub pool: Pool,
    pub limits: QuerySettings,
    /// The auth service's keys: every caller's token is checked with them.
    pub jwks: Arc<RemoteJwks>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("no authenticated caller")]
    Unauthenticated,
    #[error("the JWK Set at {0} cannot be fetched")]
    KeysUnavailable(String),
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
            QueryError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            QueryError::KeysUnavailable(url) => {
                tracing::warn!(url = %url, "no JWK Set: callers cannot be verified");
                let problem = Problem::unavailable(
                    "Access tokens cannot be verified right now; retry shortly.",
                );
                problem
                    .response_builder()
                    .insert_header((RETRY_AFTER, KEYS_RETRY_AFTER_SECS))
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

/// The auth service's JWK Set as `authn` describes it (nothing is fetched
/// until the first request: analytics starts while auth is down).
pub fn remote_jwks(authn: &AuthnSettings) -> Result<RemoteJwks, reqwest::Error> {
    let client = reqwest::Client::builder()
        .timeout(authn.jwks_timeout)
        .connect_timeout(authn.jwks_timeout)
        .build()?;
    Ok(RemoteJwks::new(
        RemoteJwksOptions {
            url: authn.jwks_url.to_string(),
            issuer: authn.issuer.clone(),
            audience: authn.audience.clone(),
            leeway: authn.leeway,
            max_age: authn.jwks_max_age,
            min_refetch_interval: authn.jwks_min_refetch_interval,
        },
        client,
    ))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 9110 §11.1).
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whose figures to read: a customer's own, or the whole store's for an
/// admin, as the verified token says.
async fn scope(req: &HttpRequest, jwks: &RemoteJwks) -> Result<Uuid, QueryError> {
    let token = bearer(req).ok_or(QueryError::Unauthenticated)?;
    let claims = jwks.verify(token).await.map_err(|e| match e {
        RemoteJwksError::Unavailable(url) => QueryError::KeysUnavailable(url),
        RemoteJwksError::Token(reason) => {
            tracing::debug!(%reason, "bearer token refused");
            QueryError::Unauthenticated
        }
    })?;
    if claims.has_role(Role::Admin) {
        Ok(STORE)
    } else if claims.has_role(Role::Customer) && !claims.sub.is_nil() {
        Ok(claims.sub)
    } else {
        Err(QueryError::Unauthenticated)
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
    let scope = scope(&req, &state.jwks).await?;
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
    let scope = scope(&req, &state.jwks).await?;
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
