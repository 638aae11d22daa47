//! The exports domain against a real PostgreSQL: the active limit, the
//! job and events written with their state, scoping, idempotent finishing,
//! retention and SSE resume queries.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use keel_commerce::exports::{
    self, Compression, Error, ExportFilter, ExportStatus, Format, NewExport, Resource, Start,
    Written,
};
use keel_commerce::orders::domain::Scope;
use keel_db::page::PageRequest;
use keel_testkit::database::TestDatabase;
use uuid::Uuid;

const RETENTION: Duration = Duration::from_secs(3600);

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[
            &keel_outbox::MIGRATIONS,
            &keel_commerce::orders::MIGRATIONS,
            &keel_commerce::exports::MIGRATIONS,
        ],
    )
    .await
}

fn new_export(user: Uuid) -> NewExport {
    NewExport {
        user_id: user,
        all_orders: false,
        resource: Resource::Orders,
        format: Format::Csv,
        compression: Compression::None,
        filter: ExportFilter::default(),
    }
}

fn written() -> Written {
    Written {
        rows: 3,
        bytes: 120,
        sha256: "ab".repeat(32),
    }
}

async fn outbox(db: &TestDatabase, message_type: &str, id: Uuid) -> i64 {
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

#[tokio::test]
async fn creating_an_export_queues_it_with_its_job_in_the_same_transaction() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::now_v7();
    let export = exports::create(&mut client, &new_export(user), 3)
        .await
        .unwrap();
    assert_eq!(export.status, ExportStatus::Queued);
    assert_eq!(
        export.object_key,
        format!("exports/{user}/{}.csv", export.id)
    );
    assert_eq!(outbox(&db, "export.run", export.id).await, 1);
}

#[tokio::test]
async fn past_the_active_limit_an_export_is_refused_even_when_requests_race() {
    let db = database().await;
    let user = Uuid::now_v7();
    let attempts = (0..8).map(|_| {
        let pool = db.pool().clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.unwrap();
            exports::create(&mut client, &new_export(user), 3).await
        })
    });
    let results = futures_join(attempts).await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::TooManyActive { limit: 3 })))
        .count();
    assert_eq!((accepted, refused), (3, 5));

    // A finished export frees its slot.
    let mut client = db.pool().get().await.unwrap();
    let first = results.iter().flatten().next().unwrap();
    exports::start(&mut client, first.id).await.unwrap();
    exports::succeed(&mut client, first.id, &written(), RETENTION)
        .await
        .unwrap();
    exports::create(&mut client, &new_export(user), 3)
        .await
        .unwrap();
    // Another user has a limit of their own.
    exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
        .await
        .unwrap();
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

#[tokio::test]
async fn someone_elses_export_is_not_found_but_an_admin_sees_it() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let owner = Uuid::now_v7();
    let export = exports::create(&mut client, &new_export(owner), 3)
        .await
        .unwrap();
    assert!(matches!(
        exports::get(&client, export.id, Scope::User(Uuid::now_v7())).await,
        Err(Error::NotFound)
    ));
    assert_eq!(
        exports::get(&client, export.id, Scope::User(owner))
            .await
            .unwrap()
            .id,
        export.id
    );
    assert_eq!(
        exports::get(&client, export.id, Scope::All)
            .await
            .unwrap()
            .id,
        export.id
    );
}

#[tokio::test]
async fn succeeding_writes_one_completed_event_and_a_finished_export_is_never_restarted() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let export = exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
        .await
        .unwrap();
    let Start::Run(running) = exports::start(&mut client, export.id).await.unwrap() else {
        panic!("a queued export starts");
    };
    assert_eq!(
        (running.status, running.attempts),
        (ExportStatus::Running, 1)
    );
    exports::progress(&client, export.id, 2).await.unwrap();

    let done = exports::succeed(&mut client, export.id, &written(), RETENTION)
        .await
        .unwrap();
    assert_eq!(done.status, ExportStatus::Succeeded);
    assert_eq!((done.rows_written, done.bytes), (3, 120));
    let lifetime = done.expires_at.unwrap() - done.finished_at.unwrap();
    assert_eq!(lifetime, chrono::Duration::hours(1));

    // A racing delivery that also succeeds changes nothing.
    let again = exports::succeed(&mut client, export.id, &written(), RETENTION)
        .await
        .unwrap();
    assert_eq!(again, done);
    assert_eq!(outbox(&db, "export.completed", export.id).await, 1);
    // A redelivered job finds it finished.
    assert!(matches!(
        exports::start(&mut client, export.id).await.unwrap(),
        Start::Finished(e) if e.attempts == 1
    ));
    // Progress after the end is ignored.
    exports::progress(&client, export.id, 99).await.unwrap();
    let now = exports::get(&client, export.id, Scope::All).await.unwrap();
    assert_eq!(now.rows_written, 3);
    // A succeeded export cannot fail any more.
    assert!(matches!(
        exports::fail(&mut client, export.id, "late", RETENTION).await,
        Err(Error::IllegalTransition(_))
    ));
}

