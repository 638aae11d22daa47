//! Orders handlers served for tests: the real orders area (state, cache,
//! invalidation subscriber) inside `keel_http::app`, with a test-only
//! middleware, defined here and nowhere in the gateway, that turns
//! `X-Test-User` / `X-Test-Admin` headers into a `Caller`. Authentication
//! itself is tested elsewhere; this isolates what the orders area does with
//! a caller.
//!
//! [`OrdersEnv`] is one database + Redis prefix; every [`OrdersApp`] spawned
//! from it is another gateway instance on the same state (the stale-read
//! test runs two).

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{HttpMessage, web};
use api_gateway::events::hub::Hub;
use api_gateway::events::metrics::EventsMetrics;
use api_gateway::events::subscription::Subscription;
use api_gateway::identity::Caller;
use api_gateway::orders::{self, Orders, OrdersArea};
use api_gateway::settings::Settings;
use api_gateway::startup::migrations;
use keel_cache::Redis;
use keel_db::Pool;
use keel_http::{Operational, Readiness, Routes, Server};
use keel_messaging::Publisher;
use keel_outbox::{Relay, RelayMetrics, RelayWaker};
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::redis::TestRedis;
use prometheus_client::registry::Registry;
use secrecy::SecretString;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct OrdersEnv {
    pub db: TestDatabase,
    pub redis: TestRedis,
    /// With a broker, every instance also consumes `order.*` events from
    /// `{ns}.events` on a queue of its own, as the gateway does.
    pub broker: Option<TestBroker>,
    /// Every instance runs the outbox relay as the gateway does (needs the
    /// broker), with the relay options of the settings.
    pub relay: bool,
}

impl OrdersEnv {
    pub async fn new() -> Self {
        keel_telemetry::init_for_tests();
        Self {
            db: TestDatabase::create(api_gateway::SCHEMA, &migrations()).await,
            redis: TestRedis::new(),
            broker: None,
            relay: false,
        }
    }

    /// [`new`](Self::new), with a broker namespace for order events.
    pub async fn with_broker() -> Self {
        let mut env = Self::new().await;
        env.broker = Some(TestBroker::new().await);
        env
    }

    /// [`with_broker`](Self::with_broker), each instance also running the
    /// outbox relay and waking it after its writes, as the gateway does.
    pub async fn with_relay() -> Self {
        let mut env = Self::with_broker().await;
        env.relay = true;
        env
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::defaults().expect("defaults load");
        settings.http.port = 0;
        settings.http.workers = 2;
        settings.database = self.db.settings();
        settings.redis.url = SecretString::from(self.redis.url().to_owned());
        settings.redis.key_prefix = self.redis.prefix().to_owned();
        if let Some(broker) = &self.broker {
            settings.amqp = broker.settings();
        }
        settings
    }

    pub fn pool(&self) -> &Pool {
        self.db.pool()
    }

    /// Another gateway instance on this environment, serving the orders
    /// area once its cache subscription is up.
    pub async fn spawn(&self) -> OrdersApp {
        self.spawn_with(|_| {}).await
    }

