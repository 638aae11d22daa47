//! The auth binary as operators run it, against real servers.

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::{ServiceProcess, assert_operational_contract, run_to_exit};
use keel_testkit::redis::TestRedis;

const BINARY: &str = env!("CARGO_BIN_EXE_auth");

#[tokio::test]
async fn it_serves_the_operational_endpoints_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::create(auth::SCHEMA, &auth::startup::migrations()).await;
    let redis = TestRedis::new();
    let broker = TestBroker::new().await;
    let env = [
        ("KEEL_DATABASE__URL", db.url()),
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
