//! A real worker process killed (SIGKILL) in the middle of a file: the job
//! returns to the queue, the next worker starts the export over and it
//! finishes once, with the right content.

use std::time::Duration;

use keel_commerce::exports::{ExportStatus, Format};
use keel_testkit::broker::TestBroker;
use keel_testkit::process::ServiceProcess;
use uuid::Uuid;

use crate::support::*;

const BINARY: &str = env!("CARGO_BIN_EXE_worker");

#[tokio::test]
async fn a_worker_killed_mid_export_still_finishes_it_once_with_correct_content() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let env = vec![
        ("KEEL_DATABASE__URL", db.url()),
        ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
        ("KEEL_AMQP__NAMESPACE", broker.namespace().to_owned()),
        ("KEEL_ORDER_CACHE__ENABLED", "false".to_owned()),
        ("KEEL_OUTBOX__POLL_INTERVAL", "100ms".to_owned()),
        ("KEEL_EXPORTS__PROGRESS_INTERVAL", "20ms".to_owned()),
        (
            "KEEL_EXPORTS__STORAGE__ROOT",
            root.0.to_string_lossy().into_owned(),
        ),
    ];
    let user = Uuid::now_v7();
    // Large enough that the first worker is still writing when it dies.
    insert_orders(&db, user, 300_000, 1).await;
    let created = create_export(&db, &new_export(user, Format::Csv)).await;

    let first = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let export = export(&db, created.id).await;
        assert!(
            export.status != ExportStatus::Succeeded,
            "finished before it could be killed; the test needs more rows"
        );
        if export.status == ExportStatus::Running && export.rows_written > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{export:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Dropping the handle sends SIGKILL: no shutdown path runs, the COPY's
    // connection and the unacked delivery simply vanish.
    drop(first);
    let killed = export(&db, created.id).await;
    assert_eq!(killed.status, ExportStatus::Running);
    assert!(!root.storage().exists(&killed.object_key).await.unwrap());

    let second = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    let (export, file) = succeeded_file(&db, &root.storage(), created.id).await;
    assert_eq!(export.attempts, 2, "started once per worker");
    assert_eq!(export.rows_written, 300_000);
    let mut reader = csv::Reader::from_reader(&file[..]);
    assert_eq!(reader.records().count(), 300_000);
    assert_eq!(events_about(&db, "export.completed", export.id).await, 1);
    let status = second.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0));
    broker.cleanup().await;
}