    /// [`spawn`](Self::spawn) with settings adjusted (e.g. Redis behind a proxy).
    pub async fn spawn_with(&self, configure: impl FnOnce(&mut Settings)) -> OrdersApp {
        let mut settings = self.settings();
        configure(&mut settings);
        let pool =
            keel_db::connect(&settings.database, api_gateway::SCHEMA, "orders-test").unwrap();
        let redis = Redis::new(&settings.redis).unwrap();
        let mut registry = Registry::default();
        let shutdown = CancellationToken::new();
        let mut tasks = Vec::new();
        let waker = if self.relay {
            let relay = Relay::new(
                pool.clone(),
                keel_db::connection_config(&settings.database, api_gateway::SCHEMA, "orders-test")
                    .unwrap(),
                api_gateway::SCHEMA,
                Publisher::new(keel_messaging::Broker::new(
                    settings.amqp.clone(),
                    "orders-test",
                )),
                settings.outbox.clone(),
                RelayMetrics::register(&mut registry),
            );
            let waker = relay.waker();
            tasks.push(tokio::spawn(relay.run(shutdown.clone())));
            waker
        } else {
            // No relay here: a NOTIFY after commit, heard by none.
            RelayWaker::new(pool.clone())
        };
        let area = OrdersArea::build(
            pool,
            waker,
            redis,
            &settings.redis,
            &settings.orders,
            &mut registry,
        )
        .unwrap();
        let state = area.state;
        tasks.push(tokio::spawn(
            state
                .clone()
                .run_background(area.subscriber, shutdown.clone()),
        ));
        if self.broker.is_some() {
            // As `startup.rs` wires it: the events subscription hands
            // order changes to the cache (`settings.amqp`: the test broker,
            // or a proxy in front of it).
            let hub = Hub::new(1, 1, EventsMetrics::register(&mut registry));
            let broker = keel_messaging::Broker::new(settings.amqp.clone(), "orders-test");
            let subscription =
                Subscription::new(broker, hub).with_order_changes(state.order_changes());
            tasks.push(tokio::spawn(subscription.run(shutdown.clone())));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !state.cache_is_live() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache subscription never came up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let server = Server::bind(&settings.http).unwrap();
        let address = format!("http://127.0.0.1:{}", server.port());
        let operational = Operational::new(Readiness::new(Duration::from_secs(1)), registry);
        let orders = state.clone();
        let routes: Routes = Arc::new(move |cfg| {
            let state = state.clone();
            cfg.service(
                web::scope("/api/v1")
                    .wrap(from_fn(test_caller))
                    .configure(move |api| orders::configure(api, state)),
            );
        });
        let http = settings.http.clone();
        let server = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                keel_http::serve(server, &http, operational, routes, shutdown)
                    .await
                    .unwrap();
            }
        });
        OrdersApp {
            orders,
            address,
            client: reqwest::Client::new(),
            shutdown,
            tasks: {
                tasks.push(server);
                tasks
            },
        }
    }
}

/// Test-only authentication: `X-Test-User: <uuid>` (+ `X-Test-Admin: 1`).
async fn test_caller(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let user = req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Uuid>().ok());
    if let Some(user_id) = user {
        let is_admin = req.headers().contains_key("x-test-admin");
        req.extensions_mut().insert(Caller {
            user_id,
            session_id: None,
            is_admin,
        });
    }
    next.call(req).await
}

pub struct OrdersApp {
    /// The area's state, to observe the cache subscription.
    pub orders: Orders,
    pub address: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for OrdersApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A caller, as the test middleware understands it.
#[derive(Debug, Clone, Copy)]
pub struct As {
    pub user: Uuid,
    pub admin: bool,
}

impl As {
    pub fn customer() -> Self {
        Self {
            user: Uuid::new_v4(),
            admin: false,
        }
    }

    pub fn admin() -> Self {
        Self {
            user: Uuid::new_v4(),
            admin: true,
        }
    }
}

impl OrdersApp {
    /// Waits until the in-process cache is (or is not) in use.
    pub async fn wait_cache_live(&self, live: bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.orders.cache_is_live() != live {
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never became live={live}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        caller: As,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("x-test-user", caller.user.to_string());
        if caller.admin {
            request = request.header("x-test-admin", "1");
        }
        request
    }

    pub async fn create(&self, caller: As, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "/api/v1/orders", caller)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Creates an order and returns its JSON.
    pub async fn create_ok(&self, caller: As) -> Value {
        let response = self.create(caller, &sample_order()).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    pub async fn get(&self, caller: As, id: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::GET,
            &format!("/api/v1/orders/{id}"),
            caller,
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn list(&self, caller: As, query: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::GET,
            &format!("/api/v1/orders{query}"),
            caller,
        )
        .send()
        .await
        .unwrap()
    }

    pub async fn patch_status(&self, caller: As, id: &str, status: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::PATCH,
            &format!("/api/v1/orders/{id}"),
            caller,
        )
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap()
    }

    pub async fn cancel(&self, caller: As, id: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::DELETE,
            &format!("/api/v1/orders/{id}"),
            caller,
        )
        .send()
        .await
        .unwrap()
    }
}

pub fn sample_order() -> Value {
    serde_json::json!({
        "currency": "EUR",
        "items": [
            {"sku": "TSHIRT-M", "quantity": 2, "unit_price_cents": 1500},
            {"sku": "MUG", "quantity": 1, "unit_price_cents": 899}
        ],
        "customer_email": "ada@example.com"
    })
}

/// Outbox rows of `message_type`, as their payloads.
pub async fn outbox_events(pool: &Pool, message_type: &str) -> Vec<Value> {
    let client = pool.get().await.unwrap();
    client
        .query(
            "SELECT payload FROM outbox WHERE message_type = $1 ORDER BY created_at, id",
            &[&message_type],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}
