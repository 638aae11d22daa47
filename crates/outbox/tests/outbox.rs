//! The outbox and inbox against real PostgreSQL and RabbitMQ
//! (`KEEL_TEST_DATABASE_URL`, `KEEL_TEST_AMQP_URL`): a database and an AMQP
//! namespace per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use keel_contracts::events::{DomainEvent, OrderSnapshot};
use keel_contracts::jobs::{JobQueue, WebhookProcess};
use keel_contracts::{Envelope, Job};
use keel_db::Pool;
use keel_messaging::{
    AmqpSettings, Broker, Consumer, ConsumerMetrics, ConsumerOptions, Handler, HandlerError,
    Incoming, Publisher, ReconnectSettings,
};
use keel_outbox::{
    MIGRATIONS, OutboxRow, Relay, RelayMetrics, RelayOptions, enqueue_event, enqueue_job, inbox,
};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::proxy::TcpProxy;
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SCHEMA: &str = "app";
const WAIT: Duration = Duration::from_secs(20);

fn job() -> Envelope<Job> {
    Envelope::new(Job::WebhookProcess(WebhookProcess {
        event_id: Uuid::new_v4(),
    }))
}

async fn database() -> TestDatabase {
    TestDatabase::create(SCHEMA, &[&MIGRATIONS]).await
}

/// Enqueues `count` jobs in one transaction and returns their ids.
async fn enqueue_jobs(pool: &Pool, count: usize) -> Vec<Uuid> {
    let mut client = pool.get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let envelope = job();
        enqueue_job(&transaction, &envelope).await.unwrap();
        ids.push(envelope.id);
    }
    transaction.commit().await.unwrap();
    ids
}

async fn unpublished(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_until_all_published(pool: &Pool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = unpublished(pool).await;
        if left == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{left} rows still unpublished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn relay(db: &TestDatabase, settings: AmqpSettings, options: RelayOptions) -> Relay {
    relay_with_metrics(db, settings, options, RelayMetrics::default())
}

fn relay_with_metrics(
    db: &TestDatabase,
    settings: AmqpSettings,
    options: RelayOptions,
    metrics: RelayMetrics,
) -> Relay {
    let listen = db.url().parse().unwrap();
    let publisher = Publisher::new(Broker::new(settings, "relay"));
    Relay::new(
        db.pool().clone(),
        listen,
        SCHEMA,
        publisher,
        options,
        metrics,
    )
}

/// Every message id delivered to `queue` until it stays empty for a while,
/// with the number of times each was seen.
async fn drain(channel: &Channel, queue: &str, expected: usize) -> HashMap<Uuid, usize> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    let mut total = 0;
    loop {
        // Long wait until everything expected arrived, then a short one to
        // catch duplicates that would follow.
        let wait = if total < expected {
            WAIT
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(delivery)) => {
                let delivery = delivery.unwrap();
                let id = delivery.properties.message_id().as_ref().unwrap();
                *seen
                    .entry(Uuid::parse_str(id.as_str()).unwrap())
                    .or_default() += 1;
                total += 1;
            }
            Ok(None) => panic!("consumer cancelled"),
            Err(_) if total < expected => panic!("only {total} of {expected} messages arrived"),
            Err(_) => return seen,
        }
    }
}

fn through_proxy(test: &TestBroker, proxy: &TcpProxy) -> AmqpSettings {
    let mut url = url::Url::parse(test.settings().url.expose_secret()).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    let mut settings = test.settings();
    settings.url = SecretString::from(url.to_string());
    settings.reconnect = ReconnectSettings {
        min: Duration::from_millis(50),
        max: Duration::from_millis(300),
    };
    settings.connect_timeout = Duration::from_secs(2);
    settings
}

