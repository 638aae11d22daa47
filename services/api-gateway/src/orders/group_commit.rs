//! Application-level group commit for `POST /api/v1/orders` without an
//! `Idempotency-Key` (ADR 0027).
//!
//! One order is one short statement, and on two shared cores what limits
//! them is what every commit pays (a round trip, a transaction), not the
//! rows: the database alone commits about 0.37x as many single-order
//! statements as pgbench single-row inserts, and 1.1x as many orders when
//! they go eight to a statement. [`OrderCommits`] takes the orders that
//! arrive while a commit is in flight and writes them together with
//! [`create_many`]: one statement, one commit. Each request is answered
//! only after the commit that holds its order, so a 201 still means
//! committed; under light load a batch is one order and nothing waits for
//! company. Keyed orders do not come here: their key, order and stored
//! response commit in a transaction of their own.
//!
//! The bounds are the webhook capture's (`keel_webhooks::group_commit`,
//! ADR 0023):
//! - **Queue.** At most `max_waiting` orders wait for a batch; past it an
//!   order is refused at once ([`CommitError::Saturated`], a 503 with
//!   `Retry-After`).
//! - **Caller deadline.** A caller waits at most `commit_timeout`
//!   ([`CommitError::DeadlineExceeded`], 503). The batch may still commit
//!   after that: a 503 means "not acknowledged", as for any timeout.
//! - **Commit deadline.** A batch that has no connection and no answer
//!   within `commit_timeout` is abandoned, its connection kept from the
//!   pool (it may be waiting on a dead link).
//! - **Failing alone.** A batch that fails on one order's data (a
//!   duplicate `external_id`, a check) is written again one order at a
//!   time, so only that order fails; any other failure (a timeout, an
//!   unreachable database) fails the batch at once with a retryable error.
//! - **Supervision.** A committer that panics is replaced; the callers of
//!   its batch are answered [`CommitError::CommitterFailed`].

use std::sync::Arc;
use std::time::Duration;

use keel_commerce::orders::domain::{NewOrder, Order};
use keel_commerce::orders::{self, create_many};
use keel_db::Pool;
use serde::Deserialize;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

/// `[orders.group_commit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupCommitOptions {
    /// Most orders in one statement.
    pub max_batch: usize,
    /// Batches committing at the same time, each on a pooled connection.
    /// Two: while one waits for PostgreSQL the next gathers, and one slow
    /// commit does not hold up every order.
    pub concurrent_batches: usize,
    /// Orders that may wait for a batch; past it an order is refused at
    /// once.
    pub max_waiting: usize,
    /// The longest a caller waits for its commit, and the longest a batch
    /// may take to get a connection and commit.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self {
            // Eight to a statement already reach pgbench's rate on the
            // database alone; larger batches only form under more load.
            max_batch: 64,
            concurrent_batches: 2,
            max_waiting: 1024,
            // Below the request deadline (`http.request_timeout`, 30 s), so
            // the order's own 503 answers first.
            commit_timeout: Duration::from_secs(5),
        }
    }
}

/// Why an order was not committed through the group commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The order's own failure (its batch was retried one by one, or it
    /// was alone or first in it).
    #[error(transparent)]
    Order(#[from] orders::Error),
    /// Another order's failure took the batch down with this one.
    #[error("the batch holding this order failed: {message}")]
    Batch {
        message: String,
        /// Worth retrying (unavailable, timed out): a 503, not a 500.
        retryable: bool,
    },
    #[error("{0} orders already wait for a commit")]
    Saturated(usize),
    #[error("the order was not committed within {0:?}")]
    DeadlineExceeded(Duration),
    #[error("the committer holding this order failed")]
    CommitterFailed,
    #[error("the group commit has stopped")]
    Stopped,
}

#[derive(Debug)]
struct Pending {
    order: NewOrder,
    answer: oneshot::Sender<Result<Order, CommitError>>,
}

/// The handle orders are committed through (cheap to clone). The
/// committers stop when the last handle is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct OrderCommits {
    queue: mpsc::Sender<Pending>,
    commit_timeout: Duration,
}

impl OrderCommits {
    /// Starts the committers on the current Tokio runtime.
    pub fn start(pool: Pool, options: GroupCommitOptions) -> Self {
        let (queue, receiver) = mpsc::channel(options.max_waiting.max(1));
        let committer = Arc::new(Committer {
            pool,
            receiver: Mutex::new(receiver),
            max_batch: options.max_batch.max(1),
            deadline: options.commit_timeout,
        });
        for index in 0..options.concurrent_batches.max(1) {
            tokio::spawn(supervise(Arc::clone(&committer), index));
        }
        Self {
            queue,
            commit_timeout: options.commit_timeout,
        }
    }

