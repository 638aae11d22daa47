//! The auth service's public keys, fetched over HTTP and cached.
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

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_token::{Claims, JwkSet, Verifier, VerifyError};

use crate::authn::AuthnSettings;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// No key set could be fetched yet: tokens cannot be judged at all.
    #[error("the JWK Set is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Token(#[from] VerifyError),
}

/// Why one fetch of the key set failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error("the answer is not a JWK Set: {0}")]
    NotAJwkSet(#[from] serde_json::Error),
}

struct Loaded {
    verifier: Arc<Verifier>,
    /// The JWK Set exactly as auth served it.
    document: Bytes,
    fetched_at: Instant,
}

pub struct Jwks {
    url: String,
    client: reqwest::Client,
    issuer: String,
    audience: String,
    leeway: Duration,
    max_age: Duration,
    min_refetch_interval: Duration,
    loaded: RwLock<Option<Loaded>>,
    /// Held while fetching; remembers when the last attempt started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    pub fn new(url: String, client: reqwest::Client, settings: &AuthnSettings) -> Self {
        Self {
            url,
            client,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway,
            max_age: settings.jwks_max_age,
            min_refetch_interval: settings.jwks_min_refetch_interval,
            loaded: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    fn current(&self) -> Option<(Arc<Verifier>, bool)> {
        let guard = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|l| (l.verifier.clone(), l.fetched_at.elapsed() > self.max_age))
    }

    /// The published JWK Set and its age, refetched first (if no fetch
    /// started within the minimum interval) when older than `fresh_for`;
    /// `None` while none was ever fetched.
    pub async fn document(&self, fresh_for: Duration) -> Option<(Bytes, Duration)> {
        let current = || {
            let guard = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            guard
                .as_ref()
                .map(|l| (l.document.clone(), l.fetched_at.elapsed()))
        };
        match current() {
            Some((document, age)) if age < fresh_for => Some((document, age)),
            _ => {
                self.refetch().await;
                current()
            }
        }
    }

    /// Verifies `token`, fetching the key set first if there is none, it is
    /// stale, or the token names an unknown key.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwksError> {
        let verifier = match self.current() {
            Some((verifier, false)) => verifier,
            Some((verifier, true)) => self.refetch().await.unwrap_or(verifier),
            None => self
                .refetch()
                .await
                .ok_or_else(|| JwksError::Unavailable(self.url.clone()))?,
        };
        match verifier.verify(token) {
            Err(VerifyError::UnknownKey(kid)) => match self.refetch().await {
                Some(fresh) => Ok(fresh.verify(token)?),
                None => Err(VerifyError::UnknownKey(kid).into()),
            },
            other => Ok(other?),
        }
    }

    /// Fetches the key set unless another fetch started within the minimum
    /// interval; returns the verifier to use (fresh, or the current one when
    /// fetching was skipped), `None` if there is none at all.
    async fn refetch(&self) -> Option<Arc<Verifier>> {
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|at| at.elapsed() < self.min_refetch_interval) {
            // Someone fetched (or failed to) a moment ago: use what is there.
            return self.current().map(|(v, _)| v);
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok((set, document)) => {
                let verifier = Arc::new(Verifier::new(
                    &set,
                    &self.issuer,
                    &self.audience,
                    self.leeway,
                ));
                tracing::info!(kids = ?verifier.kids().collect::<Vec<_>>(), "JWK Set loaded");
                let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
                *loaded = Some(Loaded {
                    verifier: verifier.clone(),
                    document,
                    fetched_at: Instant::now(),
                });
                Some(verifier)
            }
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWK Set");
                self.current().map(|(v, _)| v)
            }
        }
    }

    async fn fetch(&self) -> Result<(JwkSet, Bytes), FetchError> {
        let document = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok((serde_json::from_slice(&document)?, document))
    }
}
