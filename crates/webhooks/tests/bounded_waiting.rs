//! The group commit under faults: a full queue, a commit that hangs, a
//! statement timeout, a committer that panics. The hangs are real: another
//! connection holds `LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE`,
//! so every capture statement waits in PostgreSQL until it is released.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_testkit::database::TestDatabase;
use keel_webhooks::group_commit::{BeforeStatement, GroupCommit, GroupCommitOptions};
use keel_webhooks::{Captured, Error, NewEvent, PreparedCapture};
use tokio::sync::Notify;

/// Bounds how long a test waits for something that must happen; reaching
/// it is the failure ("still waiting"), never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn database() -> TestDatabase {
    TestDatabase::create(
        "store",
        &[&keel_outbox::MIGRATIONS, &keel_webhooks::MIGRATIONS],
    )
    .await
}

fn prepared(delivery_id: &str) -> PreparedCapture {
    PreparedCapture::new(&NewEvent {
        source: "shopify",
        topic: Some("orders/create"),
        delivery_id,
        body: b"{}",
        headers: &serde_json::json!({}),
    })
    .unwrap()
}

async fn stored(db: &TestDatabase) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM webhook_events", &[])
        .await
        .unwrap()
        .get(0)
}

/// A connection holding every capture statement at the table lock until
/// [`TableLock::release`].
struct TableLock {
    client: keel_db::Client,
}

