//! Order queries. Every change writes its domain event (`order.created`,
//! `order.updated`) to the outbox in the transaction that makes it.

use chrono::{DateTime, Utc};
use keel_contracts::events::OrderUpdated;
use keel_contracts::{DomainEvent, Envelope};
use keel_db::page::{Cursor, Filter, Keyset, Page, PageRequest};
use keel_db::{Client, GenericClient, Transaction};
use keel_outbox::OutboxRow;
use tokio_postgres::Row;
use uuid::Uuid;

use super::domain::{
    ExternalOrder, FulfillmentStatus, NewItem, NewOrder, Order, OrderItem, OrderStatus, Payment,
    Scope,
};
use super::{Error, Result};

/// The order columns plus its items as one JSON array, so a page of orders
/// is one round trip (the items sub-select runs per row on the primary key).
const SELECT: &str = "SELECT o.id, o.external_id, o.status, o.currency, o.total_cents, \
        o.customer_email, o.user_id, o.source, o.created_at, o.updated_at, \
        o.fulfillment_status, \
        (SELECT coalesce(jsonb_agg(jsonb_build_object( \
                    'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents) \
                 ORDER BY i.position), '[]'::jsonb) \
         FROM order_items i WHERE i.order_id = o.id) AS items \
    FROM orders o";

fn from_row(row: &Row) -> Result<Order> {
    let status: String = row.try_get(2)?;
    let items: serde_json::Value = row.try_get(11)?;
    Ok(Order {
        id: row.try_get(0)?,
        external_id: row.try_get(1)?,
        status: OrderStatus::parse(&status)
            .map_err(|_| Error::Corrupt(format!("status {status}")))?,
        currency: row.try_get(3)?,
        total_cents: row.try_get(4)?,
        items: serde_json::from_value::<Vec<OrderItem>>(items)
            .map_err(|e| Error::Corrupt(e.to_string()))?,
        customer_email: row.try_get(5)?,
        user_id: row.try_get(6)?,
        source: row.try_get(7)?,
        fulfillment_status: row.try_get(10)?,
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
    })
}

/// Inserts the order, its lines and its `order.created` outbox row in one
/// statement (one round trip, atomic on its own), and returns the order.
///
/// Pass a plain client for an order that commits alone (the statement then
/// is its own transaction), or the caller's transaction when other writes
/// must commit or roll back with it (an idempotency record); the caller
/// commits.
///
/// The outbox row carries no NOTIFY: PostgreSQL serialises the commits of
/// notifying transactions across their WAL flush, which capped concurrent
/// order writes at one per flush (ADR 0027). Wake the relay after the
/// commit (`keel_outbox::RelayWaker`; its poll finds the row otherwise).
pub async fn create(client: &impl GenericClient, order: &NewOrder) -> Result<Order> {
    let mut created = create_many(client, std::slice::from_ref(order)).await?;
    created
        .pop()
        .ok_or(Error::Corrupt("the order was not inserted".into()))
}

