//! A service's background tasks (outbox relay, consumers, sweeps), run one
//! way in every service: spawned by name, watched while the service runs,
//! waited for with a deadline when it stops.
//!
//! A background task is meant to live as long as the service. One that
//! ends (returns or panics) while the service is still running is logged
//! with its name and **cancels the service's shutdown token**: the process
//! then stops and exits non-zero, so the orchestrator restarts it. A relay
//! or consumer that died silently behind a green `/readyz` would leave
//! messages unpublished or unconsumed with nobody noticing; a restart is
//! both visible and the likeliest cure.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// The background tasks of one service. Spawn with [`spawn`](Self::spawn),
/// stop with [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Background {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    shutdown: CancellationToken,
    /// Set when a task ended before the shutdown token was cancelled.
    failed: Arc<AtomicBool>,
}

impl Background {
    /// Tasks that stop when `shutdown` is cancelled, and cancel it
    /// themselves if one ends early.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            shutdown,
            failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The token the tasks stop on (pass a clone into each task).
    pub fn token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Runs `task` on the current runtime. It must return once the
    /// shutdown token is cancelled, and not before.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.shutdown.clone();
        let failed = self.failed.clone();
        let handle = self.tasks.spawn(async move {
            // A panic is caught here (not left to the JoinSet) so it can
            // stop the service at once, not only when someone joins.
            let panicked = AssertUnwindSafe(task).catch_unwind().await.is_err();
            if panicked {
                tracing::error!(task = name, "background task panicked");
            }
            if !shutdown.is_cancelled() {
                failed.store(true, Ordering::Relaxed);
                tracing::error!(
                    task = name,
                    "background task ended while the service was running; stopping the service"
                );
                shutdown.cancel();
            }
        });
        self.names.insert(handle.id(), name);
    }

    /// Cancels the shutdown token (if nothing has yet) and waits up to
    /// `deadline` for every task to finish. Tasks still running after it
    /// are logged by name and aborted. Returns `false` if any task ended
    /// before shutdown was requested (the service should exit non-zero).
    pub async fn shutdown(mut self, deadline: Duration) -> bool {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(deadline, async {
            while let Some(joined) = self.tasks.join_next_with_id().await {
                let id = match joined {
                    Ok((id, ())) => id,
                    // Panics are caught inside the task; this is an abort.
                    Err(error) => error.id(),
                };
                self.names.remove(&id);
            }
        })
        .await;
        if joined.is_err() {
            let mut unfinished: Vec<_> = self.names.values().copied().collect();
            unfinished.sort_unstable();
            tracing::warn!(
                ?deadline,
                ?unfinished,
                "background tasks did not finish in time; aborting them"
            );
            self.tasks.shutdown().await;
        }
        !self.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_ends_while_the_service_runs_stops_the_service() {
        let shutdown = CancellationToken::new();
        let mut background = Background::new(shutdown.clone());
        let token = shutdown.clone();
        background.spawn("waits", async move { token.cancelled().await });
        background.spawn("ends early", async {});
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the early end cancels the shutdown token");
        assert!(!background.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_panicking_task_stops_the_service() {
        let shutdown = CancellationToken::new();
        let mut background = Background::new(shutdown.clone());
        background.spawn("panics", async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), shutdown.cancelled())
            .await
            .expect("the panic cancels the shutdown token");
        assert!(!background.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn tasks_that_stop_on_shutdown_are_waited_for() {
        let shutdown = CancellationToken::new();
        let mut background = Background::new(shutdown.clone());
        let finished = Arc::new(AtomicBool::new(false));
        let (token, flag) = (shutdown.clone(), finished.clone());
        background.spawn("drains", async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::Relaxed);
        });
        assert!(background.shutdown(Duration::from_secs(5)).await);
        assert!(finished.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_task_that_outlives_the_deadline_is_aborted() {
        let shutdown = CancellationToken::new();
        let mut background = Background::new(shutdown.clone());
        background.spawn("stuck", std::future::pending());
        let started = std::time::Instant::now();
        assert!(background.shutdown(Duration::from_millis(100)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
