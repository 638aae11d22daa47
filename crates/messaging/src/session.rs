//! The reconnect loop every long-lived consumer of the broker shares: get a
//! channel, run one session on it (declare, consume, until it ends), back
//! off, and start again — until the shutdown token is cancelled.
//!
//! A session is one channel's life. Whoever consumes implements
//! [`Session`] for what happens on the channel; the loop owns what happens
//! between channels (how long to wait, what to log, when to stop), so the
//! per-message [`Consumer`](crate::Consumer) and the
//! [`BatchConsumer`](crate::BatchConsumer) cannot drift apart in how they
//! survive a broker outage.

use std::time::Duration;

use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::{FieldTable, ShortString};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connection::Broker;
use crate::error::Error;
use crate::settings::ReconnectSettings;

/// How one session (one channel's life) ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was requested and the session wound down: stop the loop.
    Stopped,
    /// The session never got going (qos, declare or consume failed): the
    /// next attempt waits longer than the last.
    Failed(Error),
    /// The session was consuming, then lost its channel or connection: the
    /// backoff starts again from `amqp.reconnect.min`, so a broker restart
    /// an hour after the last one is not answered with the longest wait.
    Lost(Error),
}

/// What runs on each channel the loop obtains.
pub trait Session: Send + Sync {
    /// Names the session in logs, e.g. its queue.
    fn name(&self) -> &str;

    /// Runs on `channel` until shutdown or until the channel fails. On
    /// [`SessionEnd::Stopped`] the session has already cleaned up
    /// (cancelled its consumer, closed the channel).
    fn run_session(
        &self,
        channel: Channel,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = SessionEnd> + Send;
}

/// Runs `session` on fresh channels until `shutdown` is cancelled:
/// reconnecting (through [`Broker::channel_with_retry`]) after each failure
/// with a capped exponential backoff (`amqp.reconnect`) and jitter, so the
/// replicas of a service do not reconnect in lockstep after an outage.
pub async fn run_sessions(broker: &Broker, session: &impl Session, shutdown: &CancellationToken) {
    let mut failures = 0u32;
    loop {
        let Some(channel) = broker.channel_with_retry(shutdown).await else {
            return;
        };
        let error = match session.run_session(channel, shutdown).await {
            SessionEnd::Stopped => return,
            SessionEnd::Failed(error) => error,
            SessionEnd::Lost(error) => {
                failures = 0;
                error
            }
        };
        failures += 1;
        let delay = jittered(&broker.settings().reconnect, failures, &mut rand::rng());
        tracing::warn!(
            session = session.name(), error = %error, ?delay, failures,
            "broker session ended; reconnecting"
        );
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Starts consuming `queue` on `channel` the way both consumer runners
/// do: `prefetch` unacknowledged deliveries per consumer, manual acks,
/// shared with other replicas, and a tag `{tag_prefix}-{uuid}` unique per
/// session.
pub(crate) async fn start_consuming(
    channel: &Channel,
    queue: &str,
    prefetch: u16,
    tag_prefix: &str,
) -> Result<lapin::Consumer, Error> {
    channel
        .basic_qos(
            prefetch,
            // Per consumer, not per channel: the usual RabbitMQ meaning.
            BasicQosOptions { global: false },
        )
        .await?;
    let consumer = channel
        .basic_consume(
            ShortString::from(queue),
            ShortString::from(format!("{tag_prefix}-{}", Uuid::new_v4())),
            BasicConsumeOptions {
                // RabbitMQ ignores no_local; written for completeness.
                no_local: false,
                // Manual acks: a message is acked only after its handler
                // succeeded (or it was retried/dead-lettered).
                no_ack: false,
                // Other replicas consume the same queue.
                exclusive: false,
                // Wait for consume-ok so a missing queue fails here.
                nowait: false,
            },
            FieldTable::default(),
        )
        .await?;
    Ok(consumer)
}

/// The backoff for attempt `failures`, less up to a quarter of it at random.
fn jittered(settings: &ReconnectSettings, failures: u32, rng: &mut impl Rng) -> Duration {
    settings
        .delay(failures)
        .mul_f64(rng.random_range(0.75..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_is_jittered_downwards_only() {
        let settings = ReconnectSettings {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut rng = rand::rng();
        for (failures, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (30, 1000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let delay = jittered(&settings, failures, &mut rng);
                assert!(delay <= full, "{delay:?} > {full:?}");
                assert!(delay >= full.mul_f64(0.75), "{delay:?} < 3/4 of {full:?}");
            }
        }
    }
}
