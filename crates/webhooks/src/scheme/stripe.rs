//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]` over
//! `"{t}.{body}"`, keyed with the `whsec_...` string as given; the delivery
//! id and topic are the event's `id` and `type`, read once it verified.

use serde::Deserialize;

use super::{
    HeaderRules, Headers, Rejection, Spec, Verified, Verifier, delivery_id_from, malformed,
    parse_timestamp, required, topic_from,
};

const SIGNATURE: &str = "Stripe-Signature";
const ID: &str = "the event's id field";

pub(super) const SPEC: Spec = Spec {
    name: "stripe",
    signature: SIGNATURE,
    timestamped: true,
    headers: HeaderRules {
        sender_prefixes: &["stripe-"],
        secret: &[SIGNATURE],
    },
};

#[derive(Default, Deserialize)]
struct StripeEvent {
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub(super) fn verify(
    verifier: &Verifier,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
    now: i64,
) -> Result<Verified, Rejection> {
    let header = required(headers, SIGNATURE)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => {
                timestamp = Some(t);
            }
            // Undecodable entries cannot match; a valid one next to them may.
            Some(("v1", v1)) => signatures.extend(hex::decode(v1).ok()),
            // v0 (test mode, legacy) and future schemes are not ours to check.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(malformed(SIGNATURE, "no t= element"))?;
    if signatures.is_empty() {
        return Err(malformed(SIGNATURE, "no v1= signature"));
    }
    let seconds = parse_timestamp(timestamp).ok_or(malformed(SIGNATURE, "t is not a Unix time"))?;
    if !verifier.hmac_matches(&[timestamp.as_bytes(), b".", body], &signatures) {
        return Err(Rejection::BadSignature);
    }
    verifier.check_timestamp(seconds, now)?;
    // Only now is the body trusted enough to parse.
    let event: StripeEvent = serde_json::from_slice(body).unwrap_or_default();
    let delivery_id = event.id.ok_or(Rejection::MissingDeliveryId(ID))?;
    Ok(Verified {
        delivery_id: delivery_id_from(&delivery_id, ID)?,
        topic: topic_from(event.kind.as_deref()),
    })
}
