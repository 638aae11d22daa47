//! Orders applied from third parties (the worker's writes) against a real
//! PostgreSQL: upsert by `(source, external_id)` and the sender's version,
//! payment (for the order's amount and currency only), fulfilment.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use keel_commerce::orders::domain::{
    Currency, ExternalId, ExternalOrder, FulfillmentStatus, NewItem, OrderStatus, Payment,
    Quantity, Scope, Sku, Source, TotalCents, UnitPriceCents,
};
use keel_commerce::orders::{self, Change};
use keel_testkit::database::TestDatabase;

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_commerce::orders::MIGRATIONS],
    )
    .await
}

fn order(total: i64) -> ExternalOrder {
    ExternalOrder {
        source: Source::Webhook("shopify".into()),
        external_id: ExternalId::parse("450789469").unwrap(),
        currency: Currency::parse("USD").unwrap(),
        items: vec![NewItem {
            sku: Sku::parse("IPOD2008PINK").unwrap(),
            quantity: Quantity::parse(1).unwrap(),
            unit_price_cents: UnitPriceCents::parse(19_900).unwrap(),
        }],
        total_cents: TotalCents::parse(total).unwrap(),
        customer_email: None,
    }
}

fn usd(amount_cents: i64) -> Payment {
    Payment {
        amount_cents,
        currency: Currency::parse("USD").unwrap(),
    }
}

fn at(text: &str) -> Option<DateTime<Utc>> {
    Some(text.parse().unwrap())
}

async fn events(db: &TestDatabase, message_type: &str) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM outbox WHERE message_type = $1",
            &[&message_type],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn two_concurrent_upserts_of_one_order_store_it_once_and_the_later_one_updates_it() {
    let db = database().await;
    let mut a = db.pool().get().await.unwrap();
    let mut b = db.pool().get().await.unwrap();
    let ta = a.transaction().await.unwrap();
    let first = orders::upsert_external(&ta, &order(20_000)).await.unwrap();
    // The second insert waits on the first's uncommitted row...
    let second = tokio::spawn(async move {
        let tb = b.transaction().await.unwrap();
        let applied = orders::upsert_external(&tb, &order(25_000)).await.unwrap();
        tb.commit().await.unwrap();
        applied
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second upsert waits for the first"
    );
    ta.commit().await.unwrap();
    // ...then updates it instead of failing on the unique index.
    let second = second.await.unwrap();

    assert_eq!(first.change, Change::Created);
    assert_eq!(second.change, Change::Updated);
    assert_eq!(second.order.id, first.order.id);
    assert_eq!(second.order.total_cents, 25_000);
    assert!(second.order.updated_at > first.order.updated_at);
    assert_eq!(events(&db, "order.created").await, 1);
    assert_eq!(events(&db, "order.updated").await, 1);
}

#[tokio::test]
async fn payment_and_fulfilment_change_an_order_once_and_refuse_what_cannot_apply() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let id = orders::upsert_external(&tx, &order(19_900))
        .await
        .unwrap()
        .order
        .id;
    let pending = FulfillmentStatus::parse("pending").unwrap();
    let changes = [
        orders::mark_paid(&tx, id, &usd(19_900))
            .await
            .unwrap()
            .change,
        orders::mark_paid(&tx, id, &usd(19_900))
            .await
            .unwrap()
            .change,
        orders::record_fulfillment(&tx, id, &pending)
            .await
            .unwrap()
            .change,
        orders::record_fulfillment(&tx, id, &pending)
            .await
            .unwrap()
            .change,
        orders::upsert_external(&tx, &order(19_900))
            .await
            .unwrap()
            .change,
    ];
    tx.commit().await.unwrap();

    assert_eq!(
        changes,
        [
            Change::Updated,
            Change::Unchanged,
            Change::Updated,
            Change::Unchanged,
            Change::Unchanged
        ]
    );
    let stored = orders::get(&client, id, Scope::All).await.unwrap();
    assert_eq!(stored.status, OrderStatus::Paid);
    assert_eq!(stored.fulfillment_status.as_deref(), Some("pending"));
    assert_eq!(events(&db, "order.updated").await, 2);

    let tx = client.transaction().await.unwrap();
    let missing = orders::mark_paid(&tx, uuid::Uuid::now_v7(), &usd(1)).await;
    assert!(matches!(
        missing,
        Err(keel_commerce::orders::Error::NotFound)
    ));
}

