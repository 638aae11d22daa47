//! Capturing events against a real PostgreSQL.
#![allow(clippy::unwrap_used)]

use keel_testkit::database::TestDatabase;
use keel_webhooks::{Captured, NewEvent, capture};

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_webhooks::MIGRATIONS],
    )
    .await
}

async fn count(db: &TestDatabase, table: &str) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

fn event<'a>(delivery_id: &'a str, body: &'a [u8], headers: &'a serde_json::Value) -> NewEvent<'a> {
    NewEvent {
        source: "shopify",
        topic: Some("orders/create"),
        delivery_id,
        body,
        headers,
    }
}

#[tokio::test]
async fn a_captured_event_keeps_its_bytes_and_queues_its_job_and_domain_event() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    // Not UTF-8, not JSON: stored as received all the same.
    let body = b"{\"a\": 1,  \"b\":\xff}".as_slice();
    let headers = serde_json::json!({"x-shopify-topic": "orders/create"});

    let tx = client.transaction().await.unwrap();
    let captured = capture(&tx, &event("d-1", body, &headers)).await.unwrap();
    tx.commit().await.unwrap();

    let Captured::Stored(id) = captured else {
        panic!("expected a new event, got {captured:?}");
    };
    let row = client
        .query_one(
            "SELECT body, headers, status, attempts, topic FROM webhook_events WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Vec<u8>>(0), body);
    assert_eq!(row.get::<_, serde_json::Value>(1), headers);
    assert_eq!(row.get::<_, String>(2), "received");
    assert_eq!(row.get::<_, i32>(3), 0);
    assert_eq!(
        row.get::<_, Option<String>>(4).as_deref(),
        Some("orders/create")
    );

    let types: Vec<String> = client
        .query("SELECT message_type FROM outbox ORDER BY message_type", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(types, ["webhook.process", "webhook.received"]);
    let job: serde_json::Value = client
        .query_one(
            "SELECT payload FROM outbox WHERE message_type = 'webhook.process'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(job["data"]["event_id"], id.to_string());
}

#[tokio::test]
async fn a_redelivery_stores_nothing_and_names_the_first_event() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let headers = serde_json::json!({});

    let tx = client.transaction().await.unwrap();
    let first = capture(&tx, &event("d-1", b"{}", &headers)).await.unwrap();
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let second = capture(&tx, &event("d-1", b"{\"changed\":true}", &headers))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(second, Captured::Duplicate(first.event_id()));
    assert_eq!(count(&db, "webhook_events").await, 1);
    assert_eq!(count(&db, "outbox").await, 2);
}

#[tokio::test]
async fn concurrent_deliveries_of_one_id_store_one_event() {
    let db = database().await;
    let headers = serde_json::json!({});
    let attempts = (0..8).map(|_| {
        let pool = db.pool().clone();
        let headers = headers.clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let captured = capture(&tx, &event("same", b"{}", &headers)).await.unwrap();
            tx.commit().await.unwrap();
            captured
        })
    });
    let results: Vec<Captured> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let stored: Vec<_> = results.iter().filter(|c| !c.is_duplicate()).collect();
    assert_eq!(stored.len(), 1, "{results:?}");
    assert!(results.iter().all(|c| c.event_id() == stored[0].event_id()));
    assert_eq!(count(&db, "webhook_events").await, 1);
    assert_eq!(count(&db, "outbox").await, 2);
}

#[tokio::test]
async fn the_same_delivery_id_from_two_sources_is_two_events() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let headers = serde_json::json!({});
    let tx = client.transaction().await.unwrap();
    let a = capture(&tx, &event("d-1", b"{}", &headers)).await.unwrap();
    let b = capture(
        &tx,
        &NewEvent {
            source: "github",
            ..event("d-1", b"{}", &headers)
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(!a.is_duplicate() && !b.is_duplicate());
    assert_eq!(count(&db, "webhook_events").await, 2);
}
