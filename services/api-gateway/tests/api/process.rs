//! The binary as operators run it: configuration errors and signals.

use std::time::Duration;

use keel_testkit::broker::TestBroker;
use keel_testkit::database::TestDatabase;
use keel_testkit::process::{ServiceProcess, assert_operational_contract, run_to_exit};
use keel_testkit::redis::TestRedis;

const BINARY: &str = env!("CARGO_BIN_EXE_api-gateway");

#[test]
fn a_bad_configuration_value_exits_2_with_one_line_naming_the_key() {
    let (code, stderr) = run_to_exit(BINARY, &[("KEEL_HTTP__PORT", "eighty")]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("http.port"), "{stderr}");
}

#[test]
fn a_semantically_invalid_value_is_refused_with_its_key() {
    let (code, stderr) = run_to_exit(BINARY, &[("KEEL_TELEMETRY__SAMPLE_RATIO", "1.5")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("telemetry.sample_ratio"), "{stderr}");
}

#[tokio::test]
async fn it_serves_the_operational_endpoints_and_stops_cleanly_on_sigterm() {
    let db = TestDatabase::create(api_gateway::SCHEMA, &api_gateway::startup::migrations()).await;
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

    assert_operational_contract(
        &service,
        api_gateway::SERVICE,
        &["postgres", "rabbitmq", "redis"],
    )
    .await;

    let status = service.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    broker.cleanup().await;
}
