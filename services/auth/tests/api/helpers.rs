//! Starts the real auth service in-process on port 0, against its own
//! database and Redis key prefix.

use std::time::Duration;

use auth::settings::Settings;
use auth::startup::{Application, migrations};
use keel_telemetry::ServiceIdentity;
use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::redis::TestRedis;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    db: Option<TestDatabase>,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    _redis: Option<TestRedis>,
    broker: Option<TestBroker>,
    _keys: Option<tempdir::Dir>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Settings for tests: cheap argon2, short windows, a fresh dev key.
pub fn test_settings() -> Settings {
    let mut settings = Settings::defaults().expect("defaults load");
    settings.http.port = 0;
    settings.http.workers = 2;
    settings.passwords.memory_kib = 7168;
    settings.passwords.iterations = 1;
    settings.throttle.window = Duration::from_secs(3);
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDatabase::create(auth::SCHEMA, &migrations()).await;
    spawn_on(db, None, configure).await
}

/// Starts against `db` (kept across restarts by the caller) and, when
/// given, a Redis URL of the test's own server.
pub async fn spawn_on(
    db: TestDatabase,
    redis_url: Option<String>,
    configure: impl FnOnce(&mut Settings),
) -> TestApp {
    keel_telemetry::init_for_tests();
    let broker = TestBroker::new().await;
    let mut settings = test_settings();
    settings.database = db.settings();
    let redis = if let Some(url) = redis_url {
        settings.redis.url = SecretString::from(url);
        settings.redis.key_prefix = "keel:".into();
        None
    } else {
        let redis = TestRedis::new();
        settings.redis.url = SecretString::from(redis.url().to_owned());
        settings.redis.key_prefix = redis.prefix().to_owned();
        Some(redis)
    };
    settings.amqp = broker.settings();
    let keys = tempdir::Dir::new();
    settings.tokens.dev_key_dir = keys.path.clone();
    configure(&mut settings);

    let identity = ServiceIdentity::new(auth::SERVICE, "test");
    let app = Application::build(settings, &identity)
        .await
        .expect("auth builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            app.run_until_stopped(shutdown)
                .await
                .expect("auth runs and stops cleanly");
        }
    });
    TestApp {
        address,
        client: reqwest::Client::new(),
        db: Some(db),
        shutdown,
        server: Some(server),
        _redis: redis,
        broker: Some(broker),
        _keys: Some(keys),
    }
}

impl TestApp {
    /// Stops the server; returns the database for a restart.
    pub async fn stop(mut self) -> TestDatabase {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.expect("server task ends cleanly");
        }
        if let Some(broker) = self.broker.take() {
            broker.cleanup().await;
        }
        self.db.take().expect("the database is still held")
    }

    pub fn pool(&self) -> &keel_db::Pool {
        self.db.as_ref().expect("the database is still held").pool()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches auth")
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches auth")
    }

    pub async fn get_as(&self, path: &str, access: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(access)
            .send()
            .await
            .expect("request reaches auth")
    }

    pub async fn register(&self, email: &str) -> Value {
        let response = self
            .post(
                "/api/v1/auth/register",
                &json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post(
            "/api/v1/auth/login",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// A login attributed to client address `from`: the test connects over
    /// loopback, a trusted proxy by default, so auth believes the
    /// `X-Forwarded-For` it appends, as it believes the gateway's.
    pub async fn login_from(&self, from: &str, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/login"))
            .header("x-forwarded-for", from)
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("request reaches auth")
    }

    /// Registers and logs in; returns the token pair.
    pub async fn signed_in(&self, email: &str) -> Tokens {
        self.register(email).await;
        self.login_ok(email).await
    }

    pub async fn login_ok(&self, email: &str) -> Tokens {
        let response = self.login(email, PASSWORD).await;
        assert_eq!(response.status(), StatusCode::OK);
        Tokens::from(response.json::<Value>().await.unwrap())
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post(
            "/api/v1/auth/refresh",
            &json!({"refresh_token": refresh_token}),
        )
        .await
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl From<Value> for Tokens {
    fn from(body: Value) -> Self {
        assert_eq!(body["token_type"], "Bearer");
        Self {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

pub mod tempdir {
    use std::path::PathBuf;

    /// A directory removed on drop (no extra crate for one helper).
    pub struct Dir {
        pub path: PathBuf,
    }

    impl Dir {
        pub fn new() -> Self {
            let path = std::env::temp_dir()
                .join(format!("keel-auth-test-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&path).unwrap();
            Self { path }
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
