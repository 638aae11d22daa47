//! Writing API orders against a real PostgreSQL: the order, its lines and
//! its `order.created` outbox row go in one statement, together or not at
//! all, and without a NOTIFY (which would serialise concurrent commits;
//! ADR 0027).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::Utc;
use keel_commerce::orders::domain::{NewOrder, RawItem, RawNewOrder, Source};
use keel_commerce::orders::idempotency::{self, Fingerprint, Key, NextAction, StoredResponse};
use keel_commerce::orders::{self, Error};
use keel_testkit::database::TestDatabase;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_commerce::orders::MIGRATIONS],
    )
    .await
}

fn new_order(user: Uuid, external_id: Option<&str>) -> NewOrder {
    let raw = RawNewOrder {
        currency: "EUR".into(),
        items: vec![
            RawItem {
                sku: "TSHIRT-M".into(),
                quantity: 2,
                unit_price_cents: 1500,
            },
            RawItem {
                sku: "MUG".into(),
                quantity: 1,
                unit_price_cents: 899,
            },
        ],
        external_id: external_id.map(str::to_owned),
        customer_email: None,
    };
    NewOrder::parse(raw, Some(user), Source::Api).unwrap()
}

/// A session LISTENing on the relays' channel of the database's schema,
/// handing over every notification's payload.
struct Listener {
    client: tokio_postgres::Client,
    channel: String,
    notifications: mpsc::UnboundedReceiver<String>,
}

impl Listener {
    async fn start(db: &TestDatabase) -> Self {
        // The channel the outbox NOTIFYs on: `outbox_<schema>`.
        let channel: String = db
            .pool()
            .get()
            .await
            .unwrap()
            .query_one("SELECT 'outbox_' || current_schema()", &[])
            .await
            .unwrap()
            .get(0);
        let (client, mut connection) = tokio_postgres::connect(&db.url(), NoTls).await.unwrap();
        let (sender, notifications) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        let _ = sender.send(n.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN \"{channel}\""))
            .await
            .unwrap();
        Self {
            client,
            channel,
            notifications,
        }
    }

    /// Every notification committed before this call (PostgreSQL delivers
    /// them in commit order, so once our own marker arrives, everything
    /// committed earlier has arrived too).
    async fn heard_so_far(&mut self) -> Vec<String> {
        let marker = Uuid::new_v4().to_string();
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&self.channel, &marker])
            .await
            .unwrap();
        let mut heard = Vec::new();
        loop {
            let payload = tokio::time::timeout(Duration::from_secs(10), self.notifications.recv())
                .await
                .expect("our own marker notification never arrived")
                .expect("the listening session ended");
            if payload == marker {
                return heard;
            }
            heard.push(payload);
        }
    }
}

async fn count(db: &TestDatabase, sql: &str, order_id: Uuid) -> i64 {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(sql, &[&order_id])
        .await
        .unwrap()
        .get(0)
}

async fn written(db: &TestDatabase, order_id: Uuid) -> (i64, i64, i64) {
    (
        count(db, "SELECT count(*) FROM orders WHERE id = $1", order_id).await,
        count(
            db,
            "SELECT count(*) FROM order_items WHERE order_id = $1",
            order_id,
        )
        .await,
        count(
            db,
            "SELECT count(*) FROM outbox \
             WHERE message_type = 'order.created' AND payload->'data'->>'order_id' = $1::uuid::text",
            order_id,
        )
        .await,
    )
}

#[tokio::test]
async fn an_order_commits_with_its_lines_and_event_and_notifies_no_one() {
    let db = database().await;
    let mut listener = Listener::start(&db).await;
    // The listener works: a NOTIFY on the channel is heard.
    {
        let client = db.pool().get().await.unwrap();
        keel_outbox::wake_relays(&client).await.unwrap();
    }
    assert_eq!(listener.heard_so_far().await, [""]);

    // Alone: the statement is its own transaction.
    let client = db.pool().get().await.unwrap();
    let alone = orders::create(&client, &new_order(Uuid::new_v4(), None))
        .await
        .unwrap();
    assert_eq!(written(&db, alone.id).await, (1, 2, 1));
    assert!(
        listener.heard_so_far().await.is_empty(),
        "an order committed alone sent a NOTIFY (it serialises concurrent commits)"
    );

    // In the caller's transaction (a keyed request): nothing is heard
    // while it is open, nor after its commit.
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let keyed = orders::create(&tx, &new_order(Uuid::new_v4(), None))
        .await
        .unwrap();
    assert!(
        listener.heard_so_far().await.is_empty(),
        "heard while the transaction is open"
    );
    tx.commit().await.unwrap();
    assert_eq!(written(&db, keyed.id).await, (1, 2, 1));

    assert!(
        listener.heard_so_far().await.is_empty(),
        "an order committed in its caller's transaction sent a NOTIFY"
    );
}

/// Rows of `table`, every one.
async fn rows(db: &TestDatabase, table: &str) -> i64 {
    db.pool()
        .get()
        .await
        .unwrap()
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_failing_order_leaves_no_lines_and_no_event() {
    let db = database().await;
    let user = Uuid::new_v4();
    let client = db.pool().get().await.unwrap();
    orders::create(&client, &new_order(user, Some("ref-1")))
        .await
        .unwrap();
    let before = (
        rows(&db, "orders").await,
        rows(&db, "order_items").await,
        rows(&db, "outbox").await,
    );
    assert_eq!(before, (1, 2, 1));

    // The duplicate external_id fails the order's insert; the lines and
    // the event, written in the same statement, go with it.
    let again = orders::create(&client, &new_order(user, Some("ref-1"))).await;
    assert!(
        matches!(again, Err(Error::DuplicateExternalId)),
        "{again:?}"
    );
    let after = (
        rows(&db, "orders").await,
        rows(&db, "order_items").await,
        rows(&db, "outbox").await,
    );
    assert_eq!(after, before);
}

#[tokio::test]
async fn a_keyed_order_rolled_back_frees_its_key_and_leaves_nothing() {
    let db = database().await;
    let user = Uuid::new_v4();
    let fingerprint = Fingerprint::of("POST", "/api/v1/orders", b"{}");
    let key = Key {
        user_id: user,
        key: "k",
        fingerprint,
        expires_at: Utc::now() + chrono::Duration::hours(1),
    };
    let mut client = db.pool().get().await.unwrap();
    let NextAction::Proceed(tx) = idempotency::begin(&mut client, Some(key)).await.unwrap() else {
        panic!("a new key proceeds");
    };
    let order = orders::create(&tx, &new_order(user, None)).await.unwrap();
    idempotency::complete(
        &tx,
        user,
        "k",
        &StoredResponse {
            status: 201,
            body: b"{}".to_vec(),
            location: None,
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(written(&db, order.id).await, (0, 0, 0));

    // The key is free again: the next request with it does the work.
    assert!(matches!(
        idempotency::begin(&mut client, Some(key)).await.unwrap(),
        NextAction::Proceed(_)
    ));
}
