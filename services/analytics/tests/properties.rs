//! Property-based tests of what analytics parses from outside: the query
//! API's parameters (arbitrary text and near-valid timestamps, any clock,
//! any limits) are validated into a period or refused with field errors,
//! never a panic, and every accepted period keeps the promises the rollup
//! queries rely on; and the events it consumes, decoded from arbitrary JSON,
//! add up without a panic.
//!
//! The case count is 256 per property unless `PROPTEST_CASES` says
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use analytics::ingest::event::RawEvent;
use analytics::ingest::store::aggregate;
use analytics::query::params::{self, EVENT_METRICS, Period, RawParams};
use analytics::settings::QuerySettings;
use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;

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

/// An RFC 3339-shaped timestamp whose every part may be out of range (month
/// 13, hour 24, second 60, offset -23:59, year 0 or 9999), or plain text.
fn timestamp() -> impl Strategy<Value = String> {
    let shaped = (
        0u32..=9999,
        0u32..=13,
        0u32..=32,
        0u32..=24,
        0u32..=60,
        0u32..=60,
        proptest::option::of("[0-9]{1,12}"),
        prop_oneof![
            Just("Z".to_owned()),
            Just("z".to_owned()),
            (any::<bool>(), 0u32..=24, 0u32..=60)
                .prop_map(|(plus, h, m)| format!("{}{h:02}:{m:02}", if plus { '+' } else { '-' })),
        ],
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, offset)| {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{offset}")
        });
    prop_oneof![
        4 => shaped,
        1 => "[0-9TZ:.+ -]{0,32}",
        1 => any::<String>(),
    ]
}

fn raw_params() -> impl Strategy<Value = RawParams> {
    let metric = prop_oneof![
        proptest::sample::select(&EVENT_METRICS[..]).prop_map(str::to_owned),
        Just("revenue".to_owned()),
        Just("active_users".to_owned()),
        any::<String>(),
    ];
    let interval = prop_oneof![
        Just("minute".to_owned()),
        Just("hour".to_owned()),
        Just("day".to_owned()),
        any::<String>(),
    ];
    let currency = prop_oneof![Just("EUR".to_owned()), "[A-Za-z]{0,4}", any::<String>()];
    (
        proptest::option::of(timestamp()),
        proptest::option::of(timestamp()),
        proptest::option::of(metric),
        proptest::option::of(interval),
        proptest::option::of(currency),
    )
        .prop_map(|(from, to, metric, interval, currency)| RawParams {
            from,
            to,
            metric,
            interval,
            currency,
        })
}

/// The service's clock: any instant from 1970 to 9999.
fn now() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..253_402_300_799, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

/// Limits as configuration may set them, the absurd ones included.
fn limits() -> impl Strategy<Value = QuerySettings> {
    (
        prop_oneof![Just(1500usize), any::<usize>()],
        prop_oneof![
            Just(Duration::from_secs(400 * 86_400)),
            any::<u64>().prop_map(Duration::from_secs),
        ],
    )
        .prop_map(|(max_points, max_range)| QuerySettings {
            max_points,
            max_range,
        })
}

fn on_boundary(at: DateTime<Utc>, step: TimeDelta) -> bool {
    at.timestamp().rem_euclid(step.num_seconds()) == 0 && at.timestamp_subsec_nanos() == 0
}

/// What every accepted period promises the queries: non-empty, within the
/// configured span, on minute boundaries.
fn check_period(period: Period, limits: &QuerySettings) -> Result<(), TestCaseError> {
    prop_assert!(period.from < period.to, "{period:?}");
    let max = TimeDelta::from_std(limits.max_range).unwrap_or(TimeDelta::MAX);
    prop_assert!(period.to - period.from <= max, "{period:?}");
    prop_assert!(
        on_boundary(period.from, TimeDelta::minutes(1)),
        "{period:?}"
    );
    prop_assert!(on_boundary(period.to, TimeDelta::minutes(1)), "{period:?}");
    Ok(())
}