fn broker_addr(test: &TestBroker) -> SocketAddr {
    let url = url::Url::parse(test.settings().url.expose_secret()).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5672))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn writes_commit_while_the_broker_is_unreachable_and_every_row_goes_out_once_it_returns() {
    let test = TestBroker::new().await;
    let db = database().await;
    let proxy = TcpProxy::start(broker_addr(&test)).await;
    let relay = relay(
        &db,
        through_proxy(&test, &proxy),
        RelayOptions {
            batch_size: 10,
            poll_interval: Duration::from_millis(200),
            ..RelayOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));

    // Connected and publishing.
    let mut expected = enqueue_jobs(db.pool(), 1).await;
    wait_until_all_published(db.pool()).await;

    proxy.cut();
    for _ in 0..5 {
        expected.extend(enqueue_jobs(db.pool(), 5).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(unpublished(db.pool()).await, 25, "rows wait in the outbox");
    let client = db.pool().get().await.unwrap();
    let attempts: i64 = client
        .query_one("SELECT coalesce(sum(attempts), 0) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert!(attempts > 0, "failed attempts are recorded");

    proxy.restore();
    wait_until_all_published(db.pool()).await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    let seen = drain(&channel, &queue, expected.len()).await;
    assert_eq!(seen.len(), expected.len());
    assert!(seen.values().all(|&n| n == 1), "a row was published twice");
    assert!(expected.iter().all(|id| seen.contains_key(id)));

    shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    test.cleanup().await;
}

#[tokio::test]
async fn two_relays_over_a_thousand_rows_publish_no_row_twice() {
    let test = TestBroker::new().await;
    let db = database().await;
    let mut expected = Vec::new();
    for _ in 0..10 {
        expected.extend(enqueue_jobs(db.pool(), 100).await);
    }
    let options = RelayOptions {
        batch_size: 50,
        poll_interval: Duration::from_millis(200),
        ..RelayOptions::default()
    };
    let shutdown = CancellationToken::new();
    let (first_metrics, second_metrics) = (RelayMetrics::default(), RelayMetrics::default());
    let first = relay_with_metrics(&db, test.settings(), options.clone(), first_metrics.clone());
    let second = relay_with_metrics(&db, test.settings(), options, second_metrics.clone());
    let first = tokio::spawn(first.run(shutdown.clone()));
    let second = tokio::spawn(second.run(shutdown.clone()));

    wait_until_all_published(db.pool()).await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    let seen = drain(&channel, &queue, 1000).await;
    assert_eq!(seen.len(), 1000);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "published more than once: {twice:?}");
    expected.sort();
    let mut ids: Vec<Uuid> = seen.into_keys().collect();
    ids.sort();
    assert_eq!(ids, expected);
    // Both relays took part, and between them confirmed each row once.
    let (a, b) = (
        first_metrics.published_total(),
        second_metrics.published_total(),
    );
    assert!(a > 0 && b > 0, "one relay did all the work: {a} + {b}");
    assert_eq!(a + b, 1000);

    shutdown.cancel();
    first.await.unwrap();
    second.await.unwrap();
    test.cleanup().await;
}

/// Applies each message in a transaction, de-duplicated with the inbox.
struct Applier {
    pool: Pool,
    deliveries: Arc<AtomicUsize>,
    applied: Arc<AtomicUsize>,
}

impl Handler for Applier {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        self.deliveries.fetch_add(1, Ordering::SeqCst);
        let mut client = self.pool.get().await.map_err(HandlerError::transient)?;
        let transaction = client
            .transaction()
            .await
            .map_err(HandlerError::transient)?;
        if inbox::claim(&transaction, "worker", message.id())
            .await
            .map_err(HandlerError::transient)?
        {
            // The message's effect would be written here, in the same
            // transaction as the claim.
            self.applied.fetch_add(1, Ordering::SeqCst);
        }
        transaction
            .commit()
            .await
            .map_err(HandlerError::transient)?;
        Ok(())
    }
}

#[tokio::test]
async fn a_relay_that_dies_after_the_confirm_publishes_again_and_the_inbox_applies_it_once() {
    let test = TestBroker::new().await;
    let db = database().await;
    let ids = enqueue_jobs(db.pool(), 1).await;
    let relay = relay(&db, test.settings(), RelayOptions::default());

    // Published and confirmed, but the marking transaction never commits.
    assert_eq!(relay.publish_pending_then_roll_back().await.unwrap(), 1);
    assert_eq!(unpublished(db.pool()).await, 1);
    // The next relay run publishes it again.
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(unpublished(db.pool()).await, 0);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);

    let deliveries = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let handler = Applier {
        pool: db.pool().clone(),
        deliveries: deliveries.clone(),
        applied: applied.clone(),
    };
    let broker = test.broker("worker");
    let options = ConsumerOptions::from_settings(broker.settings(), "worker");
    let consumer = Consumer::new(
        broker,
        test.topology().job_queue(JobQueue::Webhook),
        handler,
        options,
        ConsumerMetrics::default(),
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(consumer.run(shutdown.clone()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while deliveries.load(Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both copies were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(deliveries.load(Ordering::SeqCst), 2, "delivered twice");
    assert_eq!(applied.load(Ordering::SeqCst), 1, "applied once");

    let client = db.pool().get().await.unwrap();
    let claimed: i64 = client
        .query_one(
            "SELECT count(*) FROM inbox WHERE consumer = 'worker' AND message_id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(claimed, 1);
    test.cleanup().await;
}

/// A relay whose poll is far beyond any test's patience (only a wake-up
/// makes it publish), running, past its first empty pass, with a queue
/// bound to `order.*`.
struct IdleRelay {
    test: TestBroker,
    db: TestDatabase,
    channel: Channel,
    queue: String,
    waker: keel_outbox::RelayWaker,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<()>,
}

impl IdleRelay {
    async fn start() -> Self {
        let test = TestBroker::new().await;
        let db = database().await;
        let channel = test.channel().await;
        let queue = test
            .topology()
            .declare_event_queue(&channel, "analytics", &["order.*"])
            .await
            .unwrap()
            .name;
        let relay = relay(
            &db,
            test.settings(),
            RelayOptions {
                batch_size: 100,
                poll_interval: Duration::from_secs(3600),
                ..RelayOptions::default()
            },
        );
        let waker = relay.waker();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(relay.run(shutdown.clone()));
        // Let the relay finish its first (empty) pass and start listening.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Self {
            test,
            db,
            channel,
            queue,
            waker,
            shutdown,
            running,
        }
    }

    async fn get(&self) -> Option<lapin::message::BasicGetMessage> {
        self.channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
    }

    /// The next message published to the queue, within 5 s.
    async fn published(&self, what: &str) -> lapin::message::BasicGetMessage {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(message) = self.get().await {
                return message;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.await.unwrap();
        self.test.cleanup().await;
    }
}

fn order_created(total_cents: i64) -> Envelope<DomainEvent> {
    Envelope::new(DomainEvent::OrderCreated(OrderSnapshot {
        order_id: Uuid::new_v4(),
        user_id: None,
        status: "pending".to_owned(),
        currency: "EUR".to_owned(),
        total_cents,
        source: "api".to_owned(),
    }))
}

#[tokio::test]
async fn a_committed_event_wakes_the_relay_without_waiting_for_the_poll() {
    let relay = IdleRelay::start().await;
    let event = order_created(1250);
    let mut client = relay.db.pool().get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    enqueue_event(&transaction, &event).await.unwrap();
    transaction.commit().await.unwrap();

    let message = relay.published("the event was not published").await;
    assert_eq!(message.delivery.routing_key.as_str(), "order.created");
    let body: Envelope<DomainEvent> = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body, event);
    relay.stop().await;
}

#[tokio::test]
async fn a_row_written_without_notify_goes_out_when_the_in_process_waker_raises_the_relay() {
    let relay = IdleRelay::start().await;
    // Written the hot-path way: the row carries no NOTIFY.
    let event = order_created(990);
    let client = relay.db.pool().get().await.unwrap();
    OutboxRow::event(&event)
        .unwrap()
        .insert_without_notify(&client)
        .await
        .unwrap();
    // Nothing wakes the relay yet (no NOTIFY, an hour's poll).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        relay.get().await.is_none(),
        "published before anything woke the relay"
    );

    relay.waker.wake();
    let message = relay
        .published("the waker did not make the relay publish")
        .await;
    let body: Envelope<DomainEvent> = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body, event);
    relay.stop().await;
}

#[tokio::test]
async fn a_rolled_back_write_leaves_nothing_to_publish() {
    let test = TestBroker::new().await;
    let db = database().await;
    {
        let mut client = db.pool().get().await.unwrap();
        let transaction = client.transaction().await.unwrap();
        enqueue_job(&transaction, &job()).await.unwrap();
        transaction.rollback().await.unwrap();
    }
    let relay = relay(&db, test.settings(), RelayOptions::default());
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    assert_eq!(relay.backlog().await.unwrap(), 0);
    test.cleanup().await;
}

#[tokio::test]
async fn the_inbox_claims_a_message_only_the_first_time_each_consumer_sees_it() {
    let db = database().await;
    let client = db.pool().get().await.unwrap();
    let id = Uuid::now_v7();
    assert!(inbox::claim(&client, "analytics", id).await.unwrap());
    assert!(!inbox::claim(&client, "analytics", id).await.unwrap());
    assert!(inbox::claim(&client, "worker", id).await.unwrap());
}

#[tokio::test]
async fn pruning_removes_old_published_rows_and_claims_but_never_an_unpublished_row() {
    let db = database().await;
    let ids = enqueue_jobs(db.pool(), 3).await;
    let client = db.pool().get().await.unwrap();
    // Two rows published eight days ago, one never published (and as old).
    client
        .execute(
            "UPDATE outbox SET created_at = now() - interval '9 days', \
             published_at = CASE WHEN id = $1 THEN NULL ELSE now() - interval '8 days' END",
            &[&ids[0]],
        )
        .await
        .unwrap();
    let old_claim = Uuid::new_v4();
    let fresh_claim = Uuid::new_v4();
    assert!(inbox::claim(&client, "c", old_claim).await.unwrap());
    assert!(inbox::claim(&client, "c", fresh_claim).await.unwrap());
    client
        .execute(
            "UPDATE inbox SET processed_at = now() - interval '8 days' WHERE message_id = $1",
            &[&old_claim],
        )
        .await
        .unwrap();

    let test = TestBroker::new().await;
    let relay = relay(&db, test.settings(), RelayOptions::default());
    assert_eq!(relay.prune().await.unwrap(), 3);

    let left: Vec<Uuid> = client
        .query("SELECT id FROM outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![ids[0]], "only the unpublished row remains");
    // The fresh claim still guards against a redelivery.
    assert!(!inbox::claim(&client, "c", fresh_claim).await.unwrap());
    assert!(inbox::claim(&client, "c", old_claim).await.unwrap());
    test.cleanup().await;
}

/// Options that retry a refused row at once and park it after `max` refusals.
fn parking_options(max: u32) -> RelayOptions {
    RelayOptions {
        max_rejections: max,
        rejection_backoff_min: Duration::from_millis(10),
        rejection_backoff_max: Duration::from_millis(20),
        ..RelayOptions::default()
    }
}

/// Inserts a job row nobody's queue is bound to (the soak's poison), as the
/// oldest row of the outbox.
async fn enqueue_unroutable_job(pool: &Pool, routing_key: &str) -> Uuid {
    let id = Uuid::new_v4();
    let client = pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (id, target, routing_key, message_type, payload, created_at) \
             VALUES ($1, 'jobs', $2, 'test.unroutable', '{}'::jsonb, now() - interval '1 minute')",
            &[&id, &routing_key],
        )
        .await
        .unwrap();
    id
}

/// `(published, parked, rejections, last_error)` of one row.
async fn row_state(pool: &Pool, id: Uuid) -> (bool, bool, i32, Option<String>) {
    let client = pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT published_at IS NOT NULL, parked_at IS NOT NULL, rejections, last_error \
             FROM outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2), row.get(3))
}

