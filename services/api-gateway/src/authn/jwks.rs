//! The auth service's public keys, fetched over HTTP and cached: a thin
//! use of [`keel_token::remote::RemoteJwks`] (analytics verifies tokens
//! with the same type).
//!
//! Tokens are verified locally: the JWK Set is fetched once, kept for
//! `jwks_max_age`, and fetched again early only when a token names a `kid`
//! we do not know (the auth service rotated its key). Fetches are
//! serialised and at most one happens per `jwks_min_refetch_interval`, so
//! tokens with made-up kids cannot turn into a flood of requests to auth.
//!
//! The same copy is what the gateway publishes at `/.well-known/jwks.json`
//! ([`Jwks::document`]): the bytes auth served, answered from memory, so
//! however many clients ask, auth sees at most one fetch per
//! `jwks_min_refetch_interval`. A copy older than `jwks_public_max_age` is
//! refetched first (subject to the same limit), and the `max-age` clients
//! get is what remains of that age, so a key auth stopped publishing leaves
//! every downstream cache within `jwks_public_max_age` (plus the refetch
//! interval), as auth's own `Cache-Control` promised.

use std::time::Duration;

use bytes::Bytes;
use keel_token::Claims;
use keel_token::remote::{RemoteJwks, RemoteJwksOptions};

pub use keel_token::remote::RemoteJwksError as JwksError;

use crate::authn::AuthnSettings;

#[derive(Debug)]
pub struct Jwks(RemoteJwks);

impl Jwks {
    pub fn new(url: String, client: reqwest::Client, settings: &AuthnSettings) -> Self {
        Self(RemoteJwks::new(
            RemoteJwksOptions {
                url,
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                leeway: settings.leeway,
                max_age: settings.jwks_max_age,
                min_refetch_interval: settings.jwks_min_refetch_interval,
            },
            client,
        ))
    }

    /// The published JWK Set and its age, refetched first (if no fetch
    /// started within the minimum interval) when older than `fresh_for`;
    /// `None` while none was ever fetched.
    pub async fn document(&self, fresh_for: Duration) -> Option<(Bytes, Duration)> {
        self.0.document(fresh_for).await
    }

    /// Verifies `token`, fetching the key set first if there is none, it is
    /// stale, or the token names an unknown key.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwksError> {
        self.0.verify(token).await
    }
}
