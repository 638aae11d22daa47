//! Stripe: the `payment_intent.succeeded` event, which order it pays, and
//! what it collected.
//!
//! The order is carried in the payment intent's metadata as
//! `metadata.order_id`, the Keel order's UUID: the checkout that creates the
//! payment intent knows the Keel order it is paying for, and Stripe returns
//! metadata untouched on every event about the intent.
//!
//! What was paid is `amount_received` in `currency`. Stripe documents
//! `amount` as the amount *intended* to be collected and `amount_received`
//! as the amount the intent *collected*; they differ when a manual capture
//! took less than was authorised. Only what was collected pays an order.
//! Stripe sends the currency in lowercase and counts amounts in its own
//! minor units, which differ from ISO 4217's for a few currencies (ISK is
//! two-decimal at Stripe, MGA zero-decimal); both are brought to Keel's
//! before the order's total is compared
//! ([`keel_commerce::orders::mark_paid`]).

use chrono::{DateTime, Utc};
use keel_commerce::orders::domain::{Currency, Payment};
use serde::Deserialize;
use uuid::Uuid;

use crate::webhooks::money;
use crate::webhooks::shopify::InvalidPayload;

/// The topic (Stripe's event `type`) that marks an order paid.
pub const PAYMENT_SUCCEEDED: &str = "payment_intent.succeeded";

/// Currencies Stripe counts without a minor unit (its "zero-decimal"
/// list); ISK is not one of them at Stripe, whatever ISO 4217 says.
const STRIPE_ZERO_DECIMALS: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];
/// Currencies Stripe counts in thousandths.
const STRIPE_THREE_DECIMALS: &[&str] = &["BHD", "JOD", "KWD", "OMR", "TND"];

/// The part of a Stripe event Keel reads.
#[derive(Debug, Deserialize)]
struct Event {
    /// When Stripe created the event (Unix seconds): its version. A
    /// confirmation not newer than the one that paid the order changes
    /// nothing (ADR 0025).
    #[serde(default)]
    created: Option<i64>,
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
    // Options so that a missing field is named, not a serde message.
    #[serde(default)]
    amount_received: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
}

/// What a `payment_intent.succeeded` event says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidIntent {
    /// The Keel order it pays.
    pub order_id: Uuid,
    /// What Stripe collected, in Keel's minor units.
    pub payment: Payment,
    /// The event's `created`, when it has one.
    pub version: Option<DateTime<Utc>>,
}

/// The Keel order a `payment_intent.succeeded` event pays, and what it paid.
pub fn paid_intent(body: &[u8]) -> Result<PaidIntent, InvalidPayload> {
    let event: Event =
        serde_json::from_slice(body).map_err(|e| InvalidPayload::new("body", e.to_string()))?;
    let version = event
        .created
        .map(|seconds| {
            DateTime::from_timestamp(seconds, 0)
                .ok_or_else(|| InvalidPayload::new("created", "is not a Unix time"))
        })
        .transpose()?;
    let intent = event.data.object;
    let reference = intent
        .metadata
        .get("order_id")
        .ok_or_else(|| InvalidPayload::new("data.object.metadata.order_id", "is missing"))?;
    let order_id = Uuid::parse_str(reference)
        .map_err(|_| InvalidPayload::new("data.object.metadata.order_id", "is not a UUID"))?;
    let currency = intent
        .currency
        .ok_or_else(|| InvalidPayload::new("data.object.currency", "is missing"))?;
    let currency = Currency::parse(&currency.to_ascii_uppercase())
        .map_err(|m| InvalidPayload::new("data.object.currency", m))?;
    let received = intent
        .amount_received
        .ok_or_else(|| InvalidPayload::new("data.object.amount_received", "is missing"))?;
    let amount_cents = to_keel_minor_units(received, currency.as_str())
        .map_err(|m| InvalidPayload::new("data.object.amount_received", m))?;
    Ok(PaidIntent {
        order_id,
        payment: Payment {
            amount_cents,
            currency,
        },
        version,
    })
}

