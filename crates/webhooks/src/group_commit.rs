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
//! nor the callers sit idle. A batch that fails for any reason other than
//! an unreachable database is retried one delivery at a time, so one
//! delivery the database refuses fails its own request only.

use std::sync::Arc;

use keel_db::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};

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
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_batch_bytes: 4 * 1024 * 1024,
            concurrent_batches: 2,
        }
    }
}

struct Pending {
    capture: PreparedCapture,
    answer: oneshot::Sender<Result<Captured>>,
}

/// The handle requests capture through (cheap to clone). The committing
/// tasks stop when the last handle is dropped, after the queue is empty.
#[derive(Clone)]
pub struct GroupCommit {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl GroupCommit {
    /// Starts the committing tasks on the current tokio runtime.
    pub fn start(pool: Pool, options: GroupCommitOptions) -> Self {
        let max_batch = options.max_batch.max(1);
        // Room for a full batch per committer waiting behind the ones in
        // flight; past that, callers wait to enqueue (backpressure).
        let (queue, receiver) = mpsc::channel(max_batch * options.concurrent_batches.max(1) * 2);
        let receiver = Arc::new(Mutex::new(receiver));
        let limits = Limits {
            deliveries: max_batch,
            bytes: options.max_batch_bytes.max(1),
        };
        for _ in 0..options.concurrent_batches.max(1) {
            tokio::spawn(commit_batches(pool.clone(), Arc::clone(&receiver), limits));
        }
        Self { queue }
    }

    /// Stores `capture` (see [`capture_many`]) in the next batch and
    /// answers once that batch has committed.
    pub async fn capture(&self, capture: PreparedCapture) -> Result<Captured> {
        let (answer, answered) = oneshot::channel();
        self.queue
            .send(Pending { capture, answer })
            .await
            .map_err(|_| Error::Stopped)?;
        answered.await.map_err(|_| Error::Stopped)?
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    deliveries: usize,
    bytes: usize,
}

/// One committer: takes whatever is queued (within `limits`), commits it,
/// answers, repeats. Only the gathering holds the receiver, so the other
/// committers gather while this one waits for its commit.
async fn commit_batches(pool: Pool, receiver: Arc<Mutex<mpsc::Receiver<Pending>>>, limits: Limits) {
    let mut captures = Vec::with_capacity(limits.deliveries);
    let mut answers = Vec::with_capacity(limits.deliveries);
    loop {
        {
            let mut receiver = receiver.lock().await;
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
        let outcomes = commit(&pool, &captures).await;
        captures.clear();
        for (answer, outcome) in answers.drain(..).zip(outcomes) {
            // A caller that went away (client disconnected) no longer
            // needs its answer; its delivery is stored all the same.
            let _ = answer.send(outcome);
        }
    }
}

/// Commits `captures`: one outcome per capture, in order.
async fn commit(pool: &Pool, captures: &[PreparedCapture]) -> Vec<Result<Captured>> {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => return all_failed(Error::Database(error.into()), captures.len()),
    };
    match capture_many(&client, captures).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) if error.is_unavailable() || captures.len() == 1 => {
            all_failed(error, captures.len())
        }
        Err(error) => {
            tracing::warn!(%error, deliveries = captures.len(), "batched capture failed; capturing one by one");
            let mut outcomes = Vec::with_capacity(captures.len());
            for capture in captures {
                let alone = capture_many(&client, std::slice::from_ref(capture)).await;
                outcomes.push(alone.and_then(|mut one| one.pop().ok_or(Error::Vanished)));
            }
            outcomes
        }
    }
}

/// `error` for the first capture, [`Error::Unavailable`] for the rest.
fn all_failed(error: Error, count: usize) -> Vec<Result<Captured>> {
    let message = error.to_string();
    let mut first = Some(error);
    (0..count)
        .map(|_| {
            Err(first
                .take()
                .unwrap_or_else(|| Error::Unavailable(message.clone())))
        })
        .collect()
}
