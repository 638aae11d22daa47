//! Applying a batch of webhook jobs in one transaction (ADR 0026).
//!
//! The consumer hands [`WebhookHandler`] what its prefetch window holds
//! (`[jobs.webhook] batch_size`); the batch is applied as one job would
//! be, with set-based statements:
//! 1. read the batch's events without a lock (one statement); the ones
//!    already `processed` / `ignored` are skipped;
//! 2. decide what each asks for, calling the Shopify Admin API for those
//!    that need it, concurrently, before any transaction opens;
//! 3. one transaction: lock the events (one statement, in id order, the
//!    single path's lock timeout), skip those another worker finished
//!    meanwhile, upsert the Shopify orders with their lines and
//!    `order.*` outbox rows set-based
//!    ([`keel_commerce::orders::batch::upsert_external_many`]), apply the
//!    rare other actions (Stripe payments, fulfilment statuses) one by one
//!    in that transaction, in the batch's order, mark every event (one
//!    statement), commit once; then wake the relays once.
//!
//! Jobs that cannot go in the batch (an event that does not exist, a
//! payload that cannot apply, a third party that failed, a second job for
//! an event already in the batch) go through the single-job path after it,
//! which fails them alone with the usual bookkeeping. A batch whose
//! transaction fails goes one job at a time through that path too, so a
//! failing job fails alone and the rest commit; a batch that finds the
//! database unavailable is held whole (every job answers `Unavailable`).

use std::collections::{HashMap, HashSet};

use futures::future::join_all;
use keel_commerce::orders::batch::{ExternalWrite, upsert_external_many};
use keel_commerce::orders::{self, Change};
use keel_messaging::{Handler, HandlerError, Incoming};
use keel_webhooks::process::{self, Finished, Outcome};
use uuid::Uuid;

use super::error::ProcessingError;
use super::{Action, JobEnd, WebhookHandler, apply, stale_note};

/// A batch after its events were read and decided, before its transaction.
#[derive(Debug, Default)]
struct Prepared {
    /// Jobs already done (index in the batch, source, end).
    ends: Vec<(usize, String, JobEnd)>,
    /// Jobs for the single path (their event does not exist).
    alone: Vec<usize>,
    /// Jobs whose decision failed (a payload that cannot apply, a third
    /// party that failed): they fail alone, without a second call to the
    /// third party.
    undecided: Vec<(usize, Uuid, String, ProcessingError)>,
    /// What the transaction applies, in the batch's order.
    planned: Vec<Planned>,
}

/// What the transaction did.
#[derive(Debug, Default)]
struct Committed {
    ends: Vec<(usize, String, JobEnd)>,
    alone: Vec<usize>,
}

/// One event the transaction will apply.
#[derive(Debug)]
struct Planned {
    index: usize,
    event_id: Uuid,
    source: String,
    action: Action,
}

impl WebhookHandler {
    /// The `Handler::handle_batch` of the webhook jobs: the batch path, or
    /// the single path for what it cannot take (see the module's text).
    pub(super) async fn handle_jobs(&self, messages: &[Incoming]) -> Vec<Result<(), HandlerError>> {
        let mut results: Vec<Option<Result<(), HandlerError>>> =
            messages.iter().map(|_| None).collect();
        let mut jobs = Vec::with_capacity(messages.len());
        let mut seen = HashSet::with_capacity(messages.len());
        let mut alone = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match Self::event_id(message) {
                Ok(event_id) if seen.insert(event_id) => jobs.push((index, event_id)),
                // The same event twice: the second waits for the first's
                // commit and then skips, on the single path.
                Ok(_) => alone.push(index),
                Err(error) => results[index] = Some(Err(error)),
            }
        }

