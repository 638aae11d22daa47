//! Keel's access tokens: the claims, the auth service's [`Signer`] and the
//! [`Verifier`] every other service (first of all the gateway) uses.
//!
//! # Layout
//! - [`claims`]: [`Claims`] and [`Role`], the token's payload.
//! - [`keys`]: [`SigningKey`] (a private key with its `kid`), PEM loading and
//!   generation (RS256 by default, EdDSA selectable).
//! - [`signer`]: [`Signer`]: one key signs, every loaded key is published in
//!   the JWK Set so tokens of a retired key verify until they expire.
//! - [`verifier`]: [`Verifier`], built from a JWK Set. The algorithm comes
//!   from the key, never from the token header (RFC 8725 §3.1), so `alg:
//!   none` and HS256-signed-with-the-public-key tokens cannot pass.
//! - `remote` (feature `remote`): `RemoteJwks`, an issuer's JWK Set
//!   fetched over HTTP and cached, for every service that verifies tokens
//!   (the gateway at the edge, analytics behind it).
//!
//! No database or Redis here, and no HTTP or async in the default build.

pub mod claims;
pub mod keys;
#[cfg(feature = "remote")]
pub mod remote;
pub mod signer;
pub mod verifier;

pub use claims::{Claims, Role};
pub use jsonwebtoken::jwk::JwkSet;
pub use keys::{KeyAlgorithm, SigningKey};
pub use signer::Signer;
pub use verifier::{Verifier, VerifyError};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures loading keys or signing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the private key is not a valid {algorithm} PEM key: {reason}")]
    InvalidKey {
        algorithm: KeyAlgorithm,
        reason: String,
    },
    #[error("unknown key algorithm {0:?} (expected RS256 or EdDSA)")]
    UnknownAlgorithm(String),
    #[error("cannot generate a key: {0}")]
    Generate(String),
    #[error("no signing key configured")]
    NoKey,
    #[error("two keys share the kid {0}")]
    DuplicateKid(String),
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}