    /// Orders waiting for a batch right now (not those committing).
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Writes `order` in the next batch; answers once that batch has
    /// committed, or with an error at once when the queue is full, or when
    /// the commit has not answered within the deadline.
    pub async fn create(&self, order: NewOrder) -> Result<Order, CommitError> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Pending { order, answer })
            .map_err(|refused| match refused {
                TrySendError::Full(_) => CommitError::Saturated(self.queue.max_capacity()),
                TrySendError::Closed(_) => CommitError::Stopped,
            })?;
        match tokio::time::timeout(self.commit_timeout, answered).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CommitError::CommitterFailed),
            Err(_) => Err(CommitError::DeadlineExceeded(self.commit_timeout)),
        }
    }
}

struct Committer {
    pool: Pool,
    /// Held only while gathering, so the others gather while one commits.
    receiver: Mutex<mpsc::Receiver<Pending>>,
    max_batch: usize,
    deadline: Duration,
}

/// Runs committer `index`, replacing it whenever it panics.
async fn supervise(committer: Arc<Committer>, index: usize) {
    loop {
        match tokio::spawn(commit_batches(Arc::clone(&committer))).await {
            Ok(()) => return,
            Err(failure) if failure.is_panic() => {
                tracing::error!(
                    committer = index,
                    "an order group-commit committer panicked; starting a new one"
                );
            }
            Err(_) => return,
        }
    }
}

async fn commit_batches(committer: Arc<Committer>) {
    let mut orders = Vec::with_capacity(committer.max_batch);
    let mut answers = Vec::with_capacity(committer.max_batch);
    loop {
        {
            let mut receiver = committer.receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            orders.push(first.order);
            answers.push(first.answer);
            while orders.len() < committer.max_batch {
                let Ok(next) = receiver.try_recv() else { break };
                orders.push(next.order);
                answers.push(next.answer);
            }
        }
        let outcomes = commit(&committer, &orders).await;
        orders.clear();
        for (answer, outcome) in answers.drain(..).zip(outcomes) {
            // A caller that gave up no longer needs its answer.
            let _ = answer.send(outcome);
        }
    }
}

/// One outcome per order, in order.
async fn commit(committer: &Committer, batch: &[NewOrder]) -> Vec<Result<Order, CommitError>> {
    let deadline = Instant::now() + committer.deadline;
    let client = match tokio::time::timeout_at(deadline, committer.pool.get()).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            return all_failed(
                orders::Error::from(keel_db::Error::from(error)),
                batch.len(),
            );
        }
        Err(_) => return deadline_passed(committer.deadline, batch.len()),
    };
    match tokio::time::timeout_at(deadline, commit_on(&client, batch)).await {
        Ok(outcomes) => outcomes,
        Err(_) => {
            // The statement may still run (and commit): keep this
            // connection from the next batch.
            drop(keel_db::Client::take(client));
            tracing::warn!(
                orders = batch.len(),
                deadline = ?committer.deadline,
                "order batch did not commit within its deadline; abandoned"
            );
            deadline_passed(committer.deadline, batch.len())
        }
    }
}

async fn commit_on(
    client: &keel_db::Client,
    batch: &[NewOrder],
) -> Vec<Result<Order, CommitError>> {
    match create_many(client, batch).await {
        Ok(created) => created.into_iter().map(Ok).collect(),
        Err(error) if batch.len() > 1 && is_isolatable(&error) => {
            tracing::debug!(%error, orders = batch.len(), "order batch failed on one order's data; writing one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for order in batch {
                outcomes.push(
                    orders::create(client, order)
                        .await
                        .map_err(CommitError::from),
                );
            }
            outcomes
        }
        Err(error) => all_failed(error, batch.len()),
    }
}

/// A failure of one order's data, which writing the orders one by one
/// pins on that order alone; a timeout or an overload would only repeat.
fn is_isolatable(error: &orders::Error) -> bool {
    match error {
        orders::Error::DuplicateExternalId => true,
        orders::Error::Database(e) | orders::Error::Outbox(keel_outbox::Error::Database(e)) => {
            e.is_bad_input()
        }
        _ => false,
    }
}

/// `error` for the first order; the others get its message, as retryable
/// as it is.
fn all_failed(error: orders::Error, count: usize) -> Vec<Result<Order, CommitError>> {
    let message = error.to_string();
    let retryable = error.is_unavailable() || error.is_transient();
    let mut outcomes = Vec::with_capacity(count);
    outcomes.push(Err(CommitError::Order(error)));
    outcomes.extend((1..count).map(|_| {
        Err(CommitError::Batch {
            message: message.clone(),
            retryable,
        })
    }));
    outcomes.truncate(count);
    outcomes
}

fn deadline_passed(deadline: Duration, count: usize) -> Vec<Result<Order, CommitError>> {
    (0..count)
        .map(|_| Err(CommitError::DeadlineExceeded(deadline)))
        .collect()
}
