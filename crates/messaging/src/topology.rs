//! Exchange and queue names of one namespace, and their declaration.
//!
//! ```text
//! publish ──► {ns}.jobs (direct) ──webhook──► {ns}.jobs.webhook ─┐
//!                                 ──export───► {ns}.jobs.export ──┤ consumer
//!             {ns}.events (topic) ──keys────► {ns}.events.<name> ┘
//!  transient failure ─► {ns}.retry.<delay> (fanout) ─► queue {ns}.retry.<delay>
//!        └── TTL expires: dead-lettered to {ns}.jobs with the same routing key
//!  exhausted / permanent ─► {ns}.dead (fanout) ─► queue {ns}.dead
//! ```
//!
//! Every queue is a durable quorum queue. Arguments are limited to what
//! RabbitMQ 3.10 supports for quorum queues (and 3.13 / 4.x still accept):
//! `x-queue-type`, `x-message-ttl` (3.10+ for quorum), `x-dead-letter-exchange`,
//! `x-dead-letter-strategy: at-least-once` (3.10+, needs
//! `x-overflow: reject-publish`), `x-delivery-limit`.

use std::collections::BTreeSet;
use std::time::Duration;

use keel_contracts::jobs::JobQueue;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::error::Result;
use crate::settings::RetryPolicy;

/// Redeliveries (crash, connection loss, shutdown with unacked messages)
/// after which the broker dead-letters a message itself. Application
/// retries are new publishes and do not count, so this only stops a message
/// that kills its consumer from looping for ever.
pub const DELIVERY_LIMIT: i64 = 20;

/// Consumers whose event queue must exist before anything is published, with
/// the binding keys they consume: [`Topology::declare`] declares them, so
/// every producer creates them at connect and an event published before its
/// subscriber ever started waits in the queue instead of being dropped
/// (ADR 0024). Per-instance queues (the gateway's) are not here: nothing in
/// them must outlive their process.
pub const DURABLE_EVENT_SUBSCRIBERS: &[(&str, &[&str])] = &[("analytics", &["#"])];

/// A queue a consumer drains, and how its retries find their way back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Full queue name, e.g. `keel.jobs.webhook`.
    pub name: String,
    /// Routing key on `{ns}.jobs` that reaches this queue (and only it):
    /// expired retries are dead-lettered to `{ns}.jobs` with this key.
    pub retry_routing_key: String,
}

/// The logical exchanges a producer targets; the namespace is applied by
/// [`Topology::exchange`], so stored messages (the outbox) stay portable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Jobs,
    Events,
}

impl Target {
    /// The stored form (`jobs` / `events`).
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Jobs => "jobs",
            Target::Events => "events",
        }
    }

    /// Parses the stored form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "jobs" => Some(Target::Jobs),
            "events" => Some(Target::Events),
            _ => None,
        }
    }
}

/// The names (and declaration) of one namespace's exchanges and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    namespace: String,
    /// Distinct retry delays, each a delay tier.
    tiers: BTreeSet<Duration>,
}

