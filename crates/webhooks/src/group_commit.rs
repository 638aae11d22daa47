//! Application-level group commit for captures.
//!
//! Each capture is one small statement whose cost is dominated by what
//! every commit pays: a round trip, a transaction, a WAL flush wait.
//! PostgreSQL's own group commit shares the flush among concurrent commits,
//! but every commit still costs its own transaction and round trip on two
//! shared cores. [`GroupCommit`] takes the deliveries that arrive while a
//! commit is in flight and stores them together with
//! [`capture_many`](crate::capture::capture_many): one statement, one
//! commit, one flush for all of them. Each request still gets its answer
//! only after the commit that holds its delivery, so "durable before the
//! 2xx" is unchanged; under light load a batch is a single delivery and
//! nothing waits for company.
//!
//! Up to `concurrent_batches` commits are in flight at once: while one
//! waits for PostgreSQL the next batch gathers, so neither the database
//! nor the callers sit idle.
//!
//! # Bounded waiting
//!
//! Nothing here waits without a bound (ADR 0023):
//! - **Queue.** At most `max_waiting` captures wait for a batch (beyond the
//!   ones committing). Past it a capture is refused at once with
//!   [`Error::Saturated`]: the gateway answers 503 with `Retry-After`
//!   instead of letting requests pile up behind a slow database.
//! - **Caller deadline.** A caller waits at most `capture_timeout` for the
//!   commit holding its delivery, then gets [`Error::DeadlineExceeded`]
//!   (503 with `Retry-After`). *Durability:* giving up is the caller's, not
//!   the delivery's: the batch may still commit after the caller stopped
//!   waiting. A 503 therefore means "not acknowledged, retry", never
//!   "certainly not stored", and that is safe: senders retry, and capture
//!   is idempotent by (source, delivery id), so the retry answers
//!   `duplicate: true` naming the stored event, and nothing is applied
//!   twice.
//! - **Commit deadline.** A batch whose connection checkout and statement
//!   have not finished within `capture_timeout` is abandoned: every caller
//!   in it has given up by then, and its connection is left out of the pool
//!   (it may still be waiting for an answer that never comes on a dead
//!   link, and must not be handed to the next batch). The statement may
//!   still commit on the server, as above.
//! - **Fallback only where it helps.** A batch that fails because of one
//!   delivery's data (a data exception or an integrity violation,
//!   [`Error::is_isolatable`]) is retried one delivery at a time, so that
//!   delivery fails its own request only. Any other failure (a statement
//!   or lock timeout, an overloaded or unreachable server) fails the whole
//!   batch at once with a retryable error: retrying each delivery alone
//!   would turn one timeout into hundreds of statements, each as slow, on
//!   one of the few committers.
//! - **Supervision.** Each committer runs under a supervisor: a committer
//!   that panics is replaced, and the callers of the batch it held are
//!   answered [`Error::CommitterFailed`] (their answer channels close with
//!   it), never left waiting.

use std::sync::Arc;
use std::time::Duration;

use keel_db::Pool;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::time::Instant;

use crate::capture::{Captured, PreparedCapture, capture_many};
use crate::error::{Error, Result};

/// How captures are grouped; the gateway's `[webhooks.group_commit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupCommitOptions {
    /// Most deliveries in one statement.
    pub max_batch: usize,
    /// A batch takes no more deliveries once their bodies reach this many
    /// bytes (it always takes one), so large bodies do not make one huge
    /// statement.
    pub max_batch_bytes: usize,
    /// Batches committing at the same time (each holds one pooled
    /// connection while it does). Fewer means larger batches and fewer
    /// transactions: on the 2-core benchmark machine 1 and 2 did best
    /// (docs/benchmarks.md); 2 keeps one slow commit from holding up all.
    pub concurrent_batches: usize,
    /// Captures that may wait for a batch, beyond the ones committing;
    /// past it a capture is refused at once ([`Error::Saturated`]). At most
    /// `max_waiting + concurrent_batches * max_batch` deliveries are held
    /// in memory at any time.
    pub max_waiting: usize,
    /// The longest a caller waits for the commit holding its delivery
    /// ([`Error::DeadlineExceeded`] past it), and the longest a batch may
    /// take to get a connection and commit before it is abandoned.
    #[serde(with = "humantime_serde")]
    pub capture_timeout: Duration,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_batch_bytes: 4 * 1024 * 1024,
            concurrent_batches: 2,
            // Four full batches: at the measured few thousand captures a
            // second that is a fraction of a second of queue, while a
            // stalled database fills it in moments and sheds the rest.
            max_waiting: 1024,
            // Senders wait 5 to 30 s for an answer (Shopify 5 s, GitHub
            // 10 s): answer 503 before they give up on their own.
            capture_timeout: Duration::from_secs(5),
        }
    }
}

