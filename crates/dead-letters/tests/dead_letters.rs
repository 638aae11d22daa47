//! The archive against real RabbitMQ and PostgreSQL: messages the consumer
//! runner dead-letters are stored once, survive a database outage in the
//! queue, and a requeue puts the job back on its queue exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use keel_contracts::events::WebhookReceived;
use keel_contracts::jobs::{JobQueue, WebhookProcess};
use keel_contracts::{DomainEvent, Envelope, Job};
use keel_db::Pool;
use keel_db::page::PageRequest;
use keel_dead_letters::queries::{self, ListQuery};
use keel_dead_letters::{
    Archived, Archiver, ArchiverMetrics, Error, NewDeadLetter, Status, archive, requeue,
};
use keel_messaging::{
    Broker, Consumer, ConsumerMetrics, ConsumerOptions, Handler, HandlerError, Incoming, Publisher,
};
use keel_outbox::{Relay, RelayMetrics, RelayOptions};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::proxy::TcpProxy;
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SCHEMA: &str = "store";
const WAIT: Duration = Duration::from_secs(15);

async fn database() -> TestDatabase {
    TestDatabase::create(
        SCHEMA,
        &[&keel_outbox::MIGRATIONS, &keel_dead_letters::MIGRATIONS],
    )
    .await
}

fn webhook_job() -> Envelope<Job> {
    Envelope::new(Job::WebhookProcess(WebhookProcess {
        event_id: Uuid::new_v4(),
    }))
}

/// Ready messages in `queue`.
async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .message_count()
}

async fn wait_until<F: AsyncFn() -> bool>(what: &str, condition: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn rows(pool: &Pool) -> i64 {
    let client = pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM dead_letters", &[])
        .await
        .unwrap()
        .get(0)
}

/// A handler that refuses every message for good.
struct Refuses;

impl Handler for Refuses {
    async fn handle(&self, _message: &Incoming) -> Result<(), HandlerError> {
        Err(HandlerError::permanent("the payload can never apply"))
    }
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stopped in time")
            .unwrap();
    }
}

fn spawn_archiver(broker: Broker, pool: Pool, metrics: ArchiverMetrics) -> Running {
    let shutdown = CancellationToken::new();
    let archiver = Archiver::new(broker, pool, metrics);
    let task = tokio::spawn(archiver.run(shutdown.clone()));
    Running { shutdown, task }
}