#[tokio::test]
async fn a_redelivered_running_export_starts_over() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let export = exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
        .await
        .unwrap();
    exports::start(&mut client, export.id).await.unwrap();
    exports::progress(&client, export.id, 500).await.unwrap();
    let Start::Run(again) = exports::start(&mut client, export.id).await.unwrap() else {
        panic!("a running export restarts");
    };
    assert_eq!((again.attempts, again.rows_written), (2, 0));
}

#[tokio::test]
async fn failing_records_the_users_message_and_one_failed_event() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let export = exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
        .await
        .unwrap();
    // Straight from queued: a job that can never run.
    let failed = exports::fail(&mut client, export.id, "Try again.", RETENTION)
        .await
        .unwrap();
    assert_eq!(failed.status, ExportStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("Try again."));
    exports::fail(&mut client, export.id, "Try again.", RETENTION)
        .await
        .unwrap();
    assert_eq!(outbox(&db, "export.failed", export.id).await, 1);
}

#[tokio::test]
async fn listing_is_newest_first_per_user_with_a_cursor() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::now_v7();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            exports::create(&mut client, &new_export(user), 10)
                .await
                .unwrap()
                .id,
        );
    }
    exports::create(&mut client, &new_export(Uuid::now_v7()), 10)
        .await
        .unwrap();
    ids.reverse();
    let first = exports::list(
        &client,
        user,
        PageRequest {
            cursor: None,
            limit: 3,
        },
    )
    .await
    .unwrap();
    let second = exports::list(
        &client,
        user,
        PageRequest {
            cursor: first.next_cursor,
            limit: 3,
        },
    )
    .await
    .unwrap();
    let listed: Vec<Uuid> = first
        .items
        .iter()
        .chain(&second.items)
        .map(|e| e.id)
        .collect();
    assert_eq!(listed, ids);
    assert!(second.next_cursor.is_none());
}

#[tokio::test]
async fn finished_since_returns_a_users_finished_exports_in_finishing_order() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::now_v7();
    let before = Utc::now() - chrono::Duration::seconds(1);
    let a = exports::create(&mut client, &new_export(user), 10)
        .await
        .unwrap();
    let b = exports::create(&mut client, &new_export(user), 10)
        .await
        .unwrap();
    let running = exports::create(&mut client, &new_export(user), 10)
        .await
        .unwrap();
    let other = exports::create(&mut client, &new_export(Uuid::now_v7()), 10)
        .await
        .unwrap();
    exports::start(&mut client, running.id).await.unwrap();
    exports::fail(&mut client, b.id, "no", RETENTION)
        .await
        .unwrap();
    exports::start(&mut client, a.id).await.unwrap();
    exports::succeed(&mut client, a.id, &written(), RETENTION)
        .await
        .unwrap();
    exports::fail(&mut client, other.id, "no", RETENTION)
        .await
        .unwrap();

    let since = exports::finished_since(&client, user, before, 10)
        .await
        .unwrap();
    let ids: Vec<Uuid> = since.iter().map(|e| e.id).collect();
    assert_eq!(ids, [b.id, a.id]);
    let b_finished = since[0].finished_at.unwrap();
    let later = exports::finished_since(&client, user, b_finished, 10)
        .await
        .unwrap();
    assert_eq!(later.iter().map(|e| e.id).collect::<Vec<_>>(), [a.id]);
}

