use std::time::Duration;

use ipnet::IpNet;
use keel_config::{Invalid, Validate};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The `authn` section: how the gateway decides who is calling.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthnSettings {
    /// Expected `iss` of access tokens (the auth service's issuer).
    pub issuer: String,
    /// Expected `aud` of access tokens.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// The JWK Set is fetched again after this long (key rotation).
    #[serde(with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// At most one JWK Set fetch per this interval, however many tokens
    /// name an unknown `kid` (a flood of forged kids must not become a
    /// flood of requests to auth).
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch_interval: Duration,
    /// `/.well-known/jwks.json` is served from the gateway's copy: one older
    /// than this is refetched first, and clients may cache it for what
    /// remains of this (`Cache-Control: public, max-age`).
    #[serde(with = "humantime_serde")]
    pub jwks_public_max_age: Duration,
    /// Verified tokens remembered (keyed by signature, until they expire).
    pub token_cache_capacity: u64,
    pub revocation: RevocationSettings,
    pub trusted_proxy: TrustedProxySettings,
}

/// Optional: refuse tokens whose session the auth service revoked.
#[derive(Debug, Clone, Deserialize)]
pub struct RevocationSettings {
    pub enabled: bool,
    /// Redis key (under the shared key prefix) of a live session, as the
    /// auth service writes it; `{sid}` is replaced by the token's session
    /// id. A missing key means the session was revoked or expired.
    pub key: String,
    /// How long a lookup's answer is reused.
    #[serde(with = "humantime_serde")]
    pub cache_ttl: Duration,
}

/// Optional: trust an identity header set by a reverse proxy such as
/// oauth2-proxy, but only on connections whose TCP peer is in the listed
/// networks and that carry the proxy's shared secret.
#[derive(Debug, Clone, Deserialize)]
pub struct TrustedProxySettings {
    pub enabled: bool,
    /// CIDRs of the proxies (e.g. `10.0.0.0/8`, `127.0.0.1/32`); must not
    /// overlap `http.trusted_proxies`.
    #[serde(default)]
    pub proxies: Vec<IpNet>,
    /// Header in which the proxy sends `secret` (removed from every request
    /// before anything else sees it).
    #[serde(default = "default_secret_header")]
    pub secret_header: String,
    /// The secret the proxy adds to every request; required when enabled.
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// Header carrying the user's email (oauth2-proxy: `X-Email`).
    pub email_header: String,
    /// Header carrying the user's groups, comma separated.
    pub groups_header: String,
    /// Members of this group are admins.
    pub admin_group: String,
}

/// A shared secret shorter than this could be guessed.
const MIN_PROXY_SECRET_LEN: usize = 32;

impl AuthnSettings {
    /// The identity proxies must not overlap `http.trusted_proxies`: a
    /// proxy believed for `X-Forwarded-For` (an ingress) relays whatever
    /// headers any client sends, identity headers included.
    pub fn validate_against_forwarders(&self, forwarders: &[IpNet]) -> Result<(), Invalid> {
        let proxy = &self.trusted_proxy;
        if !proxy.enabled {
            return Ok(());
        }
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
        for network in &proxy.proxies {
            if let Some(forwarder) = forwarders.iter().find(|f| overlaps(network, f)) {
                return Err(Invalid::new(
                    "proxies",
                    format!(
                        "{network} overlaps http.trusted_proxies ({forwarder}): an identity proxy \
                         must not be a forwarding proxy, which relays any client's headers"
                    ),
                )
                .within("trusted_proxy")
                .within("authn"));
            }
        }
        Ok(())
    }
}

fn default_secret_header() -> String {
    "X-Keel-Proxy-Secret".to_owned()
}

impl Validate for AuthnSettings {
    fn validate(&self) -> Result<(), Invalid> {
        let within = |e: Invalid| e.within("authn");
        if self.issuer.is_empty() {
            return Err(within(Invalid::new("issuer", "must not be empty")));
        }
        if self.audience.is_empty() {
            return Err(within(Invalid::new("audience", "must not be empty")));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(within(Invalid::new("leeway", "must be at most 5m")));
        }
        if self.jwks_min_refetch_interval.is_zero() {
            return Err(within(Invalid::new(
                "jwks_min_refetch_interval",
                "must be greater than zero",
            )));
        }
        if self.jwks_public_max_age.is_zero() {
            return Err(within(Invalid::new(
                "jwks_public_max_age",
                "must be greater than zero",
            )));
        }
        if self.token_cache_capacity == 0 {
            return Err(within(Invalid::new(
                "token_cache_capacity",
                "must be at least 1",
            )));
        }
        if self.revocation.enabled && !self.revocation.key.contains("{sid}") {
            return Err(within(
                Invalid::new("key", "must contain the {sid} placeholder").within("revocation"),
            ));
        }
        let proxy = &self.trusted_proxy;
        if proxy.enabled {
            if proxy.proxies.is_empty() {
                return Err(within(
                    Invalid::new("proxies", "must list at least one CIDR when enabled")
                        .within("trusted_proxy"),
                ));
            }
            if actix_web::http::header::HeaderName::try_from(proxy.email_header.as_str()).is_err() {
                return Err(within(
                    Invalid::new("email_header", "must be a valid header name")
                        .within("trusted_proxy"),
                ));
            }
            if actix_web::http::header::HeaderName::try_from(proxy.groups_header.as_str()).is_err()
            {
                return Err(within(
                    Invalid::new("groups_header", "must be a valid header name")
                        .within("trusted_proxy"),
                ));
            }
            if actix_web::http::header::HeaderName::try_from(proxy.secret_header.as_str()).is_err()
            {
                return Err(within(
                    Invalid::new("secret_header", "must be a valid header name")
                        .within("trusted_proxy"),
                ));
            }
            let secret_len = proxy
                .secret
                .as_ref()
                .map_or(0, |s| s.expose_secret().trim().len());
            if secret_len < MIN_PROXY_SECRET_LEN {
                return Err(within(
                    Invalid::new(
                        "secret",
                        format!(
                            "is required when enabled, at least {MIN_PROXY_SECRET_LEN} characters \
                             (the proxy sends it in secret_header; set KEEL_AUTHN__TRUSTED_PROXY__SECRET)"
                        ),
                    )
                    .within("trusted_proxy"),
                ));
            }
        }
        Ok(())
    }
}
