//! Paths the gateway proxies (every route auth and analytics serve to
//! clients), described here because the gateway is what clients see; this
//! is the one place the gateway describes their bodies. The services
//! behind the proxy hold the real types and test them; the gateway must
//! not depend on them. The functions are never called: they carry the
//! annotations.
#![allow(dead_code, reason = "documentation anchors for #[utoipa::path]")]

use serde::Serialize;
use utoipa::ToSchema;

use super::{PROBLEM, Problem};

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

/// Replaces a user's roles (admin only).
///
/// Tokens already issued keep their roles until they expire; the next
/// refresh carries the new ones.
#[utoipa::path(put, path = "/api/v1/auth/users/{id}/roles", tag = "auth", operation_id = "set_roles",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "User id")),
    request_body = RoleChange,
    responses(
        (status = 200, description = "The user with the new roles", body = User),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = Problem, content_type = PROBLEM),
        (status = 403, description = "Not an admin", body = Problem, content_type = PROBLEM),
        (status = 404, description = "No such user", body = Problem, content_type = PROBLEM),
        (status = 422, description = "No role, or an unknown one", body = Problem, content_type = PROBLEM),
    ))]
pub fn set_roles() {}

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

// Bodies of the proxied routes.

#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    #[schema(nullable = false)]
    pub display_name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChange {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub id: uuid::Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub id: uuid::Uuid,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<Session>,
}

/// A public key of the JWK Set (RFC 7517); further members depend on `kty`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    #[schema(nullable = false)]
    pub alg: Option<String>,
    #[serde(rename = "use")]
    #[schema(nullable = false)]
    pub usage: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// Figures over `[from, to)`; money per ISO 4217 currency in minor units.
#[derive(Debug, Serialize, ToSchema)]
pub struct AnalyticsSummary {
    pub orders_created: i64,
    pub revenue_cents: std::collections::BTreeMap<String, i64>,
    pub users_registered: i64,
    pub webhooks_received: i64,
    pub exports_completed: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    pub ts: chrono::DateTime<chrono::Utc>,
    pub value: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    pub points: Vec<Point>,
}

/// The roles a user is to have (at least one; duplicates are ignored).
#[derive(Debug, Serialize, ToSchema)]
pub struct RoleChange {
    #[schema(min_items = 1)]
    pub roles: Vec<Role>,
}
