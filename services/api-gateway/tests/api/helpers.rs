//! Starts the real gateway in-process on port 0, against its own database,
//! Redis key prefix and AMQP namespace, optionally behind TCP proxies that
//! can make a dependency disappear for this test alone.

use std::net::SocketAddr;

use api_gateway::settings::Settings;
use api_gateway::startup::{Application, migrations};
use keel_telemetry::ServiceIdentity;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::proxy::TcpProxy;
use keel_testkit::redis::TestRedis;
use secrecy::{ExposeSecret, SecretString};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub proxies: Option<Proxies>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    // Held for their Drop: each removes this test's data.
    _db: TestDatabase,
    _redis: TestRedis,
    broker: Option<TestBroker>,
}

/// One proxy per dependency; `cut()` makes it unreachable for this app only.
pub struct Proxies {
    pub postgres: TcpProxy,
    pub redis: TcpProxy,
    pub rabbitmq: TcpProxy,
}

impl TestApp {
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// This test's database (to count what a request stored).
    pub fn db(&self) -> &TestDatabase {
        &self._db
    }

    /// Stops the app as SIGTERM would and removes the AMQP namespace.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task ends cleanly");
        }
        if let Some(broker) = self.broker.take() {
            broker.cleanup().await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn(false, |_| {}).await
}

pub async fn spawn_app_behind_proxies() -> TestApp {
    spawn(true, |_| {}).await
}

/// Like [`spawn_app`], with settings adjusted after the test defaults.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(false, configure).await
}

/// Like [`spawn_app_behind_proxies`], with settings adjusted.
pub async fn spawn_app_behind_proxies_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn(true, configure).await
}

async fn spawn(behind_proxies: bool, configure: impl FnOnce(&mut Settings)) -> TestApp {
    keel_telemetry::init_for_tests();
    let db = TestDatabase::create(api_gateway::SCHEMA, &migrations()).await;
    let redis = TestRedis::new();
    let broker = TestBroker::new().await;

    let mut settings = Settings::defaults().expect("defaults load");
    settings.http.port = 0;
    settings.http.workers = 1;
    settings.http.readiness_timeout = std::time::Duration::from_secs(1);
    settings.database = db.settings();
    settings.redis.url = SecretString::from(redis.url().to_owned());
    settings.redis.key_prefix = redis.prefix().to_owned();
    settings.amqp = broker.settings();
    configure(&mut settings);

    let proxies = if behind_proxies {
        let postgres = proxy_for(settings.database.url.expose_secret()).await;
        let redis_proxy = proxy_for(settings.redis.url.expose_secret()).await;
        let rabbitmq = proxy_for(settings.amqp.url.expose_secret()).await;
        settings.database.url = redirect(settings.database.url.expose_secret(), postgres.addr());
        settings.redis.url = redirect(settings.redis.url.expose_secret(), redis_proxy.addr());
        settings.amqp.url = redirect(settings.amqp.url.expose_secret(), rabbitmq.addr());
        Some(Proxies {
            postgres,
            redis: redis_proxy,
            rabbitmq,
        })
    } else {
        None
    };

    let identity = ServiceIdentity::new(api_gateway::SERVICE, "test");
    let app = Application::build(settings, &identity)
        .await
        .expect("the gateway builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            app.run_until_stopped(shutdown)
                .await
                .expect("the gateway runs and stops cleanly");
        }
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        proxies,
        shutdown,
        server: Some(server),
        _db: db,
        _redis: redis,
        broker: Some(broker),
    }
}

fn upstream(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).expect("dependency URL parses");
    let host = parsed.host_str().expect("URL has a host");
    let port = parsed.port().expect("URL has an explicit port");
    format!("{host}:{port}")
        .parse()
        .expect("host is an IP address")
}

async fn proxy_for(url: &str) -> TcpProxy {
    TcpProxy::start(upstream(url)).await
}

fn redirect(url: &str, to: SocketAddr) -> SecretString {
    let mut parsed = url::Url::parse(url).expect("dependency URL parses");
    parsed.set_ip_host(to.ip()).expect("URL accepts an IP host");
    parsed
        .set_port(Some(to.port()))
        .expect("URL accepts a port");
    SecretString::from(parsed.to_string())
}
