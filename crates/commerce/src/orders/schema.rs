//! Tables of the `store` component, in the `store` schema the gateway and
//! the worker share (next to `keel_outbox::MIGRATIONS`).

use keel_db::{Migration, MigrationSet};

/// Apply with `keel_db::migrate` next to `keel_outbox::MIGRATIONS`; both
/// the gateway and the worker do, under the migration advisory lock.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "store",
    migrations: &[
        Migration {
            version: 1,
            name: "orders_and_idempotency_keys",
            sql: r#"
CREATE TABLE orders (
    id             uuid        PRIMARY KEY,
    -- The sender's reference (webhook orders, or API clients that have one).
    external_id    text        CHECK (length(external_id) BETWEEN 1 AND 255),
    status         text        NOT NULL
                   CHECK (status IN ('pending', 'paid', 'fulfilled', 'cancelled')),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    total_cents    bigint      NOT NULL CHECK (total_cents >= 0),
    customer_email text,
    -- NULL for webhook orders that belong to no Keel user.
    user_id        uuid,
    -- 'api' or 'webhook:<source>'.
    source         text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Strictly increases on every change: caches use it as a version.
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- A customer's orders, newest first, paged by (created_at, id).
CREATE INDEX orders_by_user ON orders (user_id, created_at DESC, id DESC);
-- Everyone's orders, for admins and exports.
CREATE INDEX orders_by_created ON orders (created_at DESC, id DESC);
-- Webhook redeliveries upsert instead of duplicating; API clients get 409.
CREATE UNIQUE INDEX orders_source_external_id
    ON orders (source, external_id) WHERE external_id IS NOT NULL;

CREATE TABLE order_items (
    order_id         uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    -- Keeps the client's line order.
    position         integer NOT NULL,
    sku              text    NOT NULL CHECK (length(sku) BETWEEN 1 AND 64),
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price_cents bigint  NOT NULL CHECK (unit_price_cents BETWEEN 0 AND 1000000000),
    PRIMARY KEY (order_id, position)
);

-- Idempotency-Key records. The row is inserted in the same transaction as
-- the order it protects, so a concurrent request with the same key blocks
-- on the unique index until the first commits, then replays its response.
CREATE TABLE idempotency_keys (
    user_id         uuid        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and body: the same key with another request
    -- is refused instead of replayed.
    fingerprint     bytea       NOT NULL,
    -- Filled in before the claiming transaction commits, so other
    -- sessions never see them NULL.
    response_status smallint,
    response_body   bytea,
    -- Response headers worth replaying (Location).
    response_location text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, key)
);

-- Pruning expired keys.
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
"#,
        },
        Migration {
            version: 2,
            name: "orders_fulfillment_status",
            sql: r#"
-- Where the seller's fulfilment of a webhook order stands, as its shop
-- reports it (`unfulfilled`, `pending`, `fulfilled`); NULL when unknown
-- (API orders, or no shop API configured). Kept apart from `status`: it is
-- the third party's view, recorded, not a transition of Keel's own state
-- machine.
ALTER TABLE orders ADD COLUMN fulfillment_status text
    CHECK (fulfillment_status ~ '^[a-z_]{1,32}$');
"#,
        },
        Migration {
            version: 3,
            name: "orders_external_id_per_customer",
            sql: r#"
-- An API order's external_id is its customer's own reference: unique per
-- customer, so one customer's reference neither blocks nor reveals
-- another's (a global index answered Bob 409 for Alice's reference).
-- Webhook orders stay unique per source: the worker upserts on it.
DROP INDEX orders_source_external_id;
CREATE UNIQUE INDEX orders_api_external_id
    ON orders (user_id, external_id)
    WHERE source = 'api' AND external_id IS NOT NULL;
CREATE UNIQUE INDEX orders_webhook_external_id
    ON orders (source, external_id)
    WHERE source <> 'api' AND external_id IS NOT NULL;
"#,
        },
        Migration {
            version: 4,
            name: "orders_source_updated_at",
            sql: r#"
-- The sender's version of a webhook order (Shopify's `updated_at`): an
-- upsert applies only a strictly newer version, so a late retry, a replay
-- or a captured body re-sent never rolls the order back. NULL: unknown
-- (API orders, or a payload without one), which never overwrites a known
-- version.
ALTER TABLE orders ADD COLUMN source_updated_at timestamptz;
"#,
        },
        Migration {
            version: 5,
            name: "orders_paid_source_at",
            sql: r#"
-- The payment provider's version of the event that paid the order
-- (Stripe's event `created`): the same confirmation delivered again, or an
-- older one, after the order moved on (cancelled, fulfilled) changes
-- nothing and its event ends `ignored` instead of failing (ADR 0025). NULL:
-- not paid by a versioned event.
ALTER TABLE orders ADD COLUMN paid_source_at timestamptz;
"#,
        },
    ],
};