impl Topology {
    pub fn new(namespace: impl Into<String>, retry: &RetryPolicy) -> Self {
        Self {
            namespace: namespace.into(),
            tiers: retry.delays.iter().copied().collect(),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}.jobs`, direct: one routing key per job queue.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    /// `{ns}.events`, topic: routing key = event type (`order.created`).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// `{ns}.dead`, fanout into the queue of the same name.
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// `{ns}.dead`: messages no consumer could handle, for admins.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.namespace)
    }

    /// The exchange name of a logical target.
    pub fn exchange(&self, target: Target) -> String {
        match target {
            Target::Jobs => self.jobs_exchange(),
            Target::Events => self.events_exchange(),
        }
    }

    /// `{ns}.jobs.{routing key}`.
    pub fn job_queue(&self, queue: JobQueue) -> QueueSpec {
        QueueSpec {
            name: format!("{}.jobs.{}", self.namespace, queue.routing_key()),
            retry_routing_key: queue.routing_key().to_owned(),
        }
    }

    /// `{ns}.events.{consumer}`: a consumer-owned copy of the events it binds.
    pub fn event_queue(&self, consumer: &str) -> QueueSpec {
        let name = format!("{}.events.{consumer}", self.namespace);
        // Bound to `{ns}.jobs` under its own name, so a retry of an event
        // returns to this queue only, not to every subscriber of the event.
        QueueSpec {
            retry_routing_key: name.clone(),
            name,
        }
    }

    /// The delay tiers, shortest first.
    pub fn retry_tiers(&self) -> impl Iterator<Item = Duration> + '_ {
        self.tiers.iter().copied()
    }

    /// `{ns}.retry.{delay}` (e.g. `keel.retry.10s`): the name of both the
    /// fanout exchange and the delay queue of a tier.
    pub fn retry_exchange(&self, tier: Duration) -> String {
        format!("{}.retry.{}", self.namespace, tier_label(tier))
    }

    /// Every exchange this topology declares (for cleanup).
    pub fn exchanges(&self) -> Vec<String> {
        let mut names = vec![
            self.jobs_exchange(),
            self.events_exchange(),
            self.dead_exchange(),
        ];
        names.extend(self.retry_tiers().map(|tier| self.retry_exchange(tier)));
        names
    }

    /// Every queue [`declare`](Self::declare) creates (for cleanup).
    pub fn queues(&self) -> Vec<String> {
        let mut names = vec![self.dead_queue()];
        names.extend(JobQueue::ALL.iter().map(|q| self.job_queue(*q).name));
        names.extend(self.retry_tiers().map(|tier| self.retry_exchange(tier)));
        names.extend(
            DURABLE_EVENT_SUBSCRIBERS
                .iter()
                .map(|(consumer, _)| self.event_queue(consumer).name),
        );
        names
    }

    /// Declares every exchange, queue and binding. Idempotent: declaring an
    /// existing object with the same arguments is a no-op, so every service
    /// does it at start and after each reconnect.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        declare_exchange(channel, &self.jobs_exchange(), ExchangeKind::Direct).await?;
        declare_exchange(channel, &self.events_exchange(), ExchangeKind::Topic).await?;
        declare_exchange(channel, &self.dead_exchange(), ExchangeKind::Fanout).await?;

        // The dead queue dead-letters nowhere: messages stay until an admin
        // replays or purges them.
        declare_queue(channel, &self.dead_queue(), quorum_arguments()).await?;
        bind(channel, &self.dead_queue(), &self.dead_exchange(), "").await?;

        for queue in JobQueue::ALL {
            let spec = self.job_queue(queue);
            declare_queue(channel, &spec.name, self.work_queue_arguments()).await?;
            bind(
                channel,
                &spec.name,
                &self.jobs_exchange(),
                &spec.retry_routing_key,
            )
            .await?;
        }

        for tier in self.retry_tiers() {
            let name = self.retry_exchange(tier);
            // Fanout: the routing key is ignored for routing but kept on the
            // message, and dead-lettering (below) reuses it.
            declare_exchange(channel, &name, ExchangeKind::Fanout).await?;
            let mut arguments = quorum_arguments();
            let ttl = i64::try_from(tier.as_millis()).unwrap_or(i64::MAX);
            arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            // Expired messages go back to the jobs exchange; with no
            // `x-dead-letter-routing-key` the broker keeps each message's
            // own routing key, so one delay queue serves every work queue.
            arguments.insert(
                "x-dead-letter-exchange".into(),
                long_string(&self.jobs_exchange()),
            );
            add_at_least_once(&mut arguments);
            declare_queue(channel, &name, arguments).await?;
            bind(channel, &name, &name, "").await?;
        }

        for (consumer, binding_keys) in DURABLE_EVENT_SUBSCRIBERS {
            self.declare_event_queue(channel, consumer, binding_keys)
                .await?;
        }
        Ok(())
    }

    /// Declares a consumer-owned queue bound to `{ns}.events` with
    /// `binding_keys` (topic patterns: analytics binds `#`). Needs
    /// [`declare`](Self::declare) first.
    pub async fn declare_event_queue(
        &self,
        channel: &Channel,
        consumer: &str,
        binding_keys: &[&str],
    ) -> Result<QueueSpec> {
        let spec = self.event_queue(consumer);
        declare_queue(channel, &spec.name, self.work_queue_arguments()).await?;
        for key in binding_keys {
            bind(channel, &spec.name, &self.events_exchange(), key).await?;
        }
        bind(
            channel,
            &spec.name,
            &self.jobs_exchange(),
            &spec.retry_routing_key,
        )
        .await?;
        Ok(spec)
    }

    /// Arguments of a queue a consumer drains.
    fn work_queue_arguments(&self) -> FieldTable {
        let mut arguments = quorum_arguments();
        // Safety net against a message that crashes its consumer: after this
        // many redeliveries the broker dead-letters it.
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        arguments.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.dead_exchange()),
        );
        add_at_least_once(&mut arguments);
        arguments
    }
}

