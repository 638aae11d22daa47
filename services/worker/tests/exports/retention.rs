//! Retention: an expired export loses its file and becomes `expired`.

use keel_commerce::exports::{ExportStatus, Format};
use keel_testkit::broker::TestBroker;
use uuid::Uuid;

use crate::support::*;

#[tokio::test]
async fn the_sweep_removes_expired_files_marks_their_exports_and_leaves_the_rest() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    insert_orders(&db, user, 50, 1).await;
    let storage = root.storage();
    let old = create_export(&db, &new_export(user, Format::Csv)).await;
    let fresh = create_export(&db, &new_export(user, Format::Ndjson)).await;
    succeeded_file(&db, &storage, old.id).await;
    succeeded_file(&db, &storage, fresh.id).await;
    worker.stop().await;

    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE exports SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&old.id],
        )
        .await
        .unwrap();

    let expired = worker::exports::retention::sweep_once(db.pool(), &storage)
        .await
        .unwrap();
    assert_eq!(expired, 1);
    assert_eq!(export(&db, old.id).await.status, ExportStatus::Expired);
    assert!(!storage.exists(&old.object_key).await.unwrap());
    assert_eq!(export(&db, fresh.id).await.status, ExportStatus::Succeeded);
    assert!(storage.exists(&fresh.object_key).await.unwrap());

    // Nothing left to do: a second sweep changes nothing.
    let again = worker::exports::retention::sweep_once(db.pool(), &storage)
        .await
        .unwrap();
    assert_eq!(again, 0);
    broker.cleanup().await;
}
