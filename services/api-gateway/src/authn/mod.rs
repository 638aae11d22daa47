//! Authentication at the edge: who is calling `/api/v1/*`.
//!
//! The middleware turns credentials into a [`Caller`] in the request's
//! extensions and never rejects a request that brings none: handlers that
//! need a caller take the `Caller` extractor, which answers 401 itself, so
//! public routes need no list of exceptions. Credentials that are present
//! but wrong are always a 401 (a client that sends a token expects it to
//! count). The auth proxy paths are skipped: the auth service judges its
//! own bearer tokens. `/api/v1/admin/*` is gated here too (401 without a
//! caller, 403 for non-admins), whatever its handlers do.
//!
//! The gateway also publishes the auth service's JWK Set at
//! `/.well-known/jwks.json` from its own copy ([`configure_root`]), so a
//! flood of requests there never reaches auth.
//!
//! Two sources, in this order:
//! - the trusted-proxy identity header, honoured only on connections whose
//!   TCP peer is in the configured proxy networks (never an address someone
//!   forwarded) and that carry the proxy's shared secret (compared in
//!   constant time); removed from every other request, and the secret from
//!   every request. An identity header from a proxy address without the
//!   right secret is a 401: the proxy is misconfigured or impersonated;
//! - `Authorization: Bearer <jwt>`, verified locally against the auth
//!   service's JWK Set ([`jwks`]). Verified tokens are remembered by the
//!   SHA-256 of the whole token until they expire, so a client's second
//!   request costs a hash lookup instead of an RSA verification. The whole
//!   token, not its signature alone: a token whose claims were altered under
//!   a genuine signature must be refused (RFC 8725 §3.1), never mapped to
//!   the genuine token's identity.

mod jwks;
mod revocation;
mod settings;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{
    AUTHORIZATION, CACHE_CONTROL, ContentType, HeaderName, HeaderValue, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use keel_cache::Redis;
use keel_http::Problem;
use keel_token::{Claims, Role, VerifyError};
use moka::sync::Cache;
use prometheus_client::registry::Registry;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub use jwks::{Jwks, JwksError};
pub use revocation::Revocation;
pub use settings::{AuthnSettings, RevocationSettings, TrustedProxySettings};

use crate::identity::{Caller, Unauthenticated};

/// Why credentials were refused (or could not be judged).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    #[error("the Authorization header is not `Bearer <token>`")]
    MalformedHeader,
    #[error("invalid token: {0}")]
    InvalidToken(#[from] VerifyError),
    #[error("the token's session has been revoked")]
    Revoked,
    #[error("the signing keys cannot be fetched: {0}")]
    KeysUnavailable(String),
    #[error("an identity header came without the identity proxy's secret")]
    ProxySecret,
}

impl AuthnError {
    fn slug(&self) -> &'static str {
        match self {
            AuthnError::MalformedHeader | AuthnError::ProxySecret => "invalid-credentials",
            AuthnError::InvalidToken(VerifyError::Expired) => "token-expired",
            AuthnError::InvalidToken(_) => "invalid-token",
            AuthnError::Revoked => "session-revoked",
            AuthnError::KeysUnavailable(_) => "unavailable",
        }
    }

    /// What the client is told (never the key ids or the verifier's internals).
    fn detail(&self) -> &'static str {
        match self {
            AuthnError::MalformedHeader => "The Authorization header must be `Bearer <token>`.",
            AuthnError::InvalidToken(VerifyError::Expired) => "The access token has expired.",
            AuthnError::InvalidToken(_) => "The access token is invalid.",
            AuthnError::Revoked => "The session of this access token has been revoked.",
            AuthnError::KeysUnavailable(_) => {
                "Access tokens cannot be verified right now; retry shortly."
            }
            AuthnError::ProxySecret => "The identity header was not sent by the identity proxy.",
        }
    }

    /// The RFC 6750 `error` attribute of the challenge.
    fn challenge(&self) -> &'static str {
        match self {
            AuthnError::MalformedHeader | AuthnError::ProxySecret => {
                "Bearer realm=\"keel\", error=\"invalid_request\""
            }
            _ => "Bearer realm=\"keel\", error=\"invalid_token\"",
        }
    }
}