/// [`create`] for several orders in the same statement, so they share one
/// round trip and one commit (the gateway's group commit). All or none:
/// one order's failure (a duplicate external_id) fails the statement, and
/// the caller retries the others alone. Returns the orders in input order.
pub async fn create_many(client: &impl GenericClient, orders: &[NewOrder]) -> Result<Vec<Order>> {
    let rows = NewRows::of(orders)?;
    // Lines and events join `inserted`: they exist only with their order.
    // Prepared once per connection.
    let statement = client
        .prepare_cached(
            "WITH inserted AS ( \
                 INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, user_id, source) \
                 SELECT id, external_id, 'pending', currency, total_cents, customer_email, user_id, source \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::uuid[], $7::text[]) \
                     AS o(id, external_id, currency, total_cents, customer_email, user_id, source) \
                 RETURNING id, created_at, updated_at \
             ), lines AS ( \
                 INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents) \
                 SELECT l.order_id, l.position, l.sku, l.quantity, l.unit_price_cents \
                 FROM unnest($8::uuid[], $9::int[], $10::text[], $11::int[], $12::bigint[]) \
                     AS l(order_id, position, sku, quantity, unit_price_cents) \
                 JOIN inserted ON inserted.id = l.order_id \
             ), events AS ( \
                 INSERT INTO outbox (id, target, routing_key, message_type, payload, headers) \
                 SELECT e.id, e.target, e.routing_key, e.message_type, e.payload, e.headers \
                 FROM unnest($13::uuid[], $14::uuid[], $15::text[], $16::text[], $17::text[], $18::jsonb[], $19::jsonb[]) \
                     AS e(order_id, id, target, routing_key, message_type, payload, headers) \
                 JOIN inserted ON inserted.id = e.order_id \
             ) \
             SELECT id, created_at, updated_at FROM inserted",
        )
        .await?;
    let inserted = client
        .query(
            &statement,
            &[
                &rows.ids,
                &rows.external_ids,
                &rows.currencies,
                &rows.totals,
                &rows.emails,
                &rows.users,
                &rows.sources,
                &rows.line_orders,
                &rows.lines.positions,
                &rows.lines.skus,
                &rows.lines.quantities,
                &rows.lines.prices,
                &rows.ids,
                &rows.event_ids,
                &rows.event_targets,
                &rows.event_keys,
                &rows.event_types,
                &rows.event_payloads,
                &rows.event_headers,
            ],
        )
        .await?;
    let mut stamps = std::collections::HashMap::with_capacity(inserted.len());
    for row in &inserted {
        let id: Uuid = row.try_get(0)?;
        stamps.insert(id, (row.try_get(1)?, row.try_get(2)?));
    }
    orders
        .iter()
        .zip(&rows.ids)
        .map(|(order, id)| {
            let (created_at, updated_at) = stamps
                .get(id)
                .copied()
                .ok_or_else(|| Error::Corrupt(format!("order {id} was not inserted")))?;
            Ok(Order {
                id: *id,
                external_id: order.external_id.as_ref().map(|e| e.as_str().to_owned()),
                status: OrderStatus::Pending,
                currency: order.currency.as_str().to_owned(),
                total_cents: order.total_cents(),
                items: order
                    .items
                    .iter()
                    .map(|i| OrderItem {
                        sku: i.sku.as_str().to_owned(),
                        quantity: i.quantity.get(),
                        unit_price_cents: i.unit_price_cents.get(),
                    })
                    .collect(),
                customer_email: order.customer_email.as_ref().map(|e| e.as_str().to_owned()),
                user_id: order.user_id,
                source: order.source.as_string(),
                fulfillment_status: None,
                created_at,
                updated_at,
            })
        })
        .collect()
}

/// New orders as the column arrays [`create_many`] unnests.
struct NewRows<'a> {
    ids: Vec<Uuid>,
    external_ids: Vec<Option<&'a str>>,
    currencies: Vec<&'a str>,
    totals: Vec<i64>,
    emails: Vec<Option<&'a str>>,
    users: Vec<Option<Uuid>>,
    sources: Vec<String>,
    /// The order of each line in `lines`.
    line_orders: Vec<Uuid>,
    lines: Lines<'a>,
    event_ids: Vec<Uuid>,
    event_targets: Vec<&'static str>,
    event_keys: Vec<&'static str>,
    event_types: Vec<&'static str>,
    event_payloads: Vec<serde_json::Value>,
    event_headers: Vec<serde_json::Value>,
}

