//! The `exports` table: component `exports` of the `store` schema, with its
//! own history table so its versions never collide with the orders'.

use keel_db::{Migration, MigrationSet};

/// Apply with `keel_db::migrate` after `keel_outbox::MIGRATIONS` and
/// `keel_commerce::orders::MIGRATIONS` (the gateway and the worker both do).
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "exports",
    migrations: &[
        Migration {
            version: 1,
            name: "exports",
            sql: r#"
CREATE TABLE exports (
    id            uuid        PRIMARY KEY,
    -- Who asked for it: the only customer who may see it.
    user_id       uuid        NOT NULL,
    -- Admins export every order; customers only their own.
    all_orders    boolean     NOT NULL DEFAULT false,
    resource      text        NOT NULL CHECK (resource IN ('orders')),
    format        text        NOT NULL CHECK (format IN ('csv', 'ndjson')),
    compression   text        NOT NULL DEFAULT 'none' CHECK (compression IN ('none', 'gzip')),
    -- {status?, created_after?, created_before?}, validated before insert.
    filter        jsonb       NOT NULL DEFAULT '{}',
    status        text        NOT NULL
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'expired')),
    rows_written  bigint      NOT NULL DEFAULT 0 CHECK (rows_written >= 0),
    bytes         bigint      NOT NULL DEFAULT 0 CHECK (bytes >= 0),
    -- Hex SHA-256 of the stored file (compressed bytes when gzip).
    sha256        text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- Written for the user: never a stack trace or SQL text.
    error         text,
    -- Derived from the id at creation, so every attempt writes the same object.
    object_key    text        NOT NULL,
    -- Runs started (a redelivered job starts another).
    attempts      integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz,
    expires_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((status IN ('succeeded', 'failed', 'expired')) = (finished_at IS NOT NULL))
);

-- The owner's listing, newest first, paged by (created_at, id).
CREATE INDEX exports_by_user ON exports (user_id, created_at DESC, id DESC);
-- Counting a user's unfinished exports against the active limit.
CREATE INDEX exports_active ON exports (user_id) WHERE status IN ('queued', 'running');
-- Retention: finished exports due for removal.
CREATE INDEX exports_expiry ON exports (expires_at) WHERE status IN ('succeeded', 'failed');
-- Server-Sent Events resume: a user's exports finished after an instant.
CREATE INDEX exports_finished ON exports (user_id, finished_at, id) WHERE finished_at IS NOT NULL;
"#,
        },
        Migration {
            version: 2,
            name: "exports_leases",
            sql: r#"
-- The builder that holds the export (ADR 0025): a worker takes the lease
-- when it starts a file and renews it while it writes. A second job that
-- finds a live lease builds nothing; one that finds it expired takes over,
-- and `attempts` (bumped by every take-over) is the fencing token that
-- `succeed` checks, so a stale builder never records its file.
ALTER TABLE exports
    ADD COLUMN lease_owner      text,
    ADD COLUMN lease_expires_at timestamptz;

-- The sweeper: unfinished exports whose builder (or job) is long gone.
CREATE INDEX exports_unfinished
    ON exports ((coalesce(lease_expires_at, started_at, created_at)))
    WHERE status IN ('queued', 'running');
-- The sweeper: is an object in storage some export's file?
CREATE INDEX exports_object_key ON exports (object_key);
"#,
        },
    ],
};
