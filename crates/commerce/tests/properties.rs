//! Property-based tests of what the order listing and order creation parse
//! from clients: keyset cursors (`?cursor=`), statuses (`?status=`) and the
//! fields of a new order. Arbitrary input is refused with the crate's typed
//! errors, never a panic; every cursor we issue decodes to itself.
//!
//! The gateway's `GET /orders` parameter parsing is a private function of
//! its handler built from exactly these pieces (plus chrono's RFC 3339
//! parser and `u32` parsing), so they are what is exercised here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::DateTime;
use keel_commerce::orders::domain::{
    Currency, Email, ExternalId, FulfillmentStatus, NewOrder, OrderStatus, Quantity, RawItem,
    RawNewOrder, Sku, Source, TotalCents, UnitPriceCents,
};
use keel_db::page::{Cursor, InvalidCursor};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uuid::Uuid;

/// 9999-12-31T23:59:59.999999Z in µs: the last instant a cursor may name.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// 256 cases unless `PROPTEST_CASES` says otherwise; failing cases are
/// kept in `tests/properties.proptest-regressions` and replayed first.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    config
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (0..=MAX_MICROS, any::<u128>()).prop_map(|(micros, id)| Cursor {
        created_at: DateTime::from_timestamp_micros(micros).unwrap(),
        id: Uuid::from_u128(id),
    })
}

/// The text inside a cursor, near what we issue as often as not: any
/// integer (signs, leading zeros, overflow), any separator, any id.
fn cursor_text() -> impl Strategy<Value = String> {
    let micros = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        "[+-]?[0-9]{0,24}",
        Just(MAX_MICROS.to_string()),
        Just((MAX_MICROS + 1).to_string()),
    ];
    let id = prop_oneof![
        any::<u128>().prop_map(|u| Uuid::from_u128(u).to_string()),
        any::<u128>().prop_map(|u| Uuid::from_u128(u).simple().to_string()),
        "[0-9a-fA-F{}-]{0,40}",
        any::<String>(),
    ];
    (
        micros,
        prop_oneof![Just("."), Just(".."), Just(""), Just(",")],
        id,
    )
        .prop_map(|(m, sep, id)| format!("{m}{sep}{id}"))
}

fn raw_item() -> impl Strategy<Value = RawItem> {
    (
        prop_oneof!["[A-Za-z0-9._-]{1,64}", any::<String>()],
        prop_oneof![1i64..=10_000, any::<i64>()],
        prop_oneof![0i64..=1_000_000_000, any::<i64>()],
    )
        .prop_map(|(sku, quantity, unit_price_cents)| RawItem {
            sku,
            quantity,
            unit_price_cents,
        })
}

fn raw_order() -> impl Strategy<Value = RawNewOrder> {
    (
        prop_oneof![Just("EUR".to_owned()), "[A-Z]{3}", any::<String>()],
        // A few lines, or one line repeated around the 100-line limit.
        prop_oneof![
            4 => proptest::collection::vec(raw_item(), 0..6),
            1 => (raw_item(), 99usize..=102).prop_map(|(item, n)| vec![item; n]),
        ],
        proptest::option::of(any::<String>()),
        proptest::option::of(prop_oneof![
            "[a-z]{1,8}@[a-z]{1,8}\\.[a-z]{2,3}",
            any::<String>()
        ]),
    )
        .prop_map(
            |(currency, items, external_id, customer_email)| RawNewOrder {
                currency,
                items,
                external_id,
                customer_email,
            },
        )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_cursor_we_issue_decodes_to_itself(cursor in cursor()) {
        let encoded = cursor.encode();
        prop_assert_eq!(Cursor::decode(&encoded).unwrap(), cursor);
        // Safe in a query string as it is.
        prop_assert!(encoded.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn arbitrary_text_is_a_cursor_or_invalid_cursor(text in any::<String>()) {
        match Cursor::decode(&text) {
            Ok(cursor) => prop_assert!((0..=MAX_MICROS).contains(&cursor.created_at.timestamp_micros())),
            Err(error) => prop_assert!(matches!(error, InvalidCursor), "{error}"),
        }
    }

    #[test]
    fn near_valid_cursors_decode_within_range_or_are_refused(text in cursor_text()) {
        let encoded = URL_SAFE_NO_PAD.encode(&text);
        match Cursor::decode(&encoded) {
            Ok(cursor) => {
                let micros = cursor.created_at.timestamp_micros();
                prop_assert!((0..=MAX_MICROS).contains(&micros), "{text}");
                // What was accepted is what a re-issued cursor names.
                prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
            }
            Err(error) => prop_assert!(matches!(error, InvalidCursor), "{error}"),
        }
    }

    #[test]
    fn a_status_parses_only_from_its_own_name(text in prop_oneof![
        any::<String>(),
        proptest::sample::select(&["pending", "paid", "fulfilled", "cancelled", "Paid", " paid"][..])
            .prop_map(str::to_owned),
    ]) {
        match OrderStatus::parse(&text) {
            Ok(status) => prop_assert_eq!(status.as_str(), text.as_str()),
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    #[test]
    fn every_status_pair_is_a_transition_or_an_illegal_transition(
        from in proptest::sample::select(&OrderStatus::ALL[..]),
        to in proptest::sample::select(&OrderStatus::ALL[..]),
    ) {
        match from.transition_to(to) {
            Ok(next) => prop_assert_eq!(next, to),
            Err(illegal) => prop_assert_eq!((illegal.from, illegal.to), (from, to)),
        }
    }

    #[test]
    fn order_fields_parse_to_what_their_rules_allow(text in any::<String>(), number in any::<i64>()) {
        if let Ok(currency) = Currency::parse(&text) {
            prop_assert!(currency.as_str().len() == 3 && currency.as_str().bytes().all(|b| b.is_ascii_uppercase()));
        }
        if let Ok(sku) = Sku::parse(&text) {
            prop_assert!((1..=Sku::MAX_LEN).contains(&sku.as_str().len()));
        }
        if let Ok(email) = Email::parse(&text) {
            prop_assert!(email.as_str().len() <= 254 && email.as_str().contains('@'));
        }
        if let Ok(id) = ExternalId::parse(&text) {
            prop_assert!(!id.as_str().chars().any(char::is_control));
        }
        if let Ok(status) = FulfillmentStatus::parse(&text) {
            prop_assert!((1..=FulfillmentStatus::MAX_LEN).contains(&status.as_str().len()));
        }
        prop_assert_eq!(Quantity::parse(number).is_ok(), (1..=Quantity::MAX).contains(&number));
        prop_assert_eq!(
            UnitPriceCents::parse(number).is_ok(),
            (0..=UnitPriceCents::MAX).contains(&number)
        );
        prop_assert_eq!(TotalCents::parse(number).is_ok(), (0..=TotalCents::MAX).contains(&number));
    }

    #[test]
    fn a_new_order_parses_or_names_each_bad_field(raw in raw_order()) {
        let items = raw.items.len();
        match NewOrder::parse(raw, None, Source::Api) {
            Ok(order) => {
                prop_assert_eq!(order.items.len(), items);
                // The documented bound that keeps every total inside i64.
                prop_assert!((0..=TotalCents::MAX).contains(&order.total_cents()));
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                prop_assert!(errors.iter().all(|e| !e.field.is_empty() && !e.message.is_empty()));
            }
        }
    }
}
