//! Password hashing: argon2id off the async runtime, bounded.
//!
//! Each hash costs `memory_kib` of RAM and tens of milliseconds of CPU. It
//! runs on `spawn_blocking` so async workers keep serving, behind a
//! semaphore so a login flood queues instead of exhausting memory and the
//! blocking pool. Legacy bcrypt hashes (the systems Keel replaces) verify
//! too and are reported as needing a re-hash.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::settings::PasswordSettings;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("argon2 failed: {0}")]
    Argon2(String),
    #[error("the hashing task was abandoned: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the hashing semaphore is closed")]
    Closed,
}

/// The outcome of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    No,
    Yes,
    /// Correct, but stored with bcrypt or weaker argon2 parameters.
    YesNeedsRehash,
}

#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    /// A real argon2id hash of a random secret: unknown emails are verified
    /// against it so they cost exactly what a wrong password costs.
    dummy: Arc<str>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl Hasher {
    pub fn new(settings: &PasswordSettings) -> Result<Self, HashError> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hash_now(&params, &random)?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(settings.permits())),
            dummy: Arc::from(dummy),
        })
    }

    /// A PHC string (`$argon2id$v=19$m=...`).
    pub async fn hash(&self, password: &str) -> Result<String, HashError> {
        let params = self.params.clone();
        let password = password.to_owned();
        self.blocking(move || hash_now(&params, &password)).await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when
    /// there is no account, so both paths take the same time.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verified, HashError> {
        let known = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy.to_string(), str::to_owned);
        let password = password.to_owned();
        let params = self.params.clone();
        let verified = self
            .blocking(move || verify_now(&params, &password, &stored))
            .await?;
        Ok(if known { verified } else { Verified::No })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| HashError::Closed)?;
        Ok(tokio::task::spawn_blocking(work).await?)
    }

    /// Hashes synchronously (the benchmark's baseline, the CLI).
    pub fn hash_blocking(&self, password: &str) -> Result<String, HashError> {
        hash_now(&self.params, password)
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_now(params: &Params, password: &str) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

fn verify_now(params: &Params, password: &str, stored: &str) -> Verified {
    if is_bcrypt(stored) {
        return match bcrypt::verify(password, stored) {
            Ok(true) => Verified::YesNeedsRehash,
            _ => Verified::No,
        };
    }
    let Ok(parsed) = PasswordHash::new(stored) else {
        return Verified::No;
    };
    // The parameters come from the stored hash, not from `params`.
    if argon2(params)
        .verify_password(password.as_bytes(), &parsed)
        .is_err()
    {
        return Verified::No;
    }
    let current = parsed.algorithm.as_str() == "argon2id"
        && Params::try_from(&parsed).is_ok_and(|p| {
            p.m_cost() >= params.m_cost()
                && p.t_cost() >= params.t_cost()
                && p.p_cost() >= params.p_cost()
        });
    if current {
        Verified::Yes
    } else {
        Verified::YesNeedsRehash
    }
}

fn is_bcrypt(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$", "$2x$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(&PasswordSettings {
            memory_kib: 7168,
            iterations: 1,
            parallelism: 1,
            max_concurrent_hashes: 2,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hasher = hasher();
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher.verify("correct horse", Some(&hash)).await.unwrap(),
            Verified::Yes
        );
        assert_eq!(
            hasher.verify("wrong horse", Some(&hash)).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn a_legacy_bcrypt_hash_verifies_and_asks_for_a_rehash() {
        let hasher = hasher();
        let legacy = bcrypt::hash("correct horse", 4).unwrap();
        assert_eq!(
            hasher.verify("correct horse", Some(&legacy)).await.unwrap(),
            Verified::YesNeedsRehash
        );
        assert_eq!(
            hasher.verify("nope", Some(&legacy)).await.unwrap(),
            Verified::No
        );
    }

    #[tokio::test]
    async fn an_unknown_account_never_verifies() {
        assert_eq!(
            hasher().verify("anything", None).await.unwrap(),
            Verified::No
        );
    }
}
