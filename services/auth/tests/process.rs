//! The auth binary as operators run it, against real servers.

// Helpers outside #[test] functions are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::{ServiceProcess, assert_operational_contract, free_port, run_to_exit};
use keel_testkit::redis::TestRedis;

const BINARY: &str = env!("CARGO_BIN_EXE_auth");

#[tokio::test]
async fn it_serves_the_operational_endpoints_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::create(auth::SCHEMA, &auth::startup::migrations()).await;
    let redis = TestRedis::new();
    let broker = TestBroker::new().await;
    let scratch = Scratch::new();
    let env = [
        ("KEEL_DATABASE__URL", db.url()),
        ("KEEL_TOKENS__DEV_KEY_DIR", scratch.path("keys")),
        ("KEEL_REDIS__URL", redis.url().to_owned()),
        ("KEEL_REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
        ("KEEL_AMQP__NAMESPACE", broker.namespace().to_owned()),
    ];
    let service = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;

    assert_operational_contract(&service, auth::SERVICE, &["postgres", "rabbitmq", "redis"]).await;

    let status = service.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    broker.cleanup().await;
}

#[test]
fn a_bad_configuration_value_exits_2_naming_the_key() {
    let (code, stderr) = run_to_exit(BINARY, &[("KEEL_DATABASE__MAX_CONNECTIONS", "0")]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("database.max_connections"), "{stderr}");
}

#[tokio::test]
async fn create_admin_creates_the_account_once_and_is_idempotent() {
    let db = TestDatabase::create(auth::SCHEMA, &auth::startup::migrations()).await;
    let run = || {
        std::process::Command::new(BINARY)
            .args(["create-admin", "--email", "Root@Example.com"])
            .env("KEEL_DATABASE__URL", db.url())
            .env("KEEL_ADMIN_PASSWORD", "a long admin passphrase")
            .env("KEEL_TELEMETRY__FILTER", "error")
            .output()
            .expect("the binary runs")
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("Created"));
    let second = run();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("AlreadyAdmin"));

    let client = db.pool().get().await.unwrap();
    let row = client
        .query_one("SELECT email, roles FROM users", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "root@example.com");
    assert_eq!(row.get::<_, Vec<String>>(1), ["customer", "admin"]);
}

#[tokio::test]
async fn auth_stops_with_one_line_when_the_bootstrap_admin_exists_with_another_password() {
    let db = TestDatabase::create(auth::SCHEMA, &auth::startup::migrations()).await;
    // Someone registered the admin's address first, with their own password.
    let theirs = bcrypt::hash("someone else's passphrase", 4).unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, 'root@example.com', $2)",
            &[&uuid::Uuid::new_v4(), &theirs],
        )
        .await
        .unwrap();
    let scratch = Scratch::new();
    let (code, stdout, stderr) = run_with_deadline(
        &[
            ("KEEL_DATABASE__URL", db.url()),
            ("KEEL_HTTP__PORT", free_port().to_string()),
            ("KEEL_TOKENS__DEV_KEY_DIR", scratch.path("keys")),
            ("KEEL_TELEMETRY__FORMAT", "json".into()),
            ("KEEL_TELEMETRY__FILTER", "error".into()),
            ("KEEL_BOOTSTRAP_ADMIN_EMAIL", "root@example.com".into()),
            (
                "KEEL_BOOTSTRAP_ADMIN_PASSWORD",
                "the operator's admin passphrase".into(),
            ),
        ],
        &scratch,
        Duration::from_secs(30),
    );

    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let output = format!("{stdout}{stderr}");
    let why: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("root@example.com"))
        .collect();
    assert_eq!(why.len(), 1, "{output}");
    assert!(
        why[0].contains(
            "bootstrap admin root@example.com exists and the given password does not match; \
             not promoting"
        ),
        "{output}"
    );
    assert!(!output.contains("admin passphrase"), "{output}");
    let client = db.pool().get().await.unwrap();
    let roles: Vec<String> = client
        .query_one("SELECT roles FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, ["customer"]);
}

/// Runs the binary (`serve`) with `env`, its output in files under
/// `scratch`; kills it if it is still running after `within` (a service
/// that should have refused to start is serving).
fn run_with_deadline(
    env: &[(&str, String)],
    scratch: &Scratch,
    within: Duration,
) -> (Option<i32>, String, String) {
    let (out, err) = (scratch.path("stdout"), scratch.path("stderr"));
    let mut command = std::process::Command::new(BINARY);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the binary runs");
    let deadline = std::time::Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    (status.code(), read(&out), read(&err))
}

/// A scratch folder outside the checkout, removed on drop: the binary keeps
/// its development key there instead of in the crate folder.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "keel-auth-process-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
