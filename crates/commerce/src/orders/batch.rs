//! Set-based webhook order writes: [`upsert_external_many`] applies many
//! `(source, external_id)` orders in a handful of statements, for the
//! worker's batches (ADR 0026). The rules are those of
//! [`upsert_external_as_of`](super::queries::upsert_external_as_of), item
//! for item: only a strictly newer version touches an existing order (or
//! any while it has none; no version never passes a known one), an order
//! whose content is already stored is [`Change::Unchanged`] and emits
//! nothing, and `order.created` / `order.updated` are written with the
//! change, without NOTIFY (the caller wakes the relays after commit).
//!
//! Several writes of one order in one call are applied in the order given,
//! as consecutive single calls would: each *round* holds at most one write
//! per order (the n-th write of every order is in round n), and a round
//! sees the previous one's writes. A round is at most five statements
//! whatever its size: insert the new orders with their lines and
//! `order.created` rows; claim the existing ones whose version is newer
//! (returning their content); read the versions of those that were not
//! newer; replace the content of the claimed ones that differ; insert their
//! lines and `order.updated` rows.
//!
//! The outbox rows are written here as `keel_outbox::OutboxRow::COLUMNS`
//! (the columns `keel_outbox`'s own inserts fill), several per statement.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keel_contracts::events::{OrderSnapshot, OrderUpdated};
use keel_contracts::{DomainEvent, Envelope};
use keel_db::Transaction;
use keel_outbox::OutboxRow;
use uuid::Uuid;

use super::domain::{ExternalOrder, OrderItem, OrderStatus};
use super::queries::Change;
use super::{Error, Result};

/// `(source, external_id)`: what names an external order.
type OrderKey = (String, String);

/// One order to write, of the sender's `version` (Shopify's `updated_at`).
#[derive(Debug, Clone, Copy)]
pub struct ExternalWrite<'a> {
    pub order: &'a ExternalOrder,
    pub version: Option<DateTime<Utc>>,
}

/// What one write did: the order it concerns and its [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upserted {
    pub order_id: Uuid,
    pub change: Change,
}

impl Upserted {
    /// Whether the write changed the order (an event was written).
    pub fn changed(&self) -> bool {
        matches!(self.change, Change::Created | Change::Updated)
    }
}

/// Applies `writes` in `tx`, in order; returns what each did, by index.
/// Fails as a whole (the caller rolls back): an order deleted between
/// the conflict and the claim is [`Error::NotFound`], a value the table
/// refuses is the database's error.
pub async fn upsert_external_many(
    tx: &Transaction<'_>,
    writes: &[ExternalWrite<'_>],
) -> Result<Vec<Upserted>> {
    let mut results: Vec<Option<Upserted>> = vec![None; writes.len()];
    for round in rounds(writes) {
        apply_round(tx, writes, &round, &mut results).await?;
    }
    results
        .into_iter()
        .map(|result| result.ok_or_else(|| Error::Corrupt("a batch write got no result".into())))
        .collect()
}

/// The indices of `writes` split into rounds of distinct orders, the n-th
/// write of each order in round n (so ON CONFLICT never meets one row twice
/// in a statement, and later writes see earlier ones).
fn rounds(writes: &[ExternalWrite<'_>]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<(String, &str), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (index, write) in writes.iter().enumerate() {
        let key = (
            write.order.source.as_string(),
            write.order.external_id.as_str(),
        );
        let round = seen.entry(key).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(index);
        *round += 1;
    }
    rounds
}

/// Column arrays of the lines of several orders, for `unnest`.
#[derive(Default)]
struct Lines<'a> {
    order_ids: Vec<Uuid>,
    positions: Vec<i32>,
    skus: Vec<&'a str>,
    quantities: Vec<i32>,
    prices: Vec<i64>,
}

impl<'a> Lines<'a> {
    fn push(&mut self, order_id: Uuid, order: &'a ExternalOrder) {
        for (position, item) in (0..).zip(&order.items) {
            self.order_ids.push(order_id);
            self.positions.push(position);
            self.skus.push(item.sku.as_str());
            self.quantities.push(item.quantity.get());
            self.prices.push(item.unit_price_cents.get());
        }
    }
}

