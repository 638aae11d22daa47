//! The committed schemas in `proto/schemas/` must match the code.
//! Run with `UPDATE_SNAPSHOTS=1` to rewrite them after an intended change.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use keel_contracts::{
    DomainEvent, Envelope, Job,
    events::{OrderSnapshot, OrderUpdated},
    jobs::WebhookProcess,
};
use uuid::Uuid;

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/schemas")
}

#[test]
fn committed_schemas_match_the_code() {
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    for (file, generated) in keel_contracts::schema::all() {
        let path = schema_dir().join(file);
        if update {
            std::fs::write(&path, &generated).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert_eq!(
            committed, generated,
            "{file} drifted from the contracts crate; rerun with UPDATE_SNAPSHOTS=1 and commit"
        );
    }
}

#[test]
fn a_job_serialises_to_the_documented_envelope() {
    let id = Uuid::parse_str("0190d6b2-7c3a-7a4e-9a8e-1b2c3d4e5f60").unwrap();
    let event_id = Uuid::parse_str("0190d6b2-7c3a-7a4e-9a8e-000000000001").unwrap();
    let at = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let job = Envelope::with_id(id, at, Job::WebhookProcess(WebhookProcess { event_id }));

    let json = serde_json::to_value(&job).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "id": id,
            "occurred_at": "2026-11-22T10:00:00Z",
            "version": 1,
            "type": "webhook.process",
            "data": {"event_id": event_id}
        })
    );
    let back: Envelope<Job> = serde_json::from_value(json).unwrap();
    assert_eq!(back, job);
}

#[test]
fn an_order_update_round_trips_with_its_flattened_snapshot() {
    let event = Envelope::new(DomainEvent::OrderUpdated(OrderUpdated {
        order: OrderSnapshot {
            order_id: Uuid::now_v7(),
            user_id: None,
            status: "paid".into(),
            currency: "EUR".into(),
            total_cents: 1299,
            source: "webhook:shopify".into(),
        },
        previous_status: "pending".into(),
    }));
    assert_eq!(event.message_type(), "order.updated");
    let text = serde_json::to_string(&event).unwrap();
    let back: Envelope<DomainEvent> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, event);
}

#[test]
fn an_unknown_message_type_is_rejected_not_guessed() {
    let text = r#"{"id":"0190d6b2-7c3a-7a4e-9a8e-1b2c3d4e5f60","occurred_at":"2026-11-22T10:00:00Z","version":1,"type":"order.exploded","data":{}}"#;
    assert!(serde_json::from_str::<Envelope<DomainEvent>>(text).is_err());
}
