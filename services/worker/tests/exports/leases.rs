//! Leases and the sweeper (ADR 0025): two builders of one export leave one
//! file matching the row, a duplicate job for a live lease builds nothing,
//! an export whose builder died is failed and frees its user's slot, and
//! staging files and objects nobody refers to are removed once stale.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use keel_commerce::exports::{self, Acquired, ExportStatus, Format, leases};
use keel_contracts::jobs::ExportRun;
use keel_contracts::{Envelope, Job};
use keel_files::Storage;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use uuid::Uuid;
use worker::exports::retention::{self, Orphans};

use crate::support::*;

/// Rows enough that a file is still being written when the test acts.
const ROWS: i32 = 300_000;

/// Another `export.run` job for `id`, as a relay that published twice or
/// an admin's requeue would deliver it: a new message, not a redelivery.
async fn duplicate_job(db: &TestDatabase, id: Uuid) -> Uuid {
    let client = db.pool().get().await.unwrap();
    let envelope = Envelope::new(Job::ExportRun(ExportRun { export_id: id }));
    keel_outbox::enqueue_job(&client, &envelope).await.unwrap();
    envelope.id
}

async fn published(db: &TestDatabase, message_id: Uuid) -> bool {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT published_at IS NOT NULL FROM outbox WHERE id = $1",
            &[&message_id],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the export is running with some rows written.
async fn running_with_rows(db: &TestDatabase, id: Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let export = export(db, id).await;
        assert!(
            export.status != ExportStatus::Succeeded,
            "finished too early; the test needs more rows"
        );
        if export.status == ExportStatus::Running && export.rows_written > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{export:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Complete objects under the user's folder.
async fn objects_of(storage: &Storage, user: Uuid) -> Vec<String> {
    storage
        .list(&format!("exports/{user}"))
        .map_ok(|o| o.key)
        .try_collect()
        .await
        .unwrap()
}

#[tokio::test]
async fn two_builders_of_one_export_leave_one_file_whose_checksum_matches_the_row() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    // Two worker processes' worth of consumers on one queue.
    let first = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let second = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    insert_orders(&db, user, ROWS, 1).await;
    let created = create_export(&db, &new_export(user, Format::Csv)).await;
    running_with_rows(&db, created.id).await;

    // The first builder's snapshot is taken; the second one sees more rows,
    // so the two files differ.
    insert_orders(&db, user, 1000, ROWS + 1).await;
    // The first builder is presumed dead (a pause longer than its lease):
    // the next job takes the export over while it is in fact still writing.
    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE exports SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
            &[&created.id],
        )
        .await
        .unwrap();
    duplicate_job(&db, created.id).await;

    let storage = root.storage();
    let (export, _) = succeeded_file(&db, &storage, created.id).await;
    assert_eq!(export.attempts, 2, "taken over once");
    assert_eq!(
        export.rows_written,
        i64::from(ROWS) + 1000,
        "the second builder's file"
    );
    // The first builder finishes its file too, may not record it, and
    // deletes it: one object is left, the row's.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let objects = objects_of(&storage, user).await;
        if objects == [export.object_key.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "objects left: {objects:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The row still describes the file (the first builder changed nothing).
    let (again, _) = succeeded_file(&db, &storage, created.id).await;
    assert_eq!(again, export);
    assert_eq!(events_about(&db, "export.completed", export.id).await, 1);
    first.stop().await;
    second.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn a_duplicate_export_job_for_a_live_lease_builds_nothing() {
    let db = database().await;
    let broker = TestBroker::new().await;
    let root = TempRoot::new();
    let worker = TestWorker::start(&db, &broker, &root, |_| {}).await;
    let user = Uuid::now_v7();
    insert_orders(&db, user, ROWS, 1).await;
    let created = create_export(&db, &new_export(user, Format::Csv)).await;
    running_with_rows(&db, created.id).await;

    let duplicate = duplicate_job(&db, created.id).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !published(&db, duplicate).await {
        assert!(Instant::now() < deadline, "the duplicate was not published");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        export(&db, created.id).await.status,
        ExportStatus::Running,
        "the duplicate must meet the live lease; the test needs more rows"
    );

    let storage = root.storage();
    let (export, file) = succeeded_file(&db, &storage, created.id).await;
    assert_eq!(export.attempts, 1, "the duplicate started nothing");
    assert_eq!(export.rows_written, i64::from(ROWS));
    assert_eq!(
        csv::Reader::from_reader(&file[..]).records().count(),
        ROWS as usize
    );
    assert_eq!(
        objects_of(&storage, user).await,
        vec![export.object_key.clone()]
    );
    assert_eq!(events_about(&db, "export.completed", export.id).await, 1);
    worker.stop().await;
    broker.cleanup().await;
}

#[tokio::test]
async fn an_export_whose_builder_died_is_failed_by_the_sweeper_and_frees_the_users_slot() {
    let db = database().await;
    let user = Uuid::now_v7();
    let mut client = db.pool().get().await.unwrap();
    // One export at a time for this user.
    let dead = exports::create(&mut client, &new_export(user, Format::Csv), 1)
        .await
        .unwrap();
    // A builder took it, then died; its job was dead-lettered (or its
    // failure could not be written): nobody will finish it.
    let Acquired::Run { .. } = leases::acquire(
        &mut client,
        dead.id,
        "worker-gone/1",
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap() else {
        panic!("a queued export is acquired");
    };
    client
        .execute(
            "UPDATE exports SET lease_expires_at = now() - interval '4 hours' WHERE id = $1",
            &[&dead.id],
        )
        .await
        .unwrap();
    assert!(matches!(
        exports::create(&mut client, &new_export(user, Format::Csv), 1).await,
        Err(exports::Error::TooManyActive { limit: 1 })
    ));
    // Left alone: a build under a live lease, a lease that ran out only
    // recently (its retry may be on its way), and a fresh queued export.
    let other = Uuid::now_v7();
    let live = exports::create(&mut client, &new_export(other, Format::Csv), 5)
        .await
        .unwrap();
    leases::acquire(
        &mut client,
        live.id,
        "worker-alive/1",
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap();
    let recent = exports::create(&mut client, &new_export(other, Format::Csv), 5)
        .await
        .unwrap();
    leases::acquire(
        &mut client,
        recent.id,
        "worker-retrying/1",
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap();
    client
        .execute(
            "UPDATE exports SET lease_expires_at = now() - interval '10 minutes' WHERE id = $1",
            &[&recent.id],
        )
        .await
        .unwrap();
    let queued = exports::create(&mut client, &new_export(other, Format::Csv), 5)
        .await
        .unwrap();
    // A queued export whose job never ran.
    let stuck = exports::create(&mut client, &new_export(other, Format::Csv), 5)
        .await
        .unwrap();
    client
        .execute(
            "UPDATE exports SET created_at = now() - interval '4 hours' WHERE id = $1",
            &[&stuck.id],
        )
        .await
        .unwrap();

    let failed = retention::fail_abandoned(
        db.pool(),
        Duration::from_secs(3 * 3600),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(failed, 2);
    let ended = export(&db, dead.id).await;
    assert_eq!(ended.status, ExportStatus::Failed);
    assert_eq!(ended.error.as_deref(), Some(leases::ABANDONED_RUNNING));
    assert_eq!(events_about(&db, "export.failed", dead.id).await, 1);
    let never = export(&db, stuck.id).await;
    assert_eq!(never.status, ExportStatus::Failed);
    assert_eq!(never.error.as_deref(), Some(leases::ABANDONED_QUEUED));
    for untouched in [live.id, recent.id] {
        assert_eq!(export(&db, untouched).await.status, ExportStatus::Running);
    }
    assert_eq!(export(&db, queued.id).await.status, ExportStatus::Queued);

    // The user's slot is free again.
    exports::create(&mut client, &new_export(user, Format::Csv), 1)
        .await
        .unwrap();
    // Nothing left to end.
    let again = retention::fail_abandoned(
        db.pool(),
        Duration::from_secs(3 * 3600),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(again, 0);
}

/// Sets a file's modification time `ago` in the past.
fn age(path: &std::path::Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

async fn put(storage: &Storage, key: &str, content: &'static [u8]) {
    let mut writer = storage.writer(key).unwrap();
    writer.write(Bytes::from_static(content)).await.unwrap();
    writer.finish().await.unwrap();
}

#[tokio::test]
async fn orphaned_staging_files_are_removed_by_the_sweeper_and_live_ones_kept() {
    let db = database().await;
    let root = TempRoot::new();
    let storage = root.storage();
    let user = Uuid::now_v7();
    let hours = |n: u64| Duration::from_secs(n * 3600);

    // An export's file, recorded long ago: kept however old.
    let mut client = db.pool().get().await.unwrap();
    let recorded = exports::create(&mut client, &new_export(user, Format::Csv), 5)
        .await
        .unwrap();
    let Acquired::Run {
        export: running,
        lease,
    } = leases::acquire(
        &mut client,
        recorded.id,
        "w/1",
        Duration::from_secs(60),
        false,
    )
    .await
    .unwrap()
    else {
        panic!("a queued export is acquired");
    };
    put(&storage, &running.object_key, b"id\n").await;
    let written = exports::Written {
        rows: 0,
        bytes: 3,
        sha256: sha256_hex(b"id\n"),
    };
    leases::succeed(&mut client, &lease, &written, hours(24))
        .await
        .unwrap();
    age(&root.0.join(&running.object_key), hours(5));

    // A file no export refers to (its builder lost the lease and died
    // before deleting it): removed once old; a young one may be a file
    // about to be recorded, and stays.
    let orphan = format!("exports/{user}/{}.csv", Uuid::now_v7());
    put(&storage, &orphan, b"old").await;
    age(&root.0.join(&orphan), hours(5));
    let young = format!("exports/{user}/{}.csv", Uuid::now_v7());
    put(&storage, &young, b"new").await;

    // Staging files: one of an upload killed hours ago, one being written.
    let folder = root.0.join("exports").join(user.to_string());
    let killed = folder.join("killed.csv#1");
    std::fs::write(&killed, b"partial").unwrap();
    age(&killed, hours(5));
    let live = folder.join("live.csv#2");
    std::fs::write(&live, b"partial").unwrap();

    let removed = retention::remove_orphans(db.pool(), &storage, hours(2))
        .await
        .unwrap();
    assert_eq!(
        removed,
        Orphans {
            staging: 1,
            objects: 1
        }
    );
    assert!(!killed.exists());
    assert!(live.exists());
    assert!(!storage.exists(&orphan).await.unwrap());
    assert!(storage.exists(&young).await.unwrap());
    assert!(storage.exists(&running.object_key).await.unwrap());

    // A second sweep finds nothing more.
    let again = retention::remove_orphans(db.pool(), &storage, hours(2))
        .await
        .unwrap();
    assert_eq!(again, Orphans::default());
}