/// Called with the deliveries of each statement a committer sends, right
/// before it sends it, on the committer's task. Tests count statements and
/// inject faults here (a panic in it is a committer panicking).
pub type BeforeStatement = Arc<dyn Fn(&[PreparedCapture]) + Send + Sync>;

#[derive(Debug)]
struct Pending {
    capture: PreparedCapture,
    answer: oneshot::Sender<Result<Captured>>,
}

/// The handle requests capture through (cheap to clone). The committing
/// tasks stop when the last handle is dropped, after the queue is empty.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    capture_timeout: Duration,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("waiting", &self.waiting())
            .finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the committing tasks on the current tokio runtime.
    pub fn start(pool: Pool, options: GroupCommitOptions) -> Self {
        Self::start_with(pool, options, Arc::new(|_: &[PreparedCapture]| {}))
    }

    /// [`start`](Self::start), calling `before_statement` before each
    /// statement a committer sends (see [`BeforeStatement`]).
    pub fn start_with(
        pool: Pool,
        options: GroupCommitOptions,
        before_statement: BeforeStatement,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(options.max_waiting.max(1));
        let committer = Arc::new(Committer {
            pool,
            receiver: Mutex::new(receiver),
            limits: Limits {
                deliveries: options.max_batch.max(1),
                bytes: options.max_batch_bytes.max(1),
            },
            deadline: options.capture_timeout,
            before_statement,
        });
        for index in 0..options.concurrent_batches.max(1) {
            tokio::spawn(supervise(Arc::clone(&committer), index));
        }
        Self {
            queue,
            capture_timeout: options.capture_timeout,
        }
    }

    /// Captures waiting for a batch right now (not those committing).
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Reads [`waiting`](Self::waiting) without keeping the committers
    /// alive (for a metrics collector that outlives the handles).
    pub fn probe(&self) -> WaitingProbe {
        WaitingProbe(self.queue.downgrade())
    }

    /// Stores `capture` (see [`capture_many`]) in the next batch and
    /// answers once that batch has committed, or with a retryable error
    /// ([`Error::is_retryable`]) at once when the queue is full, or when
    /// the commit has not answered within the capture deadline (the
    /// delivery may then still be committed; see the module docs).
    pub async fn capture(&self, capture: PreparedCapture) -> Result<Captured> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Pending { capture, answer })
            .map_err(|refused| match refused {
                TrySendError::Full(_) => Error::Saturated(self.queue.max_capacity()),
                TrySendError::Closed(_) => Error::Stopped,
            })?;
        match tokio::time::timeout(self.capture_timeout, answered).await {
            Ok(Ok(outcome)) => outcome,
            // The answer channel closed unanswered: the committer holding
            // it panicked (or the runtime is going away).
            Ok(Err(_)) => Err(Error::CommitterFailed),
            Err(_) => Err(Error::DeadlineExceeded(self.capture_timeout)),
        }
    }
}

/// See [`GroupCommit::probe`].
#[derive(Debug, Clone)]
pub struct WaitingProbe(mpsc::WeakSender<Pending>);

