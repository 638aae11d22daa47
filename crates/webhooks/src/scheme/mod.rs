//! The signature schemes: how each sender signs, and how we check it.
//!
//! Every check runs over the raw body bytes as received, before anything is
//! parsed: verifying a re-serialised body is the classic receiver bug (key
//! order, whitespace and number formatting all change the bytes). Stripe's
//! event id and Standard Webhooks' `type` are read from the JSON body only
//! after the signature matched.
//!
//! Signatures are compared in constant time (`hmac`'s `verify_slice`),
//! against every active secret and every signature the header lists, without
//! stopping at the first match, so timing says nothing about which secret or
//! which candidate matched.
//!
//! Order of checks: the signature first, then the timestamp and the
//! delivery id. A 400 (stale, future, no delivery id) therefore goes only to
//! a sender that holds a secret — a fixable mistake on their side — while
//! anything unauthenticated gets 401. One exception: Standard Webhooks'
//! `webhook-id` is part of the signed content, so without it there is
//! nothing to verify and the answer is "missing delivery id" at once.
//!
//! # Layout
//! This module holds what every scheme shares: [`Scheme`], the
//! [`Verifier`] (secrets, tolerance, the constant-time comparisons, the
//! timestamp check), [`Verified`] and [`Rejection`]. Each scheme's own file
//! ([`shopify`], [`github`], [`stripe`], [`standard`]) owns its header
//! names, the content it signs, where its delivery id and topic come from,
//! and its [`HeaderRules`] (which headers are kept, which are secret).
//! [`Verifier::verify`] and [`Scheme`]'s accessors pick the file with one
//! short match each.
//!
//! Layering: `scheme` sits above [`crate::headers`] — it reads headers
//! through [`Headers`] and hands its [`HeaderRules`] to
//! [`crate::headers::stored_headers`]; `headers` knows no scheme.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::headers::{HeaderRules, Headers};

mod github;
mod shopify;
mod standard;
mod stripe;

type HmacSha256 = Hmac<Sha256>;

/// Longest delivery id we store (the column's check constraint).
pub const MAX_DELIVERY_ID_LEN: usize = 255;
/// Longest topic we store.
pub const MAX_TOPIC_LEN: usize = 255;

/// How a source signs its deliveries (API.md's webhook table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// [`shopify`]: base64 HMAC-SHA256 of the body.
    Shopify,
    /// [`github`]: `sha256=<hex HMAC-SHA256 of the body>`.
    Github,
    /// [`stripe`]: HMAC over `"{t}.{body}"`, with a signed timestamp.
    Stripe,
    /// [`standard`] Webhooks: HMAC or Ed25519 over
    /// `"{webhook-id}.{webhook-timestamp}.{body}"`.
    Standard,
}

/// What a scheme's file declares about it; [`Scheme::spec`] picks one.
struct Spec {
    name: &'static str,
    /// The header carrying the signature, as the sender spells it.
    signature: &'static str,
    /// Whether the scheme signs a timestamp (and so has a tolerance).
    timestamped: bool,
    headers: HeaderRules,
}

impl Scheme {
    fn spec(self) -> &'static Spec {
        match self {
            Scheme::Shopify => &shopify::SPEC,
            Scheme::Github => &github::SPEC,
            Scheme::Stripe => &stripe::SPEC,
            Scheme::Standard => &standard::SPEC,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.spec().name
    }

    /// The header carrying the signature.
    pub fn signature_header(self) -> &'static str {
        self.spec().signature
    }

    /// Whether the scheme signs a timestamp (and so has a tolerance).
    pub fn has_timestamp(self) -> bool {
        self.spec().timestamped
    }

    /// Which of the request's headers are stored with an event, and which
    /// of those are redacted.
    pub fn header_rules(self) -> HeaderRules {
        self.spec().headers
    }

    /// `name` carries a signature (GitHub also sends the legacy SHA-1
    /// `X-Hub-Signature`).
    pub(crate) fn is_signature_header(self, name: &str) -> bool {
        self.spec().headers.is_secret(name)
    }
}