/// Digits after the decimal point in Stripe's amounts of `currency`.
fn stripe_exponent(currency: &str) -> u32 {
    if STRIPE_ZERO_DECIMALS.contains(&currency) {
        0
    } else if STRIPE_THREE_DECIMALS.contains(&currency) {
        3
    } else {
        2
    }
}

/// A Stripe amount of `currency` in Keel's minor units of it, exactly.
fn to_keel_minor_units(amount: i64, currency: &str) -> Result<i64, String> {
    if amount < 0 {
        return Err("must not be negative".to_owned());
    }
    let (stripe, keel) = (stripe_exponent(currency), money::exponent(currency));
    if keel >= stripe {
        amount
            .checked_mul(10i64.pow(keel - stripe))
            .ok_or_else(|| "is too large".to_owned())
    } else {
        let divisor = 10i64.pow(stripe - keel);
        if amount % divisor != 0 {
            return Err(format!(
                "{amount} is not a whole number of {currency} minor units"
            ));
        }
        Ok(amount / divisor)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_order_and_the_amount_collected_come_from_the_payment_intent() {
        let id = Uuid::now_v7();
        // A manual capture that took less than was authorised.
        let body = format!(
            r#"{{"id":"evt_1","type":"payment_intent.succeeded","data":{{"object":
                {{"id":"pi_1","object":"payment_intent","amount":2000,"amount_received":1500,
                  "currency":"eur","metadata":{{"order_id":"{id}"}}}}}}}}"#
        );
        let paid = paid_intent(body.as_bytes()).unwrap();
        assert_eq!(paid.order_id, id);
        assert_eq!(paid.payment.amount_cents, 1500);
        assert_eq!(paid.payment.currency.as_str(), "EUR");
    }

    #[test]
    fn a_missing_or_malformed_field_is_named() {
        let id = Uuid::now_v7();
        let intent = |fields: &str| format!(r#"{{"data":{{"object":{{{fields}}}}}}}"#);
        let paid = r#""amount_received":100,"currency":"usd""#;
        for (object, field, message) in [
            (
                r#""metadata":{}"#.to_owned(),
                "data.object.metadata.order_id",
                "is missing",
            ),
            (
                format!(r#""metadata":{{"order_id":"42"}},{paid}"#),
                "data.object.metadata.order_id",
                "is not a UUID",
            ),
            (
                format!(r#""metadata":{{"order_id":"{id}"}},"amount":100,"currency":"usd""#),
                "data.object.amount_received",
                "is missing",
            ),
            (
                format!(r#""metadata":{{"order_id":"{id}"}},"amount_received":100"#),
                "data.object.currency",
                "is missing",
            ),
            (
                format!(
                    r#""metadata":{{"order_id":"{id}"}},"amount_received":100,"currency":"xyz""#
                ),
                "data.object.currency",
                "is not an ISO 4217 currency code",
            ),
            (
                format!(
                    r#""metadata":{{"order_id":"{id}"}},"amount_received":-1,"currency":"usd""#
                ),
                "data.object.amount_received",
                "must not be negative",
            ),
        ] {
            let error = paid_intent(intent(&object).as_bytes()).unwrap_err();
            assert_eq!(
                (error.field.as_str(), error.message.as_str()),
                (field, message)
            );
        }
    }

    #[test]
    fn stripe_amounts_become_keel_minor_units() {
        assert_eq!(to_keel_minor_units(1999, "USD"), Ok(1999));
        assert_eq!(to_keel_minor_units(500, "JPY"), Ok(500));
        assert_eq!(to_keel_minor_units(5120, "KWD"), Ok(5120));
        // ISK: two decimals at Stripe, none in ISO 4217.
        assert_eq!(to_keel_minor_units(50_000, "ISK"), Ok(500));
        assert!(to_keel_minor_units(50_050, "ISK").is_err());
        // MGA: none at Stripe, two in ISO 4217.
        assert_eq!(to_keel_minor_units(500, "MGA"), Ok(50_000));
    }
}
