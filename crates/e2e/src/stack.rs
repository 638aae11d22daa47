//! The whole stack: auth, analytics, worker and gateway, each a process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::free_port;
use keel_testkit::redis::TestRedis;

use crate::process::{Process, Service};

/// The running stack. Dropping it kills whatever still runs; the database,
/// key prefix and queues are removed with it.
#[derive(Debug)]
pub struct Stack {
    processes: HashMap<Service, Process>,
    logs: PathBuf,
    // Held for their Drop.
    _database: TestDatabase,
    _redis: TestRedis,
    broker: Option<TestBroker>,
}

/// A fresh database, Redis prefix and AMQP namespace, and the `KEEL_*`
/// environment that points a service at them.
#[derive(Debug)]
pub struct Backing {
    pub database: TestDatabase,
    pub redis: TestRedis,
    pub broker: TestBroker,
    pub logs: PathBuf,
}

impl Backing {
    pub async fn new() -> Backing {
        // The gateway and the worker share the `store` schema; auth and
        // analytics migrate their own schemas in the same database. Each
        // service applies its own migrations at start.
        let logs = std::env::temp_dir().join(format!("keel-e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&logs).expect("log folder");
        Backing {
            database: TestDatabase::create("store", &[]).await,
            redis: TestRedis::new(),
            broker: TestBroker::new().await,
            logs,
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("KEEL_DATABASE__URL".into(), self.database.url()),
            ("KEEL_REDIS__URL".into(), self.redis.url().to_owned()),
            (
                "KEEL_REDIS__KEY_PREFIX".into(),
                self.redis.prefix().to_owned(),
            ),
            ("KEEL_AMQP__URL".into(), keel_testkit::env::amqp_url()),
            (
                "KEEL_AMQP__NAMESPACE".into(),
                self.broker.namespace().to_owned(),
            ),
            ("KEEL_TELEMETRY__FORMAT".into(), "json".into()),
            ("KEEL_TELEMETRY__FILTER".into(), "info".into()),
            // auth's development signing key: in this run's folder, never in
            // the crate folder the test runs from.
            (
                "KEEL_TOKENS__DEV_KEY_DIR".into(),
                self.logs.join("keys").display().to_string(),
            ),
        ]
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// Removes the queues and the log folder (the database and Redis keys
    /// go when dropped).
    pub async fn cleanup(self) {
        self.broker.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

impl Stack {
    /// Starts auth, analytics, worker and gateway with `extra` environment
    /// (applied to every service) and waits for each `/readyz`.
    pub async fn start(extra: &[(&str, String)]) -> Stack {
        let backing = Backing::new().await;
        let ports: HashMap<Service, u16> = Service::ALL.iter().map(|s| (*s, free_port())).collect();
        let mut env = backing.env();
        env.push((
            "KEEL_UPSTREAMS__AUTH_URL".into(),
            format!("http://127.0.0.1:{}", ports[&Service::Auth]),
        ));
        env.push((
            "KEEL_UPSTREAMS__ANALYTICS_URL".into(),
            format!("http://127.0.0.1:{}", ports[&Service::Analytics]),
        ));
        // analytics verifies bearer tokens itself, against auth's JWK Set.
        env.push((
            "KEEL_AUTHN__JWKS_URL".into(),
            format!(
                "http://127.0.0.1:{}/.well-known/jwks.json",
                ports[&Service::Auth]
            ),
        ));
        // Exports land in this run's folder, not in the checkout.
        env.push((
            "KEEL_EXPORTS__STORAGE__ROOT".into(),
            backing.logs.join("exports").display().to_string(),
        ));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));

        let Backing {
            database,
            redis,
            broker,
            logs,
        } = backing;
        let mut stack = Stack {
            processes: HashMap::new(),
            logs,
            _database: database,
            _redis: redis,
            broker: Some(broker),
        };
        for service in Service::ALL {
            let log = stack.logs.join(format!("{}.log", service.binary()));
            let process = Process::spawn(service, ports[&service], &env, log);
            stack.processes.insert(service, process);
            let process = stack.processes.get_mut(&service).expect("just inserted");
            process.wait_ready(Duration::from_secs(60)).await;
        }
        stack
    }

    /// The gateway's URL for `path`: the scenario talks to nothing else.
    pub fn gateway(&self, path: &str) -> String {
        self.processes[&Service::Gateway].url(path)
    }

    /// `service`'s own URL for `path`, bypassing the gateway (the attack
    /// suite checks that services behind it trust only the gateway).
    pub fn service_url(&self, service: Service, path: &str) -> String {
        self.processes[&service].url(path)
    }

    /// This stack's database (the `store` schema; auth and analytics keep
    /// theirs beside it), for tests that check an effect did not happen.
    pub fn database(&self) -> &TestDatabase {
        &self._database
    }

    /// The last lines of every service's log, for a failure message.
    pub fn log_tails(&self) -> String {
        let mut out = format!("service logs: {}\n", self.logs.display());
        for service in Service::ALL {
            if let Some(process) = self.processes.get(&service) {
                out.push_str(&format!(
                    "--- {} ---\n{}\n",
                    service.binary(),
                    process.log_tail(15)
                ));
            }
        }
        out
    }

    /// SIGTERM to every service, in reverse start order; returns each exit
    /// code (graceful shutdown exits 0).
    pub async fn stop(mut self) -> Vec<(Service, Option<i32>)> {
        let mut codes = Vec::new();
        for service in Service::ALL.iter().rev() {
            if let Some(process) = self.processes.remove(service) {
                codes.push((*service, process.terminate(Duration::from_secs(30)).await));
            }
        }
        if let Some(broker) = self.broker.take() {
            broker.cleanup().await;
        }
        let _ = std::fs::remove_dir_all(&self.logs);
        codes
    }
}
