//! What the export tests share: orders inserted in bulk, a worker built
//! in-process, exports created as the gateway creates them, the stored file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keel_commerce::exports::{self, Export, ExportStatus, NewExport};
use keel_files::{Storage, StorageSettings};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use worker::settings::Settings;
use worker::startup::Application;

pub async fn database() -> TestDatabase {
    TestDatabase::create(worker::SCHEMA, &worker::startup::migrations()).await
}

/// A storage directory of this test's own, removed at the end.
pub struct TempRoot(pub PathBuf);

impl TempRoot {
    pub fn new() -> Self {
        Self(std::env::temp_dir().join(format!("keel-exports-{}", Uuid::new_v4())))
    }

    pub fn settings(&self) -> StorageSettings {
        StorageSettings::local(&self.0)
    }

    pub fn storage(&self) -> Storage {
        Storage::new(&self.settings()).unwrap()
    }
}

impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The instant every test's orders start from; order `i` is created `i`
/// seconds later.
pub fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Inserts `count` orders of `user` in one statement. Statuses cycle
/// through the four; every 97th order has an external id with a comma, a
/// quote and a newline, every 89th a customer email with non-ASCII text and
/// a backslash: what CSV quoting, row counting and JSON escaping must get
/// right.
pub async fn insert_orders(db: &TestDatabase, user: Uuid, count: i32, first: i32) {
    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, \
                 user_id, source, created_at, updated_at) \
             SELECT gen_random_uuid(), \
                 CASE WHEN i % 97 = 0 THEN 'ext,\"' || i || E'\"\\n' || $1::uuid::text END, \
                 (ARRAY['pending', 'paid', 'fulfilled', 'cancelled'])[1 + i % 4], \
                 CASE WHEN i % 3 = 0 THEN 'USD' ELSE 'EUR' END, \
                 (i::bigint * 7919) % 100000, \
                 CASE WHEN i % 89 = 0 THEN 'jürgen\\o''brien' || i || '@example.com' END, \
                 $1, 'api', \
                 $2::timestamptz + i * interval '1 second', \
                 $2::timestamptz + i * interval '1 second' + interval '5 minutes' \
             FROM generate_series($3::int, $3::int + $4::int - 1) AS i",
            &[&user, &epoch(), &first, &count],
        )
        .await
        .unwrap();
}

/// Creates an export as `POST /exports` does (row + `export.run` job).
pub async fn create_export(db: &TestDatabase, new: &NewExport) -> Export {
    let mut client = db.pool().get().await.unwrap();
    exports::create(&mut client, new, 10).await.unwrap()
}

pub fn new_export(user: Uuid, format: exports::Format) -> NewExport {
    NewExport {
        user_id: user,
        all_orders: false,
        resource: exports::Resource::Orders,
        format,
        compression: exports::Compression::None,
        filter: exports::ExportFilter::default(),
    }
}

pub async fn export(db: &TestDatabase, id: Uuid) -> Export {
    let client = db.pool().get().await.unwrap();
    exports::get(&client, id, keel_commerce::orders::domain::Scope::All)
        .await
        .unwrap()
}

/// Polls the export until it is finished (panics after `within`).
pub async fn finished(db: &TestDatabase, id: Uuid, within: Duration) -> Export {
    let deadline = Instant::now() + within;
    loop {
        let export = export(db, id).await;
        if export.status.is_finished() {
            return export;
        }
        assert!(
            Instant::now() < deadline,
            "export not finished within {within:?}: {export:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The stored file, read through the storage abstraction the gateway
/// serves downloads with.
pub async fn stored_file(storage: &Storage, export: &Export) -> Vec<u8> {
    use futures::TryStreamExt;
    let download = storage.open(&export.object_key).await.unwrap();
    let chunks: Vec<bytes::Bytes> = download.stream.try_collect().await.unwrap();
    let file = chunks.concat();
    assert_eq!(download.size, file.len() as u64);
    file
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Outbox rows of `message_type` about export `id`.
pub async fn events_about(db: &TestDatabase, message_type: &str, id: Uuid) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM outbox WHERE message_type = $1 AND payload->'data'->>'export_id' = $2",
            &[&message_type, &id.to_string()],
        )
        .await
        .unwrap()
        .get(0)
}

/// A worker running in-process against this test's servers.
pub struct TestWorker {
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestWorker {
    pub async fn start(
        db: &TestDatabase,
        broker: &TestBroker,
        root: &TempRoot,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        keel_telemetry::init_for_tests();
        let mut settings = Settings::defaults().unwrap();
        settings.http.port = 0;
        settings.http.workers = 1;
        settings.database = db.settings();
        settings.amqp = broker.settings();
        settings.outbox.poll_interval = Duration::from_millis(100);
        settings.exports.storage = root.settings();
        settings.exports.progress_interval = Duration::from_millis(50);
        configure(&mut settings);
        let identity = keel_telemetry::ServiceIdentity::new(worker::SERVICE, "test");
        let app = Application::build(settings, &identity).await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { app.run_until_stopped(shutdown).await.unwrap() }
        });
        Self {
            shutdown,
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Waits for the export to succeed and checks the bookkeeping every
/// successful export must satisfy: size and checksum of the stored bytes.
pub async fn succeeded_file(db: &TestDatabase, storage: &Storage, id: Uuid) -> (Export, Vec<u8>) {
    let export = finished(db, id, Duration::from_secs(180)).await;
    assert_eq!(export.status, ExportStatus::Succeeded, "{export:?}");
    let file = stored_file(storage, &export).await;
    assert_eq!(export.bytes, file.len() as i64);
    assert_eq!(export.sha256.as_deref(), Some(sha256_hex(&file).as_str()));
    assert!(export.finished_at.is_some() && export.expires_at > export.finished_at);
    (export, file)
}
