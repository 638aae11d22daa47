//! Stripe: the `payment_intent.succeeded` event, and which order it pays.
//!
//! The order is carried in the payment intent's metadata as
//! `metadata.order_id`, the Keel order's UUID: the checkout that creates the
//! payment intent knows the Keel order it is paying for, and Stripe returns
//! metadata untouched on every event about the intent.

use serde::Deserialize;
use uuid::Uuid;

use crate::webhooks::shopify::InvalidPayload;

/// The topic (Stripe's event `type`) that marks an order paid.
pub const PAYMENT_SUCCEEDED: &str = "payment_intent.succeeded";

/// The part of a Stripe event Keel reads.
#[derive(Debug, Deserialize)]
struct Event {
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: PaymentIntent,
}

#[derive(Debug, Deserialize)]
struct PaymentIntent {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// The Keel order a `payment_intent.succeeded` event pays.
pub fn paid_order(body: &[u8]) -> Result<Uuid, InvalidPayload> {
    let event: Event =
        serde_json::from_slice(body).map_err(|e| InvalidPayload::new("body", e.to_string()))?;
    let reference = event
        .data
        .object
        .metadata
        .get("order_id")
        .ok_or_else(|| InvalidPayload::new("data.object.metadata.order_id", "is missing"))?;
    Uuid::parse_str(reference)
        .map_err(|_| InvalidPayload::new("data.object.metadata.order_id", "is not a UUID"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_order_comes_from_the_payment_intents_metadata() {
        let id = Uuid::now_v7();
        let body = format!(
            r#"{{"id":"evt_1","type":"payment_intent.succeeded","data":{{"object":
                {{"id":"pi_1","object":"payment_intent","amount":2000,"metadata":{{"order_id":"{id}"}}}}}}}}"#
        );
        assert_eq!(paid_order(body.as_bytes()).unwrap(), id);
    }

    #[test]
    fn a_missing_or_malformed_reference_names_the_field() {
        let missing = r#"{"data":{"object":{"metadata":{}}}}"#;
        assert_eq!(
            paid_order(missing.as_bytes()).unwrap_err().field,
            "data.object.metadata.order_id"
        );
        let malformed = r#"{"data":{"object":{"metadata":{"order_id":"42"}}}}"#;
        assert_eq!(
            paid_order(malformed.as_bytes()).unwrap_err().message,
            "is not a UUID"
        );
    }
}
