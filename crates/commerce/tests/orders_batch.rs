//! Set-based webhook order writes (`orders::batch`, ADR 0026) against a
//! real PostgreSQL: a batch ends exactly as the same writes applied one
//! after the other with `upsert_external_as_of`, version rules, repeated
//! orders and events included.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, Utc};
use keel_commerce::orders::batch::{ExternalWrite, upsert_external_many};
use keel_commerce::orders::domain::{
    Currency, ExternalId, ExternalOrder, NewItem, Quantity, Sku, Source, TotalCents, UnitPriceCents,
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

fn order(external_id: &str, total: i64, lines: i64) -> ExternalOrder {
    ExternalOrder {
        source: Source::Webhook("shopify".into()),
        external_id: ExternalId::parse(external_id).unwrap(),
        currency: Currency::parse("EUR").unwrap(),
        items: (0..lines)
            .map(|n| NewItem {
                sku: Sku::parse(&format!("SKU-{n}")).unwrap(),
                quantity: Quantity::parse(1).unwrap(),
                unit_price_cents: UnitPriceCents::parse(total / lines).unwrap(),
            })
            .collect(),
        total_cents: TotalCents::parse(total).unwrap(),
        customer_email: None,
    }
}

fn at(hour: u32) -> Option<DateTime<Utc>> {
    Some(format!("2026-01-01T{hour:02}:00:00Z").parse().unwrap())
}

/// The changes, without order ids (they differ between databases).
fn kinds(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| format!("{c:?}")).collect()
}

/// Every order's content, lines, version and status, and the outbox's
/// event counts by type: what must be the same either way.
async fn state(db: &TestDatabase) -> (Vec<String>, Vec<(String, i64)>) {
    let client = db.pool().get().await.unwrap();
    let orders = client
        .query(
            "SELECT o.external_id, o.status, o.currency, o.total_cents, o.source_updated_at::text, \
                 (SELECT string_agg(i.position || ':' || i.sku || 'x' || i.quantity || '@' || i.unit_price_cents, ',' ORDER BY i.position) \
                  FROM order_items i WHERE i.order_id = o.id) \
             FROM orders o ORDER BY o.external_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            format!(
                "{} {} {} {} {:?} {:?}",
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, i64>(3),
                row.get::<_, Option<String>>(4),
                row.get::<_, Option<String>>(5),
            )
        })
        .collect();
    let events = client
        .query(
            "SELECT message_type, count(*) FROM outbox GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    (orders, events)
}

#[tokio::test]
async fn a_batch_ends_as_its_writes_applied_one_after_the_other() {
    // Stored before the batch: order A at 10:00, order B without version.
    let before = [(order("A", 1_000, 1), at(10)), (order("B", 2_000, 2), None)];
    let script = [
        // A: an older version (stale), then a newer one twice (updated, then
        // the same version again: stale), then a newer one with the same
        // content (unchanged, but its version is recorded).
        (order("A", 1_500, 1), at(9)),
        (order("A", 1_500, 3), at(11)),
        (order("A", 9_999, 1), at(11)),
        (order("A", 1_500, 3), at(12)),
        // B: versioned now (updated), then unversioned (stale: no version
        // never passes a known one).
        (order("B", 2_200, 2), at(8)),
        (order("B", 2_400, 2), None),
        // C: new, then an older create (stale), then a newer update.
        (order("C", 3_000, 1), at(12)),
        (order("C", 3_300, 1), at(11)),
        (order("C", 3_600, 2), at(13)),
        // D: new and unversioned, then unversioned again (applies: no
        // version is stored).
        (order("D", 4_000, 1), None),
        (order("D", 4_400, 4), None),
        // E: new, repeated as is (unchanged).
        (order("E", 5_000, 1), at(10)),
        (order("E", 5_000, 1), at(11)),
    ];

    let one_by_one = database().await;
    let batched = database().await;
    for db in [&one_by_one, &batched] {
        let mut client = db.pool().get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        for (order, version) in &before {
            orders::upsert_external_as_of(&tx, order, *version)
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }

    let mut client = one_by_one.pool().get().await.unwrap();
    let mut expected = Vec::new();
    for (order, version) in &script {
        let tx = client.transaction().await.unwrap();
        let applied = orders::upsert_external_as_of(&tx, order, *version)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        expected.push(applied.change);
    }

    let mut client = batched.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let writes: Vec<ExternalWrite<'_>> = script
        .iter()
        .map(|(order, version)| ExternalWrite {
            order,
            version: *version,
        })
        .collect();
    let results = upsert_external_many(&tx, &writes).await.unwrap();
    tx.commit().await.unwrap();
    let got: Vec<Change> = results.iter().map(|r| r.change).collect();

    assert_eq!(kinds(&got), kinds(&expected));
    assert_eq!(state(&batched).await, state(&one_by_one).await);
}

#[tokio::test]
async fn a_batch_applied_again_changes_nothing() {
    let db = database().await;
    let script = [(order("F", 1_000, 1), at(10)), (order("G", 2_000, 2), None)];
    let writes: Vec<ExternalWrite<'_>> = script
        .iter()
        .map(|(order, version)| ExternalWrite {
            order,
            version: *version,
        })
        .collect();
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    upsert_external_many(&tx, &writes).await.unwrap();
    tx.commit().await.unwrap();
    let first = state(&db).await;

    let tx = client.transaction().await.unwrap();
    let again = upsert_external_many(&tx, &writes).await.unwrap();
    tx.commit().await.unwrap();

    assert!(again.iter().all(|r| !r.changed()), "{again:?}");
    assert_eq!(state(&db).await, first);
}
