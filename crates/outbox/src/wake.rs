//! Waking the relays after commits whose outbox rows carry no NOTIFY,
//! coalesced.
//!
//! Writers on a hot path write their rows without NOTIFY (it would
//! serialise their commits; see [`crate::wake_relays`]), so someone must
//! wake the relays after committing. One wake-up per commit would cost a
//! round trip each; instead at most one is in flight, and one more is
//! queued while it is: a commit before the queued wake-up's NOTIFY is
//! covered by it, so no row waits for the relay's poll while writers are
//! busy.
//!
//! A writer with a relay in its own process needs no NOTIFY at all:
//! [`crate::Relay::waker`] raises that relay directly. That is what the
//! services use; it also spares every other replica's relay a wake-up (and
//! a near-empty batch) per commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_db::Pool;
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct RelayWaker {
    target: Target,
}

#[derive(Debug, Clone)]
enum Target {
    /// NOTIFY on the schema's channel: every listening relay wakes.
    Notify {
        pool: Pool,
        /// A wake-up task exists that has not yet sent its NOTIFY.
        pending: Arc<AtomicBool>,
    },
    /// The relay of this process.
    Local(Arc<Notify>),
}

impl RelayWaker {
    /// Wakes every relay of the schema through NOTIFY.
    pub fn new(pool: Pool) -> Self {
        Self {
            target: Target::Notify {
                pool,
                pending: Arc::new(AtomicBool::new(false)),
            },
        }
    }

    pub(crate) fn local(relay: Arc<Notify>) -> Self {
        Self {
            target: Target::Local(relay),
        }
    }

    /// Call after a commit that wrote outbox rows. Never waits (spawns on
    /// the current Tokio runtime when it has to NOTIFY).
    pub fn wake(&self) {
        let (pool, pending) = match &self.target {
            // Stores a permit when the relay is busy: it runs once more
            // after its current batch, which covers this commit.
            Target::Local(relay) => return relay.notify_one(),
            Target::Notify { pool, pending } => (pool, pending),
        };
        if pending.swap(true, Ordering::AcqRel) {
            // A wake-up that has not sent yet will cover this commit.
            return;
        }
        let (pool, pending) = (pool.clone(), pending.clone());
        tokio::spawn(async move {
            let client = match pool.get().await {
                Ok(client) => client,
                Err(e) => {
                    pending.store(false, Ordering::Release);
                    tracing::debug!(error = %e, "cannot wake the outbox relays; they poll");
                    return;
                }
            };
            // Cleared before the NOTIFY: a commit after this point queues
            // another wake-up; one before it is visible to the relay this
            // NOTIFY wakes.
            pending.store(false, Ordering::Release);
            if let Err(e) = crate::wake_relays(&client).await {
                tracing::debug!(error = %e, "cannot wake the outbox relays; they poll");
            }
        });
    }
}
