//! A fresh PostgreSQL database per test.
//!
//! Migrating from scratch in every test would dominate the suite's runtime,
//! so the first test to need a given schema + migration set builds a
//! template database (under an advisory lock, since nextest runs tests as
//! parallel processes) and every test clones it with `CREATE DATABASE ...
//! TEMPLATE`, which is a file copy. The template's name is a hash of the
//! migrations, so changing a migration builds a new one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use keel_db::{DatabaseSettings, MigrationSet, Pool};
use secrecy::SecretString;
use tokio_postgres::NoTls;
use uuid::Uuid;

#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    pool: Pool,
}

impl TestDatabase {
    /// A new database with `schema` migrated by `sets`.
    pub async fn create(schema: &str, sets: &[&MigrationSet]) -> TestDatabase {
        let admin_url = crate::env::database_url();
        let template = template_name(schema, sets);
        ensure_template(&admin_url, &template, schema, sets).await;

        let name = format!("test_{}", Uuid::new_v4().simple());
        let admin = admin_client(&admin_url).await;
        // A template must have no open sessions while it is copied; the
        // builder's connections may still be closing, so retry briefly.
        let mut attempts = 0;
        loop {
            match admin
                .batch_execute(&format!(
                    "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
                ))
                .await
            {
                Ok(()) => break,
                Err(e) if attempts < 50 && is_object_in_use(&e) => {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot create test database {name}: {e}"),
            }
        }
        let url = database_url_for(&admin_url, &name);
        let pool = keel_db::connect(&settings(&url), schema, "keel-test").unwrap();
        TestDatabase { name, url, pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Connection URL of this test's database (for services started in-process).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Settings a service under test can use to reach this database.
    pub fn settings(&self) -> DatabaseSettings {
        settings(&self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        self.pool.close();
        let name = self.name.clone();
        let admin_url = crate::env::database_url();
        // Drop runs inside the test's runtime, which cannot be blocked on;
        // a short-lived thread with its own runtime removes the database.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let admin = admin_client(&admin_url).await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

pub(crate) fn settings(url: &str) -> DatabaseSettings {
    DatabaseSettings {
        url: SecretString::from(url.to_owned()),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        tcp: keel_db::TcpDeadlines::default(),
        jit: false,
    }
}

async fn ensure_template(admin_url: &str, template: &str, schema: &str, sets: &[&MigrationSet]) {
    let admin = admin_client(admin_url).await;
    admin
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&template])
        .await
        .unwrap();
    let exists = admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
        .await
        .unwrap()
        .is_some();
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE \"{template}\""))
            .await
            .unwrap();
        let url = database_url_for(admin_url, template);
        let pool = keel_db::connect(&settings(&url), schema, "keel-test-template").unwrap();
        let migrated = keel_db::migrate(&pool, schema, sets).await;
        pool.close();
        if let Err(e) = migrated {
            admin
                .batch_execute(&format!("DROP DATABASE \"{template}\" WITH (FORCE)"))
                .await
                .unwrap();
            panic!("migrations for schema {schema} failed: {e:#?}");
        }
    }
    admin
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&template])
        .await
        .unwrap();
}

fn template_name(schema: &str, sets: &[&MigrationSet]) -> String {
    let mut hasher = DefaultHasher::new();
    schema.hash(&mut hasher);
    for set in sets {
        set.component.hash(&mut hasher);
        for m in set.migrations {
            (m.version, m.name, m.sql).hash(&mut hasher);
        }
    }
    format!("template_{schema}_{:016x}", hasher.finish())
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL server: {e}"));
    tokio::spawn(connection);
    client
}

/// The admin URL with its database replaced by `name`.
fn database_url_for(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("KEEL_TEST_DATABASE_URL is a URL");
    url.set_path(name);
    url.to_string()
}

fn is_object_in_use(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE)
}