impl<'a> NewRows<'a> {
    fn of(orders: &'a [NewOrder]) -> Result<Self> {
        let mut rows = NewRows {
            ids: Vec::with_capacity(orders.len()),
            external_ids: Vec::with_capacity(orders.len()),
            currencies: Vec::with_capacity(orders.len()),
            totals: Vec::with_capacity(orders.len()),
            emails: Vec::with_capacity(orders.len()),
            users: Vec::with_capacity(orders.len()),
            sources: Vec::with_capacity(orders.len()),
            line_orders: Vec::new(),
            lines: Lines::default(),
            event_ids: Vec::with_capacity(orders.len()),
            event_targets: Vec::with_capacity(orders.len()),
            event_keys: Vec::with_capacity(orders.len()),
            event_types: Vec::with_capacity(orders.len()),
            event_payloads: Vec::with_capacity(orders.len()),
            event_headers: Vec::with_capacity(orders.len()),
        };
        for order in orders {
            let id = Uuid::now_v7();
            let source = order.source.as_string();
            // The event carries no timestamps, so it is known before the
            // insert and can ride in the same statement.
            let event = OutboxRow::event(&Envelope::new(DomainEvent::OrderCreated(
                keel_contracts::events::OrderSnapshot {
                    order_id: id,
                    user_id: order.user_id,
                    status: OrderStatus::Pending.as_str().to_owned(),
                    currency: order.currency.as_str().to_owned(),
                    total_cents: order.total_cents(),
                    source: source.clone(),
                },
            )))?;
            rows.ids.push(id);
            rows.external_ids
                .push(order.external_id.as_ref().map(|e| e.as_str()));
            rows.currencies.push(order.currency.as_str());
            rows.totals.push(order.total_cents());
            rows.emails
                .push(order.customer_email.as_ref().map(|e| e.as_str()));
            rows.users.push(order.user_id);
            rows.sources.push(source);
            rows.line_orders
                .extend(std::iter::repeat_n(id, order.items.len()));
            rows.lines.extend(&order.items);
            rows.event_ids.push(event.id);
            rows.event_targets.push(event.target);
            rows.event_keys.push(event.routing_key);
            rows.event_types.push(event.message_type);
            rows.event_payloads.push(event.payload);
            rows.event_headers.push(event.headers);
        }
        Ok(rows)
    }
}

/// Order lines as column arrays, for `unnest` (one statement however
/// many lines).
#[derive(Default)]
struct Lines<'a> {
    positions: Vec<i32>,
    skus: Vec<&'a str>,
    quantities: Vec<i32>,
    prices: Vec<i64>,
}

impl<'a> Lines<'a> {
    fn of(items: &'a [NewItem]) -> Self {
        let mut lines = Self::default();
        lines.extend(items);
        lines
    }

    /// Appends one order's lines, numbered from 0.
    fn extend(&mut self, items: &'a [NewItem]) {
        self.positions.extend((0..).take(items.len()));
        self.skus.extend(items.iter().map(|i| i.sku.as_str()));
        self.quantities
            .extend(items.iter().map(|i| i.quantity.get()));
        self.prices
            .extend(items.iter().map(|i| i.unit_price_cents.get()));
    }
}

/// Inserts all lines of an order in one statement, whatever their number.
async fn insert_items(tx: &Transaction<'_>, order_id: Uuid, items: &[NewItem]) -> Result<()> {
    let lines = Lines::of(items);
    let insert_items = tx
        .prepare_cached(
            "INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents) \
             SELECT $1, p, s, q, u FROM unnest($2::int[], $3::text[], $4::int[], $5::bigint[]) AS t(p, s, q, u)",
        )
        .await?;
    tx.execute(
        &insert_items,
        &[
            &order_id,
            &lines.positions,
            &lines.skus,
            &lines.quantities,
            &lines.prices,
        ],
    )
    .await?;
    Ok(())
}

/// What a write applied by the worker did to the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new order (`order.created` written).
    Created,
    /// The order changed (`order.updated` written).
    Updated,
    /// The order already said this: nothing written, no event.
    Unchanged,
    /// The sender's version was not newer than the stored one (`stored`):
    /// nothing written, no event.
    Stale { stored: Option<DateTime<Utc>> },
}

/// An order after a worker's write, and whether that write changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub order: Order,
    pub change: Change,
}

impl Applied {
    /// Whether the write changed the order (caches must then be told).
    pub fn changed(&self) -> bool {
        matches!(self.change, Change::Created | Change::Updated)
    }
}

