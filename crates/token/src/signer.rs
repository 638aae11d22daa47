//! Signing access tokens and publishing the verification keys.

use std::time::Duration;

use jsonwebtoken::Header;
use jsonwebtoken::jwk::JwkSet;

use crate::{Claims, Error, Result, SigningKey, Verifier};

/// One key signs; every key (the signing one and retired ones kept for
/// rotation) is published, so tokens signed before a rotation keep
/// verifying until they expire and nobody is logged out.
#[derive(Debug, Clone)]
pub struct Signer {
    active: SigningKey,
    retired: Vec<SigningKey>,
}

impl Signer {
    /// `active` signs; `retired` only verify. Kids must be unique.
    pub fn new(active: SigningKey, retired: Vec<SigningKey>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for key in std::iter::once(&active).chain(&retired) {
            if !seen.insert(key.kid()) {
                return Err(Error::DuplicateKid(key.kid().to_owned()));
            }
        }
        Ok(Self { active, retired })
    }

    /// A compact JWS with the active key's `kid` in the header.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let mut header = Header::new(self.active.algorithm().jwt());
        header.kid = Some(self.active.kid().to_owned());
        jsonwebtoken::encode(&header, claims, self.active.encoding()).map_err(Error::Sign)
    }

    pub fn active_kid(&self) -> &str {
        self.active.kid()
    }

    /// The JWK Set served at `/.well-known/jwks.json`: public keys only.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: std::iter::once(&self.active)
                .chain(&self.retired)
                .map(|k| k.public_jwk().clone())
                .collect(),
        }
    }

    /// A verifier over this signer's own keys (the auth service checks its
    /// own bearer tokens this way, exactly as the gateway does).
    pub fn verifier(&self, issuer: &str, audience: &str, leeway: Duration) -> Verifier {
        Verifier::new(&self.jwks(), issuer, audience, leeway)
    }
}
