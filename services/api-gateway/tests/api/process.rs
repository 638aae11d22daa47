//! The binary as operators run it: configuration errors and signals.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_api-gateway");

#[test]
fn a_bad_configuration_value_exits_2_with_one_line_naming_the_key() {
    let output = Command::new(BINARY)
        .env("KEEL_HTTP__PORT", "eighty")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("http.port"), "{stderr}");
}

#[test]
fn a_semantically_invalid_value_is_refused_with_its_key() {
    let output = Command::new(BINARY)
        .env("KEEL_TELEMETRY__SAMPLE_RATIO", "1.5")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("telemetry.sample_ratio"), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_a_serving_gateway_with_exit_code_0() {
    let db = keel_testkit::database::TestDatabase::create(
        api_gateway::SCHEMA,
        &api_gateway::startup::migrations(),
    )
    .await;
    let redis = keel_testkit::redis::TestRedis::new();
    let broker = keel_testkit::broker::TestBroker::new().await;
    let port = free_port();
    let mut child = Command::new(BINARY)
        .env("KEEL_HTTP__PORT", port.to_string())
        .env("KEEL_DATABASE__URL", db.url())
        .env("KEEL_REDIS__URL", redis.url())
        .env("KEEL_REDIS__KEY_PREFIX", redis.prefix())
        .env("KEEL_AMQP__URL", keel_testkit::env::amqp_url())
        .env("KEEL_AMQP__NAMESPACE", broker.namespace())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let ready_url = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(&ready_url).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "gateway never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "gateway did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    broker.cleanup().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
