//! Orders applied from third parties (the worker's writes) against a real
//! PostgreSQL: upsert by `(source, external_id)`, payment, fulfilment.
#![allow(clippy::unwrap_used)]

use keel_store::domain::{
    Currency, ExternalId, ExternalOrder, FulfillmentStatus, NewItem, OrderStatus, Quantity, Scope,
    Sku, Source, TotalCents, UnitPriceCents,
};
use keel_store::orders::{self, Change};
use keel_testkit::database::TestDatabase;

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_store::MIGRATIONS],
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
        orders::mark_paid(&tx, id).await.unwrap().change,
        orders::mark_paid(&tx, id).await.unwrap().change,
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
    let missing = orders::mark_paid(&tx, uuid::Uuid::now_v7()).await;
    assert!(matches!(missing, Err(keel_store::Error::NotFound)));
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
    let paid = orders::mark_paid(&tx, id).await;
    assert!(matches!(paid, Err(keel_store::Error::IllegalTransition(_))));
}
