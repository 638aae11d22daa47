//! Standard Webhooks: `webhook-signature: v1,<base64> [v1a,<base64>]...`
//! over `"{webhook-id}.{webhook-timestamp}.{body}"`, keyed with the
//! base64-decoded part of `whsec_<base64>`; `v1a` is Ed25519. The topic is
//! the body's `type`, read once it verified.

use base64::Engine;
use serde::Deserialize;

use super::{
    BASE64, HeaderRules, Headers, Rejection, Spec, Verified, Verifier, delivery_id_from, malformed,
    optional, parse_timestamp, required, topic_from,
};

const SIGNATURE: &str = "webhook-signature";
const TIMESTAMP: &str = "webhook-timestamp";
const ID: &str = "webhook-id";

pub(super) const SPEC: Spec = Spec {
    name: "standard",
    signature: SIGNATURE,
    timestamped: true,
    headers: HeaderRules {
        sender_prefixes: &["webhook-"],
        secret: &[SIGNATURE],
    },
};

#[derive(Default, Deserialize)]
struct TypedBody {
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// The HMAC key of a `whsec_<base64>` secret (prefix optional); `None`
/// when it is not base64 or decodes to nothing.
pub(super) fn key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
    BASE64.decode(encoded).ok().filter(|key| !key.is_empty())
}

pub(super) fn verify(
    verifier: &Verifier,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Rejection> {
    let header = required(headers, SIGNATURE)?;
    let timestamp = required(headers, TIMESTAMP)?.trim();
    let seconds =
        parse_timestamp(timestamp).ok_or(malformed(TIMESTAMP, "not a Unix time in seconds"))?;
    // The id is part of the signed content: without it nothing verifies.
    let id = optional(headers, ID).ok_or(Rejection::MissingDeliveryId(ID))?;

    let mut symmetric = Vec::new();
    let mut asymmetric = Vec::new();
    let mut parsed_any = false;
    for entry in header.split(' ').filter(|entry| !entry.is_empty()) {
        let Some((version, signature)) = entry.split_once(',') else {
            continue;
        };
        parsed_any = true;
        let Ok(signature) = BASE64.decode(signature) else {
            continue;
        };
        match version {
            "v1" => symmetric.push(signature),
            "v1a" => asymmetric.push(signature),
            // Versions this receiver does not know are skipped (spec).
            _ => {}
        }
    }
    if !parsed_any {
        return Err(malformed(
            SIGNATURE,
            "expected space-separated <version>,<base64>",
        ));
    }
    let content = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
    let hmac_ok = verifier.hmac_matches(&content, &symmetric);
    let ed25519_ok = !asymmetric.is_empty() && verifier.ed25519_matches(&content, &asymmetric);
    if !(hmac_ok | ed25519_ok) {
        return Err(Rejection::BadSignature);
    }
    verifier.check_timestamp(seconds, now)?;
    let event: TypedBody = serde_json::from_slice(body).unwrap_or_default();
    Ok(Verified {
        delivery_id: delivery_id_from(id, ID)?,
        topic: topic_from(event.kind.as_deref()),
    })
}
