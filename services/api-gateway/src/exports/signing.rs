//! Signed download links: `?expires=<unix seconds>&signature=<hex>` where
//! the signature is HMAC-SHA256 over `"{export id}.{expires}"`. A browser
//! follows the link without a Bearer token; whoever holds it may download
//! until it expires, so links are short-lived and minted per `GET`.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// Why a link was refused (both answer 403; the detail says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error("the download link has expired")]
    Expired,
    #[error("the download link is not valid")]
    Invalid,
}

/// Signs and verifies download links with the configured secret.
#[derive(Clone)]
pub struct LinkSigner {
    /// Keyed once; cloned per link.
    keyed: HmacSha256,
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// HMAC takes keys of any length; the error exists only in the trait's
    /// signature.
    pub fn new(secret: &SecretString) -> Result<Self, hmac::digest::InvalidLength> {
        Ok(Self {
            keyed: HmacSha256::new_from_slice(secret.expose_secret().as_bytes())?,
        })
    }

    fn mac(&self, id: Uuid, expires: i64) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(format!("{id}.{expires}").as_bytes());
        mac
    }

    /// The hex signature of a link to `id` valid until `expires` (unix s).
    pub fn sign(&self, id: Uuid, expires: i64) -> String {
        hex::encode(self.mac(id, expires).finalize().into_bytes())
    }

    /// Checks a presented link at `now` (unix s). The signature is compared
    /// in constant time; the expiry is checked after it, so an attacker
    /// learns nothing about an unsigned expiry.
    pub fn verify(
        &self,
        id: Uuid,
        expires: i64,
        signature: &str,
        now: i64,
    ) -> Result<(), LinkRefused> {
        let presented = hex::decode(signature).map_err(|_| LinkRefused::Invalid)?;
        self.mac(id, expires)
            .verify_slice(&presented)
            .map_err(|_| LinkRefused::Invalid)?;
        if now >= expires {
            return Err(LinkRefused::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(&SecretString::from("k".repeat(32))).unwrap()
    }

    #[test]
    fn a_fresh_link_verifies_until_it_expires() {
        let id = Uuid::now_v7();
        let signature = signer().sign(id, 1_000);
        assert_eq!(signer().verify(id, 1_000, &signature, 999), Ok(()));
        assert_eq!(
            signer().verify(id, 1_000, &signature, 1_000),
            Err(LinkRefused::Expired)
        );
    }

    #[test]
    fn changing_the_id_the_expiry_or_the_signature_invalidates_it() {
        let id = Uuid::now_v7();
        let signature = signer().sign(id, 1_000);
        let other_key = LinkSigner::new(&SecretString::from("o".repeat(32))).unwrap();
        let mut flipped = signature.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap_or_default();
        for (id, expires, signature, signer) in [
            (Uuid::now_v7(), 1_000, signature.as_str(), signer()),
            (id, 2_000, signature.as_str(), signer()),
            (id, 1_000, flipped.as_str(), signer()),
            (id, 1_000, "not hex", signer()),
            (id, 1_000, "", signer()),
            (id, 1_000, signature.as_str(), other_key),
        ] {
            assert_eq!(
                signer.verify(id, expires, signature, 0),
                Err(LinkRefused::Invalid)
            );
        }
    }
}