#[tokio::test]
async fn a_message_the_consumer_runner_dead_letters_is_archived_once_even_when_delivered_twice() {
    let test = TestBroker::new().await;
    let db = database().await;
    let channel = test.channel().await;
    let broker = test.broker("test");

    // The real runner dead-letters a job its handler refuses permanently.
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let consumer = Consumer::new(
        broker.clone(),
        queue.clone(),
        Refuses,
        ConsumerOptions::from_settings(&test.settings(), "refuses"),
        ConsumerMetrics::default(),
    );
    let stop_consumer = CancellationToken::new();
    let consumer_task = tokio::spawn(consumer.run(stop_consumer.clone()));
    let job = webhook_job();
    Publisher::new(broker.clone())
        .publish_job(&job)
        .await
        .unwrap();
    let dead_queue = test.topology().dead_queue();
    wait_until("the job is dead-lettered", async || {
        ready(&channel, &dead_queue).await == 1
    })
    .await;
    stop_consumer.cancel();
    consumer_task.await.unwrap().unwrap();

    // The broker delivering it twice: a copy with the same properties next
    // to the original.
    let original = channel
        .basic_get(
            dead_queue.as_str().into(),
            BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the dead letter");
    channel
        .confirm_select(ConfirmSelectOptions { nowait: false })
        .await
        .unwrap();
    channel
        .basic_publish(
            test.topology().dead_exchange().as_str().into(),
            "webhook".into(),
            BasicPublishOptions::default(),
            &original.delivery.data,
            original.delivery.properties.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    original
        .delivery
        .acker
        .nack(BasicNackOptions {
            multiple: false,
            requeue: true,
        })
        .await
        .unwrap();
    wait_until("both copies are in the dead queue", async || {
        ready(&channel, &dead_queue).await == 2
    })
    .await;

    let metrics = ArchiverMetrics::default();
    let archiver = spawn_archiver(broker.clone(), db.pool().clone(), metrics.clone());
    wait_until("both copies are archived and acked", async || {
        metrics.archived_total(Archived::Stored) + metrics.archived_total(Archived::Duplicate) == 2
    })
    .await;
    wait_until("the dead queue is empty", async || {
        ready(&channel, &dead_queue).await == 0
    })
    .await;
    archiver.stop().await;

    assert_eq!(rows(db.pool()).await, 1);
    assert_eq!(metrics.archived_total(Archived::Stored), 1);
    assert_eq!(metrics.archived_total(Archived::Duplicate), 1);
    let client = db.pool().get().await.unwrap();
    let stored = queries::get(&client, job.id)
        .await
        .unwrap()
        .expect("stored under the message id");
    assert_eq!(stored.letter.message_type, "webhook.process");
    assert_eq!(stored.letter.routing_key, "webhook");
    assert_eq!(stored.letter.death_reason, "permanent");
    assert!(
        stored
            .letter
            .last_error
            .as_deref()
            .unwrap()
            .contains("can never apply"),
        "{:?}",
        stored.letter.last_error
    );
    assert_eq!(stored.letter.queue.as_deref(), Some(queue.name.as_str()));
    assert_eq!(stored.letter.attempts, 1);
    assert_eq!(stored.letter.status, Status::Dead);
    assert_eq!(
        stored.body,
        serde_json::to_vec(&job).unwrap(),
        "the body byte for byte"
    );
    assert_eq!(stored.headers["x-keel-death-reason"], "permanent");
    test.cleanup().await;
}

fn upstream(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    format!("{}:{}", parsed.host_str().unwrap(), parsed.port().unwrap())
        .parse()
        .unwrap()
}

/// A pool on `db` through `proxy`.
fn pool_through(db: &TestDatabase, proxy: &TcpProxy) -> Pool {
    let mut settings = db.settings();
    let mut url = url::Url::parse(settings.url.expose_secret()).unwrap();
    url.set_ip_host(proxy.addr().ip()).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    settings.url = SecretString::from(url.to_string());
    settings.acquire_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    keel_db::connect(&settings, SCHEMA, "archiver-test").unwrap()
}

/// A dead message as the consumer runner publishes it.
async fn publish_dead(test: &TestBroker, channel: &Channel, envelope: &Envelope<Job>) {
    let mut headers = FieldTable::default();
    for (key, value) in [
        ("x-keel-death-reason", "retries-exhausted"),
        ("x-keel-last-error", "the shop answered 503"),
        ("x-keel-original-routing-key", "webhook"),
    ] {
        headers.insert(key.into(), AMQPValue::LongString(LongString::from(value)));
    }
    headers.insert("x-keel-attempt".into(), AMQPValue::LongLongInt(6));
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from("webhook.process"))
        .with_delivery_mode(2)
        .with_headers(headers);
    channel
        .basic_publish(
            test.topology().dead_exchange().as_str().into(),
            "webhook".into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(envelope).unwrap(),
            properties,
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn while_postgresql_is_unreachable_the_dead_letter_stays_in_the_queue_and_is_archived_after()
{
    let test = TestBroker::new().await;
    let db = database().await;
    let channel = test.channel().await;
    let proxy = TcpProxy::start(upstream(&db.url())).await;
    let pool = pool_through(&db, &proxy);
    proxy.cut();

    let job = webhook_job();
    publish_dead(&test, &channel, &job).await;
    let dead_queue = test.topology().dead_queue();

    // An archiver that cannot reach PostgreSQL keeps trying and never acks.
    let first = ArchiverMetrics::default();
    let archiver = spawn_archiver(test.broker("archiver-1"), pool.clone(), first.clone());
    wait_until("the archiver tried and failed twice", async || {
        first.failures_total() >= 2
    })
    .await;
    assert_eq!(rows(db.pool()).await, 0);
    // Stopping it mid-outage returns the message to the queue: nothing lost.
    archiver.stop().await;
    wait_until("the message is back in the dead queue", async || {
        ready(&channel, &dead_queue).await == 1
    })
    .await;

    // Another archiver, still cut off, holds it until the database returns.
    let second = ArchiverMetrics::default();
    let archiver = spawn_archiver(test.broker("archiver-2"), pool.clone(), second.clone());
    wait_until("the second archiver is retrying", async || {
        second.failures_total() >= 1
    })
    .await;
    assert_eq!(rows(db.pool()).await, 0);
    proxy.restore();
    wait_until("the dead letter is archived after the outage", async || {
        second.archived_total(Archived::Stored) == 1
    })
    .await;
    archiver.stop().await;

    assert_eq!(rows(db.pool()).await, 1);
    assert_eq!(
        ready(&channel, &dead_queue).await,
        0,
        "acked after the commit"
    );
    let client = db.pool().get().await.unwrap();
    let stored = queries::get(&client, job.id).await.unwrap().unwrap();
    assert_eq!(stored.letter.death_reason, "retries-exhausted");
    assert_eq!(stored.letter.attempts, 6);
    assert_eq!(
        stored.letter.last_error.as_deref(),
        Some("the shop answered 503")
    );
    test.cleanup().await;
}

fn dead_letter_of(envelope: &Envelope<Job>) -> NewDeadLetter {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-keel-death-reason".into(),
        AMQPValue::LongString(LongString::from("retries-exhausted")),
    );
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(envelope.message_type()))
        .with_headers(headers);
    NewDeadLetter::from_parts(
        &properties,
        "webhook",
        &serde_json::to_vec(envelope).unwrap(),
    )
}

fn relay(db: &TestDatabase, test: &TestBroker) -> Relay {
    Relay::new(
        db.pool().clone(),
        db.url().parse().unwrap(),
        SCHEMA,
        Publisher::new(test.broker("relay")),
        RelayOptions::default(),
        RelayMetrics::default(),
    )
}

#[tokio::test]
async fn a_requeued_job_is_back_in_its_queue_exactly_once_and_dying_again_revives_its_row() {
    let test = TestBroker::new().await;
    let db = database().await;
    let channel = test.channel().await;
    let job = webhook_job();
    let mut client = db.pool().get().await.unwrap();
    assert_eq!(
        archive::archive(&client, &dead_letter_of(&job))
            .await
            .unwrap(),
        Archived::Stored
    );

    let admin = Uuid::new_v4();
    let tx = client.transaction().await.unwrap();
    let requeued = requeue::requeue(&tx, job.id, Some(admin)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(requeued.job.as_ref(), Some(&job.body));
    assert_ne!(requeued.message_id, job.id, "a new envelope");

    // A second click changes nothing.
    let tx = client.transaction().await.unwrap();
    assert!(matches!(
        requeue::requeue(&tx, job.id, Some(admin)).await,
        Err(Error::AlreadyRequeued(id)) if id == job.id
    ));
    tx.rollback().await.unwrap();

    let relay = relay(&db, &test);
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    assert_eq!(relay.publish_pending().await.unwrap(), 0);
    let webhook_queue = test.topology().job_queue(JobQueue::Webhook).name;
    wait_until("the job is in its queue", async || {
        ready(&channel, &webhook_queue).await == 1
    })
    .await;
    let message = channel
        .basic_get(
            webhook_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the requeued job");
    let again: Envelope<Job> = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(again.id, requeued.message_id);
    assert_eq!(again.body, job.body);
    assert_eq!(ready(&channel, &webhook_queue).await, 0, "exactly once");

    let stored = queries::get(&client, job.id).await.unwrap().unwrap().letter;
    assert_eq!(stored.status, Status::Requeued);
    assert_eq!(stored.requeued_by, Some(admin));
    assert_eq!(stored.requeued_as, Some(requeued.message_id));
    assert!(stored.requeued_at.is_some());

    // The requeued message dies too: its row is dead again, not a new one.
    assert_eq!(
        archive::archive(&client, &dead_letter_of(&again))
            .await
            .unwrap(),
        Archived::DiedAgain
    );
    assert_eq!(
        archive::archive(&client, &dead_letter_of(&again))
            .await
            .unwrap(),
        Archived::Duplicate
    );
    // A late copy of the first death does not flip it either.
    assert_eq!(
        archive::archive(&client, &dead_letter_of(&job))
            .await
            .unwrap(),
        Archived::Duplicate
    );
    assert_eq!(rows(db.pool()).await, 1);
    let revived = queries::get(&client, job.id).await.unwrap().unwrap().letter;
    assert_eq!(revived.status, Status::Dead);
    assert_eq!(revived.deaths, 2);
    test.cleanup().await;
}

#[tokio::test]
async fn only_a_stored_job_or_event_can_be_requeued() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    // Neither a job nor a domain event (an undecodable dead letter): there
    // is nothing to send back.
    let id = Uuid::new_v4();
    let properties = BasicProperties::default().with_message_id(ShortString::from(id.to_string()));
    let letter = NewDeadLetter::from_parts(&properties, "webhook.received", b"{\"id\":1}");
    archive::archive(&client, &letter).await.unwrap();

    let tx = client.transaction().await.unwrap();
    assert!(matches!(
        requeue::requeue(&tx, id, None).await,
        Err(Error::NotAJob { id: refused, .. }) if refused == id
    ));
    let unknown = Uuid::new_v4();
    assert!(matches!(
        requeue::requeue(&tx, unknown, None).await,
        Err(Error::NotFound(id)) if id == unknown
    ));
    tx.rollback().await.unwrap();
    let outbox: i64 = client
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outbox, 0);
}

#[tokio::test]
async fn an_analytics_dead_letter_is_requeued_to_the_analytics_queue_once_with_its_time() {
    let test = TestBroker::new().await;
    let db = database().await;
    let channel = test.channel().await;
    let analytics = test
        .topology()
        .declare_event_queue(&channel, "analytics", &["#"])
        .await
        .unwrap();
    let occurred_at = chrono::Utc::now() - chrono::TimeDelta::days(2);
    let event = Envelope::with_id(
        Uuid::now_v7(),
        occurred_at,
        DomainEvent::WebhookReceived(WebhookReceived {
            event_id: Uuid::new_v4(),
            source: "shopify".to_owned(),
            topic: None,
        }),
    );
    let mut headers = FieldTable::default();
    headers.insert(
        "x-keel-death-reason".into(),
        AMQPValue::LongString(LongString::from("permanent")),
    );
    headers.insert(
        "x-keel-queue".into(),
        AMQPValue::LongString(LongString::from(analytics.name.as_str())),
    );
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(event.id.to_string()))
        .with_type(ShortString::from(event.message_type()))
        .with_headers(headers);
    let letter = NewDeadLetter::from_parts(
        &properties,
        "webhook.received",
        &serde_json::to_vec(&event).unwrap(),
    );
    let mut client = db.pool().get().await.unwrap();
    archive::archive(&client, &letter).await.unwrap();

    let tx = client.transaction().await.unwrap();
    let requeued = requeue::requeue(&tx, event.id, None).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(requeued.job, None);
    let relay = relay(&db, &test);
    assert_eq!(relay.publish_pending().await.unwrap(), 1);
    wait_until("the event is in the analytics queue", async || {
        ready(&channel, &analytics.name).await == 1
    })
    .await;
    let message = channel
        .basic_get(
            analytics.name.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the requeued event");
    let again: Envelope<DomainEvent> = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(again.id, requeued.message_id);
    assert_eq!(
        again.occurred_at, event.occurred_at,
        "counted in its own bucket"
    );
    assert_eq!(again.body, event.body);
    assert_eq!(ready(&channel, &analytics.name).await, 0, "exactly once");
    let stored = queries::get(&client, event.id)
        .await
        .unwrap()
        .unwrap()
        .letter;
    assert_eq!(stored.status, Status::Requeued);
    test.cleanup().await;
}

#[tokio::test]
async fn the_listing_pages_newest_first_and_filters_by_status_and_type() {
    let db = database().await;
    let mut client = db.pool().get().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let job = webhook_job();
        archive::archive(&client, &dead_letter_of(&job))
            .await
            .unwrap();
        ids.push(job.id);
        // Distinct dead_at values, so "newest first" is observable.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let tx = client.transaction().await.unwrap();
    requeue::requeue(&tx, ids[0], None).await.unwrap();
    tx.commit().await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = queries::list(
            &client,
            &ListQuery {
                page: PageRequest { cursor, limit: 2 },
                ..ListQuery::default()
            },
        )
        .await
        .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|l| l.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let newest_first: Vec<Uuid> = ids.iter().rev().copied().collect();
    assert_eq!(seen, newest_first);

    let dead = queries::list(
        &client,
        &ListQuery {
            status: Some(Status::Dead),
            page: PageRequest {
                cursor: None,
                limit: 50,
            },
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dead.items.len(), 4);
    assert!(dead.next_cursor.is_none());
    let requeued = queries::list(
        &client,
        &ListQuery {
            status: Some(Status::Requeued),
            page: PageRequest {
                cursor: None,
                limit: 50,
            },
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        requeued.items.iter().map(|l| l.id).collect::<Vec<_>>(),
        [ids[0]]
    );
    let exports = queries::list(
        &client,
        &ListQuery {
            message_type: Some("export.run".to_owned()),
            page: PageRequest {
                cursor: None,
                limit: 50,
            },
            ..ListQuery::default()
        },
    )
    .await
    .unwrap();
    assert!(exports.items.is_empty());
}
