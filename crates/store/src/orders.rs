//! Order queries. Every change writes its domain event (`order.created`,
//! `order.updated`) to the outbox in the transaction that makes it.

use chrono::{DateTime, Utc};
use keel_contracts::events::OrderUpdated;
use keel_contracts::{DomainEvent, Envelope};
use keel_db::{Client, GenericClient, Transaction};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::cursor::Cursor;
use crate::domain::{NewOrder, Order, OrderItem, OrderStatus, Scope};
use crate::{Error, Result};

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;

/// The order columns plus its items as one JSON array, so a page of orders
/// is one round trip (the items sub-select runs per row on the primary key).
const SELECT: &str = "SELECT o.id, o.external_id, o.status, o.currency, o.total_cents, \
        o.customer_email, o.user_id, o.source, o.created_at, o.updated_at, \
        (SELECT coalesce(jsonb_agg(jsonb_build_object( \
                    'sku', i.sku, 'quantity', i.quantity, 'unit_price_cents', i.unit_price_cents) \
                 ORDER BY i.position), '[]'::jsonb) \
         FROM order_items i WHERE i.order_id = o.id) AS items \
    FROM orders o";

fn from_row(row: &Row) -> Result<Order> {
    let status: String = row.try_get(2)?;
    let items: serde_json::Value = row.try_get(10)?;
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
        created_at: row.try_get(8)?,
        updated_at: row.try_get(9)?,
    })
}

/// Inserts the order, its items and its `order.created` event. Takes the
/// caller's transaction so that other writes (an idempotency record) commit
/// or roll back with it; the caller commits.
pub async fn create(tx: &Transaction<'_>, order: &NewOrder) -> Result<Order> {
    let id = Uuid::now_v7();
    let source = order.source.as_string();
    let total = order.total_cents();
    // Prepared once per connection: one round trip per statement after that.
    let insert = tx
        .prepare_cached(
            "INSERT INTO orders (id, external_id, status, currency, total_cents, customer_email, user_id, source) \
             VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7) \
             RETURNING created_at, updated_at",
        )
        .await?;
    let row = tx
        .query_one(
            &insert,
            &[
                &id,
                &order.external_id.as_ref().map(|e| e.as_str()),
                &order.currency.as_str(),
                &total,
                &order.customer_email.as_ref().map(|e| e.as_str()),
                &order.user_id,
                &source,
            ],
        )
        .await?;
    // All lines in one statement, whatever their number.
    let positions: Vec<i32> = (0..).take(order.items.len()).collect();
    let skus: Vec<&str> = order.items.iter().map(|i| i.sku.as_str()).collect();
    let quantities: Vec<i32> = order.items.iter().map(|i| i.quantity.get()).collect();
    let prices: Vec<i64> = order
        .items
        .iter()
        .map(|i| i.unit_price_cents.get())
        .collect();
    let insert_items = tx
        .prepare_cached(
            "INSERT INTO order_items (order_id, position, sku, quantity, unit_price_cents) \
             SELECT $1, p, s, q, u FROM unnest($2::int[], $3::text[], $4::int[], $5::bigint[]) AS t(p, s, q, u)",
        )
        .await?;
    tx.execute(
        &insert_items,
        &[&id, &positions, &skus, &quantities, &prices],
    )
    .await?;
    let created = Order {
        id,
        external_id: order.external_id.as_ref().map(|e| e.as_str().to_owned()),
        status: OrderStatus::Pending,
        currency: order.currency.as_str().to_owned(),
        total_cents: total,
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
        source,
        created_at: row.try_get(0)?,
        updated_at: row.try_get(1)?,
    };
    keel_outbox::enqueue_event(
        tx,
        &Envelope::new(DomainEvent::OrderCreated(created.snapshot())),
    )
    .await?;
    Ok(created)
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
    pub cursor: Option<Cursor>,
    /// Clamped to `1..=MAX_LIMIT`.
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<Order>,
    /// Present when more rows may follow.
    pub next_cursor: Option<Cursor>,
}

/// Newest first, keyset-paginated on `(created_at, id)`: each page is an
/// index range scan, however deep the client pages.
pub async fn list(client: &impl GenericClient, scope: Scope, query: &ListQuery) -> Result<Page> {
    let limit = query.limit.clamp(1, MAX_LIMIT);
    let status = query.status.map(OrderStatus::as_str);
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    let user;
    if let Scope::User(id) = scope {
        user = id;
        params.push(&user);
        conditions.push(format!("o.user_id = ${}", params.len()));
    }
    if let Some(status) = &status {
        params.push(status);
        conditions.push(format!("o.status = ${}", params.len()));
    }
    if let Some(after) = &query.created_after {
        params.push(after);
        conditions.push(format!("o.created_at >= ${}", params.len()));
    }
    if let Some(before) = &query.created_before {
        params.push(before);
        conditions.push(format!("o.created_at < ${}", params.len()));
    }
    if let Some(cursor) = &query.cursor {
        params.push(&cursor.created_at);
        params.push(&cursor.id);
        conditions.push(format!(
            "(o.created_at, o.id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    // One extra row tells whether another page exists.
    let fetch = i64::from(limit) + 1;
    params.push(&fetch);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "{SELECT}{filter} ORDER BY o.created_at DESC, o.id DESC LIMIT ${}",
        params.len()
    );
    // At most a few dozen shapes (filters present or not): cached per
    // connection, each is parsed and planned once, not on every request.
    let statement = client.prepare_cached(&sql).await?;
    let rows = client.query(&statement, &params).await?;
    let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|o| Cursor {
            created_at: o.created_at,
            id: o.id,
        })
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Moves an order to `next` if the state machine allows it, writing
/// `order.updated` with the previous status. The row is locked while the
/// transition is checked, so two concurrent changes cannot both pass the
/// check against the same old status.
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
    let current =
        OrderStatus::parse(&current).map_err(|_| Error::Corrupt(format!("status {current}")))?;
    if same_is_ok && current == next {
        let order = get(&tx, id, Scope::All).await?;
        tx.commit().await?;
        return Ok(order);
    }
    current.transition_to(next)?;
    // updated_at strictly increases, even within one microsecond: caches
    // compare it to keep the newer of two versions.
    tx.execute(
        "UPDATE orders SET status = $2, \
             updated_at = greatest(clock_timestamp(), updated_at + interval '1 microsecond') \
         WHERE id = $1",
        &[&id, &next.as_str()],
    )
    .await?;
    let order = get(&tx, id, Scope::All).await?;
    let event = DomainEvent::OrderUpdated(OrderUpdated {
        order: order.snapshot(),
        previous_status: current.as_str().to_owned(),
    });
    keel_outbox::enqueue_event(&tx, &Envelope::new(event)).await?;
    tx.commit().await?;
    Ok(order)
}