/// `1s`, `10m`, `1h`, `200ms`: the shortest exact unit.
fn tier_label(tier: Duration) -> String {
    let ms = tier.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn quorum_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    // Quorum queues: replicated and durable; the type RabbitMQ recommends for
    // data safety from 3.8 on (classic mirrored queues are gone in 4.x).
    arguments.insert("x-queue-type".into(), long_string("quorum"));
    arguments
}

/// The broker keeps a dead-lettered message until the target queue confirms
/// it (3.10+). It only applies with `x-overflow: reject-publish`; otherwise
/// RabbitMQ silently falls back to at-most-once.
fn add_at_least_once(arguments: &mut FieldTable) {
    arguments.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    arguments.insert("x-overflow".into(), long_string("reject-publish"));
}

async fn declare_exchange(channel: &Channel, name: &str, kind: ExchangeKind) -> Result<()> {
    let options = ExchangeDeclareOptions {
        // Create it if missing, rather than only checking it exists.
        passive: false,
        // Survives a broker restart.
        durable: true,
        // Stays when its last binding goes (queues come and go in tests).
        auto_delete: false,
        // Producers publish to it directly.
        internal: false,
        // Wait for declare-ok, so errors surface here and not later.
        nowait: false,
    };
    channel
        .exchange_declare(
            ShortString::from(name),
            kind,
            options,
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> Result<()> {
    let options = QueueDeclareOptions {
        // Create it if missing.
        passive: false,
        // Quorum queues must be durable.
        durable: true,
        // Shared by every replica of the service; quorum queues cannot be
        // exclusive either.
        exclusive: false,
        // Messages must outlive consumers.
        auto_delete: false,
        // Wait for declare-ok (an argument mismatch fails here, loudly).
        nowait: false,
    };
    channel
        .queue_declare(ShortString::from(name), options, arguments)
        .await?;
    Ok(())
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<()> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            // Wait for bind-ok.
            QueueBindOptions { nowait: false },
            FieldTable::default(),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_namespace() {
        let topology = Topology::new(
            "t-1",
            &RetryPolicy {
                delays: vec![Duration::from_millis(200), Duration::from_secs(60)],
                jitter: 0.0,
            },
        );
        assert_eq!(topology.jobs_exchange(), "t-1.jobs");
        assert_eq!(
            topology.job_queue(JobQueue::Webhook).name,
            "t-1.jobs.webhook"
        );
        assert_eq!(
            topology.retry_exchange(Duration::from_millis(200)),
            "t-1.retry.200ms"
        );
        assert_eq!(
            topology.retry_exchange(Duration::from_secs(60)),
            "t-1.retry.1m"
        );
        assert_eq!(
            topology.retry_exchange(Duration::from_secs(3600)),
            "t-1.retry.1h"
        );
        assert_eq!(topology.exchange(Target::Events), "t-1.events");
    }
}
