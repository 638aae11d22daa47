//! Paths the gateway proxies, described here because the gateway is what
//! clients see. The functions are never called: they carry the annotations.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use super::schemas::{
    AnalyticsSummary, JwkSet, LoginRequest, PasswordChange, Problem, RefreshRequest,
    RegisterRequest, SessionList, Timeseries, TokenPair, User,
};

const PROBLEM: &str = "application/problem+json";

/// Creates an account (role `customer`).
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth", operation_id = "register",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 409, description = "The email is taken", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Weak password or bad email", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
    ))]
pub fn register() {}

/// Exchanges credentials for a token pair.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", operation_id = "login",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A token pair", body = TokenPair),
        (status = 401, description = "Wrong credentials", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid input", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Too many attempts", body = Problem, content_type = PROBLEM),
    ))]
pub fn login() {}

/// Rotates a refresh token into a new pair.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", operation_id = "refresh",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A new token pair", body = TokenPair),
        (status = 401, description = "Unknown, expired or reused refresh token", body = Problem, content_type = PROBLEM),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
    ))]
pub fn refresh() {}

/// Ends the session of a refresh token.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", operation_id = "logout",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Logged out"),
        (status = 429, description = "Rate limited", body = Problem, content_type = PROBLEM),
    ))]
pub fn logout() {}

/// Revokes every session of the caller.
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth", operation_id = "logout_all",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Every session revoked"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ))]
pub fn logout_all() {}

/// The caller's account.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", operation_id = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = User),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ))]
pub fn me() {}

/// Changes the caller's password; every other session is revoked.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth", operation_id = "change_password",
    security(("bearer" = [])),
    request_body = PasswordChange,
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Not authenticated or wrong current password", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Weak new password", body = Problem, content_type = PROBLEM),
    ))]
pub fn change_password() {}

/// The caller's sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", operation_id = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sessions", body = SessionList),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
    ))]
pub fn sessions() {}

/// Revokes one of the caller's sessions.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", operation_id = "revoke_session",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such session of the caller", body = Problem, content_type = PROBLEM),
    ))]
pub fn revoke_session() {}

/// The public keys access tokens are signed with.
///
/// The auth service's JWK Set as the gateway last fetched it, served from
/// that copy (`Cache-Control: public, max-age` of at most 300 s).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", operation_id = "jwks",
    responses(
        (status = 200, description = "The JWK Set", body = JwkSet),
        (status = 503, description = "The keys could not be fetched from the auth service yet", body = Problem, content_type = PROBLEM),
    ))]
pub fn jwks() {}

/// Store figures over a period (customers: their own; admins: the store).
///
/// Answered from rollups. Revenue is `order.created` totals less orders
/// cancelled afterwards, per currency, in cents.
#[utoipa::path(get, path = "/api/v1/analytics/summary", tag = "analytics", operation_id = "analytics_summary",
    security(("bearer" = [])),
    params(
        ("from" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Start (inclusive, RFC 3339, truncated to the minute); default `to` minus 30 days"),
        ("to" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "End (exclusive, RFC 3339, truncated to the minute); default now. At most `query.max_range` (400 days) after `from`"),
    ),
    responses(
        (status = 200, description = "Figures", body = AnalyticsSummary),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Analytics unavailable", body = Problem, content_type = PROBLEM),
    ))]
pub fn analytics_summary() {}

/// One metric over time.
///
/// One point per interval (zero-filled), answered from rollups.
#[utoipa::path(get, path = "/api/v1/analytics/timeseries", tag = "analytics", operation_id = "analytics_timeseries",
    security(("bearer" = [])),
    params(
        ("metric" = String, Query, description = "An event type (`order.created`, `order.updated`, `user.registered`, `user.logged_in`, `webhook.received`, `export.completed`, `export.failed`), `revenue` (needs `currency`) or `active_users` (distinct users per day; `interval=day`)"),
        ("interval" = String, Query, description = "`minute`, `hour` or `day` (UTC buckets)"),
        ("currency" = Option<String>, Query, description = "ISO 4217 code; required with `metric=revenue`, refused otherwise"),
        ("from" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "Start (inclusive, RFC 3339, truncated to the interval); default 60 intervals before `to`"),
        ("to" = Option<chrono::DateTime<chrono::Utc>>, Query, description = "End (exclusive, RFC 3339, truncated to the minute); default now"),
    ),
    responses(
        (status = 200, description = "Points", body = Timeseries),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 422, description = "Invalid parameters, or more points than `query.max_points` (1500; the message names the limit)", body = Problem, content_type = PROBLEM),
        (status = 503, description = "Analytics unavailable", body = Problem, content_type = PROBLEM),
    ))]
pub fn analytics_timeseries() {}