impl ResponseError for AuthnError {
    fn status_code(&self) -> StatusCode {
        match self {
            AuthnError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let AuthnError::KeysUnavailable(cause) = self {
            tracing::error!(%cause, "cannot verify access tokens: no JWK Set");
            let problem = Problem::unavailable(self.detail());
            return problem
                .response_builder()
                .insert_header((RETRY_AFTER, "5"))
                .json(&problem);
        }
        tracing::debug!(reason = %self, "credentials refused");
        let problem = Problem::new(StatusCode::UNAUTHORIZED, self.slug(), "Unauthorized")
            .with_detail(self.detail());
        problem
            .response_builder()
            .insert_header((WWW_AUTHENTICATE, HeaderValue::from_static(self.challenge())))
            .json(&problem)
    }
}

#[derive(Clone)]
struct Verified {
    caller: Caller,
    /// `exp`, seconds since the epoch.
    expires_at: u64,
}

/// Cached entries live until their token's `exp`, never longer.
struct UntilExpiry;

impl moka::Expiry<[u8; 32], Verified> for UntilExpiry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Verified, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            value.expires_at.saturating_sub(keel_token::claims::now()),
        ))
    }
}

/// The trusted-proxy identity header, parsed once.
struct TrustedProxy {
    networks: Vec<ipnet::IpNet>,
    secret_header: HeaderName,
    /// SHA-256 of the shared secret: digests of equal length are compared,
    /// so the comparison reveals neither content nor length.
    secret_digest: [u8; 32],
    email: HeaderName,
    groups: HeaderName,
    admin_group: String,
}

/// A stable user id for an identity that only comes as an email (trusted
/// proxy mode): a UUIDv5 of the lowercased email under Keel's namespace,
/// so the same person always owns the same orders.
const EMAIL_NAMESPACE: Uuid = Uuid::from_u128(0x6b65_656c_2d74_7275_7374_6564_2d70_7879);

/// Judges credentials; shared by every actix worker.
pub struct Authenticator {
    jwks: Jwks,
    jwks_public_max_age: Duration,
    verified: Cache<[u8; 32], Verified>,
    revocation: Option<Revocation>,
    trusted: Option<TrustedProxy>,
}

impl std::fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedProxy")
            .field("networks", &self.networks)
            .field("secret_header", &self.secret_header)
            .finish_non_exhaustive()
    }
}

impl TrustedProxy {
    /// Whether `presented` is the shared secret, in constant time.
    fn is_secret(&self, presented: Option<&HeaderValue>) -> bool {
        presented.is_some_and(|value| {
            let digest: [u8; 32] = Sha256::digest(value.as_bytes()).into();
            bool::from(digest.ct_eq(&self.secret_digest))
        })
    }

