//! Private signing keys: loading from PEM, generating, and their public JWK.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    self, AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, OctetKeyPairParameters,
    OctetKeyPairType, PublicKeyUse, ThumbprintHash,
};
use jsonwebtoken::{Algorithm, EncodingKey};

use crate::{Error, Result};

/// The asymmetric algorithms Keel signs with. Symmetric (HS*) algorithms are
/// deliberately absent: a verifier holding a shared secret could mint tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256: what every JWT library verifies.
    #[default]
    Rs256,
    /// Ed25519: smaller keys and faster signing, fewer verifiers support it.
    EdDsa,
}

impl KeyAlgorithm {
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "RS256" | "rs256" => Ok(Self::Rs256),
            "EdDSA" | "eddsa" | "EDDSA" => Ok(Self::EdDsa),
            other => Err(Error::UnknownAlgorithm(other.to_owned())),
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl std::fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        })
    }
}

/// A private key, its `kid` and its public half as a JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    algorithm: KeyAlgorithm,
    encoding: EncodingKey,
    public: Jwk,
}

impl std::fmt::Debug for SigningKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 (`PRIVATE KEY`) or, for RSA, PKCS#1 (`RSA PRIVATE
    /// KEY`) PEM. Without an explicit `kid`, the RFC 7638 thumbprint of the
    /// public key is used: stable across restarts and replicas.
    pub fn from_pem(algorithm: KeyAlgorithm, pem: &[u8], kid: Option<String>) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidKey { algorithm, reason };
        let (encoding, parameters) = match algorithm {
            KeyAlgorithm::Rs256 => {
                let encoding =
                    EncodingKey::from_rsa_pem(pem).map_err(|e| invalid(e.to_string()))?;
                let public = Jwk::from_encoding_key(&encoding, Algorithm::RS256)
                    .map_err(|e| invalid(e.to_string()))?;
                (encoding, public.algorithm)
            }
            KeyAlgorithm::EdDsa => {
                let encoding = EncodingKey::from_ed_pem(pem).map_err(|e| invalid(e.to_string()))?;
                // jsonwebtoken cannot derive an Ed25519 JWK; aws-lc-rs can.
                let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(encoding.inner())
                    .map_err(|e| invalid(e.to_string()))?;
                let parameters = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
                });
                (encoding, parameters)
            }
        };
        let mut public = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(match algorithm {
                    KeyAlgorithm::Rs256 => jwk::KeyAlgorithm::RS256,
                    KeyAlgorithm::EdDsa => jwk::KeyAlgorithm::EdDSA,
                }),
                ..Default::default()
            },
            algorithm: parameters,
        };
        let kid = kid
            .filter(|k| !k.trim().is_empty())
            .unwrap_or_else(|| public.thumbprint(ThumbprintHash::SHA256));
        public.common.key_id = Some(kid.clone());
        Ok(Self {
            kid,
            algorithm,
            encoding,
            public,
        })
    }

    /// A new private key as a PKCS#8 PEM (RSA: 2048 bits, the RS256 norm).
    pub fn generate_pem(algorithm: KeyAlgorithm) -> Result<String> {
        let der = match algorithm {
            KeyAlgorithm::Rs256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|e| Error::Generate(e.to_string()))?;
                let der = pair.as_der().map_err(|e| Error::Generate(e.to_string()))?;
                der.as_ref().to_vec()
            }
            KeyAlgorithm::EdDsa => {
                let pair =
                    Ed25519KeyPair::generate().map_err(|e| Error::Generate(e.to_string()))?;
                let doc = pair
                    .to_pkcs8v1()
                    .map_err(|e| Error::Generate(e.to_string()))?;
                doc.as_ref().to_vec()
            }
        };
        Ok(pem_encode("PRIVATE KEY", &der))
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The public half, with `kid`, `use: sig` and `alg`.
    pub fn public_jwk(&self) -> &Jwk {
        &self.public
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}