/// [`upsert_external_as_of`] of a version the sender did not give: it
/// applies only while no versioned write has reached the order.
pub async fn upsert_external(tx: &Transaction<'_>, order: &ExternalOrder) -> Result<Applied> {
    upsert_external_as_of(tx, order, None).await
}

/// Creates the order, or brings the existing one with the same
/// `(source, external_id)` up to date: currency, lines, total and e-mail
/// are replaced when any of them differs; status, owner and fulfilment
/// status are left alone. Writes `order.created` or `order.updated` only
/// when something changed, so a redelivered webhook emits nothing. Runs in
/// the caller's transaction; the caller commits, then wakes the relays
/// (the rows carry no NOTIFY, like every write of this worker-facing group:
/// [`mark_paid`], [`record_fulfillment`]).
///
/// `version` is the sender's version of the order (Shopify's `updated_at`).
/// An existing order is touched only by a strictly newer one, or while it
/// has none ([`Change::Stale`] otherwise: nothing written). An equal
/// version is the same version again, so it changes nothing either; and
/// no version never overwrites a known one. The check is part of the
/// `UPDATE`'s `WHERE`, so it holds against concurrent writers too: a
/// writer blocked on the row re-checks it against the committed newer
/// version. A newer version with the same content still records itself,
/// so an older one with other content cannot follow it in.
pub async fn upsert_external_as_of(
    tx: &Transaction<'_>,
    order: &ExternalOrder,
    version: Option<DateTime<Utc>>,
) -> Result<Applied> {
    let external_id = &order.external_id;
    let source = order.source.as_string();
    // A concurrent insert of the same key (another event about the same
    // order, on another worker) makes ON CONFLICT wait for its commit, then
    // skip: this transaction then updates the committed row instead of
    // failing on the unique index.
    let id = Uuid::now_v7();
    let insert = tx
        .prepare_cached(
            "INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, user_id, source, source_updated_at) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (source, external_id) WHERE source <> 'api' AND external_id IS NOT NULL DO NOTHING \
             RETURNING id",
        )
        .await?;
    let inserted = tx
        .query_opt(
            &insert,
            &[
                &id,
                &external_id.as_str(),
                &order.currency.as_str(),
                &order.total_cents.get(),
                &order.customer_email.as_ref().map(|e| e.as_str()),
                // Webhook orders belong to no Keel user.
                &None::<Uuid>,
                &source,
                &version,
            ],
        )
        .await?;
    if inserted.is_some() {
        insert_items(tx, id, &order.items).await?;
        let created = get(tx, id, Scope::All).await?;
        emit(
            tx,
            DomainEvent::OrderCreated(created.snapshot()),
            Notify::AfterCommit,
        )
        .await?;
        return Ok(Applied {
            order: created,
            change: Change::Created,
        });
    }

    // Locks the row and records the version in one statement, only if it
    // is newer (`NULL < $3` is not true: no version never passes a known
    // one; a stored NULL lets anything in).
    let claim = tx
        .prepare_cached(
            "UPDATE orders SET source_updated_at = coalesce($3, source_updated_at) \
             WHERE source = $1 AND external_id = $2 \
               AND (source_updated_at IS NULL OR source_updated_at < $3) \
             RETURNING id",
        )
        .await?;
    let claimed = tx
        .query_opt(&claim, &[&source, &external_id.as_str(), &version])
        .await?;
    let Some(claimed) = claimed else {
        let stored = tx
            .prepare_cached(
                "SELECT id, source_updated_at FROM orders WHERE source = $1 AND external_id = $2",
            )
            .await?;
        // Missing: deleted between the conflict and the claim.
        let row = tx
            .query_opt(&stored, &[&source, &external_id.as_str()])
            .await?
            .ok_or(Error::NotFound)?;
        return Ok(Applied {
            order: get(tx, row.try_get(0)?, Scope::All).await?,
            change: Change::Stale {
                stored: row.try_get(1)?,
            },
        });
    };
    let existing: Uuid = claimed.try_get(0)?;
    let current = get(tx, existing, Scope::All).await?;
    if same_content(&current, order) {
        return Ok(Applied {
            order: current,
            change: Change::Unchanged,
        });
    }
    let update = tx
        .prepare_cached(
            "UPDATE orders SET currency = $2, total_cents = $3, customer_email = $4, \
                 updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond') \
             WHERE id = $1",
        )
        .await?;
    tx.execute(
        &update,
        &[
            &existing,
            &order.currency.as_str(),
            &order.total_cents.get(),
            &order.customer_email.as_ref().map(|e| e.as_str()),
        ],
    )
    .await?;
    tx.execute("DELETE FROM order_items WHERE order_id = $1", &[&existing])
        .await?;
    insert_items(tx, existing, &order.items).await?;
    let updated = get(tx, existing, Scope::All).await?;
    emit_updated(tx, &updated, current.status, Notify::AfterCommit).await?;
    Ok(Applied {
        order: updated,
        change: Change::Updated,
    })
}