#[tokio::test]
async fn only_finished_exports_past_their_expiry_are_due_and_each_is_marked_once() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let user = Uuid::now_v7();
    let due = exports::create(&mut client, &new_export(user), 10)
        .await
        .unwrap();
    let queued = exports::create(&mut client, &new_export(user), 10)
        .await
        .unwrap();
    exports::start(&mut client, due.id).await.unwrap();
    exports::succeed(&mut client, due.id, &written(), Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;

    let expiring = exports::expiring(&client, Utc::now(), 10).await.unwrap();
    assert_eq!(expiring.iter().map(|e| e.id).collect::<Vec<_>>(), [due.id]);
    assert!(exports::mark_expired(&client, due.id).await.unwrap());
    assert!(!exports::mark_expired(&client, due.id).await.unwrap());
    assert!(!exports::mark_expired(&client, queued.id).await.unwrap());
    assert!(
        exports::expiring(&client, Utc::now(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

mod leases {
    //! The lease and its fencing (ADR 0025).
    use super::*;
    use keel_commerce::exports::{Acquired, leases};

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_live_lease_turns_a_second_job_away_and_a_taken_over_one_fences_the_stale_builder() {
        let db = database().await;
        let mut client = db.pool().get().await.unwrap();
        let export = exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
            .await
            .unwrap();
        let Acquired::Run {
            export: first,
            lease: stale,
        } = leases::acquire(&mut client, export.id, "a", TTL, false)
            .await
            .unwrap()
        else {
            panic!("a queued export is acquired");
        };
        assert_eq!(
            first.object_key, export.object_key,
            "attempt 1 writes the created key"
        );

        // A duplicate job meets the live lease.
        assert!(matches!(
            leases::acquire(&mut client, export.id, "b", TTL, false).await.unwrap(),
            Acquired::Held { owner: Some(owner), .. } if owner == "a"
        ));
        // A redelivery takes over: a new generation and an object of its own.
        let Acquired::Run {
            export: second,
            lease: current,
        } = leases::acquire(&mut client, export.id, "c", TTL, true)
            .await
            .unwrap()
        else {
            panic!("a redelivery takes over");
        };
        assert_eq!((stale.generation, current.generation), (1, 2));
        assert_ne!(second.object_key, first.object_key);

        // The stale builder can neither report progress, renew, fail nor succeed.
        leases::progress(&client, &stale, 7).await.unwrap();
        assert!(!leases::renew(&client, &stale, TTL).await.unwrap());
        assert!(matches!(
            leases::succeed(&mut client, &stale, &written(), RETENTION).await,
            Err(Error::LeaseLost { generation: 1 })
        ));
        assert!(matches!(
            leases::fail(&mut client, &stale, "no", RETENTION).await,
            Err(Error::LeaseLost { generation: 1 })
        ));
        assert_eq!(
            exports::get(&client, export.id, Scope::All)
                .await
                .unwrap()
                .rows_written,
            0
        );

        assert!(leases::renew(&client, &current, TTL).await.unwrap());
        let done = leases::succeed(&mut client, &current, &written(), RETENTION)
            .await
            .unwrap();
        assert_eq!(done.status, ExportStatus::Succeeded);
        assert_eq!(done.object_key, second.object_key);
        assert_eq!(outbox(&db, "export.completed", export.id).await, 1);
        assert!(matches!(
            leases::acquire(&mut client, export.id, "d", TTL, true)
                .await
                .unwrap(),
            Acquired::Finished(_)
        ));
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_over_by_the_retry_at_once() {
        let db = database().await;
        let mut client = db.pool().get().await.unwrap();
        let export = exports::create(&mut client, &new_export(Uuid::now_v7()), 3)
            .await
            .unwrap();
        let Acquired::Run { lease, .. } = leases::acquire(&mut client, export.id, "a", TTL, false)
            .await
            .unwrap()
        else {
            panic!("a queued export is acquired");
        };
        leases::release(&client, &lease).await.unwrap();
        assert!(matches!(
            leases::acquire(&mut client, export.id, "retry", TTL, false).await.unwrap(),
            Acquired::Run { lease, .. } if lease.generation == 2
        ));
    }
}
