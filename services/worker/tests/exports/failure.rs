//! A file that cannot be written: retried like any job, then `failed` with
//! a sentence for the user and `export.failed`.

use std::time::Duration;

use keel_commerce::exports::{ExportStatus, Format};
use keel_testkit::broker::TestBroker;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn storage_that_refuses_writes_fails_the_export_on_the_last_attempt_with_a_readable_error() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |settings| {
        // Two attempts, one second apart.
        settings.amqp.retry.delays = vec![Duration::from_secs(1)];
        settings.amqp.retry.jitter = 0.0;
    })
    .await;
    // The user's folder is a file: nothing can be stored under it.
    let user = Uuid::now_v7();
    std::fs::create_dir_all(root.0.join("exports")).unwrap();
    std::fs::write(root.0.join("exports").join(user.to_string()), b"in the way").unwrap();
    insert_orders(&db, user, 100, 1).await;

    let created = create_export(&db, &new_export(user, Format::Csv)).await;
    let export = finished(&db, created.id, Duration::from_secs(60)).await;

    assert_eq!(export.status, ExportStatus::Failed);
    assert_eq!(export.attempts, 2);
    assert_eq!(
        export.error.as_deref(),
        Some("The export file could not be written to storage; please request the export again.")
    );
    assert!(export.sha256.is_none());
    assert_eq!(events_about(&db, "export.failed", export.id).await, 1);
    assert_eq!(events_about(&db, "export.completed", export.id).await, 0);
    worker.stop().await;
    broker.cleanup().await;
}
