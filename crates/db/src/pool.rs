use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::ExposeSecret;
use tokio_postgres::NoTls;

use crate::{DatabaseSettings, Error, Result};

/// `Fast` recycling does no I/O; the bound is for the day it does.
const RECYCLE_TIMEOUT: Duration = Duration::from_secs(5);

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
    // Every step of a checkout has a deadline: waiting for a free slot,
    // opening a connection (TCP connect and startup handshake), recycling
    // one. A query on a checked-out connection is bounded by the server's
    // `statement_timeout` while the server lives, and by the socket's
    // `database.tcp` deadlines when the link dies.
    let pool = Pool::builder(manager)
        .max_size(settings.max_connections)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.acquire_timeout))
        .create_timeout(Some(settings.connect_timeout))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
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
    let tcp = settings.tcp;
    config
        .application_name(application)
        // The TCP connect only; the pool's `create_timeout` bounds the
        // whole handshake (a server that accepts and never answers).
        .connect_timeout(settings.connect_timeout)
        .keepalives(true)
        .keepalives_idle(tcp.keepalive_idle)
        .keepalives_interval(tcp.keepalive_interval)
        .keepalives_retries(tcp.keepalive_retries)
        .tcp_user_timeout(tcp.user_timeout)
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
