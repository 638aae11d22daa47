//! The bus against a real RabbitMQ (`KEEL_TEST_AMQP_URL`), one namespace
//! per test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use keel_contracts::jobs::{JobQueue, WebhookProcess};
use keel_contracts::{Envelope, Job};
use keel_messaging::consumer::{
    ATTEMPT_HEADER, DEATH_REASON_HEADER, LAST_ERROR_HEADER, ORIGINAL_ROUTING_KEY_HEADER,
};
use keel_messaging::{
    Broker, Consumer, ConsumerMetrics, ConsumerOptions, Error, Handler, HandlerError, Incoming,
    Outcome, OutgoingMessage, Publisher, QueueSpec, ReconnectSettings, RetryPolicy,
};
use keel_testkit::broker::TestBroker;
use keel_testkit::proxy::TcpProxy;
use lapin::Channel;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn job() -> Envelope<Job> {
    Envelope::new(Job::WebhookProcess(WebhookProcess {
        event_id: Uuid::new_v4(),
    }))
}

fn short_retry() -> RetryPolicy {
    RetryPolicy {
        delays: vec![Duration::from_millis(200), Duration::from_millis(400)],
        jitter: 0.1,
    }
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

/// Waits until `queue` holds `count` ready messages.
async fn wait_for_ready(channel: &Channel, queue: &str, count: u32) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = ready(channel, queue).await;
        if now == count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{queue} holds {now} messages, expected {count}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(table: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    table.inner().get(key)
}

fn header_text(table: &FieldTable, key: &str) -> String {
    match header(table, key) {
        Some(AMQPValue::LongString(value)) => String::from_utf8_lossy(value.as_bytes()).into(),
        other => panic!("header {key} is {other:?}"),
    }
}

/// What a test handler saw: (message id, attempt, redelivered).
type Seen = (Uuid, u32, bool);

/// A handler whose result depends on the attempt number.
struct Scripted {
    seen: mpsc::UnboundedSender<Seen>,
    result: fn(u32) -> Result<(), HandlerError>,
    delay: Duration,
    finished: Arc<AtomicUsize>,
}

impl Handler for Scripted {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let _: Envelope<Job> = message.decode()?;
        let _ = self
            .seen
            .send((message.id(), message.attempt(), message.redelivered()));
        tokio::time::sleep(self.delay).await;
        let result = (self.result)(message.attempt());
        self.finished.fetch_add(1, Ordering::SeqCst);
        result
    }
}

struct Running {
    seen: mpsc::UnboundedReceiver<Seen>,
    finished: Arc<AtomicUsize>,
    metrics: ConsumerMetrics,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<keel_messaging::Result<()>>,
}

