//! The message bus: RabbitMQ topology, confirmed publishing and a consumer
//! runner with ack / retry / dead-letter semantics.
//!
//! # Layout
//! - [`settings`]: the `amqp` configuration section ([`AmqpSettings`],
//!   [`RetryPolicy`]) and its validation.
//! - [`topology`]: exchange and queue names of a namespace, and their
//!   idempotent declaration (quorum queues, delay tiers, dead letters).
//! - [`connection`]: [`Broker`], the process's connection, re-established on
//!   demand, with the readiness check.
//! - [`publisher`]: [`Publisher`], publishing with publisher confirms.
//! - [`consumer`]: [`Consumer`], draining a queue into a [`Handler`] with
//!   retries through delay queues and graceful shutdown.
//! - [`batch`]: [`BatchConsumer`], draining a queue into a [`BatchHandler`]
//!   a batch at a time (one transaction, one multiple-ack per batch).
//! - [`session`]: the reconnect loop both consumers share ([`run_sessions`]:
//!   channel, session, capped jittered backoff, again until shutdown).
//! - [`retry`]: the retry decision for one failed attempt (tiers, jitter).
//! - [`trace`]: W3C trace context in AMQP headers.
//! - [`metrics`]: Prometheus counters of the consumer runner.
//! - [`error`]: the crate's [`Error`].
//!
//! Message flow: a producer publishes (usually through the outbox relay) to
//! `{ns}.jobs` or `{ns}.events`; a consumer acks after its handler
//! committed; a transient failure goes through `{ns}.retry.<delay>` and comes
//! back with `x-keel-attempt` + 1; exhausted or permanent failures land in
//! `{ns}.dead` with `x-keel-death-reason`.

pub mod batch;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod metrics;
pub mod publisher;
pub mod retry;
pub mod session;
pub mod settings;
pub mod topology;
pub mod trace;

pub use batch::{BatchConsumer, BatchHandler, BatchOptions};
pub use connection::Broker;
pub use consumer::{
    Consumer, ConsumerOptions, DecodeError, Handler, HandlerError, Incoming, JobBatches,
};
pub use error::{Error, Result};
pub use metrics::{ConsumerMetrics, Outcome};
pub use publisher::{OutgoingMessage, Publisher};
pub use retry::RetryDecision;
pub use session::{Session, SessionEnd, run_sessions};
pub use settings::{AmqpSettings, ReconnectSettings, RetryPolicy};
pub use topology::{DURABLE_EVENT_SUBSCRIBERS, QueueSpec, Target, Topology};
