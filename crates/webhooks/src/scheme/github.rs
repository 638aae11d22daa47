//! GitHub: `X-Hub-Signature-256`, `sha256=<hex HMAC-SHA256 of the body>`.

use super::{
    HeaderRules, Headers, Rejection, Spec, Verified, Verifier, delivery_id_from, malformed,
    optional, required, topic_from,
};

const SIGNATURE: &str = "X-Hub-Signature-256";
const DELIVERY: &str = "X-GitHub-Delivery";

pub(super) const SPEC: Spec = Spec {
    name: "github",
    signature: SIGNATURE,
    timestamped: false,
    headers: HeaderRules {
        sender_prefixes: &["x-github-", "x-hub-"],
        // GitHub also sends the legacy SHA-1 signature; it proves as much.
        secret: &[SIGNATURE, "X-Hub-Signature"],
    },
};

pub(super) fn verify(
    verifier: &Verifier,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Verified, Rejection> {
    let header = required(headers, SIGNATURE)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(malformed(SIGNATURE, "expected sha256=<hex>"))?;
    let signature =
        hex::decode(hex_digest).map_err(|_| malformed(SIGNATURE, "expected sha256=<hex>"))?;
    if !verifier.hmac_matches(&[body], &[signature]) {
        return Err(Rejection::BadSignature);
    }
    let delivery_id = optional(headers, DELIVERY).ok_or(Rejection::MissingDeliveryId(DELIVERY))?;
    Ok(Verified {
        delivery_id: delivery_id_from(delivery_id, DELIVERY)?,
        topic: topic_from(optional(headers, "X-GitHub-Event")),
    })
}