        let mut ends = Vec::with_capacity(jobs.len());
        let mut held = Vec::new();
        let mut outage = None;
        match self.prepare(&jobs).await {
            Err(error) if error.is_unavailable() => {
                held.extend(jobs.iter().map(|&(index, _)| index));
                outage = Some(error);
            }
            Err(error) => {
                tracing::warn!(error = %error, jobs = jobs.len(), "reading a webhook batch failed; applying its jobs one at a time");
                alone.extend(jobs.iter().map(|&(index, _)| index));
            }
            Ok(prepared) => {
                ends.extend(prepared.ends);
                alone.extend(prepared.alone);
                for (index, event_id, source, error) in prepared.undecided {
                    let failed = self
                        .failed(&messages[index], event_id, &source, error)
                        .await;
                    results[index] = Some(Err(failed));
                }
                let planned: Vec<usize> = prepared.planned.iter().map(|p| p.index).collect();
                match self.commit(prepared.planned).await {
                    Ok(committed) => {
                        ends.extend(committed.ends);
                        alone.extend(committed.alone);
                    }
                    Err(error) if error.is_unavailable() => {
                        held.extend(planned);
                        outage = Some(error);
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, jobs = planned.len(), "webhook batch failed; applying its jobs one at a time");
                        alone.extend(planned);
                    }
                }
            }
        }

        for (index, source, end) in ends {
            self.inner.metrics.count(&source, end.as_str());
            results[index] = Some(Ok(()));
        }
        if let Some(error) = outage {
            // Nothing was written: these jobs are held, their attempts
            // unspent, until the database is back (ADR 0022).
            tracing::warn!(error = %error, jobs = held.len(), "the database is unavailable; holding webhook jobs");
            let text = error.to_string();
            for index in held {
                self.inner.metrics.count("unknown", "held");
                results[index] = Some(Err(HandlerError::unavailable(text.clone())));
            }
        }
        // One at a time, in the batch's order: the failing ones fail alone
        // with their attempts counted, the others commit.
        alone.sort_unstable();
        for index in alone {
            results[index] = Some(Handler::handle(self, &messages[index]).await);
        }
        results
            .into_iter()
            .map(|result| {
                result
                    .unwrap_or_else(|| Err(HandlerError::transient("a webhook job got no result")))
            })
            .collect()
    }

    /// Reads the events of `jobs` (index in the batch, event id; distinct
    /// events) in one statement and decides what each asks for, calling
    /// third parties concurrently; no transaction is open.
    async fn prepare(&self, jobs: &[(usize, Uuid)]) -> Result<Prepared, ProcessingError> {
        let mut prepared = Prepared::default();
        if jobs.is_empty() {
            return Ok(prepared);
        }
        let ids: Vec<Uuid> = jobs.iter().map(|&(_, id)| id).collect();
        let client = self.inner.pool.get().await.map_err(keel_db::Error::from)?;
        let events: HashMap<Uuid, process::StoredEvent> = process::load_many(&client, &ids)
            .await?
            .into_iter()
            .map(|event| (event.id, event))
            .collect();
        // The connection is held again only for the transaction.
        drop(client);

        let mut to_decide = Vec::new();
        for &(index, event_id) in jobs {
            match events.get(&event_id) {
                // The single path reports it (permanent).
                None => prepared.alone.push(index),
                Some(event) if event.status.is_done() => {
                    prepared
                        .ends
                        .push((index, event.source.clone(), JobEnd::Skipped));
                }
                Some(event) => to_decide.push((index, event)),
            }
        }
        let decided = join_all(
            to_decide
                .iter()
                .map(|&(_, event)| async move { self.decide(event).await }),
        )
        .await;
        for (&(index, event), decision) in to_decide.iter().zip(decided) {
            match decision {
                Ok(action) => prepared.planned.push(Planned {
                    index,
                    event_id: event.id,
                    source: event.source.clone(),
                    action,
                }),
                Err(error) => {
                    prepared
                        .undecided
                        .push((index, event.id, event.source.clone(), error));
                }
            }
        }
        Ok(prepared)
    }

    /// Applies `planned` in one transaction and commits it.
    async fn commit(&self, planned: Vec<Planned>) -> Result<Committed, ProcessingError> {
        let mut committed = Committed::default();
        if planned.is_empty() {
            return Ok(committed);
        }
        let inner = &self.inner;
        let mut client = inner.pool.get().await.map_err(keel_db::Error::from)?;
        let tx = client.transaction().await.map_err(keel_db::Error::from)?;
        let planned_ids: Vec<Uuid> = planned.iter().map(|p| p.event_id).collect();
        let locked: HashMap<Uuid, process::Status> = process::lock_many(&tx, &planned_ids)
            .await?
            .into_iter()
            .collect();
        let mut to_apply = Vec::with_capacity(planned.len());
        for plan in planned {
            match locked.get(&plan.event_id) {
                None => committed.alone.push(plan.index),
                // Another worker finished it while this one was deciding.
                Some(status) if status.is_done() => {
                    committed
                        .ends
                        .push((plan.index, plan.source, JobEnd::Skipped));
                }
                Some(_) => to_apply.push(plan),
            }
        }

        let mut finished = Vec::with_capacity(to_apply.len());
        let mut changed = false;
        let mut upserts: Vec<Planned> = Vec::new();
        for plan in to_apply {
            if matches!(plan.action, Action::UpsertOrder { .. }) {
                upserts.push(plan);
                continue;
            }
            // Another action comes after the upserts before it, as one
            // job after another would.
            changed |= flush_upserts(&tx, &mut upserts, &mut finished).await?;
            let (outcome, orders_changed, note) = apply(&tx, plan.action).await?;
            changed |= !orders_changed.is_empty();
            finished.push((
                plan.index,
                plan.source,
                Finished {
                    id: plan.event_id,
                    outcome,
                    note,
                },
            ));
        }
        changed |= flush_upserts(&tx, &mut upserts, &mut finished).await?;

        let rows: Vec<Finished> = finished.iter().map(|(_, _, f)| f.clone()).collect();
        process::finish_many(&tx, &rows).await?;
        tx.commit().await.map_err(keel_db::Error::from)?;
        if changed {
            inner.relays.wake();
        }
        for (index, source, done) in finished {
            if let Some(note) = &done.note {
                tracing::info!(event_id = %done.id, note = %note, "webhook event ignored");
            }
            let end = match done.outcome {
                Outcome::Processed => JobEnd::Processed,
                Outcome::Ignored => JobEnd::Ignored,
            };
            committed.ends.push((index, source, end));
        }
        Ok(committed)
    }
}