    /// Removes the identity headers; whether there were any.
    fn strip_identity(&self, req: &mut ServiceRequest) -> bool {
        let headers = req.headers_mut();
        let present = headers.contains_key(&self.email) || headers.contains_key(&self.groups);
        headers.remove(&self.email);
        headers.remove(&self.groups);
        present
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("jwks", &self.jwks)
            .field("cached_tokens", &self.verified.entry_count())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(
        settings: &AuthnSettings,
        jwks_url: String,
        client: reqwest::Client,
        redis: Redis,
        registry: &mut Registry,
    ) -> Result<Self, String> {
        let trusted = if settings.trusted_proxy.enabled {
            let proxy = &settings.trusted_proxy;
            // Validated at load; checked again for settings changed since (tests).
            let secret = proxy
                .secret
                .as_ref()
                .map(ExposeSecret::expose_secret)
                .filter(|s| !s.is_empty())
                .ok_or("authn.trusted_proxy.secret: required when enabled")?;
            Some(TrustedProxy {
                networks: proxy.proxies.clone(),
                secret_header: HeaderName::try_from(proxy.secret_header.as_str())
                    .map_err(|e| format!("authn.trusted_proxy.secret_header: {e}"))?,
                secret_digest: Sha256::digest(secret.as_bytes()).into(),
                email: HeaderName::try_from(proxy.email_header.as_str())
                    .map_err(|e| format!("authn.trusted_proxy.email_header: {e}"))?,
                groups: HeaderName::try_from(proxy.groups_header.as_str())
                    .map_err(|e| format!("authn.trusted_proxy.groups_header: {e}"))?,
                admin_group: proxy.admin_group.clone(),
            })
        } else {
            None
        };
        Ok(Self {
            jwks: Jwks::new(jwks_url, client, settings),
            jwks_public_max_age: settings.jwks_public_max_age,
            verified: Cache::builder()
                .max_capacity(settings.token_cache_capacity)
                .expire_after(UntilExpiry)
                .build(),
            revocation: settings
                .revocation
                .enabled
                .then(|| Revocation::new(redis, &settings.revocation, registry)),
            trusted,
        })
    }

    /// Whether `peer` is one of the configured identity proxies.
    fn is_trusted_proxy(&self, peer: Option<IpAddr>) -> bool {
        match (&self.trusted, peer) {
            (Some(trusted), Some(ip)) => trusted.networks.iter().any(|n| n.contains(&ip)),
            _ => false,
        }
    }

    /// The caller named by the trusted-proxy header, if the request came
    /// from a trusted proxy (its TCP peer, not a forwarded address) with the
    /// proxy's secret; the identity headers are removed from every request
    /// that did not, and the secret from every request, so nothing
    /// downstream can be fooled by (or learn) either. An identity header
    /// from a proxy address without the right secret is refused.
    fn trusted_proxy_caller(&self, req: &mut ServiceRequest) -> Result<Option<Caller>, AuthnError> {
        let Some(trusted) = self.trusted.as_ref() else {
            return Ok(None);
        };
        let presented = req.headers_mut().remove(&trusted.secret_header).next();
        let peer = req.peer_addr().map(|a| a.ip());
        if !self.is_trusted_proxy(peer) {
            if trusted.strip_identity(req) {
                tracing::warn!(peer = ?peer, "identity header from an untrusted address dropped");
            }
            return Ok(None);
        }
        if !trusted.is_secret(presented.as_ref()) {
            if trusted.strip_identity(req) {
                tracing::warn!(
                    peer = ?peer,
                    secret_sent = presented.is_some(),
                    "identity header from a proxy address without the proxy's secret refused"
                );
                return Err(AuthnError::ProxySecret);
            }
            return Ok(None);
        }
        let Some(email) = req
            .headers()
            .get(&trusted.email)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        let is_admin = req
            .headers()
            .get(&trusted.groups)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|groups| groups.split(',').any(|g| g.trim() == trusted.admin_group));
        Ok(Some(Caller {
            user_id: Uuid::new_v5(&EMAIL_NAMESPACE, email.as_bytes()),
            session_id: None,
            is_admin,
        }))
    }

