//! A service binary run as operators run it: a separate process with
//! `KEEL_*` environment variables, probed over HTTP, stopped by a signal.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct ServiceProcess {
    child: Child,
    port: u16,
}

impl ServiceProcess {
    /// Starts `binary` on a free port with `env` and waits until `/readyz`
    /// answers 200 (panics after `within`).
    pub async fn start(binary: &str, env: &[(&str, String)], within: Duration) -> Self {
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .env("KEEL_HTTP__PORT", port.to_string())
            .env("KEEL_TELEMETRY__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("service binary starts");
        let process = Self { child, port };
        process.wait_ready(within).await;
        process
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&self, within: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = client.get(self.url("/readyz")).send().await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "service on port {} not ready within {within:?}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self, within: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM delivered");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "service did not stop within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // A test that panicked before terminate(): never leave a stray server.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago (the OS does not reuse it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("an ephemeral port is available")
}

/// Asserts the operational contract every Keel service keeps: `/healthz`
/// 200, `/readyz` 200 listing exactly `dependencies` as ok, `/metrics` with
/// the service's build info, and unknown paths as a problem+json 404.
pub async fn assert_operational_contract(
    process: &ServiceProcess,
    service: &str,
    dependencies: &[&str],
) {
    let client = reqwest::Client::new();

    let health = client.get(process.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let ready: serde_json::Value = client
        .get(process.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checks = ready["checks"].as_object().expect("checks object");
    let mut names: Vec<&str> = checks.keys().map(String::as_str).collect();
    names.sort_unstable();
    let mut expected = dependencies.to_vec();
    expected.sort_unstable();
    assert_eq!(names, expected, "{ready}");
    assert!(checks.values().all(|c| c["status"] == "ok"), "{ready}");

    let metrics = client
        .get(process.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("keel_build_info{{service=\"{service}\"")),
        "{metrics}"
    );

    let missing = client.get(process.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["content-type"],
        "application/problem+json"
    );
}

/// Runs `binary` with `env` and returns its exit code and standard error,
/// for configuration-error tests that never reach serving.
pub fn run_to_exit(binary: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(binary);
    command.stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("binary runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