/// A period the parameters could produce: minute-aligned, anywhere in
/// years 0 to 9999.
fn period() -> impl Strategy<Value = Period> {
    let minutes = -62_167_219_200i64 / 60..253_402_300_799 / 60;
    (minutes.clone(), 1i64..2_000_000).prop_map(|(from, length)| {
        let from = DateTime::from_timestamp(from * 60, 0).unwrap();
        Period {
            from,
            to: from + TimeDelta::minutes(length),
        }
    })
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,14}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event as a (possibly hostile) producer could publish it: the right
/// envelope fields, an order's figures at the limits of `i64`.
fn event_value() -> impl Strategy<Value = Value> {
    let figures = (
        prop_oneof![Just("EUR".to_owned()), any::<String>()],
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), any::<i64>()],
        prop_oneof![
            Just("cancelled".to_owned()),
            Just("pending".to_owned()),
            any::<String>()
        ],
        proptest::option::of(prop_oneof![
            Just("cancelled".to_owned()),
            Just("paid".to_owned())
        ]),
        proptest::option::of(any::<u128>().prop_map(|u| uuid::Uuid::from_u128(u).to_string())),
    )
        .prop_map(
            |(currency, total_cents, status, previous_status, user_id)| {
                serde_json::json!({
                    "currency": currency,
                    "total_cents": total_cents,
                    "status": status,
                    "previous_status": previous_status,
                    "user_id": user_id,
                })
            },
        );
    (
        any::<u128>(),
        prop_oneof![
            Just("order.created".to_owned()),
            Just("order.updated".to_owned()),
            Just("user.registered".to_owned()),
            any::<String>()
        ],
        any::<i16>(),
        // Often the same minute, so amounts meet in one rollup row.
        prop_oneof![
            Just(DateTime::from_timestamp(1_767_225_600, 0).unwrap()),
            now()
        ],
        prop_oneof![3 => figures, 1 => json()],
    )
        .prop_map(|(id, kind, version, occurred_at, data)| {
            serde_json::json!({
                "id": uuid::Uuid::from_u128(id),
                "type": kind,
                "version": version,
                "occurred_at": occurred_at,
                "data": data,
            })
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn summary_parameters_give_a_sound_period_or_field_errors(
        raw in raw_params(),
        now in now(),
        limits in limits(),
    ) {
        match params::summary(&raw, now, &limits) {
            Ok(period) => check_period(period, &limits)?,
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn series_parameters_give_a_sound_request_or_field_errors(
        raw in raw_params(),
        now in now(),
        limits in limits(),
    ) {
        match params::series(&raw, now, &limits) {
            Ok(request) => {
                check_period(request.period, &limits)?;
                let step = request.grain.step();
                prop_assert!(on_boundary(request.period.from, step), "{request:?}");
                // Only count the points when the limit allows few enough to
                // list: that is exactly what the limit is for.
                if limits.max_points <= 100_000 {
                    let points = request.points();
                    prop_assert!(points.len() <= limits.max_points);
                    prop_assert_eq!(points.first().copied(), Some(request.period.from));
                }
            }
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    #[test]
    fn pieces_cover_any_period_exactly_with_aligned_buckets(period in period()) {
        let pieces = params::pieces(period);
        prop_assert!(!pieces.is_empty());
        prop_assert_eq!(pieces.first().unwrap().1, period.from);
        prop_assert_eq!(pieces.last().unwrap().2, period.to);
        for window in pieces.windows(2) {
            prop_assert_eq!(window[0].2, window[1].1);
        }
        for (grain, start, end) in &pieces {
            prop_assert!(start < end);
            prop_assert!(on_boundary(*start, grain.step()), "{grain:?} {start}");
            prop_assert!(on_boundary(*end, grain.step()), "{grain:?} {end}");
        }
    }

    #[test]
    fn consumed_events_decode_and_add_up_without_a_panic(
        values in proptest::collection::vec(prop_oneof![3 => event_value(), 1 => json()], 0..8),
    ) {
        let events: Vec<RawEvent> = values
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RawEvent>(v).ok())
            .filter(|e| e.validate().is_ok())
            .map(RawEvent::normalize)
            .collect();
        for event in &events {
            let _ = event.contributions();
        }
        let sums = aggregate(&events);
        for (grain, _, bucket) in sums.keys() {
            prop_assert!(on_boundary(*bucket, grain.step()), "{grain:?} {bucket}");
        }
    }
}

/// The case the properties found: `duration_trunc` works in i64
/// nanoseconds and fails outside 1677-09-21..2262-04-11, so such a `from`
/// was returned unfloored (and its pieces misaligned) instead of floored.
#[test]
fn a_period_outside_the_nanosecond_range_is_still_floored_to_the_minute() {
    let limits = QuerySettings {
        max_points: 1500,
        max_range: Duration::from_secs(400 * 86_400),
    };
    for (from, to, floored) in [
        (
            "1600-01-01T00:00:30Z",
            "1600-01-02T00:00:00Z",
            "1600-01-01T00:00:00Z",
        ),
        (
            "2300-06-01T10:15:45.5Z",
            "2300-06-02T00:00:00Z",
            "2300-06-01T10:15:00Z",
        ),
    ] {
        let raw = RawParams {
            from: Some(from.to_owned()),
            to: Some(to.to_owned()),
            ..RawParams::default()
        };
        let period = params::summary(&raw, Utc::now(), &limits).unwrap();
        assert_eq!(period.from, floored.parse::<DateTime<Utc>>().unwrap());
        for (grain, start, end) in params::pieces(period) {
            assert!(on_boundary(start, grain.step()), "{grain:?} {start}");
            assert!(on_boundary(end, grain.step()), "{grain:?} {end}");
        }
    }
}
