//! Batched captures and the group commit against a real PostgreSQL.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use keel_testkit::database::TestDatabase;
use keel_webhooks::capture::capture_many;
use keel_webhooks::group_commit::{GroupCommit, GroupCommitOptions};
use keel_webhooks::{Captured, NewEvent, PreparedCapture, capture};
use uuid::Uuid;

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_webhooks::MIGRATIONS],
    )
    .await
}

async fn count(db: &TestDatabase, sql: &str) -> i64 {
    let client = db.pool().get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

fn prepared(source: &str, delivery_id: &str) -> PreparedCapture {
    let body = format!("{{\"delivery\": \"{delivery_id}\"}}");
    PreparedCapture::new(&NewEvent {
        source,
        topic: Some("orders/create"),
        delivery_id,
        body: body.as_bytes(),
        headers: &serde_json::json!({"x-shopify-topic": "orders/create"}),
    })
    .unwrap()
}

#[tokio::test]
async fn a_batch_stores_new_deliveries_once_and_names_the_first_event_for_repeats() {
    let db = database().await;
    let client = db.pool().get().await.unwrap();
    // Stored before the batch: the batch's copy is a redelivery.
    let earlier = capture(
        &client,
        &NewEvent {
            source: "shopify",
            topic: None,
            delivery_id: "old",
            body: b"{}",
            headers: &serde_json::json!({}),
        },
    )
    .await
    .unwrap()
    .event_id();

    let batch = vec![
        prepared("shopify", "b"),
        prepared("shopify", "a"),
        prepared("shopify", "old"),
        prepared("shopify", "b"), // twice within the batch
        prepared("github", "b"),  // same id, other source: its own event
    ];
    let outcomes = capture_many(&client, &batch).await.unwrap();

    assert_eq!(
        outcomes,
        vec![
            Captured::Stored(batch[0].event_id),
            Captured::Stored(batch[1].event_id),
            Captured::Duplicate(earlier),
            Captured::Duplicate(batch[0].event_id),
            Captured::Stored(batch[4].event_id),
        ]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 4);
    // Exactly one job and one webhook.received per stored event.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE message_type = 'webhook.process'"
        )
        .await,
        4
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM outbox WHERE message_type = 'webhook.received'"
        )
        .await,
        4
    );
    let body: Vec<u8> = client
        .query_one(
            "SELECT body FROM webhook_events WHERE id = $1",
            &[&batch[1].event_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, br#"{"delivery": "a"}"#);
}

#[tokio::test]
async fn concurrent_captures_through_the_group_commit_are_each_stored_and_answered_once() {
    let db = database().await;
    let group = GroupCommit::start(
        db.pool().clone(),
        GroupCommitOptions {
            max_batch: 16,
            // Small: batches also split on bytes.
            max_batch_bytes: 200,
            concurrent_batches: 3,
            ..GroupCommitOptions::default()
        },
    );
    // 300 distinct deliveries plus every tenth one sent a second time, all
    // at once: batches form and overlap, and repeats may meet their first
    // copy in the same batch or in a concurrent one.
    let mut tasks = Vec::new();
    for n in 0..330 {
        let group = group.clone();
        let delivery = format!("d-{}", if n < 300 { n } else { (n - 300) * 10 });
        tasks.push(tokio::spawn(async move {
            (
                delivery.clone(),
                group.capture(prepared("shopify", &delivery)).await.unwrap(),
            )
        }));
    }
    let mut stored = HashSet::new();
    let mut by_delivery: std::collections::HashMap<String, Vec<Captured>> = Default::default();
    for task in tasks {
        let (delivery, outcome) = task.await.unwrap();
        if let Captured::Stored(id) = outcome {
            assert!(stored.insert(id), "{id} answered as stored twice");
        }
        by_delivery.entry(delivery).or_default().push(outcome);
    }
    assert_eq!(stored.len(), 300);
    for (delivery, outcomes) in &by_delivery {
        let ids: HashSet<Uuid> = outcomes.iter().map(|o| o.event_id()).collect();
        assert_eq!(ids.len(), 1, "{delivery}: answers name different events");
        assert_eq!(
            outcomes.iter().filter(|o| !o.is_duplicate()).count(),
            1,
            "{delivery}: exactly one answer is the stored one"
        );
    }
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 300);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 600);
}

#[tokio::test]
async fn a_delivery_the_database_refuses_fails_alone_and_the_rest_of_its_batch_is_stored() {
    let db = database().await;
    let group = GroupCommit::start(
        db.pool().clone(),
        GroupCommitOptions {
            max_batch: 64,
            max_batch_bytes: 1024 * 1024,
            concurrent_batches: 1,
            ..GroupCommitOptions::default()
        },
    );
    // Hold the only committer: its first batch waits on a row this
    // transaction inserted and has not committed (ON CONFLICT waits for it).
    let mut holder = db.pool().get().await.unwrap();
    let tx = holder.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO webhook_events (id, source, delivery_id, body, headers) \
         VALUES ($1, 'shopify', 'blocker', '', '{}')",
        &[&Uuid::now_v7()],
    )
    .await
    .unwrap();
    let blocked = {
        let group = group.clone();
        tokio::spawn(async move { group.capture(prepared("shopify", "blocker")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // These queue up behind it and so form the next batch together.
    // PostgreSQL text cannot hold NUL: that delivery id fails any statement
    // it is part of.
    let mut tasks = Vec::new();
    for delivery in ["good-1", "bad-\0", "good-2", "good-3"] {
        let group = group.clone();
        tasks.push(tokio::spawn(async move {
            group.capture(prepared("shopify", delivery)).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    tx.rollback().await.unwrap();

    assert!(matches!(blocked.await.unwrap(), Ok(Captured::Stored(_))));
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(outcomes[1].is_err(), "the NUL delivery id must fail");
    for (i, outcome) in outcomes.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert!(
            matches!(outcome, Ok(Captured::Stored(_))),
            "delivery {i}: {outcome:?}"
        );
    }
    assert_eq!(count(&db, "SELECT count(*) FROM webhook_events").await, 4);
    assert_eq!(count(&db, "SELECT count(*) FROM outbox").await, 8);
}