/// Column arrays of several outbox rows (`OutboxRow::COLUMNS`), each
/// tagged with the order it belongs to.
#[derive(Default)]
struct Events {
    order_ids: Vec<Uuid>,
    ids: Vec<Uuid>,
    targets: Vec<&'static str>,
    routing_keys: Vec<&'static str>,
    message_types: Vec<&'static str>,
    payloads: Vec<serde_json::Value>,
    headers: Vec<serde_json::Value>,
}

impl Events {
    fn push(&mut self, order_id: Uuid, event: DomainEvent) -> Result<()> {
        let row = OutboxRow::event(&Envelope::new(event))?;
        self.order_ids.push(order_id);
        self.ids.push(row.id);
        self.targets.push(row.target);
        self.routing_keys.push(row.routing_key);
        self.message_types.push(row.message_type);
        self.payloads.push(row.payload);
        self.headers.push(row.headers);
        Ok(())
    }
}

fn snapshot(
    id: Uuid,
    status: OrderStatus,
    order: &ExternalOrder,
    user_id: Option<Uuid>,
) -> OrderSnapshot {
    OrderSnapshot {
        order_id: id,
        user_id,
        status: status.as_str().to_owned(),
        currency: order.currency.as_str().to_owned(),
        total_cents: order.total_cents.get(),
        source: order.source.as_string(),
    }
}

