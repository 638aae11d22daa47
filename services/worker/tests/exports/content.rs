//! The file holds exactly what a direct SQL query over the same filter
//! returns: every row, every field, the totals; size and SHA-256 match.

use chrono::{DateTime, Utc};
use keel_commerce::exports::{Compression, ExportFilter, Format};
use keel_commerce::orders::domain::OrderStatus;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::support::*;

/// One order as the file must show it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: Uuid,
    external_id: Option<String>,
    status: String,
    currency: String,
    total_cents: i64,
    customer_email: Option<String>,
    user_id: Option<Uuid>,
    source: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The direct query: the user's orders within `filter`, oldest first.
async fn expected(db: &TestDatabase, user: Uuid, filter: &ExportFilter) -> Vec<Row> {
    let client = db.pool().get().await.unwrap();
    let status = filter.status.map(OrderStatus::as_str);
    let after = filter.created_after;
    let before = filter.created_before;
    let params: [&(dyn ToSql + Sync); 4] = [&user, &status, &after, &before];
    client
        .query(
            "SELECT id, external_id, status, currency, total_cents, customer_email, user_id, source, \
                    created_at, updated_at \
             FROM orders \
             WHERE user_id = $1 AND ($2::text IS NULL OR status = $2) \
               AND ($3::timestamptz IS NULL OR created_at >= $3) \
               AND ($4::timestamptz IS NULL OR created_at < $4) \
             ORDER BY created_at, id",
            &params,
        )
        .await
        .unwrap()
        .iter()
        .map(|r| Row {
            id: r.get(0),
            external_id: r.get(1),
            status: r.get(2),
            currency: r.get(3),
            total_cents: r.get(4),
            customer_email: r.get(5),
            user_id: r.get(6),
            source: r.get(7),
            created_at: r.get(8),
            updated_at: r.get(9),
        })
        .collect()
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// Parses a CSV file with an independent RFC 4180 reader.
fn parse_csv(file: &[u8]) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(file);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, keel_commerce::exports::rows::ORDER_COLUMNS);
    let optional = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    reader
        .records()
        .map(|record| {
            let r = record.unwrap();
            Row {
                id: r[0].parse().unwrap(),
                external_id: optional(&r[1]),
                status: r[2].to_owned(),
                currency: r[3].to_owned(),
                total_cents: r[4].parse().unwrap(),
                customer_email: optional(&r[5]),
                user_id: optional(&r[6]).map(|u| u.parse().unwrap()),
                source: r[7].to_owned(),
                created_at: instant(&r[8]),
                updated_at: instant(&r[9]),
            }
        })
        .collect()
}

fn parse_ndjson(file: &[u8]) -> Vec<Row> {
    let text = std::str::from_utf8(file).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'));
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let text = |k: &str| v[k].as_str().map(str::to_owned);
            Row {
                id: v["id"].as_str().unwrap().parse().unwrap(),
                external_id: text("external_id"),
                status: text("status").unwrap(),
                currency: text("currency").unwrap(),
                total_cents: v["total_cents"].as_i64().unwrap(),
                customer_email: text("customer_email"),
                user_id: text("user_id").map(|u| u.parse().unwrap()),
                source: text("source").unwrap(),
                created_at: instant(v["created_at"].as_str().unwrap()),
                updated_at: instant(v["updated_at"].as_str().unwrap()),
            }
        })
        .collect()
}

fn total(rows: &[Row]) -> i64 {
    rows.iter().map(|r| r.total_cents).sum()
}