    /// The caller a bearer token names: from the cache, else verified.
    pub async fn verify_bearer(&self, token: &str) -> Result<Caller, AuthnError> {
        // Garbage is refused before any key is needed (and so even while
        // the JWK Set cannot be fetched).
        if !is_compact_jws(token) {
            return Err(AuthnError::InvalidToken(VerifyError::Malformed));
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let verified = match self.verified.get(&key) {
            Some(hit) => hit,
            None => {
                let claims = self.jwks.verify(token).await.map_err(|e| match e {
                    JwksError::Unavailable(url) => AuthnError::KeysUnavailable(url),
                    JwksError::Token(e) => AuthnError::InvalidToken(e),
                })?;
                let verified = Verified {
                    caller: caller_of(&claims),
                    expires_at: claims.exp,
                };
                self.verified.insert(key, verified.clone());
                verified
            }
        };
        if let (Some(revocation), Some(sid)) = (&self.revocation, verified.caller.session_id)
            && revocation.is_revoked(sid).await
        {
            return Err(AuthnError::Revoked);
        }
        Ok(verified.caller)
    }

    async fn authenticate(&self, req: &mut ServiceRequest) -> Result<Option<Caller>, AuthnError> {
        if let Some(caller) = self.trusted_proxy_caller(req)? {
            return Ok(Some(caller));
        }
        let Some(header) = req.headers().get(AUTHORIZATION) else {
            return Ok(None);
        };
        let token = header
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or(AuthnError::MalformedHeader)?
            .to_owned();
        self.verify_bearer(&token).await.map(Some)
    }
}

/// Mounts `GET /.well-known/jwks.json` at the root: the auth service's JWK
/// Set from the gateway's copy ([`Jwks::document`]), never proxied per
/// request.
pub fn configure_root(cfg: &mut web::ServiceConfig, authenticator: Arc<Authenticator>) {
    cfg.service(
        web::resource("/.well-known/jwks.json")
            .app_data(web::Data::from(authenticator))
            .route(web::get().to(published_keys)),
    );
}

async fn published_keys(authenticator: web::Data<Authenticator>) -> HttpResponse {
    let fresh_for = authenticator.jwks_public_max_age;
    match authenticator.jwks.document(fresh_for).await {
        Some((document, age)) => HttpResponse::Ok()
            .content_type(ContentType::json())
            .insert_header((
                CACHE_CONTROL,
                format!(
                    "public, max-age={}",
                    fresh_for.saturating_sub(age).as_secs()
                ),
            ))
            .body(document),
        None => {
            let problem =
                Problem::unavailable("The signing keys cannot be fetched; retry shortly.");
            problem
                .response_builder()
                .insert_header((RETRY_AFTER, "5"))
                .json(&problem)
        }
    }
}

/// Three non-empty base64url segments: the shape of a compact JWS.
fn is_compact_jws(token: &str) -> bool {
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        if segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    segments == 3
}

fn caller_of(claims: &Claims) -> Caller {
    Caller {
        user_id: claims.sub,
        session_id: Some(claims.sid),
        is_admin: claims.has_role(Role::Admin),
    }
}

/// Paths whose credentials are not the gateway's business: the auth
/// service answers them itself (login needs none, `/auth/me` checks its own).
///
/// `path` is canonical (`keel_http::canonical`, before routing): the one
/// the router matched, so `/api/v1/%61uth/...` is `/api/v1/auth/...` here
/// too, and prefixes match whole segments (`/api/v1/authx` is not auth's).
fn skips_authentication(path: &str) -> bool {
    keel_http::canonical::is_under(path, "/api/v1/auth") || path == "/api/v1/openapi.json"
}

/// Middleware for the `/api/v1` scope (see the module docs).
pub async fn middleware(
    authenticator: Arc<Authenticator>,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if skips_authentication(req.path()) {
        // The identity header still must not reach auth from strangers.
        let _ = authenticator.trusted_proxy_caller(&mut req);
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let caller = match authenticator.authenticate(&mut req).await {
        Ok(caller) => caller,
        Err(e) => {
            let response = e.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    };
    // Admin areas are gated here as well as in their handlers: a route
    // added under /admin that forgets `require_admin` is still closed.
    if is_admin_path(req.path()) {
        let refused = match &caller {
            None => Some(
                Unauthenticated {
                    detail: "A valid Bearer access token is required.",
                }
                .error_response(),
            ),
            Some(caller) => caller.require_admin().err().map(|p| p.to_response()),
        };
        if let Some(response) = refused {
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    if let Some(caller) = caller {
        req.extensions_mut().insert(caller);
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// `/api/v1/admin` and everything below it, by whole segments, on the
/// canonical path (see [`skips_authentication`]): no spelling the router
/// would send to an admin handler passes the gate unchecked.
fn is_admin_path(path: &str) -> bool {
    keel_http::canonical::is_under(path, "/api/v1/admin")
}
