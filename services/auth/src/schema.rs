//! The auth service's own tables in schema `auth`.

use keel_db::{Migration, MigrationSet};

pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "auth",
    migrations: &[Migration {
        version: 1,
        name: "users",
        sql: r"
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    -- Stored normalised (trimmed, lowercased); the unique index on lower()
    -- keeps it unique case-insensitively even if a writer forgets.
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    display_name  text        CHECK (length(display_name) <= 100),
    -- A PHC string: argon2id, or bcrypt for accounts imported from the
    -- legacy system until their next login re-hashes them.
    password_hash text        NOT NULL,
    roles         text[]      NOT NULL DEFAULT ARRAY['customer'],
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    CONSTRAINT users_roles_known CHECK (roles <@ ARRAY['customer', 'admin'])
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
",
    }],
};