/// The SQL answer's count and sum, computed by PostgreSQL itself.
async fn sql_totals(db: &TestDatabase, user: Uuid) -> (i64, i64) {
    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT count(*), coalesce(sum(total_cents), 0)::bigint FROM orders WHERE user_id = $1",
            &[&user],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn hundred_thousand_orders_as(format: Format) {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let (user, someone_else) = (Uuid::now_v7(), Uuid::now_v7());
    insert_orders(&db, user, 100_000, 1).await;
    insert_orders(&db, someone_else, 500, 1).await;

    let created = create_export(&db, &new_export(user, format)).await;
    let (export, file) = succeeded_file(&db, &root.storage(), created.id).await;

    let rows = match format {
        Format::Csv => parse_csv(&file),
        Format::Ndjson => parse_ndjson(&file),
    };
    let want = expected(&db, user, &ExportFilter::default()).await;
    assert_eq!(rows.len(), 100_000);
    assert_eq!(export.rows_written, 100_000);
    let (count, sum) = sql_totals(&db, user).await;
    assert_eq!((rows.len() as i64, total(&rows)), (count, sum));
    // Field by field, in order (the first difference is shown).
    for (i, (got, want)) in rows.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "row {i}");
    }
    assert!(
        rows.iter()
            .any(|r| r.external_id.as_deref().is_some_and(|e| e.contains('\n')))
    );
    assert_eq!(events_about(&db, "export.completed", export.id).await, 1);
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_100k_order_csv_export_holds_exactly_what_sql_returns() {
    hundred_thousand_orders_as(Format::Csv).await;
}

#[tokio::test]
async fn a_100k_order_ndjson_export_holds_exactly_what_sql_returns() {
    hundred_thousand_orders_as(Format::Ndjson).await;
}

#[tokio::test]
async fn a_filtered_export_contains_exactly_the_matching_rows() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    insert_orders(&db, user, 5_000, 1).await;

    let filter = ExportFilter {
        status: Some(OrderStatus::Paid),
        created_after: Some(epoch() + chrono::Duration::seconds(1_000)),
        created_before: Some(epoch() + chrono::Duration::seconds(4_001)),
    };
    let mut new = new_export(user, Format::Ndjson);
    new.filter = filter.clone();
    let created = create_export(&db, &new).await;
    let (export, file) = succeeded_file(&db, &root.storage(), created.id).await;

    let rows = parse_ndjson(&file);
    let want = expected(&db, user, &filter).await;
    // Statuses cycle with i % 4; "paid" is i % 4 == 1 within [1000, 4000].
    assert_eq!(want.len(), 750);
    assert_eq!(rows, want);
    assert_eq!(export.rows_written, 750);
    assert!(rows.iter().all(|r| r.status == "paid"));
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_gzip_export_decompresses_to_the_rows_and_its_checksum_covers_the_compressed_bytes() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    insert_orders(&db, user, 20_000, 1).await;

    let mut new = new_export(user, Format::Csv);
    new.compression = Compression::Gzip;
    let created = create_export(&db, &new).await;
    assert!(created.object_key.ends_with(".csv.gz"));
    // succeeded_file checks size and SHA-256 against the stored bytes.
    let (export, file) = succeeded_file(&db, &root.storage(), created.id).await;

    assert_eq!(&file[..2], &[0x1f, 0x8b], "gzip magic");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&file[..]), &mut plain).unwrap();
    assert!(plain.len() > file.len(), "compressed smaller than plain");
    let rows = parse_csv(&plain);
    assert_eq!(rows, expected(&db, user, &ExportFilter::default()).await);
    assert_eq!(export.rows_written, 20_000);
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn an_admin_export_holds_every_users_orders() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let (admin, customer) = (Uuid::now_v7(), Uuid::now_v7());
    insert_orders(&db, customer, 300, 1).await;
    insert_orders(&db, admin, 200, 301).await;

    let mut new = new_export(admin, Format::Csv);
    new.all_orders = true;
    let created = create_export(&db, &new).await;
    let (export, file) = succeeded_file(&db, &root.storage(), created.id).await;
    let rows = parse_csv(&file);
    assert_eq!(export.rows_written, 500);
    assert_eq!(
        rows.iter().filter(|r| r.user_id == Some(customer)).count(),
        300
    );
    worker.stop().await;
    broker.cleanup().await;
}