/// Applies the order upserts gathered so far (set-based), then the
/// fulfilment statuses of those that applied, one by one; records how each
/// event ends in `finished`. Returns whether any order changed.
async fn flush_upserts(
    tx: &keel_db::Transaction<'_>,
    upserts: &mut Vec<Planned>,
    finished: &mut Vec<(usize, String, Finished)>,
) -> Result<bool, ProcessingError> {
    if upserts.is_empty() {
        return Ok(false);
    }
    let plans = std::mem::take(upserts);
    let writes: Vec<ExternalWrite<'_>> = plans
        .iter()
        .filter_map(|plan| match &plan.action {
            Action::UpsertOrder { order, version, .. } => Some(ExternalWrite {
                order,
                version: *version,
            }),
            _ => None,
        })
        .collect();
    let results = upsert_external_many(tx, &writes).await?;
    let mut changed = false;
    for (plan, result) in plans.into_iter().zip(results) {
        let Action::UpsertOrder {
            topic,
            version,
            fulfillment,
            ..
        } = plan.action
        else {
            continue;
        };
        let (outcome, note) = if let Change::Stale { stored } = result.change {
            // Nothing of an older version applies, its fulfilment status
            // included: the newer event recorded its own.
            let note = stale_note(&topic, "updated_at", version, stored);
            (Outcome::Ignored, Some(note))
        } else {
            changed |= result.changed();
            if let Some(status) = fulfillment {
                changed |= orders::record_fulfillment(tx, result.order_id, &status)
                    .await?
                    .changed();
            }
            (Outcome::Processed, None)
        };
        finished.push((
            plan.index,
            plan.source,
            Finished {
                id: plan.event_id,
                outcome,
                note,
            },
        ));
    }
    Ok(changed)
}
