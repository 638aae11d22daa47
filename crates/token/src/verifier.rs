//! Verifying access tokens against a JWK Set.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::Claims;

/// Why a token was refused. Callers answer 401 for all of them; only
/// [`UnknownKey`](VerifyError::UnknownKey) deserves a different reaction
/// (refetch the JWK Set once: the issuer may have rotated its key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token names no key id")]
    MissingKid,
    #[error("no key {0:?} in the key set")]
    UnknownKey(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's audience is wrong")]
    WrongAudience,
    #[error("the token's issuer is wrong")]
    WrongIssuer,
    #[error("the token's algorithm does not match its key")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token's claims are invalid")]
    InvalidClaims,
}

struct VerificationKey {
    decoding: DecodingKey,
    validation: Validation,
}

/// Checks signature, `iss`, `aud`, `exp` and `nbf` (with a small leeway for
/// clock skew). Built once per JWK Set; cheap to share behind an `Arc`.
pub struct Verifier {
    keys: HashMap<String, VerificationKey>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    /// Keys without a `kid`, symmetric keys and algorithms Keel does not
    /// sign with are skipped: a token can only ever be checked with the
    /// algorithm its key was published for.
    pub fn new(set: &JwkSet, issuer: &str, audience: &str, leeway: Duration) -> Self {
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                    if p.curve == EllipticCurve::Ed25519 =>
                {
                    Algorithm::EdDSA
                }
                _ => continue,
            };
            let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let mut validation = Validation::new(algorithm);
            validation.leeway = leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
            keys.insert(
                kid,
                VerificationKey {
                    decoding,
                    validation,
                },
            );
        }
        Self { keys }
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        // The header is only read to pick the key; its `alg` is then
        // checked against the key's algorithm by `Validation::new(alg)`.
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.ok_or(VerifyError::MissingKid)?;
        let key = self
            .keys
            .get(&kid)
            .ok_or_else(|| VerifyError::UnknownKey(kid.clone()))?;
        jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => VerifyError::Expired,
                ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
                ErrorKind::InvalidAudience => VerifyError::WrongAudience,
                ErrorKind::InvalidIssuer => VerifyError::WrongIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    VerifyError::WrongAlgorithm
                }
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Json(_) => {
                    VerifyError::Malformed
                }
                _ => VerifyError::InvalidClaims,
            })
    }
}
