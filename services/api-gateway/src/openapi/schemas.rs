//! Schemas of bodies the gateway does not own the types of: problems (built
//! by `keel_http`) and the proxied services' requests and responses. They
//! exist for the document only; the services behind the proxy hold the
//! real types and their own tests.

use serde::Serialize;
use utoipa::ToSchema;

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
