//! Property-based tests of the wire contracts: whatever bytes or JSON arrive
//! on a queue, decoding an envelope, a job or an event answers with a
//! `serde_json::Error`, never a panic; and every message we can build
//! survives the trip through JSON unchanged.
//!
//! The case count is 256 per property unless `PROPTEST_CASES` says
//! otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Utc};
use keel_contracts::events::{
    ExportCompleted, ExportFailed, OrderSnapshot, OrderUpdated, UserLoggedIn, UserRegistered,
    WebhookReceived,
};
use keel_contracts::jobs::{ExportRun, WebhookProcess};
use keel_contracts::{DomainEvent, Envelope, Job, MessageBody};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use uuid::Uuid;

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

/// Every message type, and a few that are not.
const TYPES: &[&str] = &[
    "webhook.process",
    "export.run",
    "user.registered",
    "user.logged_in",
    "order.created",
    "order.updated",
    "webhook.received",
    "export.completed",
    "export.failed",
    "order.deleted",
    "",
];

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Any instant chrono can hold, to the nanosecond.
fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    let min = DateTime::<Utc>::MIN_UTC.timestamp();
    let max = DateTime::<Utc>::MAX_UTC.timestamp();
    (min..max, 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

fn snapshot() -> impl Strategy<Value = OrderSnapshot> {
    (
        uuid(),
        proptest::option::of(uuid()),
        any::<String>(),
        any::<String>(),
        any::<i64>(),
        any::<String>(),
    )
        .prop_map(
            |(order_id, user_id, status, currency, total_cents, source)| OrderSnapshot {
                order_id,
                user_id,
                status,
                currency,
                total_cents,
                source,
            },
        )
}

fn event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        (uuid(), instant()).prop_map(|(user_id, registered_at)| DomainEvent::UserRegistered(
            UserRegistered {
                user_id,
                registered_at
            }
        )),
        (uuid(), uuid()).prop_map(|(user_id, session_id)| DomainEvent::UserLoggedIn(
            UserLoggedIn {
                user_id,
                session_id
            }
        )),
        snapshot().prop_map(DomainEvent::OrderCreated),
        (snapshot(), any::<String>()).prop_map(|(order, previous_status)| {
            DomainEvent::OrderUpdated(OrderUpdated {
                order,
                previous_status,
            })
        }),
        (uuid(), any::<String>(), any::<Option<String>>()).prop_map(|(event_id, source, topic)| {
            DomainEvent::WebhookReceived(WebhookReceived {
                event_id,
                source,
                topic,
            })
        }),
        (uuid(), uuid(), any::<i64>(), any::<i64>()).prop_map(
            |(export_id, user_id, rows_written, bytes)| {
                DomainEvent::ExportCompleted(ExportCompleted {
                    export_id,
                    user_id,
                    rows_written,
                    bytes,
                })
            }
        ),
        (uuid(), uuid(), any::<String>()).prop_map(|(export_id, user_id, error)| {
            DomainEvent::ExportFailed(ExportFailed {
                export_id,
                user_id,
                error,
            })
        }),
    ]
}

fn job() -> impl Strategy<Value = Job> {
    prop_oneof![
        uuid().prop_map(|event_id| Job::WebhookProcess(WebhookProcess { event_id })),
        uuid().prop_map(|export_id| Job::ExportRun(ExportRun { export_id })),
    ]
}