/// Whether the stored order already holds what `new` says.
fn same_content(stored: &Order, new: &ExternalOrder) -> bool {
    stored.currency == new.currency.as_str()
        && stored.total_cents == new.total_cents.get()
        && stored.customer_email.as_deref() == new.customer_email.as_ref().map(|e| e.as_str())
        && stored.items.len() == new.items.len()
        && stored.items.iter().zip(&new.items).all(|(old, new)| {
            old.sku == new.sku.as_str()
                && old.quantity == new.quantity.get()
                && old.unit_price_cents == new.unit_price_cents.get()
        })
}

/// How the relays learn about an event row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notify {
    /// NOTIFY in the writing transaction: simple, for request paths whose
    /// commits are not what limits throughput.
    InTransaction,
    /// No NOTIFY: the caller wakes the relays after commit
    /// (`keel_outbox::wake_relays`, or coalesced with
    /// `keel_outbox::RelayWaker`). PostgreSQL serialises the commits of
    /// notifying transactions across their WAL flush, which would cap the
    /// worker's many small transactions at one commit per flush.
    AfterCommit,
}

async fn emit(tx: &Transaction<'_>, event: DomainEvent, notify: Notify) -> Result<()> {
    let envelope = Envelope::new(event);
    match notify {
        Notify::InTransaction => keel_outbox::enqueue_event(tx, &envelope).await?,
        Notify::AfterCommit => {
            OutboxRow::event(&envelope)?
                .insert_without_notify(tx)
                .await?;
        }
    }
    Ok(())
}

async fn emit_updated(
    tx: &Transaction<'_>,
    order: &Order,
    previous: OrderStatus,
    notify: Notify,
) -> Result<()> {
    let event = DomainEvent::OrderUpdated(OrderUpdated {
        order: order.snapshot(),
        previous_status: previous.as_str().to_owned(),
    });
    emit(tx, event, notify).await
}

/// Marks an order paid (a payment provider confirmed `payment`). A payment
/// of another amount or currency than the order's is an
/// [`Error::PaymentMismatch`], whatever the order's status: the order is
/// not paid by it, and the mismatch must reach someone. An order already
/// `paid` or `fulfilled` is left as it is ([`Change::Unchanged`]: the
/// confirmation arrived twice, or after fulfilment); a `cancelled` one is
/// an [`Error::IllegalTransition`]; a missing one [`Error::NotFound`].
/// Runs in the caller's transaction; wake the relays after commit.
pub async fn mark_paid(tx: &Transaction<'_>, id: Uuid, payment: &Payment) -> Result<Applied> {
    mark_paid_as_of(tx, id, payment, None).await
}

