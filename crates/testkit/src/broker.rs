//! A unique AMQP namespace per test on the shared test broker.
//!
//! Every exchange and queue a test creates is named `t-<uuid>.…`, so tests
//! run in parallel on one broker without seeing each other's messages; the
//! namespace is deleted when the [`TestBroker`] is dropped.

use std::time::Duration;

use keel_messaging::{AmqpSettings, Broker, RetryPolicy, Topology};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::ShortString;
use lapin::{Channel, Connection, ConnectionProperties};
use secrecy::SecretString;

/// A declared topology under a fresh namespace.
#[derive(Debug)]
pub struct TestBroker {
    settings: AmqpSettings,
    cleaned: bool,
}

impl TestBroker {
    /// A namespace with the default retry schedule.
    pub async fn new() -> Self {
        Self::with_retry(RetryPolicy::default()).await
    }

    /// A namespace whose delay tiers follow `retry` (tests use short ones
    /// such as 200ms, 400ms).
    pub async fn with_retry(retry: RetryPolicy) -> Self {
        let namespace = format!("t-{}", uuid::Uuid::new_v4().simple());
        let settings = AmqpSettings {
            url: SecretString::from(crate::env::amqp_url()),
            namespace,
            prefetch: 10,
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            retry,
            ..AmqpSettings::default()
        };
        let broker = Self {
            settings,
            cleaned: false,
        };
        let channel = broker.channel().await;
        broker
            .topology()
            .declare(&channel)
            .await
            .unwrap_or_else(|e| panic!("declaring the test topology failed: {e}"));
        broker
    }

    /// Settings pointing at the test broker with this namespace.
    pub fn settings(&self) -> AmqpSettings {
        self.settings.clone()
    }

    pub fn namespace(&self) -> &str {
        &self.settings.namespace
    }

    pub fn topology(&self) -> Topology {
        Topology::new(self.settings.namespace.clone(), &self.settings.retry)
    }

    /// A [`Broker`] handle for this namespace.
    pub fn broker(&self, name: &str) -> Broker {
        Broker::new(self.settings(), name)
    }

    /// A channel on a connection of its own (closed with the channel's last
    /// handle), for assertions that peek at queues directly.
    pub async fn channel(&self) -> Channel {
        let connection =
            Connection::connect(&crate::env::amqp_url(), ConnectionProperties::default())
                .await
                .unwrap_or_else(|e| panic!("cannot connect to the test broker: {e}"));
        connection
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("cannot open a channel: {e}"))
    }

    /// Deletes every queue and exchange of the namespace.
    pub async fn cleanup(mut self) {
        cleanup(&self.settings.namespace, self.topology()).await;
        self.cleaned = true;
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Drop cannot await, and the test's runtime may be shutting down:
        // clean up on a thread with a runtime of its own.
        let namespace = self.settings.namespace.clone();
        let topology = self.topology();
        let joined =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(cleanup(&namespace, topology)),
                    Err(error) => eprintln!("cannot clean up AMQP namespace {namespace}: {error}"),
                }
            })
            .join();
        if joined.is_err() {
            eprintln!("cleaning up an AMQP namespace panicked");
        }
    }
}

/// Deletes what the management API lists under the namespace (including
/// queues a test declared itself), or at least the known topology.
async fn cleanup(namespace: &str, topology: Topology) {
    let prefix = format!("{namespace}.");
    let (mut queues, mut exchanges) = (topology.queues(), topology.exchanges());
    if let Some((listed_queues, listed_exchanges)) = list_from_management(&prefix).await {
        queues.extend(listed_queues);
        exchanges.extend(listed_exchanges);
    }
    queues.sort();
    queues.dedup();
    exchanges.sort();
    exchanges.dedup();

    let Ok(connection) =
        Connection::connect(&crate::env::amqp_url(), ConnectionProperties::default()).await
    else {
        eprintln!("cannot connect to clean up AMQP namespace {namespace}");
        return;
    };
    for queue in queues {
        // A failed delete closes the channel, so each gets its own.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(
                    ShortString::from(queue),
                    // Delete even with consumers or messages left: the
                    // test is over.
                    QueueDeleteOptions {
                        if_unused: false,
                        if_empty: false,
                        nowait: false,
                    },
                )
                .await;
        }
    }
    for exchange in exchanges {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(
                    ShortString::from(exchange),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
    }
    let _ = connection
        .close(200, ShortString::from("test cleanup"))
        .await;
}

async fn list_from_management(prefix: &str) -> Option<(Vec<String>, Vec<String>)> {
    let base = std::env::var("KEEL_TEST_AMQP_MANAGEMENT_URL").ok()?;
    let base = url::Url::parse(&base).ok()?;
    let user = if base.username().is_empty() {
        "guest".to_owned()
    } else {
        base.username().to_owned()
    };
    let password = base.password().unwrap_or("guest").to_owned();
    let client = reqwest::Client::new();
    let mut names = Vec::new();
    for kind in ["queues", "exchanges"] {
        let mut url = base.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_path(&format!("/api/{kind}"));
        url.set_query(Some("columns=name"));
        let listed: serde_json::Value = client
            .get(url)
            .basic_auth(&user, Some(&password))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        names.push(
            listed
                .as_array()?
                .iter()
                .filter_map(|item| item.get("name")?.as_str())
                .filter(|name| name.starts_with(prefix))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
    }
    let exchanges = names.pop()?;
    let queues = names.pop()?;
    Some((queues, exchanges))
}
