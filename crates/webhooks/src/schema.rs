//! The `webhooks` component's tables, in the `store` schema the gateway
//! and the worker share (next to `keel_outbox::MIGRATIONS`).

use keel_db::{Migration, MigrationSet};

/// Apply with `keel_db::migrate` next to `keel_outbox::MIGRATIONS`; both
/// the gateway and the worker do, under the migration advisory lock.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "webhooks",
    migrations: &[Migration {
        version: 1,
        name: "webhook_events",
        sql: r#"
CREATE TABLE webhook_events (
    id           uuid        PRIMARY KEY,
    -- The configured source's name (`/webhooks/{source}`).
    source       text        NOT NULL CHECK (length(source) BETWEEN 1 AND 64),
    topic        text        CHECK (length(topic) <= 255),
    -- The sender's id of this delivery: stable across its retries.
    delivery_id  text        NOT NULL CHECK (length(delivery_id) BETWEEN 1 AND 255),
    -- The body exactly as received, byte for byte: the signature covers
    -- these bytes, and a replay must apply what was sent, not a re-encoding.
    body         bytea       NOT NULL,
    -- A selection of the request's headers; signatures replaced by
    -- "[redacted]" (they are bearer proofs for this body).
    headers      jsonb       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    status       text        NOT NULL DEFAULT 'received'
                 CHECK (status IN ('received', 'processed', 'failed', 'ignored')),
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   text,
    processed_at timestamptz,
    -- A redelivery (same sender id) is acknowledged, never stored twice.
    CONSTRAINT webhook_events_source_delivery UNIQUE (source, delivery_id)
);

-- The admin listing: by status (optional) and source (optional), newest
-- first, paged by (received_at, id).
CREATE INDEX webhook_events_by_status ON webhook_events (status, received_at DESC, id DESC);
CREATE INDEX webhook_events_by_received ON webhook_events (received_at DESC, id DESC);
"#,
    }],
};