/// [`mark_paid`] by a confirmation of the provider's `version` (Stripe's
/// event `created`). Once an order has been paid by a versioned
/// confirmation, one that is not newer (the same event delivered again
/// under another delivery id, an admin's replay, an older one) is
/// [`Change::Stale`] whatever the order's status now: nothing written, and
/// no failure for an order that was cancelled or fulfilled since. A
/// payment of another amount is still an [`Error::PaymentMismatch`] first:
/// that must reach someone whatever its age.
pub async fn mark_paid_as_of(
    tx: &Transaction<'_>,
    id: Uuid,
    payment: &Payment,
    version: Option<DateTime<Utc>>,
) -> Result<Applied> {
    let lock = tx
        .prepare_cached(
            "SELECT status, total_cents, currency, paid_source_at FROM orders WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let row = tx.query_opt(&lock, &[&id]).await?.ok_or(Error::NotFound)?;
    let status: String = row.try_get(0)?;
    let current =
        OrderStatus::parse(&status).map_err(|_| Error::Corrupt(format!("status {status}")))?;
    let total: i64 = row.try_get(1)?;
    let currency: String = row.try_get(2)?;
    if payment.amount_cents != total || payment.currency.as_str() != currency {
        return Err(Error::PaymentMismatch {
            paid: payment.clone(),
            total,
            currency,
        });
    }
    let paid_by: Option<DateTime<Utc>> = row.try_get(3)?;
    if let (Some(version), Some(stored)) = (version, paid_by)
        && version <= stored
    {
        return Ok(Applied {
            order: get(tx, id, Scope::All).await?,
            change: Change::Stale {
                stored: Some(stored),
            },
        });
    }
    if matches!(current, OrderStatus::Paid | OrderStatus::Fulfilled) {
        return Ok(Applied {
            order: get(tx, id, Scope::All).await?,
            change: Change::Unchanged,
        });
    }
    current.transition_to(OrderStatus::Paid)?;
    if version.is_some() {
        tx.execute(
            "UPDATE orders SET paid_source_at = $2 WHERE id = $1",
            &[&id, &version],
        )
        .await?;
    }
    let order = set_status(tx, id, current, OrderStatus::Paid, Notify::AfterCommit).await?;
    Ok(Applied {
        order,
        change: Change::Updated,
    })
}

/// Records the shop's fulfilment status of an order; `order.updated` is
/// written only when it differs from the stored one. Runs in the caller's
/// transaction; wake the relays after commit.
pub async fn record_fulfillment(
    tx: &Transaction<'_>,
    id: Uuid,
    status: &FulfillmentStatus,
) -> Result<Applied> {
    let update = tx
        .prepare_cached(
            "UPDATE orders SET fulfillment_status = $2, \
                 updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond') \
             WHERE id = $1 AND fulfillment_status IS DISTINCT FROM $2",
        )
        .await?;
    let changed = tx.execute(&update, &[&id, &status.as_str()]).await? > 0;
    let order = get(tx, id, Scope::All).await?;
    if !changed {
        return Ok(Applied {
            order,
            change: Change::Unchanged,
        });
    }
    emit_updated(tx, &order, order.status, Notify::AfterCommit).await?;
    Ok(Applied {
        order,
        change: Change::Updated,
    })
}

/// One order, if `scope` may see it ([`Error::NotFound`] otherwise).
pub async fn get(client: &impl GenericClient, id: Uuid, scope: Scope) -> Result<Order> {
    let row = match scope {
        Scope::All => {
            let statement = client
                .prepare_cached(&format!("{SELECT} WHERE o.id = $1"))
                .await?;
            client.query_opt(&statement, &[&id]).await?
        }
        Scope::User(user) => {
            let statement = client
                .prepare_cached(&format!("{SELECT} WHERE o.id = $1 AND o.user_id = $2"))
                .await?;
            client.query_opt(&statement, &[&id, &user]).await?
        }
    };
    from_row(&row.ok_or(Error::NotFound)?)
}

/// Filters and position of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub status: Option<OrderStatus>,
    /// Inclusive.
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive.
    pub created_before: Option<DateTime<Utc>>,
    pub page: PageRequest,
}