#[tokio::test]
async fn a_cancelled_order_cannot_be_paid() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let id = orders::upsert_external(&tx, &order(100))
        .await
        .unwrap()
        .order
        .id;
    tx.commit().await.unwrap();
    orders::cancel(&mut client, id, Scope::All).await.unwrap();

    let tx = client.transaction().await.unwrap();
    let paid = orders::mark_paid(&tx, id, &usd(100)).await;
    assert!(matches!(
        paid,
        Err(keel_commerce::orders::Error::IllegalTransition(_))
    ));
}

#[tokio::test]
async fn a_payment_of_another_amount_or_currency_is_refused_and_changes_nothing() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let id = orders::upsert_external(&tx, &order(19_900))
        .await
        .unwrap()
        .order
        .id;
    tx.commit().await.unwrap();
    let eur = Payment {
        amount_cents: 19_900,
        currency: Currency::parse("EUR").unwrap(),
    };

    for (payment, message) in [
        (
            usd(500),
            "amount 500 USD does not match the order's total 19900 USD",
        ),
        (
            eur,
            "amount 19900 EUR does not match the order's total 19900 USD",
        ),
    ] {
        let tx = client.transaction().await.unwrap();
        let error = orders::mark_paid(&tx, id, &payment).await.unwrap_err();
        assert!(
            matches!(error, keel_commerce::orders::Error::PaymentMismatch { .. }),
            "{error}"
        );
        assert_eq!(error.to_string(), message);
    }

    let stored = orders::get(&client, id, Scope::All).await.unwrap();
    assert_eq!(stored.status, OrderStatus::Pending);
    assert_eq!(events(&db, "order.updated").await, 0);
}

#[tokio::test]
async fn only_a_strictly_newer_version_of_an_external_order_changes_it() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let upsert =
        async |client: &mut keel_db::Client, total: i64, version: Option<DateTime<Utc>>| {
            let tx = client.transaction().await.unwrap();
            let applied = orders::upsert_external_as_of(&tx, &order(total), version)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            applied
        };

    let created = upsert(&mut client, 100, at("2026-01-01T10:00:00Z")).await;
    let changes = [
        created.change,
        upsert(&mut client, 300, at("2026-01-01T12:00:00Z"))
            .await
            .change,
        // Older, equal, and no version at all: none passes the stored one.
        upsert(&mut client, 200, at("2026-01-01T11:00:00Z"))
            .await
            .change,
        upsert(&mut client, 250, at("2026-01-01T12:00:00Z"))
            .await
            .change,
        upsert(&mut client, 400, None).await.change,
        // Newer with the same content: recorded, nothing else changes...
        upsert(&mut client, 300, at("2026-01-01T13:00:00Z"))
            .await
            .change,
        // ...so what lies between can no longer follow it in.
        upsert(&mut client, 200, at("2026-01-01T12:30:00Z"))
            .await
            .change,
    ];

    let stale = Change::Stale {
        stored: at("2026-01-01T12:00:00Z"),
    };
    assert_eq!(
        changes,
        [
            Change::Created,
            Change::Updated,
            stale,
            stale,
            stale,
            Change::Unchanged,
            Change::Stale {
                stored: at("2026-01-01T13:00:00Z")
            },
        ]
    );
    let id = created.order.id;
    let stored = orders::get(&client, id, Scope::All).await.unwrap();
    assert_eq!(stored.total_cents, 300);
    assert_eq!(events(&db, "order.updated").await, 1);
}

#[tokio::test]
async fn an_older_version_waiting_on_a_newer_ones_lock_is_stale_once_that_commits() {
    let db = database().await;
    let mut a = db.pool().get().await.unwrap();
    let mut b = db.pool().get().await.unwrap();
    let setup = a.transaction().await.unwrap();
    orders::upsert_external_as_of(&setup, &order(100), at("2026-01-01T10:00:00Z"))
        .await
        .unwrap();
    setup.commit().await.unwrap();

    let newer = a.transaction().await.unwrap();
    orders::upsert_external_as_of(&newer, &order(300), at("2026-01-01T12:00:00Z"))
        .await
        .unwrap();
    // Read before the newer one commits, the stored version (10:00) would
    // let the older one (11:00) in: the check must be made on the row the
    // newer transaction leaves.
    let older = tokio::spawn(async move {
        let tx = b.transaction().await.unwrap();
        let applied = orders::upsert_external_as_of(&tx, &order(200), at("2026-01-01T11:00:00Z"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        applied
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!older.is_finished(), "the older upsert waits for the newer");
    newer.commit().await.unwrap();
    let older = older.await.unwrap();

    assert_eq!(
        older.change,
        Change::Stale {
            stored: at("2026-01-01T12:00:00Z")
        }
    );
    assert_eq!(older.order.total_cents, 300);
    let stored = orders::get(&a, older.order.id, Scope::All).await.unwrap();
    assert_eq!(stored.total_cents, 300);
}