fn spawn_consumer(
    broker: Broker,
    queue: QueueSpec,
    result: fn(u32) -> Result<(), HandlerError>,
    delay: Duration,
    prefetch: u16,
    concurrency: usize,
) -> Running {
    let (tx, seen) = mpsc::unbounded_channel();
    let finished = Arc::new(AtomicUsize::new(0));
    let metrics = ConsumerMetrics::default();
    let options = ConsumerOptions {
        prefetch,
        concurrency,
        grace_period: Duration::from_secs(10),
        consumer_tag: "test".to_owned(),
    };
    let handler = Scripted {
        seen: tx,
        result,
        delay,
        finished: finished.clone(),
    };
    let consumer = Consumer::new(broker, queue, handler, options, metrics.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    Running {
        seen,
        finished,
        metrics,
        shutdown,
        task,
    }
}

async fn next_seen(running: &mut Running) -> Seen {
    tokio::time::timeout(WAIT, running.seen.recv())
        .await
        .expect("the handler was not called in time")
        .expect("the consumer stopped")
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the consumer did not stop")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn topology_can_be_declared_twice_and_routes_webhook_jobs_to_their_queue() {
    let test = TestBroker::new().await;
    let channel = test.channel().await;
    // TestBroker declared it once already; a second time is a no-op.
    test.topology().declare(&channel).await.unwrap();

    let publisher = Publisher::new(test.broker("test"));
    let envelope = job();
    publisher.publish_job(&envelope).await.unwrap();

    let queue = test.topology().job_queue(JobQueue::Webhook).name;
    wait_for_ready(&channel, &queue, 1).await;
    let message = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the job is in the webhook queue");
    let properties = &message.delivery.properties;
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        envelope.id.to_string()
    );
    assert_eq!(
        properties.kind().as_ref().unwrap().as_str(),
        "webhook.process"
    );
    assert_eq!(
        properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert_eq!(*properties.delivery_mode(), Some(2));
    let body: Envelope<Job> = serde_json::from_slice(&message.delivery.data).unwrap();
    assert_eq!(body, envelope);
    let export = test.topology().job_queue(JobQueue::Export).name;
    assert_eq!(ready(&channel, &export).await, 0);
    test.cleanup().await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_fails_instead_of_succeeding_silently() {
    let test = TestBroker::new().await;
    let publisher = Publisher::new(test.broker("test"));
    let message = OutgoingMessage::from_envelope(&job(), false).unwrap();
    let result = publisher
        .publish(&format!("{}.nowhere", test.namespace()), "webhook", message)
        .await;
    assert!(result.is_err(), "publish to a missing exchange succeeded");

    // The publisher recovers: the next publish on a fresh channel works.
    publisher.publish_job(&job()).await.unwrap();
    test.cleanup().await;
}

#[tokio::test]
async fn a_job_nobody_can_receive_is_reported_as_unroutable() {
    let test = TestBroker::new().await;
    let publisher = Publisher::new(test.broker("test"));
    let message = OutgoingMessage::from_envelope(&job(), true).unwrap();
    let jobs = test.topology().jobs_exchange();
    let result = publisher.publish(&jobs, "no-such-queue", message).await;
    assert!(
        matches!(result, Err(Error::Unroutable { .. })),
        "{result:?}"
    );
    test.cleanup().await;
}

#[tokio::test]
async fn a_handled_message_is_acknowledged_and_leaves_the_queue() {
    let test = TestBroker::new().await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |_| Ok(()),
        Duration::ZERO,
        10,
        4,
    );
    let envelope = job();
    Publisher::new(test.broker("producer"))
        .publish_job(&envelope)
        .await
        .unwrap();

    let (id, attempt, redelivered) = next_seen(&mut running).await;
    assert_eq!((id, attempt, redelivered), (envelope.id, 1, false));
    let metrics = running.metrics.clone();
    running.stop().await;
    assert_eq!(metrics.handled(&queue.name, Outcome::Ok), 1);
    // Acked: nothing came back when the consumer's channel closed.
    assert_eq!(ready(&channel, &queue.name).await, 0);
    test.cleanup().await;
}

#[tokio::test]
async fn a_transient_failure_comes_back_through_the_delay_queue_with_the_next_attempt() {
    let test = TestBroker::with_retry(short_retry()).await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |attempt| match attempt {
            1 => Err(HandlerError::transient("database is down")),
            _ => Ok(()),
        },
        Duration::ZERO,
        10,
        4,
    );
    let envelope = job();
    Publisher::new(test.broker("producer"))
        .publish_job(&envelope)
        .await
        .unwrap();

    assert_eq!(next_seen(&mut running).await, (envelope.id, 1, false));
    let started = tokio::time::Instant::now();
    assert_eq!(next_seen(&mut running).await, (envelope.id, 2, false));
    // The 200ms tier less at most 10% jitter.
    assert!(started.elapsed() >= Duration::from_millis(150));
    let metrics = running.metrics.clone();
    running.stop().await;
    assert_eq!(metrics.handled(&queue.name, Outcome::Retried), 1);
    assert_eq!(metrics.handled(&queue.name, Outcome::Ok), 1);
    test.cleanup().await;
}

#[tokio::test]
async fn a_message_that_fails_every_attempt_lands_in_the_dead_queue_with_the_reason() {
    let test = TestBroker::with_retry(short_retry()).await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |_| Err(HandlerError::transient("still down")),
        Duration::ZERO,
        10,
        4,
    );
    let envelope = job();
    Publisher::new(test.broker("producer"))
        .publish_job(&envelope)
        .await
        .unwrap();

    for attempt in 1..=3 {
        assert_eq!(next_seen(&mut running).await, (envelope.id, attempt, false));
    }
    let dead = test.topology().dead_queue();
    wait_for_ready(&channel, &dead, 1).await;
    let message = channel
        .basic_get(dead.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let headers = message.delivery.properties.headers().clone().unwrap();
    assert_eq!(
        header_text(&headers, DEATH_REASON_HEADER),
        "retries-exhausted"
    );
    assert_eq!(header_text(&headers, LAST_ERROR_HEADER), "still down");
    assert_eq!(
        header_text(&headers, ORIGINAL_ROUTING_KEY_HEADER),
        "webhook"
    );
    assert_eq!(
        header(&headers, ATTEMPT_HEADER),
        Some(&AMQPValue::LongLongInt(3))
    );
    // No fourth attempt.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(running.seen.try_recv().is_err());
    running.stop().await;
    test.cleanup().await;
}

