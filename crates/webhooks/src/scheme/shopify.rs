//! Shopify: `X-Shopify-Hmac-Sha256`, the base64 HMAC-SHA256 of the body.

use base64::Engine;

use super::{
    BASE64, HeaderRules, Headers, Rejection, Spec, Verified, Verifier, delivery_id_from, malformed,
    optional, required, topic_from,
};

const SIGNATURE: &str = "X-Shopify-Hmac-Sha256";

pub(super) const SPEC: Spec = Spec {
    name: "shopify",
    signature: SIGNATURE,
    timestamped: false,
    headers: HeaderRules {
        sender_prefixes: &["x-shopify-"],
        secret: &[SIGNATURE],
    },
};

pub(super) fn verify(
    verifier: &Verifier,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Verified, Rejection> {
    let header = required(headers, SIGNATURE)?;
    let signature = BASE64
        .decode(header.trim())
        .map_err(|_| malformed(SIGNATURE, "not base64"))?;
    if !verifier.hmac_matches(&[body], &[signature]) {
        return Err(Rejection::BadSignature);
    }
    // Event-Id is stable across Shopify's retries of one event;
    // Webhook-Id identifies one delivery attempt on older API versions.
    let delivery_id = optional(headers, "X-Shopify-Event-Id")
        .or_else(|| optional(headers, "X-Shopify-Webhook-Id"))
        .ok_or(Rejection::MissingDeliveryId(
            "X-Shopify-Event-Id or X-Shopify-Webhook-Id",
        ))?;
    Ok(Verified {
        delivery_id: delivery_id_from(delivery_id, "X-Shopify-Event-Id")?,
        topic: topic_from(optional(headers, "X-Shopify-Topic")),
    })
}