/// So [`crate::headers::stored_headers`] takes a scheme as it is.
impl From<Scheme> for HeaderRules {
    fn from(scheme: Scheme) -> Self {
        scheme.header_rules()
    }
}

/// Why a delivery was refused: the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the {header} header is malformed: {reason}")]
    MalformedHeader {
        header: &'static str,
        reason: &'static str,
    },
    #[error("no signature in the request matches the body under an active secret")]
    BadSignature,
    #[error("the signed timestamp is older than the tolerance allows")]
    StaleTimestamp,
    #[error("the signed timestamp is further in the future than the tolerance allows")]
    FutureTimestamp,
    #[error("the delivery carries no delivery id ({0})")]
    MissingDeliveryId(&'static str),
    #[error("the delivery id must be 1 to 255 characters ({0})")]
    InvalidDeliveryId(&'static str),
}

impl Rejection {
    /// A stable slug for metrics labels and problem types.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::MissingHeader(_) => "missing_header",
            Rejection::MalformedHeader { .. } => "malformed_header",
            Rejection::BadSignature => "bad_signature",
            Rejection::StaleTimestamp => "stale_timestamp",
            Rejection::FutureTimestamp => "future_timestamp",
            Rejection::MissingDeliveryId(_) => "missing_delivery_id",
            Rejection::InvalidDeliveryId(_) => "invalid_delivery_id",
        }
    }

    /// True when authenticity could not be established (missing, malformed
    /// or wrong signature material: 401); false for a signed delivery with
    /// a bad timestamp or delivery id (400).
    pub fn is_authentication_failure(&self) -> bool {
        matches!(
            self,
            Rejection::MissingHeader(_)
                | Rejection::MalformedHeader { .. }
                | Rejection::BadSignature
        )
    }
}

/// A secret or public key that cannot be used, found when the verifier is
/// built (at configuration time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("at least one secret is required")]
    NoSecrets,
    #[error("secret #{0} is empty")]
    Empty(usize),
    #[error("secret #{0} must be whsec_ followed by base64 (Standard Webhooks)")]
    NotBase64(usize),
    #[error("public key #{0} must be whpk_ followed by a base64 Ed25519 key (32 bytes)")]
    PublicKey(usize),
    #[error("public keys (v1a) exist only in the standard scheme")]
    PublicKeyOutsideStandard,
}

/// A delivery whose signature matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The sender's id of this delivery, stable across its retries.
    pub delivery_id: String,
    /// What happened, in the sender's words (`orders/create`, `push`, ...).
    pub topic: Option<String>,
}