impl TableLock {
    async fn take(db: &TestDatabase) -> Self {
        let client = db.pool().get().await.unwrap();
        client
            .batch_execute("BEGIN; LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Self { client }
    }

    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// Counts statements and signals each one.
#[derive(Default)]
struct Statements {
    sent: AtomicUsize,
    signal: Notify,
}

impl Statements {
    fn hook(self: &Arc<Self>) -> BeforeStatement {
        let statements = Arc::clone(self);
        Arc::new(move |_: &[PreparedCapture]| {
            statements.sent.fetch_add(1, Ordering::SeqCst);
            statements.signal.notify_one();
        })
    }

    async fn wait_for_one(&self) {
        tokio::time::timeout(PATIENCE, self.signal.notified())
            .await
            .expect("a statement is sent");
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_capture_past_the_waiting_bound_is_refused_at_once_while_the_others_wait() {
    let db = database().await;
    let statements = Arc::new(Statements::default());
    let group = GroupCommit::start_with(
        db.pool().clone(),
        GroupCommitOptions {
            max_batch: 1,
            concurrent_batches: 1,
            max_waiting: 1,
            capture_timeout: PATIENCE,
            ..GroupCommitOptions::default()
        },
        statements.hook(),
    );
    let lock = TableLock::take(&db).await;

    // The only committer is stuck on the lock with the first delivery...
    let first = tokio::spawn({
        let group = group.clone();
        async move { group.capture(prepared("first")).await }
    });
    statements.wait_for_one().await;
    // ...the second fills the one waiting place...
    let second = tokio::spawn({
        let group = group.clone();
        async move { group.capture(prepared("second")).await }
    });
    tokio::time::timeout(PATIENCE, async {
        while group.waiting() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the second capture waits in the queue");

    // ...and the third is refused while the commit still hangs: it did not
    // wait for the lock, the deadline or a place in the queue.
    let third = tokio::time::timeout(PATIENCE, group.capture(prepared("third")))
        .await
        .expect("a capture past the bound is answered while the commit hangs");
    assert!(matches!(third, Err(Error::Saturated(1))), "{third:?}");
    assert!(third.unwrap_err().is_retryable());

    lock.release().await;
    assert!(matches!(first.await.unwrap(), Ok(Captured::Stored(_))));
    assert!(matches!(second.await.unwrap(), Ok(Captured::Stored(_))));
    assert_eq!(stored(&db).await, 2);
}

#[tokio::test]
async fn a_capture_whose_commit_hangs_is_answered_at_its_deadline_and_its_retry_is_stored_once() {
    let db = database().await;
    let group = GroupCommit::start(
        db.pool().clone(),
        GroupCommitOptions {
            concurrent_batches: 1,
            capture_timeout: Duration::from_millis(500),
            ..GroupCommitOptions::default()
        },
    );
    let lock = TableLock::take(&db).await;

    let answer = tokio::time::timeout(PATIENCE, group.capture(prepared("hung")))
        .await
        .expect("the caller is answered while the commit still hangs");
    assert!(
        matches!(answer, Err(Error::DeadlineExceeded(d)) if d == Duration::from_millis(500)),
        "{answer:?}"
    );
    assert!(answer.unwrap_err().is_retryable());

    // The abandoned statement still waits on the lock in PostgreSQL and may
    // commit once it is released: the sender's retry then finds it. Either
    // way the delivery is stored exactly once.
    lock.release().await;
    let retry = group.capture(prepared("hung")).await;
    assert!(
        matches!(retry, Ok(Captured::Stored(_) | Captured::Duplicate(_))),
        "{retry:?}"
    );
    assert_eq!(stored(&db).await, 1);
}

#[tokio::test]
async fn a_statement_timeout_fails_the_batch_fast_instead_of_retrying_each_delivery_alone() {
    let db = database().await;
    let mut settings = db.settings();
    settings.statement_timeout = Duration::from_secs(2);
    let pool = keel_db::connect(&settings, "store", "group-commit-test").unwrap();
    let statements = Arc::new(Statements::default());
    let group = GroupCommit::start_with(
        pool,
        GroupCommitOptions {
            max_batch: 64,
            concurrent_batches: 1,
            capture_timeout: PATIENCE,
            ..GroupCommitOptions::default()
        },
        statements.hook(),
    );
    let lock = TableLock::take(&db).await;

    // The committer waits on the lock with one delivery; twenty more queue
    // up behind it and form the next batch together.
    let first = tokio::spawn({
        let group = group.clone();
        async move { group.capture(prepared("first")).await }
    });
    statements.wait_for_one().await;
    let batch =
        futures::future::join_all((0..20).map(|n| group.capture(prepared(&format!("queued-{n}")))));
    let batch = tokio::time::timeout(PATIENCE, batch)
        .await
        .expect("the batch is answered");
    let first = first.await.unwrap();

    for outcome in std::iter::once(&first).chain(&batch) {
        let Err(error) = outcome else {
            panic!("stored through a held table lock: {outcome:?}");
        };
        assert!(error.is_busy(), "a timeout is a 503, not a 500: {error:?}");
    }
    // One statement for the first delivery, one for the batch of twenty:
    // no statement per delivery, each waiting out its own timeout.
    assert_eq!(statements.sent(), 2);

    lock.release().await;
    assert_eq!(stored(&db).await, 0);
}

#[tokio::test]
async fn a_committer_that_panics_is_replaced_and_later_captures_succeed() {
    let db = database().await;
    let group = GroupCommit::start_with(
        db.pool().clone(),
        GroupCommitOptions {
            // The only committer: nothing else could take over.
            concurrent_batches: 1,
            capture_timeout: PATIENCE,
            ..GroupCommitOptions::default()
        },
        Arc::new(|batch: &[PreparedCapture]| {
            if batch.iter().any(|capture| capture.delivery_id == "poison") {
                panic!("injected: the committer fails on this batch");
            }
        }),
    );

    let poisoned = tokio::time::timeout(PATIENCE, group.capture(prepared("poison")))
        .await
        .expect("the callers of a panicking committer are answered, not left waiting");
    assert!(
        matches!(poisoned, Err(Error::CommitterFailed)),
        "{poisoned:?}"
    );
    assert!(poisoned.unwrap_err().is_retryable());

    for n in 0..3 {
        let later = tokio::time::timeout(PATIENCE, group.capture(prepared(&format!("later-{n}"))))
            .await
            .expect("a later capture is answered");
        assert!(matches!(later, Ok(Captured::Stored(_))), "{later:?}");
    }
    assert_eq!(stored(&db).await, 3);
}
