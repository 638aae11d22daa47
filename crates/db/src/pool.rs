use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::{DatabaseSettings, Error, Result};

/// Builds a pool whose connections use `schema` first on their search path.
///
/// Pools connect lazily: a service starts even while PostgreSQL is down and
/// reports it through `/readyz` until it comes back.
pub fn connect(settings: &DatabaseSettings, schema: &str, application: &str) -> Result<Pool> {
    let config = connection_config(settings, schema, application)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // `Fast` reuses a connection unless its socket is known closed. A
            // server restart closes every socket, so stale connections are
            // dropped on their next checkout; a query that still hits one
            // fails once and the caller sees "unavailable".
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(settings.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()?;
    Ok(pool)
}

/// The connection settings the pool uses, for the few connections that
/// live outside it (the outbox relay's `LISTEN` session).
pub fn connection_config(
    settings: &DatabaseSettings,
    schema: &str,
    application: &str,
) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = settings
        .url
        .expose_secret()
        .parse()
        .map_err(Error::InvalidUrl)?;
    config
        .application_name(application)
        .connect_timeout(settings.connect_timeout)
        .options(format!(
            "-c search_path={schema},public -c statement_timeout={} -c jit={}",
            settings.statement_timeout.as_millis(),
            if settings.jit { "on" } else { "off" }
        ));
    Ok(config)
}

/// A real round trip, for `/readyz`.
pub async fn check(pool: &Pool) -> Result<()> {
    let client = pool.get().await?;
    client.simple_query("SELECT 1").await?;
    Ok(())
}
