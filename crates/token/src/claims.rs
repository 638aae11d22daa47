//! The access token's payload.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a user may do. Serialised lowercase (`"customer"`, `"admin"`), as in
/// the database and in API responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    /// The inverse of [`as_str`](Self::as_str); `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Registered claims plus Keel's `roles` and `sid` (the session the token
/// was issued for, so a verifier can reject tokens of a revoked session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub roles: Vec<Role>,
    pub sid: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub nbf: u64,
    pub jti: Uuid,
}

impl Claims {
    /// Claims valid from now for `ttl`, with a fresh `jti`.
    pub fn new(
        sub: Uuid,
        roles: Vec<Role>,
        sid: Uuid,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Self {
        let now = now();
        Self {
            sub,
            roles,
            sid,
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl.as_secs()),
            jti: Uuid::new_v4(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Seconds since the Unix epoch (0 if the clock is before 1970, which only
/// makes every token look expired).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