async fn apply_round(
    tx: &Transaction<'_>,
    writes: &[ExternalWrite<'_>],
    round: &[usize],
    results: &mut [Option<Upserted>],
) -> Result<()> {
    // 1. Insert the orders that do not exist, their lines and their
    // `order.created`, all `FROM inserted`: a row that met a conflict (the
    // order exists, or a concurrent writer inserted it first and committed:
    // ON CONFLICT waits for it) writes neither lines nor event.
    let ids: Vec<Uuid> = round.iter().map(|_| Uuid::now_v7()).collect();
    let mut lines = Lines::default();
    let mut events = Events::default();
    for (&index, &id) in round.iter().zip(&ids) {
        let order = writes[index].order;
        lines.push(id, order);
        events.push(
            id,
            DomainEvent::OrderCreated(snapshot(id, OrderStatus::Pending, order, None)),
        )?;
    }
    let external_ids: Vec<&str> = round
        .iter()
        .map(|&i| writes[i].order.external_id.as_str())
        .collect();
    let currencies: Vec<&str> = round
        .iter()
        .map(|&i| writes[i].order.currency.as_str())
        .collect();
    let totals: Vec<i64> = round
        .iter()
        .map(|&i| writes[i].order.total_cents.get())
        .collect();
    let emails: Vec<Option<&str>> = round
        .iter()
        .map(|&i| writes[i].order.customer_email.as_ref().map(|e| e.as_str()))
        .collect();
    let sources: Vec<String> = round
        .iter()
        .map(|&i| writes[i].order.source.as_string())
        .collect();
    let versions: Vec<Option<DateTime<Utc>>> = round.iter().map(|&i| writes[i].version).collect();
    let insert = tx
        .prepare_cached(
            "WITH inserted AS ( \
                 INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, user_id, source, source_updated_at) \
                 SELECT id, ext, 'pending', cur, tot, email, NULL, src, ver \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::timestamptz[]) \
                     AS t(id, ext, cur, tot, email, src, ver) \
                 ON CONFLICT (source, external_id) WHERE source <> 'api' AND external_id IS NOT NULL DO NOTHING \
                 RETURNING id \
             ), lines AS ( \
                 INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents) \
                 SELECT l.o, l.p, l.s, l.q, l.u \
                 FROM unnest($8::uuid[], $9::int[], $10::text[], $11::int[], $12::bigint[]) AS l(o, p, s, q, u) \
                 JOIN inserted ON inserted.id = l.o \
             ), events AS ( \
                 INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
                 SELECT e.id, e.target, e.key, e.kind, e.payload, e.headers \
                 FROM unnest($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::jsonb[]) \
                     AS e(o, id, target, key, kind, payload, headers) \
                 JOIN inserted ON inserted.id = e.o \
             ) \
             SELECT id FROM inserted",
        )
        .await?;
    let inserted: std::collections::HashSet<Uuid> = tx
        .query(
            &insert,
            &[
                &ids,
                &external_ids,
                &currencies,
                &totals,
                &emails,
                &sources,
                &versions,
                &lines.order_ids,
                &lines.positions,
                &lines.skus,
                &lines.quantities,
                &lines.prices,
                &events.order_ids,
                &events.ids,
                &events.targets,
                &events.routing_keys,
                &events.message_types,
                &events.payloads,
                &events.headers,
            ],
        )
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()?;

    // Positions in `round` of the writes that met an existing order.
    let mut existing = Vec::new();
    for (position, (&index, id)) in round.iter().zip(&ids).enumerate() {
        if inserted.contains(id) {
            results[index] = Some(Upserted {
                order_id: *id,
                change: Change::Created,
            });
        } else {
            existing.push(position);
        }
    }
    if existing.is_empty() {
        return Ok(());
    }

    // 2. Claim the existing orders this round's version is newer than
    // (recording it, and locking the rows), returning what they hold.
    let pick = |values: &[String]| -> Vec<String> {
        existing.iter().map(|&p| values[p].clone()).collect()
    };
    let claim_sources = pick(&sources);
    let claim_external: Vec<&str> = existing.iter().map(|&p| external_ids[p]).collect();
    let claim_versions: Vec<Option<DateTime<Utc>>> =
        existing.iter().map(|&p| versions[p]).collect();
    let claim = tx
        .prepare_cached(
            "UPDATE orders o SET source_updated_at = coalesce(t.ver, o.source_updated_at) \
             FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS t(src, ext, ver) \
             WHERE o.source = t.src AND o.external_id = t.ext \
               AND (o.source_updated_at IS NULL OR o.source_updated_at < t.ver) \
             RETURNING o.source, o.external_id, o.id, o.status, o.currency, o.total_cents, \
                 o.customer_email, o.user_id, \
                 (SELECT coalesce(jsonb_agg(jsonb_build_object( \
                             'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents) \
                          ORDER BY i.position), '[]'::jsonb) \
                  FROM order_items i WHERE i.order_id = o.id)",
        )
        .await?;
    let claimed_rows = tx
        .query(&claim, &[&claim_sources, &claim_external, &claim_versions])
        .await?;
    let mut claimed: HashMap<OrderKey, Stored> = HashMap::new();
    for row in &claimed_rows {
        let status: String = row.try_get(3)?;
        let items: serde_json::Value = row.try_get(8)?;
        claimed.insert(
            (row.try_get(0)?, row.try_get(1)?),
            Stored {
                id: row.try_get(2)?,
                status: OrderStatus::parse(&status)
                    .map_err(|_| Error::Corrupt(format!("status {status}")))?,
                currency: row.try_get(4)?,
                total_cents: row.try_get(5)?,
                customer_email: row.try_get(6)?,
                user_id: row.try_get(7)?,
                items: serde_json::from_value(items).map_err(|e| Error::Corrupt(e.to_string()))?,
            },
        );
    }

    // 3. The versions that were not newer, for the callers' notes.
    let unclaimed: Vec<usize> = existing
        .iter()
        .copied()
        .filter(|&p| !claimed.contains_key(&(sources[p].clone(), external_ids[p].to_owned())))
        .collect();
    let mut stale: HashMap<OrderKey, (Uuid, Option<DateTime<Utc>>)> = HashMap::new();
    if !unclaimed.is_empty() {
        let stored = tx
            .prepare_cached(
                "SELECT o.source, o.external_id, o.id, o.source_updated_at \
                 FROM orders o JOIN unnest($1::text[], $2::text[]) AS t(src, ext) \
                   ON o.source = t.src AND o.external_id = t.ext",
            )
            .await?;
        let unclaimed_sources: Vec<String> =
            unclaimed.iter().map(|&p| sources[p].clone()).collect();
        let unclaimed_external: Vec<&str> = unclaimed.iter().map(|&p| external_ids[p]).collect();
        for row in tx
            .query(&stored, &[&unclaimed_sources, &unclaimed_external])
            .await?
        {
            stale.insert(
                (row.try_get(0)?, row.try_get(1)?),
                (row.try_get(2)?, row.try_get(3)?),
            );
        }
    }

    // 4. Replace the content of the claimed orders that differ.
    let mut changed = Vec::new();
    for &position in &existing {
        let index = round[position];
        let key = (sources[position].clone(), external_ids[position].to_owned());
        let result = if let Some(current) = claimed.get(&key) {
            let order = writes[index].order;
            if current.holds(order) {
                Upserted {
                    order_id: current.id,
                    change: Change::Unchanged,
                }
            } else {
                changed.push((index, current));
                Upserted {
                    order_id: current.id,
                    change: Change::Updated,
                }
            }
        } else {
            // Missing: deleted between the conflict and the claim.
            let (order_id, stored) = stale.get(&key).copied().ok_or(Error::NotFound)?;
            Upserted {
                order_id,
                change: Change::Stale { stored },
            }
        };
        results[index] = Some(result);
    }
    if changed.is_empty() {
        return Ok(());
    }
    let changed_ids: Vec<Uuid> = changed.iter().map(|(_, current)| current.id).collect();
    let changed_currencies: Vec<&str> = changed
        .iter()
        .map(|&(i, _)| writes[i].order.currency.as_str())
        .collect();
    let changed_totals: Vec<i64> = changed
        .iter()
        .map(|&(i, _)| writes[i].order.total_cents.get())
        .collect();
    let changed_emails: Vec<Option<&str>> = changed
        .iter()
        .map(|&(i, _)| writes[i].order.customer_email.as_ref().map(|e| e.as_str()))
        .collect();
    let update = tx
        .prepare_cached(
            "WITH updated AS ( \
                 UPDATE orders o SET currency = t.cur, total_cents = t.tot, customer_email = t.email, \
                     updated_at = greatest(clock_timestamp(), o.updated_at + interval '1 microsecond') \
                 FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) AS t(id, cur, tot, email) \
                 WHERE o.id = t.id \
                 RETURNING o.id \
             ) \
             DELETE FROM order_items i USING updated WHERE i.order_id = updated.id",
        )
        .await?;
    tx.execute(
        &update,
        &[
            &changed_ids,
            &changed_currencies,
            &changed_totals,
            &changed_emails,
        ],
    )
    .await?;

    // 5. Their new lines and `order.updated` rows.
    let mut lines = Lines::default();
    let mut events = Events::default();
    for &(index, current) in &changed {
        let order = writes[index].order;
        lines.push(current.id, order);
        events.push(
            current.id,
            DomainEvent::OrderUpdated(OrderUpdated {
                order: snapshot(current.id, current.status, order, current.user_id),
                previous_status: current.status.as_str().to_owned(),
            }),
        )?;
    }
    let replace = tx
        .prepare_cached(
            "WITH lines AS ( \
                 INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents) \
                 SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::int[], $5::bigint[]) \
             ) \
             INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
             SELECT * FROM unnest($6::uuid[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[])",
        )
        .await?;
    tx.execute(
        &replace,
        &[
            &lines.order_ids,
            &lines.positions,
            &lines.skus,
            &lines.quantities,
            &lines.prices,
            &events.ids,
            &events.targets,
            &events.routing_keys,
            &events.message_types,
            &events.payloads,
            &events.headers,
        ],
    )
    .await?;
    Ok(())
}

/// What a claimed order holds before a write replaces it.
#[derive(Debug)]
struct Stored {
    id: Uuid,
    status: OrderStatus,
    currency: String,
    total_cents: i64,
    customer_email: Option<String>,
    user_id: Option<Uuid>,
    items: Vec<OrderItem>,
}

impl Stored {
    /// Whether it already holds what `new` says (as the single write
    /// compares).
    fn holds(&self, new: &ExternalOrder) -> bool {
        self.currency == new.currency.as_str()
            && self.total_cents == new.total_cents.get()
            && self.customer_email.as_deref() == new.customer_email.as_ref().map(|e| e.as_str())
            && self.items.len() == new.items.len()
            && self.items.iter().zip(&new.items).all(|(old, new)| {
                old.sku == new.sku.as_str()
                    && old.quantity == new.quantity.get()
                    && old.unit_price_cents == new.unit_price_cents.get()
            })
    }
}
