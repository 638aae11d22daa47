//! The analytics binary as operators run it, against real servers.

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::{ServiceProcess, assert_operational_contract, run_to_exit};

const BINARY: &str = env!("CARGO_BIN_EXE_analytics");

#[tokio::test]
async fn it_serves_the_operational_endpoints_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::create(analytics::SCHEMA, &analytics::startup::migrations()).await;
    let broker = TestBroker::new().await;
    let env = [
        ("KEEL_DATABASE__URL", db.url()),
        ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
        ("KEEL_AMQP__NAMESPACE", broker.namespace().to_owned()),
    ];
    let service = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;

    assert_operational_contract(&service, analytics::SERVICE, &["postgres", "rabbitmq"]).await;

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