fn envelope<T: MessageBody + std::fmt::Debug>(
    body: impl Strategy<Value = T>,
) -> impl Strategy<Value = Envelope<T>> {
    (uuid(), instant(), body).prop_map(|(id, at, body)| Envelope::with_id(id, at, body))
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
        uuid().prop_map(|u| Value::from(u.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    "[a-z_]{1,12}",
                    proptest::sample::select(
                        &[
                            "id",
                            "type",
                            "data",
                            "version",
                            "occurred_at",
                            "event_id",
                            "export_id",
                            "user_id",
                            "order_id",
                            "status",
                            "order",
                        ][..]
                    )
                    .prop_map(str::to_owned),
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An envelope-shaped object whose fields are each right, missing or
/// arbitrary: the decoder's every branch, not just its first check.
fn near_envelope() -> impl Strategy<Value = Value> {
    let field = |good: BoxedStrategy<Value>| {
        prop_oneof![
            6 => good.prop_map(Some),
            1 => Just(None),
            1 => json().prop_map(Some),
        ]
    };
    (
        field(uuid().prop_map(|u| u.to_string().into()).boxed()),
        field(instant().prop_map(|t| t.to_rfc3339().into()).boxed()),
        field(any::<u16>().prop_map(Value::from).boxed()),
        field(
            proptest::sample::select(TYPES)
                .prop_map(Value::from)
                .boxed(),
        ),
        field(
            prop_oneof![
                event().prop_map(|e| serde_json::to_value(e).unwrap()["data"].clone()),
                job().prop_map(|j| serde_json::to_value(j).unwrap()["data"].clone()),
            ]
            .boxed(),
        ),
    )
        .prop_map(|(id, occurred_at, version, kind, data)| {
            let mut object = serde_json::Map::new();
            for (name, value) in [
                ("id", id),
                ("occurred_at", occurred_at),
                ("version", version),
                ("type", kind),
                ("data", data),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            Value::Object(object)
        })
}

/// Decodes `bytes` as every message shape a consumer reads; only
/// `serde_json::Error` may come back.
fn decode_all(bytes: &[u8]) {
    let _: Result<Envelope<Job>, serde_json::Error> = serde_json::from_slice(bytes);
    let _: Result<Envelope<DomainEvent>, serde_json::Error> = serde_json::from_slice(bytes);
    let _: Result<Job, serde_json::Error> = serde_json::from_slice(bytes);
    let _: Result<DomainEvent, serde_json::Error> = serde_json::from_slice(bytes);
}

fn decode_all_values(value: &Value) {
    let _: Result<Envelope<Job>, serde_json::Error> = serde_json::from_value(value.clone());
    let _: Result<Envelope<DomainEvent>, serde_json::Error> = serde_json::from_value(value.clone());
    let _: Result<Job, serde_json::Error> = serde_json::from_value(value.clone());
    let _: Result<DomainEvent, serde_json::Error> = serde_json::from_value(value.clone());
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_decode_to_a_message_or_a_json_error(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        decode_all(&bytes);
    }

    #[test]
    fn arbitrary_json_decodes_to_a_message_or_a_json_error(value in json()) {
        decode_all(&serde_json::to_vec(&value).unwrap());
        decode_all_values(&value);
    }

    #[test]
    fn near_valid_envelopes_decode_to_a_message_or_a_json_error(value in near_envelope()) {
        decode_all(&serde_json::to_vec(&value).unwrap());
        decode_all_values(&value);
    }

    #[test]
    fn a_valid_envelope_with_its_bytes_cut_or_changed_never_panics(
        envelope in envelope(event()),
        cut in any::<prop::sample::Index>(),
        change in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let bytes = serde_json::to_vec(&envelope).unwrap();
        decode_all(&bytes[..cut.index(bytes.len())]);
        let mut changed = bytes.clone();
        changed[change.index(bytes.len())] = byte;
        decode_all(&changed);
    }

    #[test]
    fn every_event_envelope_survives_the_trip_through_json(envelope in envelope(event())) {
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let decoded: Envelope<DomainEvent> = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(decoded.message_type(), envelope.message_type());
        prop_assert_eq!(&decoded, &envelope);
        // The wire form names its type where the bus routes on it.
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(value["type"].as_str(), Some(envelope.message_type()));
    }

    #[test]
    fn every_job_envelope_survives_the_trip_through_json(envelope in envelope(job())) {
        let bytes = serde_json::to_vec(&envelope).unwrap();
        let decoded: Envelope<Job> = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&decoded, &envelope);
        // A job never decodes as an event, nor the other way round.
        prop_assert!(serde_json::from_slice::<Envelope<DomainEvent>>(&bytes).is_err());
    }
}
