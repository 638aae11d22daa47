//! One AMQP connection per process, re-established on demand.
//!
//! lapin's own auto-recovery is left off: recovery here is explicit (a dead
//! connection is replaced the next time anyone asks for a channel), so every
//! user — publisher, consumer runner, readiness check — sees the same simple
//! rule and the topology is re-declared on each new connection.

use std::sync::Arc;

use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::ExposeSecret;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::settings::AmqpSettings;
use crate::topology::Topology;

/// A shareable handle on the broker: clone it freely.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    connection_name: String,
    connection: Mutex<Option<Connection>>,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("namespace", &self.inner.settings.namespace)
            .field("connection_name", &self.inner.connection_name)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// A handle that connects lazily: nothing is attempted until the first
    /// [`channel`](Self::channel), so a service starts (and reports not
    /// ready) while the broker is down. `connection_name` shows in the
    /// management UI (use the service name). Must be called inside the
    /// process's main Tokio runtime, which will own the connection.
    pub fn new(settings: AmqpSettings, connection_name: impl Into<String>) -> Self {
        let topology = Topology::new(settings.namespace.clone(), &settings.retry);
        Self {
            inner: Arc::new(Inner {
                settings,
                topology,
                connection_name: connection_name.into(),
                connection: Mutex::new(None),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    pub fn settings(&self) -> &AmqpSettings {
        &self.inner.settings
    }

    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// A fresh channel on the live connection, connecting (and declaring the
    /// topology) first if there is none or it died. One attempt, bounded by
    /// `amqp.connect_timeout`; callers that must wait use
    /// [`channel_with_retry`](Self::channel_with_retry).
    pub async fn channel(&self) -> Result<Channel> {
        let mut guard = self.inner.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            if connection.status().connected() {
                return Ok(connection.create_channel().await?);
            }
            tracing::warn!("AMQP connection lost; reconnecting");
        }
        *guard = None;
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        *guard = Some(connection);
        Ok(channel)
    }

    /// Like [`channel`](Self::channel), retrying with the `amqp.reconnect`
    /// backoff until it succeeds; `None` once `shutdown` is cancelled.
    pub async fn channel_with_retry(&self, shutdown: &CancellationToken) -> Option<Channel> {
        let mut failures = 0;
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            match self.channel().await {
                Ok(channel) => return Some(channel),
                Err(error) => {
                    failures += 1;
                    let delay = self.inner.settings.reconnect.delay(failures);
                    tracing::warn!(error = %error, ?delay, failures, "broker unreachable; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Readiness: a real round trip (open a channel, passively declare the
    /// jobs exchange, close). Reconnects if needed, so `/readyz` turning
    /// green again is itself the recovery.
    pub async fn check(&self) -> Result<()> {
        let channel = self.channel().await?;
        let options = ExchangeDeclareOptions {
            // Only check that it exists; never create from a health check.
            passive: true,
            // Passive declares ignore the remaining flags; written to match
            // the real declaration.
            durable: true,
            auto_delete: false,
            internal: false,
            nowait: false,
        };
        channel
            .exchange_declare(
                ShortString::from(self.inner.topology.jobs_exchange()),
                ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await?;
        channel
            .close(200, ShortString::from("readiness check"))
            .await?;
        Ok(())
    }

    /// Closes the connection (unacknowledged deliveries return to their
    /// queues). Later calls to [`channel`](Self::channel) reconnect.
    pub async fn close(&self) {
        let connection = self.inner.connection.lock().await.take();
        let Some(connection) = connection else {
            return;
        };
        if !connection.status().connected() {
            return;
        }
        // Bounded: a broker that stopped answering must not hold up the
        // process's exit; dropping the socket has the same effect for it.
        let timeout = self.inner.settings.connect_timeout;
        match tokio::time::timeout(
            timeout,
            connection.close(200, ShortString::from("shutdown")),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::debug!(error = %error, "closing the AMQP connection failed"),
            Err(_) => tracing::warn!(
                ?timeout,
                "the broker did not confirm the connection close in time"
            ),
        }
    }

    async fn connect(&self) -> Result<Connection> {
        let settings = &self.inner.settings;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.inner.connection_name.clone().into());
        // lapin runs the connection's I/O loop on the runtime that connects.
        // Callers may sit on a short-lived runtime (an actix worker thread
        // answering /readyz); connecting from the runtime that created the
        // Broker keeps the I/O loop alive as long as the process.
        let url = settings.url.expose_secret().to_owned();
        let mut connecting = self
            .inner
            .runtime
            .spawn(async move { Connection::connect(&url, properties).await });
        let connection = match tokio::time::timeout(settings.connect_timeout, &mut connecting).await
        {
            Ok(joined) => joined??,
            Err(_) => {
                // Do not let a late success leak a connection nobody holds.
                connecting.abort();
                return Err(Error::ConnectTimeout(settings.connect_timeout));
            }
        };
        let channel = connection.create_channel().await?;
        self.inner.topology.declare(&channel).await?;
        channel
            .close(200, ShortString::from("topology declared"))
            .await?;
        tracing::info!(namespace = %settings.namespace, "connected to the broker");
        Ok(connection)
    }
}
