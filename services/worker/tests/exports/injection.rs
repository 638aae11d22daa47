//! CSV injection: a cell a spreadsheet would evaluate as a formula (one
//! beginning with `=`, `+`, `-`, `@`, a tab or a carriage return) leaves
//! in a CSV export as text, prefixed with `'` and quoted (OWASP's CSV
//! injection guidance); NDJSON carries the same values verbatim.

use std::collections::HashMap;

use keel_commerce::exports::Format;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use uuid::Uuid;

use crate::support::*;

/// What a customer or a webhook sender can put in the text columns, each
/// one a formula or the start of one in Excel, LibreOffice or Sheets.
const DANGEROUS: [&str; 7] = [
    "=HYPERLINK(\"http://x\",\"click\")",
    "+1",
    "-2+3",
    "@SUM(A1)",
    "\tcmd",
    "\rcmd",
    "=cmd|' /C calc'!A0",
];

/// Text that must leave untouched: an `=` later on, a leading quote
/// already, a dash inside.
const HARMLESS: [&str; 3] = ["a=b", "'quoted", "x-1"];

/// One order per value, the value in both `external_id` and
/// `customer_email`; returns (order id, value).
async fn insert_with_text(db: &TestDatabase, user: Uuid, values: &[&str]) -> Vec<(Uuid, String)> {
    let client = db.pool().get().await.unwrap();
    let mut out = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let id = Uuid::now_v7();
        client
            .execute(
                "INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, \
                     user_id, source, created_at, updated_at) \
                 VALUES ($1, $2, 'paid', 'EUR', $3, $2, $4, 'api', $5, $5)",
                &[&id, value, &(i as i64 * 100), &user, &(epoch() + chrono::Duration::seconds(i as i64 + 1))],
            )
            .await
            .unwrap();
        out.push((id, (*value).to_owned()));
    }
    // And one without either, which stays two empty cells.
    client
        .execute(
            "INSERT INTO orders (id, status, currency, total_cents, user_id, source, created_at, updated_at) \
             VALUES ($1, 'pending', 'USD', 0, $2, 'api', $3, $3)",
            &[&Uuid::now_v7(), &user, &epoch()],
        )
        .await
        .unwrap();
    out
}

async fn export_file(db: &TestDatabase, root: &TempRoot, user: Uuid, format: Format) -> Vec<u8> {
    let created = create_export(db, &new_export(user, format)).await;
    succeeded_file(db, &root.storage(), created.id).await.1
}

#[tokio::test]
async fn a_csv_export_neutralises_cells_a_spreadsheet_would_evaluate_and_ndjson_keeps_them_verbatim()
 {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    let values: Vec<&str> = DANGEROUS.iter().chain(&HARMLESS).copied().collect();
    let orders: HashMap<Uuid, String> = insert_with_text(&db, user, &values)
        .await
        .into_iter()
        .collect();

    // CSV, read by an independent RFC 4180 parser.
    let csv = export_file(&db, &root, user, Format::Csv).await;
    let mut reader = csv::Reader::from_reader(&csv[..]);
    let mut seen = 0;
    for record in reader.records() {
        let record = record.unwrap();
        // No cell of the file starts a formula.
        for cell in record.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "{cell:?} in {record:?}"
            );
        }
        let id: Uuid = record[0].parse().unwrap();
        let Some(value) = orders.get(&id) else {
            assert_eq!((&record[1], &record[5]), ("", ""), "no text stays empty");
            continue;
        };
        let want = if DANGEROUS.contains(&value.as_str()) {
            format!("'{value}")
        } else {
            value.clone()
        };
        assert_eq!(&record[1], want, "external_id");
        assert_eq!(&record[5], want, "customer_email");
        // The other columns are as they were: the amount still a number.
        assert_eq!(&record[2], "paid");
        assert_eq!(&record[3], "EUR");
        assert!(record[4].parse::<i64>().is_ok(), "{:?}", &record[4]);
        assert_eq!(&record[7], "api");
        seen += 1;
    }
    assert_eq!(seen, values.len());
    // Neutralised cells are quoted as well (OWASP: prefix and quote).
    let text = String::from_utf8(csv.clone()).unwrap();
    assert!(
        text.contains(r#""'=HYPERLINK(""http://x"",""click"")""#),
        "{text}"
    );
    assert!(text.contains(r#""'+1""#), "{text}");

    // NDJSON: JSON consumers are not spreadsheets; values go out as stored.
    let ndjson = export_file(&db, &root, user, Format::Ndjson).await;
    let mut seen = 0;
    for line in std::str::from_utf8(&ndjson).unwrap().lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let id: Uuid = row["id"].as_str().unwrap().parse().unwrap();
        if let Some(value) = orders.get(&id) {
            assert_eq!(row["external_id"], value.as_str());
            assert_eq!(row["customer_email"], value.as_str());
            seen += 1;
        }
    }
    assert_eq!(seen, values.len());
    worker.stop().await;
    broker.cleanup().await;
}
