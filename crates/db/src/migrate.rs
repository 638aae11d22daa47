//! Embedded migrations applied at start and by the `migrate` subcommand.
//!
//! Each service owns one schema. Several components may keep tables in it
//! (the service itself, the shared outbox), each with its own history table
//! `<schema>._migrations_<component>`, so their version numbers never collide.

use crate::{Error, Pool, Result};

/// One forward-only migration. Versions only ever grow; an applied
/// migration's SQL must never change (refinery checks a checksum).
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations of one component, in version order.
#[derive(Debug)]
pub struct MigrationSet {
    pub component: &'static str,
    pub migrations: &'static [Migration],
}

/// Creates `schema` if needed and applies every pending migration of `sets`.
///
/// A session-level advisory lock keyed on the schema name serialises
/// concurrent starters: the second waits, then finds nothing left to do.
pub async fn migrate(pool: &Pool, schema: &str, sets: &[&MigrationSet]) -> Result<()> {
    let mut client = pool.get().await?;
    client
        .execute(
            "SELECT pg_advisory_lock(hashtext('keel.migrate.' || $1))",
            &[&schema],
        )
        .await?;
    let outcome = apply(&mut client, schema, sets).await;
    // Unlock even when a migration failed; the connection may also be
    // dropped by the pool, which releases the lock anyway.
    let unlock = client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('keel.migrate.' || $1))",
            &[&schema],
        )
        .await;
    outcome?;
    unlock?;
    Ok(())
}

async fn apply(client: &mut crate::Client, schema: &str, sets: &[&MigrationSet]) -> Result<()> {
    let ident = quote_ident(schema);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {ident}; SET search_path TO {ident}, public;"
        ))
        .await?;
    for set in sets {
        let migrations = set
            .migrations
            .iter()
            .map(|m| refinery::Migration::unapplied(&format!("V{}__{}", m.version, m.name), m.sql))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| Error::Migration {
                component: set.component,
                source,
            })?;
        let report = refinery::Runner::new(&migrations)
            .set_migration_table_name(format!("{ident}._migrations_{}", set.component))
            .run_async(&mut ***client)
            .await
            .map_err(|source| Error::Migration {
                component: set.component,
                source,
            })?;
        for applied in report.applied_migrations() {
            tracing::info!(schema, component = set.component, migration = %applied, "applied migration");
        }
    }
    Ok(())
}

/// Quotes an identifier for interpolation into DDL (schema names come from
/// code, but quoting keeps a typo from becoming an injection).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// [`migrate`], waiting for the database to become reachable for up to
/// `patience`. Services call this at start so that a stack whose database
/// comes up a little later (compose, a node reboot) converges instead of
/// crash-looping; any other failure is returned at once.
pub async fn migrate_when_ready(
    pool: &Pool,
    schema: &str,
    sets: &[&MigrationSet],
    patience: std::time::Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match migrate(pool, schema, sets).await {
            Err(e) if e.is_unavailable() && tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, ?delay, "database unavailable; retrying migrations");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            outcome => return outcome,
        }
    }
}

/// How long a starting service waits for PostgreSQL before giving up.
pub const STARTUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// A service's pool, with its schema migrated: what every service does at
/// start and in its `migrate` subcommand.
pub async fn connect_and_migrate(
    settings: &crate::DatabaseSettings,
    schema: &str,
    application: &str,
    sets: &[&MigrationSet],
) -> Result<Pool> {
    let pool = crate::connect(settings, schema, application)?;
    migrate_when_ready(&pool, schema, sets, STARTUP_PATIENCE).await?;
    Ok(pool)
}