/// Runs passes until `id` is parked (each pass after the row's backoff).
async fn publish_until_parked(relay: &Relay, pool: &Pool, id: Uuid) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !row_state(pool, id).await.1 {
        assert!(tokio::time::Instant::now() < deadline, "never parked");
        tokio::time::sleep(Duration::from_millis(30)).await;
        relay.publish_pending().await.unwrap();
    }
}

#[tokio::test]
async fn an_unpublishable_row_is_parked_with_its_reason_while_the_rows_behind_it_flow() {
    let test = TestBroker::new().await;
    let db = database().await;
    let poison = enqueue_unroutable_job(db.pool(), "nobody-binds-this").await;
    let behind = enqueue_jobs(db.pool(), 5).await;
    let relay = relay(&db, test.settings(), parking_options(3));

    // The first pass publishes the rows behind the refused one.
    assert_eq!(relay.publish_pending().await.unwrap(), 5);
    let (published, parked, rejections, last_error) = row_state(db.pool(), poison).await;
    assert!(!published && !parked);
    assert_eq!(rejections, 1);
    assert!(last_error.unwrap().contains("unroutable"));
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    let seen = drain(&channel, &queue, behind.len()).await;
    assert!(behind.iter().all(|id| seen.contains_key(id)));

    // Retried after its backoff, then parked with its reason.
    publish_until_parked(&relay, db.pool(), poison).await;
    let (published, parked, rejections, last_error) = row_state(db.pool(), poison).await;
    assert!(!published && parked, "parked, never marked published");
    assert_eq!(rejections, 3);
    assert!(last_error.as_deref().unwrap().contains("nobody-binds-this"));
    let listed = keel_outbox::parked(db.pool(), 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, poison);
    // The relay skips it now; new rows still flow.
    enqueue_jobs(db.pool(), 2).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 2);
    assert_eq!(row_state(db.pool(), poison).await.2, 3, "not tried again");
    test.cleanup().await;
}

