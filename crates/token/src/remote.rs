//! A JWK Set fetched over HTTP and cached: how a service that does not sign
//! tokens (the gateway, analytics) verifies them (feature `remote`).
//!
//! Tokens are verified locally: the JWK Set is fetched on first use, kept
//! for `max_age`, and fetched again early only when a token names a `kid`
//! we do not know (the issuer rotated its key). Fetches are serialised and
//! at most one starts per `min_refetch_interval`, so tokens with made-up
//! kids cannot turn into a flood of requests to the issuer.
//!
//! [`RemoteJwks::document`] hands out the bytes the issuer served, so a
//! service can republish the set (the gateway's `/.well-known/jwks.json`)
//! without asking the issuer once per client.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{Claims, JwkSet, Verifier, VerifyError};

/// Where the JWK Set lives and what a token must say to pass.
#[derive(Debug, Clone)]
pub struct RemoteJwksOptions {
    /// The issuer's `/.well-known/jwks.json`.
    pub url: String,
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The set is fetched again after this long (key rotation).
    pub max_age: Duration,
    /// At most one fetch starts per this interval.
    pub min_refetch_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteJwksError {
    /// No key set could be fetched yet: tokens cannot be judged at all (the
    /// URL tried).
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
    /// The JWK Set exactly as the issuer served it.
    document: Bytes,
    fetched_at: Instant,
}

/// The cached JWK Set of one issuer; share it behind an `Arc`.
pub struct RemoteJwks {
    options: RemoteJwksOptions,
    client: reqwest::Client,
    loaded: RwLock<Option<Loaded>>,
    /// Held while fetching; remembers when the last attempt started.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RemoteJwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJwks")
            .field("url", &self.options.url)
            .finish_non_exhaustive()
    }
}

impl RemoteJwks {
    /// Nothing is fetched until the first token or [`document`](Self::document)
    /// call: a service starts even while the issuer is down.
    pub fn new(options: RemoteJwksOptions, client: reqwest::Client) -> Self {
        Self {
            options,
            client,
            loaded: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.options.url
    }

    fn current(&self) -> Option<(Arc<Verifier>, bool)> {
        let guard = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|l| {
            (
                l.verifier.clone(),
                l.fetched_at.elapsed() > self.options.max_age,
            )
        })
    }

    /// The JWK Set as served and its age, refetched first (if no fetch
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
    pub async fn verify(&self, token: &str) -> Result<Claims, RemoteJwksError> {
        let verifier = match self.current() {
            Some((verifier, false)) => verifier,
            Some((verifier, true)) => self.refetch().await.unwrap_or(verifier),
            None => self
                .refetch()
                .await
                .ok_or_else(|| RemoteJwksError::Unavailable(self.options.url.clone()))?,
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
        if last.is_some_and(|at| at.elapsed() < self.options.min_refetch_interval) {
            // Someone fetched (or failed to) a moment ago: use what is there.
            return self.current().map(|(v, _)| v);
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok((set, document)) => {
                let verifier = Arc::new(Verifier::new(
                    &set,
                    &self.options.issuer,
                    &self.options.audience,
                    self.options.leeway,
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
                tracing::warn!(url = %self.options.url, error = %e, "cannot fetch the JWK Set");
                self.current().map(|(v, _)| v)
            }
        }
    }

    async fn fetch(&self) -> Result<(JwkSet, Bytes), FetchError> {
        let document = self
            .client
            .get(&self.options.url)
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        Ok((serde_json::from_slice(&document)?, document))
    }
}