#[tokio::test]
async fn a_permanent_failure_goes_to_the_dead_queue_at_once() {
    let test = TestBroker::with_retry(short_retry()).await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |_| Err(HandlerError::permanent("no such webhook event")),
        Duration::ZERO,
        10,
        4,
    );
    let envelope = job();
    Publisher::new(test.broker("producer"))
        .publish_job(&envelope)
        .await
        .unwrap();

    assert_eq!(next_seen(&mut running).await, (envelope.id, 1, false));
    let dead = test.topology().dead_queue();
    wait_for_ready(&channel, &dead, 1).await;
    let message = channel
        .basic_get(dead.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let headers = message.delivery.properties.headers().clone().unwrap();
    assert_eq!(header_text(&headers, DEATH_REASON_HEADER), "permanent");
    assert_eq!(
        header_text(&headers, LAST_ERROR_HEADER),
        "no such webhook event"
    );
    assert_eq!(
        message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        envelope.id.to_string()
    );
    let metrics = running.metrics.clone();
    running.stop().await;
    assert_eq!(metrics.handled(&queue.name, Outcome::Dead), 1);
    assert_eq!(metrics.handled(&queue.name, Outcome::Retried), 0);
    test.cleanup().await;
}

#[tokio::test]
async fn a_body_that_does_not_decode_goes_to_the_dead_queue_as_permanent() {
    let test = TestBroker::new().await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |_| Ok(()),
        Duration::ZERO,
        10,
        4,
    );
    let mut message = OutgoingMessage::from_envelope(&job(), true).unwrap();
    message.body = br#"{"id": "not a job"}"#.to_vec();
    Publisher::new(test.broker("producer"))
        .publish(&test.topology().jobs_exchange(), "webhook", message)
        .await
        .unwrap();

    let dead = test.topology().dead_queue();
    wait_for_ready(&channel, &dead, 1).await;
    running.stop().await;
    test.cleanup().await;
}

