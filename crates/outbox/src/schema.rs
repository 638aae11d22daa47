//! Tables of the outbox component, created in each service's own schema.

use keel_db::{Migration, MigrationSet};

/// Migrations of the `outbox` component; pass them to `keel_db::migrate`
/// next to the service's own set.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "outbox",
    migrations: &[
        Migration {
            version: 1,
            name: "outbox_and_inbox",
            sql: r#"
-- Messages waiting to be published, written in the same transaction as the
-- state change they announce.
CREATE TABLE outbox (
    -- The envelope id: also the AMQP message_id consumers de-duplicate on.
    id           uuid        PRIMARY KEY,
    -- Logical exchange ('jobs' or 'events'); the relay maps it to the
    -- namespaced name, so rows do not depend on the deployment's namespace.
    target       text        NOT NULL CHECK (target IN ('jobs', 'events')),
    routing_key  text        NOT NULL,
    message_type text        NOT NULL,
    payload      jsonb       NOT NULL,
    -- Trace context captured at enqueue time (traceparent, tracestate).
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    -- Failed publish attempts, and the last failure, for operators.
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);

-- The relay only ever looks for unpublished rows, oldest first; the
-- published majority stays out of this index.
CREATE INDEX outbox_unpublished ON outbox (created_at, id) WHERE published_at IS NULL;

-- Messages a consumer has applied, claimed inside the consumer's own
-- transaction so a redelivery is recognised.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    message_id   uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
"#,
        },
        Migration {
            version: 2,
            name: "outbox_retention",
            sql: r#"
-- The relay prunes published rows past the retention period; this keeps
-- that from scanning the table.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Inbox claims are only needed while a redelivery is possible.
CREATE INDEX inbox_processed ON inbox (processed_at);
"#,
        },
        Migration {
            version: 3,
            name: "outbox_parking",
            sql: r#"
-- A row the broker keeps refusing (returned as unroutable, nacked) or that
-- cannot be turned into a message is retried with a backoff and, after
-- `outbox.max_rejections` such refusals, parked: the relay skips it until an
-- operator unparks it (keel_outbox::unpark). Broker outages never count
-- here (`attempts` counts every failed try, `rejections` only the row's own).
-- Columns only, no new index: adding nullable or constant-default columns
-- is a catalog change, where a new index would scan the whole history at
-- deploy. Parked and waiting rows stay in `outbox_unpublished` and the
-- relay reads past them; they are few, and alerted on (ADR 0024).
ALTER TABLE outbox
    ADD COLUMN rejections      integer NOT NULL DEFAULT 0,
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN parked_at       timestamptz;
"#,
        },
    ],
};
