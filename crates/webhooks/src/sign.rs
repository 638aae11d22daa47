//! The sender's side: signatures exactly as each scheme's senders compute
//! them. For tests, benchmarks and tools that post webhooks to Keel; the
//! receiving side never calls these (it verifies with `verify_slice`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// `X-Shopify-Hmac-Sha256`.
pub fn shopify(secret: &str, body: &[u8]) -> String {
    BASE64.encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// `X-Hub-Signature-256`.
pub fn github(secret: &str, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
    )
}

/// `Stripe-Signature` for one secret (`whsec_...`, used as given).
pub fn stripe(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let t = timestamp.to_string();
    let v1 = hex::encode(hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", body]));
    format!("t={t},v1={v1}")
}

/// `webhook-signature` (`v1,<base64>`) for one `whsec_<base64>` secret;
/// `None` when the secret is not base64.
pub fn standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let t = timestamp.to_string();
    let signature = hmac_sha256(&key, &[id.as_bytes(), b".", t.as_bytes(), b".", body]);
    Some(format!("v1,{}", BASE64.encode(signature)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // The same official vectors the verifier is tested with.
    #[test]
    fn signing_reproduces_the_published_vectors() {
        assert_eq!(
            github("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert_eq!(
            standard(
                "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }
}
