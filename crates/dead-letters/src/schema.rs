//! The `dead_letters` component's table, in the `store` schema (the worker
//! archives into it, the gateway lists and requeues from it).

use keel_db::{Migration, MigrationSet};

/// Apply with `keel_db::migrate` next to `keel_outbox::MIGRATIONS` (requeue
/// writes to the outbox); the gateway and the worker both do.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "dead_letters",
    migrations: &[Migration {
        version: 1,
        name: "dead_letters",
        sql: r#"
CREATE TABLE dead_letters (
    -- The dead message's id (AMQP message_id, the envelope id): a dead
    -- letter delivered twice by the broker is stored once.
    id            uuid        PRIMARY KEY,
    -- The envelope type (`webhook.process`), empty when the message had none.
    message_type  text        NOT NULL,
    -- The key it was first published with: where a requeue sends it back.
    routing_key   text        NOT NULL,
    -- The body exactly as it was on the bus, byte for byte.
    body          bytea       NOT NULL,
    -- Every AMQP header of the dead message, as JSON (trace context, the
    -- x-keel-* death headers, the broker's x-death).
    headers       jsonb       NOT NULL,
    -- retries-exhausted | permanent | undecodable | delivery-limit | ...
    death_reason  text        NOT NULL,
    last_error    text,
    -- Handler attempts of the last life (x-keel-attempt).
    attempts      integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- The queue it was consumed from when it died.
    queue         text,
    dead_at       timestamptz NOT NULL DEFAULT now(),
    -- How many times this message died: a requeued message that dies again
    -- brings its row back to `dead` rather than adding one.
    deaths        integer     NOT NULL DEFAULT 1 CHECK (deaths >= 1),
    status        text        NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'requeued')),
    requeued_at   timestamptz,
    -- The admin who requeued it (the access token's subject).
    requeued_by   uuid,
    -- The id of the message the requeue enqueued: when that one dies too,
    -- the archiver finds this row by it.
    requeued_as   uuid
);

-- The admin listing: by status (optional), newest deaths first, paged by
-- (dead_at, id).
CREATE INDEX dead_letters_by_status ON dead_letters (status, dead_at DESC, id DESC);
CREATE INDEX dead_letters_by_dead_at ON dead_letters (dead_at DESC, id DESC);
-- The archiver's lookup of a requeued message that died again.
CREATE UNIQUE INDEX dead_letters_requeued_as ON dead_letters (requeued_as) WHERE requeued_as IS NOT NULL;
"#,
    }],
};