/// Newest first, keyset-paginated on `(created_at, id)`: each page is an
/// index range scan, however deep the client pages.
pub async fn list(
    client: &impl GenericClient,
    scope: Scope,
    query: &ListQuery,
) -> Result<Page<Order>> {
    let user = match scope {
        Scope::User(id) => Some(id),
        Scope::All => None,
    };
    let filter = Filter::new()
        .and_some("o.user_id", "=", user)
        .and_some("o.status", "=", query.status.map(OrderStatus::as_str))
        .and_some("o.created_at", ">=", query.created_after)
        .and_some("o.created_at", "<", query.created_before);
    let keyset = Keyset {
        select: SELECT,
        time: "o.created_at",
        id: "o.id",
    };
    keyset
        .fetch(client, filter, query.page, from_row, |o| {
            Cursor::new(o.created_at, o.id)
        })
        .await
}

/// Moves an order to `next` if the state machine allows it, writing
/// `order.updated` with the previous status. The row is locked while the
/// transition is checked, so two concurrent changes cannot both pass the
/// check against the same old status.
///
/// `Scope::User` is a customer acting on their own order: someone else's
/// is [`Error::NotFound`] before anything else is said about it, and then
/// only `pending → cancelled` passes
/// ([`OrderStatus::customer_transition_to`]; [`Error::ForbiddenTransition`]
/// for what an admin or a webhook may do instead). `Scope::All` (an admin)
/// may make any legal transition.
pub async fn update_status(
    client: &mut Client,
    id: Uuid,
    scope: Scope,
    next: OrderStatus,
) -> Result<Order> {
    transition(client, id, scope, next, false).await
}

/// Cancels (soft: the order stays, with status `cancelled`). Cancelling a
/// cancelled order changes nothing and succeeds, so DELETE is idempotent.
/// The rules of [`update_status`] apply: a customer cancels only their own
/// pending order.
pub async fn cancel(client: &mut Client, id: Uuid, scope: Scope) -> Result<Order> {
    transition(client, id, scope, OrderStatus::Cancelled, true).await
}

async fn transition(
    client: &mut Client,
    id: Uuid,
    scope: Scope,
    next: OrderStatus,
    same_is_ok: bool,
) -> Result<Order> {
    let tx = client.transaction().await?;
    let current = lock_status(&tx, id, scope).await?;
    if same_is_ok && current == next {
        let order = get(&tx, id, Scope::All).await?;
        tx.commit().await?;
        return Ok(order);
    }
    match scope {
        Scope::User(_) => current.customer_transition_to(next)?,
        Scope::All => current.transition_to(next)?,
    };
    let order = set_status(&tx, id, current, next, Notify::InTransaction).await?;
    tx.commit().await?;
    Ok(order)
}

/// The order's status, its row locked until the transaction ends.
async fn lock_status(tx: &Transaction<'_>, id: Uuid, scope: Scope) -> Result<OrderStatus> {
    let row = match scope {
        Scope::All => {
            tx.query_opt("SELECT status FROM orders WHERE id = $1 FOR UPDATE", &[&id])
                .await?
        }
        Scope::User(user) => {
            tx.query_opt(
                "SELECT status FROM orders WHERE id = $1 AND user_id = $2 FOR UPDATE",
                &[&id, &user],
            )
            .await?
        }
    };
    let current: String = row.ok_or(Error::NotFound)?.try_get(0)?;
    OrderStatus::parse(&current).map_err(|_| Error::Corrupt(format!("status {current}")))
}

/// Writes a checked transition and its `order.updated` event.
async fn set_status(
    tx: &Transaction<'_>,
    id: Uuid,
    current: OrderStatus,
    next: OrderStatus,
    notify: Notify,
) -> Result<Order> {
    // updated_at strictly increases, even within one microsecond: caches
    // compare it to keep the newer of two versions.
    tx.execute(
        "UPDATE orders SET status = $2, \
             updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond') \
         WHERE id = $1",
        &[&id, &next.as_str()],
    )
    .await?;
    let order = get(tx, id, Scope::All).await?;
    emit_updated(tx, &order, current, notify).await?;
    Ok(order)
}