impl WaitingProbe {
    /// Captures waiting for a batch right now; 0 once the group commit
    /// has stopped.
    pub fn waiting(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    deliveries: usize,
    bytes: usize,
}

/// What every committer shares.
struct Committer {
    pool: Pool,
    /// Only the gathering holds it, so the other committers gather while
    /// one waits for its commit.
    receiver: Mutex<mpsc::Receiver<Pending>>,
    limits: Limits,
    deadline: Duration,
    before_statement: BeforeStatement,
}

/// Runs committer `index`, starting a new one whenever it panics. Ends
/// when the committer ends on its own (every handle dropped, queue empty)
/// or is cancelled (the runtime is shutting down).
async fn supervise(committer: Arc<Committer>, index: usize) {
    loop {
        match tokio::spawn(commit_batches(Arc::clone(&committer))).await {
            Ok(()) => return,
            Err(failure) if failure.is_panic() => {
                let payload = failure.into_panic();
                let reason = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                // Its callers were answered CommitterFailed as its answer
                // channels dropped. No backoff: a new committer only works
                // when captures arrive, so a poison batch cannot spin.
                tracing::error!(
                    committer = index,
                    reason,
                    "a webhook group-commit committer panicked; starting a new one"
                );
            }
            Err(_) => return,
        }
    }
}

/// One committer: takes whatever is queued (within its limits), commits
/// it, answers, repeats.
async fn commit_batches(committer: Arc<Committer>) {
    let limits = committer.limits;
    let mut captures = Vec::with_capacity(limits.deliveries);
    let mut answers = Vec::with_capacity(limits.deliveries);
    loop {
        {
            let mut receiver = committer.receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return; // every handle dropped and the queue is empty
            };
            let mut bytes = first.capture.body.len();
            captures.push(first.capture);
            answers.push(first.answer);
            while captures.len() < limits.deliveries && bytes < limits.bytes {
                let Ok(next) = receiver.try_recv() else { break };
                bytes += next.capture.body.len();
                captures.push(next.capture);
                answers.push(next.answer);
            }
        }
        let outcomes = commit(&committer, &captures).await;
        captures.clear();
        for (answer, outcome) in answers.drain(..).zip(outcomes) {
            // A caller that went away (client disconnected, deadline
            // passed) no longer needs its answer; its delivery is stored
            // all the same (the sender's retry answers duplicate).
            let _ = answer.send(outcome);
        }
    }
}

/// Commits `captures` within the committer's deadline: one outcome per
/// capture, in order.
async fn commit(committer: &Committer, captures: &[PreparedCapture]) -> Vec<Result<Captured>> {
    let deadline = Instant::now() + committer.deadline;
    let client = match tokio::time::timeout_at(deadline, committer.pool.get()).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return all_failed(Error::Database(error.into()), captures.len()),
        Err(_) => {
            let error = Error::Busy(format!(
                "no database connection within {:?}",
                committer.deadline
            ));
            return all_failed(error, captures.len());
        }
    };
    match tokio::time::timeout_at(deadline, commit_on(committer, &client, captures)).await {
        Ok(outcomes) => outcomes,
        Err(_) => {
            // The statement may still be running (and may still commit):
            // this connection answers nothing else until it finishes, which
            // on a dead link is never. Keep it from the next batch.
            drop(keel_db::Client::take(client));
            tracing::warn!(
                deliveries = captures.len(),
                deadline = ?committer.deadline,
                "webhook capture batch did not commit within its deadline; abandoned"
            );
            let error = Error::Busy(format!(
                "the commit did not finish within {:?}",
                committer.deadline
            ));
            all_failed(error, captures.len())
        }
    }
}

async fn commit_on(
    committer: &Committer,
    client: &keel_db::Client,
    captures: &[PreparedCapture],
) -> Vec<Result<Captured>> {
    (committer.before_statement)(captures);
    match capture_many(client, captures).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) if captures.len() > 1 && error.is_isolatable() => {
            tracing::warn!(%error, deliveries = captures.len(), "batched capture failed on one delivery's data; capturing one by one");
            let mut outcomes = Vec::with_capacity(captures.len());
            for capture in captures {
                let alone = std::slice::from_ref(capture);
                (committer.before_statement)(alone);
                let stored = capture_many(client, alone).await;
                outcomes.push(stored.and_then(|mut one| one.pop().ok_or(Error::Vanished)));
            }
            outcomes
        }
        Err(error) => all_failed(error, captures.len()),
    }
}

/// `error` for the first capture; for the rest, the same kind of failure
/// (unavailable, busy, or failed) with its message.
fn all_failed(error: Error, count: usize) -> Vec<Result<Captured>> {
    let message = error.to_string();
    let like = |message: String| {
        if error.is_unavailable() {
            Error::Unavailable(message)
        } else if error.is_busy() {
            Error::Busy(message)
        } else {
            Error::BatchFailed(message)
        }
    };
    let rest: Vec<Result<Captured>> = (1..count).map(|_| Err(like(message.clone()))).collect();
    std::iter::once(Err(error))
        .chain(rest)
        .take(count)
        .collect()
}