/// Verifies one source's deliveries.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    /// HMAC keys of the active secrets (decoded as the scheme says).
    keys: Vec<Vec<u8>>,
    /// Ed25519 public keys (Standard Webhooks `v1a`).
    public_keys: Vec<Vec<u8>>,
    tolerance: Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("secrets", &self.keys.len())
            .field("public_keys", &self.public_keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Verifier {
    /// `secrets` are all active at once (rotation: add the new one, move
    /// senders over, remove the old one). `public_keys` (`whpk_<base64>`)
    /// verify Standard Webhooks' Ed25519 `v1a` signatures. `tolerance`
    /// bounds the signed timestamp's distance from now (Stripe, Standard).
    pub fn new(
        scheme: Scheme,
        secrets: &[impl AsRef<str>],
        public_keys: &[impl AsRef<str>],
        tolerance: Duration,
    ) -> Result<Self, SecretError> {
        if secrets.is_empty() && public_keys.is_empty() {
            return Err(SecretError::NoSecrets);
        }
        if !public_keys.is_empty() && scheme != Scheme::Standard {
            return Err(SecretError::PublicKeyOutsideStandard);
        }
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(i, secret)| {
                let secret = secret.as_ref();
                if secret.is_empty() {
                    return Err(SecretError::Empty(i));
                }
                match scheme {
                    Scheme::Standard => standard::key(secret).ok_or(SecretError::NotBase64(i)),
                    // Shopify and GitHub key with the secret's bytes; Stripe
                    // too, `whsec_` prefix included (it is not decoded).
                    Scheme::Shopify | Scheme::Github | Scheme::Stripe => {
                        Ok(secret.as_bytes().to_vec())
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_keys = public_keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let key = key.as_ref();
                let encoded = key.strip_prefix("whpk_").unwrap_or(key);
                match BASE64.decode(encoded) {
                    Ok(key) if key.len() == 32 => Ok(key),
                    _ => Err(SecretError::PublicKey(i)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            scheme,
            keys,
            public_keys,
            tolerance,
        })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Checks a delivery: `body` exactly as received, `now` in Unix seconds.
    pub fn verify(
        &self,
        headers: &(impl Headers + ?Sized),
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Rejection> {
        match self.scheme {
            Scheme::Shopify => shopify::verify(self, headers, body),
            Scheme::Github => github::verify(self, headers, body),
            Scheme::Stripe => stripe::verify(self, headers, body, now),
            Scheme::Standard => standard::verify(self, headers, body, now),
        }
    }

    /// True when any candidate equals the HMAC-SHA256 of `parts` under any
    /// key. Every pair is compared (constant time each), no early exit.
    fn hmac_matches(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
        let mut matched = false;
        for key in &self.keys {
            // HMAC accepts keys of any length; the error is unreachable.
            let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
                continue;
            };
            for part in parts {
                mac.update(part);
            }
            for candidate in candidates {
                matched |= mac.clone().verify_slice(candidate).is_ok();
            }
        }
        matched
    }

    fn ed25519_matches(&self, parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
        use aws_lc_rs::signature::{ED25519, UnparsedPublicKey};
        let message = parts.concat();
        let mut matched = false;
        for key in &self.public_keys {
            let key = UnparsedPublicKey::new(&ED25519, key);
            for candidate in candidates {
                matched |= key.verify(&message, candidate).is_ok();
            }
        }
        matched
    }

    fn check_timestamp(&self, signed_at: i64, now: i64) -> Result<(), Rejection> {
        let tolerance = i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX);
        if now.saturating_sub(signed_at) > tolerance {
            Err(Rejection::StaleTimestamp)
        } else if signed_at.saturating_sub(now) > tolerance {
            Err(Rejection::FutureTimestamp)
        } else {
            Ok(())
        }
    }
}

fn malformed(header: &'static str, reason: &'static str) -> Rejection {
    Rejection::MalformedHeader { header, reason }
}

/// A header that must be there: missing → [`Rejection::MissingHeader`],
/// not text → malformed.
fn required<'h>(
    headers: &'h (impl Headers + ?Sized),
    name: &'static str,
) -> Result<&'h str, Rejection> {
    let value = headers.get(name).ok_or(Rejection::MissingHeader(name))?;
    std::str::from_utf8(value).map_err(|_| malformed(name, "not ASCII text"))
}

/// A header that may be absent; an empty or non-text one counts as absent.
fn optional<'h>(headers: &'h (impl Headers + ?Sized), name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn parse_timestamp(value: &str) -> Option<i64> {
    // Digits only: `+5` or ` 5` are not what any sender emits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn delivery_id_from(value: &str, origin: &'static str) -> Result<String, Rejection> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Rejection::MissingDeliveryId(origin));
    }
    if value.chars().count() > MAX_DELIVERY_ID_LEN {
        return Err(Rejection::InvalidDeliveryId(origin));
    }
    Ok(value.to_owned())
}

/// Topics are informational: an absurdly long one is cut, not refused.
fn topic_from(value: Option<&str>) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.chars().take(MAX_TOPIC_LEN).collect())
}

#[cfg(test)]
mod tests;
