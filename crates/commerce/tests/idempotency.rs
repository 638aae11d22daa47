//! Idempotency records against a real PostgreSQL.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use keel_commerce::orders::idempotency::{
    self, Claim, Fingerprint, Key, NextAction, StoredResponse,
};
use keel_testkit::database::TestDatabase;
use uuid::Uuid;

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_commerce::orders::MIGRATIONS],
    )
    .await
}

/// The first response to a keyed `POST /orders`.
fn created() -> StoredResponse {
    StoredResponse {
        status: 201,
        body: b"{\"id\":1}".to_vec(),
        location: Some("/orders/1".into()),
    }
}

#[tokio::test]
async fn an_expired_key_is_taken_over_and_pruned() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::new_v4();
    let first = Fingerprint::of("POST", "/orders", b"{}");
    let second = Fingerprint::of("POST", "/orders", b"{ }");
    let response = StoredResponse {
        status: 201,
        body: b"{}".to_vec(),
        location: None,
    };

    // A record that already expired.
    let tx = client.transaction().await.unwrap();
    let past = Utc::now() - Duration::seconds(1);
    assert_eq!(
        idempotency::claim(&tx, user, "k", first, past)
            .await
            .unwrap(),
        Claim::Claimed
    );
    idempotency::complete(&tx, user, "k", &response)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Reusing the key with another request is allowed once it expired.
    let tx = client.transaction().await.unwrap();
    let future = Utc::now() + Duration::hours(1);
    assert_eq!(
        idempotency::claim(&tx, user, "k", second, future)
            .await
            .unwrap(),
        Claim::Claimed
    );
    tx.rollback().await.unwrap();

    assert_eq!(idempotency::prune_expired(&client, 100).await.unwrap(), 1);
    assert_eq!(idempotency::prune_expired(&client, 100).await.unwrap(), 0);
}

#[tokio::test]
async fn a_live_key_replays_or_refuses() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::new_v4();
    let fingerprint = Fingerprint::of("POST", "/orders", b"{}");
    let response = created();
    let expires = Utc::now() + Duration::hours(1);

    let tx = client.transaction().await.unwrap();
    idempotency::claim(&tx, user, "k", fingerprint, expires)
        .await
        .unwrap();
    idempotency::complete(&tx, user, "k", &response)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let tx = client.transaction().await.unwrap();
    assert_eq!(
        idempotency::claim(&tx, user, "k", fingerprint, expires)
            .await
            .unwrap(),
        Claim::Replay(response)
    );
    let other = Fingerprint::of("POST", "/orders", b"[]");
    assert_eq!(
        idempotency::claim(&tx, user, "k", other, expires)
            .await
            .unwrap(),
        Claim::Mismatch
    );
}

fn key(user_id: Uuid, fingerprint: Fingerprint) -> Key<'static> {
    Key {
        user_id,
        key: "k",
        fingerprint,
        expires_at: Utc::now() + Duration::hours(1),
    }
}

#[tokio::test]
async fn begin_proceeds_once_then_replays_the_same_request_and_refuses_another() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::new_v4();
    let fingerprint = Fingerprint::of("POST", "/orders", b"{}");
    let response = created();

    let NextAction::Proceed(tx) = idempotency::begin(&mut client, Some(key(user, fingerprint)))
        .await
        .unwrap()
    else {
        panic!("a new key proceeds");
    };
    idempotency::complete(&tx, user, "k", &response)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    match idempotency::begin(&mut client, Some(key(user, fingerprint)))
        .await
        .unwrap()
    {
        NextAction::Replay(stored) => assert_eq!(stored, response),
        other => panic!("expected a replay, got {other:?}"),
    }
    let other = Fingerprint::of("POST", "/orders", b"[]");
    assert!(matches!(
        idempotency::begin(&mut client, Some(key(user, other)))
            .await
            .unwrap(),
        NextAction::Conflict
    ));
    // Without a key there is nothing to look up: always the work.
    assert!(matches!(
        idempotency::begin(&mut client, None).await.unwrap(),
        NextAction::Proceed(_)
    ));
}

#[tokio::test]
async fn a_concurrent_begin_with_the_same_key_waits_for_the_first_and_replays_it() {
    let db = database().await;
    let mut first = db.pool().get().await.unwrap();
    let mut second = db.pool().get().await.unwrap();
    let user = Uuid::new_v4();
    let fingerprint = Fingerprint::of("POST", "/orders", b"{}");
    let response = created();

    let NextAction::Proceed(tx) = idempotency::begin(&mut first, Some(key(user, fingerprint)))
        .await
        .unwrap()
    else {
        panic!("a new key proceeds");
    };
    let waiting = tokio::spawn(async move {
        match idempotency::begin(&mut second, Some(key(user, fingerprint)))
            .await
            .unwrap()
        {
            NextAction::Replay(stored) => stored,
            other => panic!("expected a replay, got {other:?}"),
        }
    });
    // The second request is blocked on the uncommitted claim.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    idempotency::complete(&tx, user, "k", &response)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap(), response);
}
