//! Property-based tests of what a consumer reads from a delivery besides
//! its body: the trace context in its headers and the attempt number that
//! picks its retry tier. Whoever can publish to a queue controls both.
//!
//! The body itself is decoded with `serde_json` into the contracts' types
//! (`Incoming::decode`); `keel-contracts`' own properties cover that with
//! arbitrary bytes. `Incoming` is only built from a broker delivery, so its
//! decode is not called here directly.
//!
//! The case count is 256 per property unless `PROPTEST_CASES` says
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_messaging::trace::FieldTableExtractor;
use keel_messaging::{RetryDecision, RetryPolicy};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand::SeedableRng;

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

/// A `traceparent` as a publisher may send it: well formed, nearly so
/// (wrong lengths, upper case, zero ids, other versions) or anything.
fn traceparent() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            "[0-9a-fA-F]{2}",
            "[0-9a-f]{30,34}",
            "[0-9a-f]{14,18}",
            "[0-9a-fA-F]{1,3}",
            "(-[ -~]{0,8})?"
        )
            .prop_map(|(v, t, s, f, rest)| format!("{v}-{t}-{s}-{f}{rest}").into_bytes()),
        Just(b"00-00000000000000000000000000000000-0000000000000000-01".to_vec()),
        "[0-9a-f -]{0,64}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..96),
    ]
}

fn header_value() -> impl Strategy<Value = AMQPValue> {
    prop_oneof![
        4 => traceparent().prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        2 => "[ -~]{0,64}".prop_map(|s| AMQPValue::ShortString(ShortString::from(s))),
        1 => any::<i64>().prop_map(AMQPValue::LongLongInt),
        1 => any::<u32>().prop_map(AMQPValue::LongUInt),
        1 => any::<bool>().prop_map(AMQPValue::Boolean),
        1 => Just(AMQPValue::Void),
    ]
}

fn headers() -> impl Strategy<Value = FieldTable> {
    let name = prop_oneof![
        Just("traceparent".to_owned()),
        Just("tracestate".to_owned()),
        Just("x-keel-attempt".to_owned()),
        "[a-z-]{1,16}",
    ];
    proptest::collection::vec((name, header_value()), 0..6).prop_map(|pairs| {
        let mut table = FieldTable::default();
        for (name, value) in pairs {
            table.insert(ShortString::from(name), value);
        }
        table
    })
}

/// A retry schedule `AmqpSettings::validate` accepts: 0 to 8 delays of 1 ms
/// to ~49 days, jitter in [0, 1].
fn policy() -> impl Strategy<Value = RetryPolicy> {
    (
        proptest::collection::vec(1u64..=u64::from(u32::MAX), 0..8),
        prop_oneof![Just(0.0), Just(1.0), 0.0f64..=1.0],
    )
        .prop_map(|(delays, jitter)| RetryPolicy {
            delays: delays.into_iter().map(Duration::from_millis).collect(),
            jitter,
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_headers_yield_a_trace_context_or_none(headers in headers()) {
        let extractor = FieldTableExtractor(&headers);
        let keys = extractor.keys();
        prop_assert_eq!(keys.len(), headers.inner().len());
        let context = TraceContextPropagator::new().extract(&extractor);
        let span = context.span();
        let span_context = span.span_context();
        if span_context.is_valid() {
            // Only a string header can have carried it.
            let value = extractor.get("traceparent");
            prop_assert!(value.is_some());
            // The propagator is lenient about lengths (`0a-<30 hex>-<14
            // hex>-a` passes), so compare the number, not the text.
            let named = value
                .unwrap()
                .split('-')
                .nth(1)
                .and_then(|t| u128::from_str_radix(t, 16).ok());
            prop_assert_eq!(named, Some(u128::from_be_bytes(span_context.trace_id().to_bytes())));
            prop_assert!(span_context.is_remote());
        }
    }

    #[test]
    fn a_well_formed_traceparent_is_continued(
        trace_id in any::<u128>().prop_filter("non-zero", |t| *t != 0),
        span_id in any::<u64>().prop_filter("non-zero", |s| *s != 0),
        sampled in any::<bool>(),
        short in any::<bool>(),
    ) {
        let value = format!("00-{trace_id:032x}-{span_id:016x}-0{}", u8::from(sampled));
        let mut headers = FieldTable::default();
        let value = if short {
            AMQPValue::ShortString(ShortString::from(value))
        } else {
            AMQPValue::LongString(LongString::from(value))
        };
        headers.insert(ShortString::from("traceparent"), value);
        let context = TraceContextPropagator::new().extract(&FieldTableExtractor(&headers));
        let span = context.span();
        let span_context = span.span_context();
        prop_assert!(span_context.is_valid());
        prop_assert_eq!(span_context.trace_id().to_string(), format!("{trace_id:032x}"));
        prop_assert_eq!(span_context.is_sampled(), sampled);
    }

    #[test]
    fn any_attempt_number_gets_a_tier_within_the_schedule_or_is_exhausted(
        policy in policy(),
        attempt in prop_oneof![0u32..12, any::<u32>(), Just(u32::MAX)],
        seed in any::<u64>(),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        match policy.after_failure(attempt, &mut rng) {
            RetryDecision::Retry { tier, delay, next_attempt } => {
                let index = usize::try_from(attempt.max(1) - 1).unwrap();
                prop_assert_eq!(Some(&tier), policy.delays.get(index));
                prop_assert!(delay <= tier && delay >= Duration::from_millis(1).min(tier));
                prop_assert_eq!(next_attempt, attempt.max(1) + 1);
                prop_assert!(next_attempt <= policy.max_attempts());
            }
            RetryDecision::Exhausted => {
                prop_assert!(attempt.max(1) >= policy.max_attempts());
            }
        }
    }
}
