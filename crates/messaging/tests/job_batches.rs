//! The consumer's batch mode (`Consumer::with_batches`, ADR 0026) against a
//! real RabbitMQ: deliveries reach `Handler::handle_batch` together, and
//! each is settled by its own result as the one-at-a-time mode settles it
//! (ack, retry tier with the next attempt, dead letter, held while a
//! dependency is unavailable without spending an attempt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_contracts::jobs::{JobQueue, WebhookProcess};
use keel_contracts::{Envelope, Job};
use keel_messaging::{
    Consumer, ConsumerMetrics, ConsumerOptions, Handler, HandlerError, Incoming, JobBatches,
    Outcome, Publisher, RetryPolicy,
};
use keel_testkit::broker::TestBroker;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// What each job does, by its event id.
#[derive(Debug, Clone, Copy)]
enum Script {
    Ok,
    /// Permanent on every attempt.
    Poison,
    /// Transient on the first attempt, then fine.
    FlakyOnce,
    /// Unavailable the first two times it is handled, then fine.
    Outage,
}

#[derive(Default)]
struct Seen {
    /// Sizes of the batches handed to the handler, in order.
    batches: Vec<usize>,
    /// Every (event id, attempt) handled.
    attempts: Vec<(Uuid, u32)>,
    outage_calls: u32,
}

struct Batched {
    script: HashMap<Uuid, Script>,
    seen: Arc<Mutex<Seen>>,
}

impl Batched {
    fn result(&self, message: &Incoming) -> Result<(), HandlerError> {
        let envelope: Envelope<Job> = message.decode()?;
        let Job::WebhookProcess(job) = envelope.body else {
            return Err(HandlerError::permanent("not a webhook job"));
        };
        let mut seen = self.seen.lock().unwrap();
        seen.attempts.push((job.event_id, message.attempt()));
        match self.script[&job.event_id] {
            Script::Ok => Ok(()),
            Script::Poison => Err(HandlerError::permanent("poison")),
            Script::FlakyOnce if message.attempt() == 1 => Err(HandlerError::transient("flaky")),
            Script::FlakyOnce => Ok(()),
            Script::Outage => {
                seen.outage_calls += 1;
                if seen.outage_calls <= 2 {
                    Err(HandlerError::unavailable("database away"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl Handler for Batched {
    async fn handle(&self, message: &Incoming) -> Result<(), HandlerError> {
        self.result(message)
    }

    async fn handle_batch(&self, messages: &[Incoming]) -> Vec<Result<(), HandlerError>> {
        self.seen.lock().unwrap().batches.push(messages.len());
        messages.iter().map(|m| self.result(m)).collect()
    }
}

#[tokio::test]
async fn a_batch_settles_each_message_by_its_own_result() {
    let test = TestBroker::with_retry(RetryPolicy {
        delays: vec![Duration::from_millis(100), Duration::from_millis(200)],
        jitter: 0.0,
    })
    .await;
    let queue = test.topology().job_queue(JobQueue::Webhook);
    let scripts = [
        Script::Ok,
        Script::Poison,
        Script::Ok,
        Script::FlakyOnce,
        Script::Outage,
        Script::Ok,
    ];
    let jobs: Vec<Envelope<Job>> = scripts
        .iter()
        .map(|_| {
            Envelope::new(Job::WebhookProcess(WebhookProcess {
                event_id: Uuid::new_v4(),
            }))
        })
        .collect();
    let script: HashMap<Uuid, Script> = jobs
        .iter()
        .zip(scripts)
        .map(|(job, script)| match &job.body {
            Job::WebhookProcess(p) => (p.event_id, script),
            _ => unreachable!(),
        })
        .collect();
    // Published before the consumer starts: one batch holds them all.
    let publisher = Publisher::new(test.broker("producer"));
    for job in &jobs {
        publisher.publish_job(job).await.unwrap();
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let metrics = ConsumerMetrics::default();
    let consumer = Consumer::new(
        test.broker("consumer"),
        queue.clone(),
        Batched {
            script,
            seen: seen.clone(),
        },
        ConsumerOptions {
            prefetch: 50,
            concurrency: 1,
            grace_period: Duration::from_secs(10),
            consumer_tag: "test".to_owned(),
        },
        metrics.clone(),
    )
    .with_batches(JobBatches {
        max_size: 50,
        max_wait: Duration::from_millis(300),
        in_flight: 2,
    });
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.handled(&queue.name, Outcome::Ok) < 5
        || metrics.handled(&queue.name, Outcome::Dead) < 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    task.await.unwrap().unwrap();

    assert_eq!(metrics.handled(&queue.name, Outcome::Ok), 5);
    assert_eq!(metrics.handled(&queue.name, Outcome::Dead), 1);
    assert_eq!(metrics.handled(&queue.name, Outcome::Retried), 1);
    assert_eq!(metrics.held_total(&queue.name), 2);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    // All six together, then the held one alone twice more; the flaky one
    // comes back through its retry tier on its own.
    assert_eq!(seen.batches[0], 6, "{:?}", seen.batches);
    let attempts = |index: usize| -> Vec<u32> {
        let Job::WebhookProcess(job) = &jobs[index].body else {
            unreachable!()
        };
        seen.attempts
            .iter()
            .filter(|(id, _)| *id == job.event_id)
            .map(|(_, attempt)| *attempt)
            .collect()
    };
    assert_eq!(attempts(1), [1], "the poison is tried once");
    assert_eq!(attempts(3), [1, 2], "the flaky one gets its next attempt");
    assert_eq!(attempts(4), [1, 1, 1], "an outage spends no attempt");
    assert_eq!(attempts(0), [1], "the others are applied once");
    test.cleanup().await;
}