#[tokio::test]
async fn a_message_without_an_id_is_dead_lettered_as_undecodable_without_calling_the_handler() {
    let test = TestBroker::new().await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |_| Ok(()),
        Duration::ZERO,
        10,
        4,
    );
    // A foreign producer: no message_id, and a body that is not JSON.
    channel
        .basic_publish(
            test.topology().jobs_exchange().into(),
            "webhook".into(),
            lapin::options::BasicPublishOptions::default(),
            b"not json",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();

    let dead = test.topology().dead_queue();
    wait_for_ready(&channel, &dead, 1).await;
    let message = channel
        .basic_get(dead.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .unwrap();
    let headers = message.delivery.properties.headers().clone().unwrap();
    assert_eq!(header_text(&headers, DEATH_REASON_HEADER), "undecodable");
    assert_eq!(message.delivery.data, b"not json");
    assert!(running.seen.try_recv().is_err(), "the handler was called");
    running.stop().await;
    test.cleanup().await;
}

#[tokio::test]
async fn a_handler_that_panics_is_retried_like_a_transient_failure() {
    let test = TestBroker::with_retry(short_retry()).await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(
        test.broker("consumer"),
        queue.clone(),
        |attempt| match attempt {
            1 => panic!("bug in the handler"),
            _ => Ok(()),
        },
        Duration::ZERO,
        10,
        4,
    );
    let envelope = job();
    Publisher::new(test.broker("producer"))
        .publish_job(&envelope)
        .await
        .unwrap();

    assert_eq!(next_seen(&mut running).await, (envelope.id, 1, false));
    assert_eq!(next_seen(&mut running).await, (envelope.id, 2, false));
    let metrics = running.metrics.clone();
    running.stop().await;
    assert_eq!(metrics.handled(&queue.name, Outcome::Retried), 1);
    assert_eq!(metrics.handled(&queue.name, Outcome::Ok), 1);
    test.cleanup().await;
}

#[tokio::test]
async fn shutdown_finishes_the_message_in_hand_and_leaves_the_rest_in_the_queue() {
    let test = TestBroker::new().await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let publisher = Publisher::new(test.broker("producer"));
    let mut published = Vec::new();
    for _ in 0..5 {
        let envelope = job();
        publisher.publish_job(&envelope).await.unwrap();
        published.push(envelope.id);
    }
    wait_for_ready(&channel, &queue.name, 5).await;

    // Prefetch 3, one at a time: two more deliveries sit unacked in the
    // client while the first is handled.
    let mut first = spawn_consumer(
        test.broker("consumer-1"),
        queue.clone(),
        |_| Ok(()),
        Duration::from_millis(500),
        3,
        1,
    );
    let (in_hand, _, _) = next_seen(&mut first).await;
    first.shutdown.cancel();
    tokio::time::timeout(WAIT, &mut first.task)
        .await
        .expect("the consumer did not stop")
        .unwrap()
        .unwrap();
    assert_eq!(
        first.finished.load(Ordering::SeqCst),
        1,
        "the message in hand was finished"
    );
    assert!(first.seen.try_recv().is_err(), "no new message was taken");
    assert_eq!(first.metrics.handled(&queue.name, Outcome::Ok), 1);

    // The other four are back in the queue, and a new consumer gets them.
    wait_for_ready(&channel, &queue.name, 4).await;
    let mut second = spawn_consumer(
        test.broker("consumer-2"),
        queue.clone(),
        |_| Ok(()),
        Duration::ZERO,
        10,
        4,
    );
    let mut handled = vec![in_hand];
    for _ in 0..4 {
        handled.push(next_seen(&mut second).await.0);
    }
    handled.sort();
    published.sort();
    assert_eq!(handled, published, "every message handled exactly once");
    second.stop().await;
    assert_eq!(ready(&channel, &queue.name).await, 0);
    test.cleanup().await;
}

/// The test broker's address, to put a proxy in front of it.
fn broker_addr(test: &TestBroker) -> SocketAddr {
    let url = url::Url::parse(test.settings().url.expose_secret()).unwrap();
    let host = url.host_str().unwrap();
    let port = url.port().unwrap_or(5672);
    format!("{host}:{port}").parse().unwrap()
}

fn through_proxy(test: &TestBroker, proxy: &TcpProxy) -> keel_messaging::AmqpSettings {
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

#[tokio::test]
async fn a_consumer_and_the_readiness_check_recover_by_themselves_when_the_broker_returns() {
    let test = TestBroker::new().await;
    let proxy = TcpProxy::start(broker_addr(&test)).await;
    let broker = Broker::new(through_proxy(&test, &proxy), "consumer");
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut running = spawn_consumer(broker.clone(), queue, |_| Ok(()), Duration::ZERO, 10, 4);
    let publisher = Publisher::new(test.broker("producer"));

    let before = job();
    publisher.publish_job(&before).await.unwrap();
    assert_eq!(next_seen(&mut running).await.0, before.id);
    broker.check().await.unwrap();

    proxy.cut();
    let during = job();
    publisher.publish_job(&during).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        broker.check().await.is_err(),
        "ready while the broker is away"
    );
    assert!(running.seen.try_recv().is_err());

    proxy.restore();
    assert_eq!(next_seen(&mut running).await.0, during.id);
    broker.check().await.unwrap();
    running.stop().await;
    test.cleanup().await;
}

/// Unavailable for its first `outage` calls (the database is down), then
/// succeeds; records the attempt number of each call.
struct DownThenUp {
    outage: usize,
    calls: Arc<AtomicUsize>,
    attempts: mpsc::UnboundedSender<u32>,
}

impl Handler for DownThenUp {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        let _ = self.attempts.send(message.attempt());
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.outage {
            return Err(HandlerError::unavailable("PostgreSQL is unavailable"));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_job_held_through_an_outage_longer_than_its_retries_uses_none_of_them() {
    let test = TestBroker::with_retry(short_retry()).await;
    let channel = test.channel().await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let mut settings = test.settings();
    settings.reconnect = ReconnectSettings {
        min: Duration::from_millis(20),
        max: Duration::from_millis(100),
    };
    let (tx, mut attempts) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    // Far more failed runs than the policy has attempts (3) and the queue
    // has redeliveries (its delivery limit).
    let outage = 30;
    let handler = DownThenUp {
        outage,
        calls: calls.clone(),
        attempts: tx,
    };
    let metrics = ConsumerMetrics::default();
    let options = ConsumerOptions {
        prefetch: 4,
        concurrency: 4,
        grace_period: Duration::from_secs(10),
        consumer_tag: "test".to_owned(),
    };
    let consumer = Consumer::new(
        Broker::new(settings, "consumer"),
        queue.clone(),
        handler,
        options,
        metrics.clone(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    Publisher::new(test.broker("producer"))
        .publish_job(&job())
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.handled(&queue.name, Outcome::Ok) < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), outage + 1);
    while let Ok(attempt) = attempts.try_recv() {
        assert_eq!(attempt, 1, "an outage consumed a retry");
    }
    assert_eq!(metrics.handled(&queue.name, Outcome::Retried), 0);
    assert_eq!(metrics.handled(&queue.name, Outcome::Dead), 0);
    assert_eq!(metrics.held_total(&queue.name), outage as u64);
    assert_eq!(ready(&channel, &test.topology().dead_queue()).await, 0);
    assert_eq!(ready(&channel, &queue.name).await, 0);
    test.cleanup().await;
}
