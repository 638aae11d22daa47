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

/// With an OTLP endpoint configured, request spans reach the collector
/// (a fake one here, served over real HTTP), flushed at the latest when the
/// process shuts down.
#[tokio::test]
async fn spans_are_exported_to_the_configured_otlp_endpoint() {
    let collector = FakeCollector::start().await;
    let db = TestDatabase::create(api_gateway::SCHEMA, &api_gateway::startup::migrations()).await;
    let redis = TestRedis::new();
    let broker = TestBroker::new().await;
    let env = [
        ("KEEL_DATABASE__URL", db.url()),
        ("KEEL_REDIS__URL", redis.url().to_owned()),
        ("KEEL_REDIS__KEY_PREFIX", redis.prefix().to_owned()),
        ("KEEL_AMQP__URL", keel_testkit::env::amqp_url()),
        ("KEEL_AMQP__NAMESPACE", broker.namespace().to_owned()),
        ("KEEL_TELEMETRY__OTLP_ENDPOINT", collector.url()),
    ];
    let service = ServiceProcess::start(BINARY, &env, Duration::from_secs(30)).await;
    reqwest::get(service.url("/healthz")).await.unwrap();
    let status = service.terminate(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));

    let requests = collector.requests();
    assert!(
        requests
            .iter()
            .any(|(path, body)| path == "/v1/traces" && !body.is_empty()),
        "no spans were exported: {:?}",
        requests
            .iter()
            .map(|(p, b)| (p, b.len()))
            .collect::<Vec<_>>()
    );
    // The protobuf payload carries the service name as a plain string.
    assert!(
        requests
            .iter()
            .any(|(_, body)| body.windows(11).any(|w| w == b"api-gateway")),
        "the exported resource does not name the service"
    );
    broker.cleanup().await;
}

/// `(path, body)` of every request a [`FakeCollector`] received.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// Records every POST it receives and answers 200, like an OTLP/HTTP collector.
struct FakeCollector {
    addr: std::net::SocketAddr,
    received: Received,
}

impl FakeCollector {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Received::default();
        let sink = received.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    // One request per connection is enough for the exporter's
                    // flushes; read the head, then exactly Content-Length bytes.
                    let mut buffer = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while buffer.len() < head_end + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    let body = buffer[head_end..].to_vec();
                    sink.lock().unwrap().push((path, body));
                    let _ = socket
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }
}
