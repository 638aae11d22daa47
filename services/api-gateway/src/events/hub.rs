//! In-process fan-out: export notifications from this instance's broker
//! subscription to the open streams of the user they belong to.
//!
//! One bounded `broadcast` channel per user with at least one open stream,
//! created by the first stream and removed with the last. Publishing never
//! waits: a stream that has not consumed the previous `buffer` notifications
//! sees `Lagged` and is closed (the client resumes from PostgreSQL), so a
//! slow client never holds up anyone else. Streams of other users share no
//! channel with it, so their events cannot reach it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::events::metrics::EventsMetrics;

/// What happened to which export. The stream loads the export itself when
/// it writes the event, so the data is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    pub kind: ExportEventKind,
    pub export_id: Uuid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportEventKind {
    Completed,
    Failed,
}

impl ExportEventKind {
    /// The SSE `event:` name (the domain event's type).
    pub fn event_name(self) -> &'static str {
        match self {
            ExportEventKind::Completed => "export.completed",
            ExportEventKind::Failed => "export.failed",
        }
    }
}

/// The user already has the maximum number of open streams here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many open event streams for this user")]
pub struct TooManyStreams;

/// Shared by the subscription (publishing) and the handlers (subscribing).
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    users: Mutex<HashMap<Uuid, UserChannel>>,
    max_streams_per_user: usize,
    buffer: usize,
    /// Bumped each time the broker subscription is (re)established: events
    /// published while it was down were never seen here, so every open
    /// stream catches up from PostgreSQL.
    resync: watch::Sender<u64>,
    metrics: EventsMetrics,
}

#[derive(Debug)]
struct UserChannel {
    sender: broadcast::Sender<Notification>,
    streams: usize,
}

impl Hub {
    pub fn new(max_streams_per_user: usize, buffer: usize, metrics: EventsMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Mutex::new(HashMap::new()),
                max_streams_per_user,
                buffer: buffer.max(1),
                resync: watch::Sender::new(0),
                metrics,
            }),
        }
    }

    /// Registers one more open stream of `user`: its receiver sees every
    /// notification published for `user` from now on.
    pub fn subscribe(&self, user: Uuid) -> Result<Subscription, TooManyStreams> {
        let mut users = self.users();
        let channel = users.entry(user).or_insert_with(|| UserChannel {
            sender: broadcast::Sender::new(self.inner.buffer),
            streams: 0,
        });
        if channel.streams >= self.inner.max_streams_per_user {
            return Err(TooManyStreams);
        }
        channel.streams += 1;
        let receiver = channel.sender.subscribe();
        drop(users);
        self.inner.metrics.stream_opened();
        Ok(Subscription {
            hub: self.clone(),
            user,
            receiver,
            resync: self.inner.resync.subscribe(),
        })
    }

    /// Hands `notification` to `user`'s open streams on this instance, if
    /// any; returns how many. Never waits.
    pub fn publish(&self, user: Uuid, notification: Notification) -> usize {
        let users = self.users();
        users
            .get(&user)
            .and_then(|channel| channel.sender.send(notification).ok())
            .unwrap_or(0)
    }

    /// Tells every open stream to catch up from PostgreSQL (the broker
    /// subscription was just re-established).
    pub fn resync(&self) {
        self.inner.resync.send_modify(|generation| *generation += 1);
    }

    /// Users with at least one open stream here.
    pub fn users_with_streams(&self) -> usize {
        self.users().len()
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, UserChannel>> {
        // The map stays consistent across a panic (every update is one
        // statement), so a poisoned lock is still usable.
        self.inner
            .users
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn unsubscribe(&self, user: Uuid) {
        let mut users = self.users();
        if let Some(channel) = users.get_mut(&user) {
            channel.streams = channel.streams.saturating_sub(1);
            if channel.streams == 0 {
                users.remove(&user);
            }
        }
        drop(users);
        self.inner.metrics.stream_closed();
    }
}

/// One open stream's place in the hub; leaving it (drop) frees the slot.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    user: Uuid,
    pub receiver: broadcast::Receiver<Notification>,
    /// Changes when the stream must catch up from PostgreSQL.
    pub resync: watch::Receiver<u64>,
}

impl Subscription {
    pub fn user(&self) -> Uuid {
        self.user
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.unsubscribe(self.user);
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};

    use super::*;

    fn hub(max_streams: usize, buffer: usize) -> Hub {
        Hub::new(max_streams, buffer, EventsMetrics::default())
    }

    fn completed(export_id: Uuid) -> Notification {
        Notification {
            kind: ExportEventKind::Completed,
            export_id,
        }
    }

    #[test]
    fn a_notification_reaches_every_stream_of_its_user_and_no_other() {
        let hub = hub(4, 8);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut alice_tab_1 = hub.subscribe(alice).unwrap();
        let mut alice_tab_2 = hub.subscribe(alice).unwrap();
        let mut bobs = hub.subscribe(bob).unwrap();

        let export = Uuid::new_v4();
        assert_eq!(hub.publish(alice, completed(export)), 2);

        assert_eq!(alice_tab_1.receiver.try_recv(), Ok(completed(export)));
        assert_eq!(alice_tab_2.receiver.try_recv(), Ok(completed(export)));
        assert_eq!(bobs.receiver.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn publishing_for_a_user_without_streams_reaches_nobody() {
        let hub = hub(4, 8);
        let mut bobs = hub.subscribe(Uuid::new_v4()).unwrap();
        assert_eq!(hub.publish(Uuid::new_v4(), completed(Uuid::new_v4())), 0);
        assert_eq!(bobs.receiver.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn streams_past_the_per_user_cap_are_refused_until_one_closes() {
        let hub = hub(2, 8);
        let alice = Uuid::new_v4();
        let first = hub.subscribe(alice).unwrap();
        let _second = hub.subscribe(alice).unwrap();
        assert_eq!(hub.subscribe(alice).unwrap_err(), TooManyStreams);
        // Another user has slots of their own.
        let _bobs = hub.subscribe(Uuid::new_v4()).unwrap();

        drop(first);
        assert!(hub.subscribe(alice).is_ok());
    }

    #[test]
    fn the_last_stream_closing_removes_the_users_channel() {
        let hub = hub(2, 8);
        let alice = Uuid::new_v4();
        let first = hub.subscribe(alice).unwrap();
        let second = hub.subscribe(alice).unwrap();
        drop(first);
        assert_eq!(hub.users_with_streams(), 1);
        drop(second);
        assert_eq!(hub.users_with_streams(), 0);
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_lags_without_holding_up_the_others() {
        let hub = hub(4, 2);
        let alice = Uuid::new_v4();
        let mut slow = hub.subscribe(alice).unwrap();
        let mut fast = hub.subscribe(alice).unwrap();
        let exports: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for export in &exports {
            // Never blocks, whoever is behind.
            hub.publish(alice, completed(*export));
            assert_eq!(fast.receiver.recv().await, Ok(completed(*export)));
        }
        assert_eq!(slow.receiver.recv().await, Err(RecvError::Lagged(1)));
    }

    #[tokio::test]
    async fn resync_wakes_every_open_stream() {
        let hub = hub(4, 2);
        let mut alice = hub.subscribe(Uuid::new_v4()).unwrap();
        let bob = hub.subscribe(Uuid::new_v4()).unwrap();
        hub.resync();
        assert!(alice.resync.has_changed().unwrap());
        assert!(bob.resync.has_changed().unwrap());
        alice.resync.changed().await.unwrap();
        assert!(!alice.resync.has_changed().unwrap());
    }
}
