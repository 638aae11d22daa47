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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keel_db::Pool;

#[derive(Debug, Clone)]
pub struct RelayWaker {
    pool: Pool,
    /// A wake-up task exists that has not yet sent its NOTIFY.
    pending: Arc<AtomicBool>,
}

impl RelayWaker {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            pending: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Call after a commit that wrote outbox rows. Never waits (spawns on
    /// the current Tokio runtime).
    pub fn wake(&self) {
        if self.pending.swap(true, Ordering::AcqRel) {
            // A wake-up that has not sent yet will cover this commit.
            return;
        }
        let (pool, pending) = (self.pool.clone(), self.pending.clone());
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