#[tokio::test]
async fn a_parked_row_goes_out_once_unparked_after_its_cause_is_fixed() {
    let test = TestBroker::new().await;
    let db = database().await;
    let key = "late-queue";
    let poison = enqueue_unroutable_job(db.pool(), key).await;
    let relay = relay(&db, test.settings(), parking_options(2));
    relay.publish_pending().await.unwrap();
    publish_until_parked(&relay, db.pool(), poison).await;

    // The cause is fixed: a queue now takes that key.
    let channel = test.channel().await;
    let queue = format!("{}.jobs.{key}", test.namespace());
    channel
        .queue_declare(
            queue.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            test.topology().jobs_exchange().as_str().into(),
            key.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(relay.publish_pending().await.unwrap(), 0, "still parked");

    assert_eq!(
        keel_outbox::unpark(db.pool(), Some(&[poison]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    let (published, parked, rejections, _) = row_state(db.pool(), poison).await;
    assert!(published && !parked);
    assert_eq!(rejections, 0);
    let seen = drain(&channel, &queue, 1).await;
    assert!(seen.contains_key(&poison));
    assert!(keel_outbox::parked(db.pool(), 10).await.unwrap().is_empty());
    channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    test.cleanup().await;
}

async fn enqueue_events(pool: &Pool, events: &[&Envelope<DomainEvent>]) {
    let mut client = pool.get().await.unwrap();
    let transaction = client.transaction().await.unwrap();
    for event in events {
        enqueue_event(&transaction, event).await.unwrap();
    }
    transaction.commit().await.unwrap();
}

#[tokio::test]
async fn an_event_with_no_queue_bound_is_not_marked_published_and_arrives_once_the_queue_exists() {
    let test = TestBroker::new().await;
    let db = database().await;
    let channel = test.channel().await;
    let analytics = test.topology().event_queue("analytics").name;
    // Analytics has never started: nobody declared its queue.
    channel
        .queue_delete(
            analytics.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let relay = relay(&db, test.settings(), parking_options(5));

    // The producer's own connect declares the durable subscribers' queues,
    // so an event published before analytics ever ran waits for it.
    let early = order_created(100);
    enqueue_events(db.pool(), &[&early]).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert!(drain(&channel, &analytics, 1).await.contains_key(&early.id));

    // The queue is gone again (deleted by hand): the event comes back and
    // stays in the outbox instead of being confirmed into nowhere.
    let channel = test.channel().await;
    channel
        .queue_delete(
            analytics.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let orphan = order_created(200);
    enqueue_events(db.pool(), &[&orphan]).await;
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    let (published, parked, rejections, last_error) = row_state(db.pool(), orphan.id).await;
    assert!(!published && !parked);
    assert_eq!(rejections, 1);
    assert!(last_error.unwrap().contains("unroutable"));

    // Once the queue exists again, the next try delivers it.
    let channel = test.channel().await;
    test.topology()
        .declare_event_queue(&channel, "analytics", &["#"])
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !row_state(db.pool(), orphan.id).await.0 {
        assert!(tokio::time::Instant::now() < deadline, "never published");
        tokio::time::sleep(Duration::from_millis(30)).await;
        relay.publish_pending().await.unwrap();
    }
    assert!(
        drain(&channel, &analytics, 1)
            .await
            .contains_key(&orphan.id)
    );
    test.cleanup().await;
}

async fn outbox_rows(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn pruning_a_large_history_does_not_stop_publishing() {
    const HISTORY: i64 = 300_000;
    let test = TestBroker::new().await;
    let db = database().await;
    {
        let client = db.pool().get().await.unwrap();
        client
            .execute(
                "INSERT INTO outbox (id, target, routing_key, message_type, payload, created_at, published_at) \
                 SELECT gen_random_uuid(), 'jobs', 'webhook', 'webhook.process', '{}'::jsonb, \
                        now() - interval '9 days', now() - interval '8 days' \
                 FROM generate_series(1, $1::bigint)",
                &[&HISTORY],
            )
            .await
            .unwrap();
    }
    let relay = relay(
        &db,
        test.settings(),
        RelayOptions {
            poll_interval: Duration::from_millis(100),
            ..RelayOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(relay.run(shutdown.clone()));
    // Pruning has started.
    let deadline = tokio::time::Instant::now() + WAIT;
    while outbox_rows(db.pool()).await == HISTORY {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pruning never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    enqueue_jobs(db.pool(), 1).await;
    wait_until_all_published(db.pool()).await;
    let left = outbox_rows(db.pool()).await;
    assert!(
        left > 1,
        "the job went out only after the whole history was pruned ({left} rows left)"
    );

    shutdown.cancel();
    tokio::time::timeout(WAIT, running).await.unwrap().unwrap();
    test.cleanup().await;
}

#[tokio::test]
async fn parked_rows_and_backlog_age_are_exported_as_metrics() {
    let test = TestBroker::new().await;
    let db = database().await;
    let ids = enqueue_jobs(db.pool(), 3).await;
    let client = db.pool().get().await.unwrap();
    client
        .execute(
            "UPDATE outbox SET created_at = now() - interval '10 minutes' WHERE id = $1",
            &[&ids[0]],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE outbox SET parked_at = now(), created_at = now() - interval '1 hour' \
             WHERE id = $1",
            &[&ids[1]],
        )
        .await
        .unwrap();
    let mut registry = prometheus_client::registry::Registry::with_prefix("keel");
    let metrics = RelayMetrics::register(&mut registry);
    let relay = relay_with_metrics(&db, test.settings(), RelayOptions::default(), metrics);
    relay.measure().await.unwrap();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("keel_outbox_parked_rows 1\n"), "{text}");
    assert!(text.contains("keel_outbox_backlog_rows 2\n"), "{text}");
    let age: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("keel_outbox_oldest_unpublished_seconds "))
        .expect("age exported")
        .parse()
        .unwrap();
    // The parked row is older, but it is not what the relay is behind on.
    assert!((600.0..900.0).contains(&age), "{age}");

    // Every outbox metric the alert rules use exists.
    let rules = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s/alerts/outbox.yaml"),
    )
    .unwrap();
    let used: Vec<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("keel_outbox_"))
        .collect();
    assert!(!used.is_empty());
    for name in used {
        assert!(
            text.contains(&format!("\n{name} ")),
            "alert uses unknown metric {name}"
        );
    }
    test.cleanup().await;
}

/// Inserts `count` rows in `created_at` order, every `every`-th one a job
/// nobody's queue binds, the others webhook jobs; returns
/// `(routable, unroutable)` ids.
async fn enqueue_mixed(pool: &Pool, count: usize, every: usize) -> (Vec<Uuid>, Vec<Uuid>) {
    let client = pool.get().await.unwrap();
    let (mut routable, mut unroutable) = (Vec::new(), Vec::new());
    let mut ids = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    let mut ages = Vec::with_capacity(count);
    for i in 0..count {
        let id = Uuid::new_v4();
        if i % every == every - 1 {
            unroutable.push(id);
            keys.push(format!("nobody-binds-{i}"));
        } else {
            routable.push(id);
            keys.push(JobQueue::Webhook.routing_key().to_owned());
        }
        ids.push(id);
        // Older first, in insertion order.
        ages.push(f64::from(u32::try_from(count - i).unwrap()) / 1000.0);
    }
    client
        .execute(
            "INSERT INTO outbox (id, target, routing_key, message_type, payload, created_at) \
             SELECT r.id, 'jobs', r.key, 'test.mixed', '{}'::jsonb, \
                    now() - make_interval(secs => r.age) \
             FROM unnest($1::uuid[], $2::text[], $3::float8[]) AS r(id, key, age)",
            &[&ids, &keys, &ages],
        )
        .await
        .unwrap();
    (routable, unroutable)
}

#[tokio::test]
async fn with_many_publishes_in_flight_every_returned_row_is_retried_and_every_routed_row_published()
 {
    let test = TestBroker::new().await;
    let db = database().await;
    // Many returns interleaved with many confirms in one batch: where the
    // broker acks several messages at once, the returned message must not
    // be credited to (or blamed on) a neighbour.
    let (routable, unroutable) = enqueue_mixed(db.pool(), 500, 5).await;
    let relay = relay(&db, test.settings(), parking_options(3));

    let published = relay.publish_pending().await.unwrap();
    let mut wrongly_published = Vec::new();
    for id in &unroutable {
        let (published, parked, rejections, last_error) = row_state(db.pool(), *id).await;
        if published || rejections != 1 || parked {
            wrongly_published.push(*id);
        } else {
            assert!(last_error.unwrap().contains("unroutable"));
        }
    }
    let mut wrongly_refused = Vec::new();
    for id in &routable {
        let (published, _, rejections, _) = row_state(db.pool(), *id).await;
        if !published || rejections != 0 {
            wrongly_refused.push(*id);
        }
    }
    assert!(
        wrongly_published.is_empty() && wrongly_refused.is_empty(),
        "{} unroutable rows marked published or not counted as refused, \
         {} routable rows refused",
        wrongly_published.len(),
        wrongly_refused.len()
    );
    assert_eq!(published, routable.len());
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    let seen = drain(&channel, &queue, routable.len()).await;
    assert!(routable.iter().all(|id| seen.get(id) == Some(&1)));

    // Retried after their backoff and parked, never published.
    for id in &unroutable {
        publish_until_parked(&relay, db.pool(), *id).await;
    }
    for id in &unroutable {
        let (published, parked, rejections, _) = row_state(db.pool(), *id).await;
        assert!(!published && parked);
        assert_eq!(rejections, 3);
    }
    test.cleanup().await;
}
