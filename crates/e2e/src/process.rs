//! One service binary as a separate process, its logs kept in a file.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_testkit::process::free_port;

/// One service binary of the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Auth,
    Analytics,
    Worker,
    Gateway,
}

impl Service {
    /// Start order: the gateway's upstreams first.
    pub const ALL: [Service; 4] = [
        Service::Auth,
        Service::Analytics,
        Service::Worker,
        Service::Gateway,
    ];

    pub fn binary(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Analytics => "analytics",
            Service::Worker => "worker",
            Service::Gateway => "api-gateway",
        }
    }

    /// The binary next to the test executable: `target/<profile>/deps/<test>`
    /// → `target/<profile>/<binary>`.
    pub fn path(self) -> PathBuf {
        let exe = std::env::current_exe().expect("the test executable has a path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test executable lives in target/<profile>/deps");
        let path = profile_dir.join(self.binary());
        assert!(
            path.is_file(),
            "{} is missing: build the services first (`cargo build --workspace --bins`; \
             `scripts/test` does)",
            path.display()
        );
        path
    }
}

/// A running service process. Dropping it kills the process if it still runs.
#[derive(Debug)]
pub struct Process {
    service: Service,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Process {
    /// Starts `service` on `port` with `env`, logging (stdout and stderr) to
    /// `log`. Does not wait: see [`Process::wait_ready`].
    pub fn spawn(service: Service, port: u16, env: &[(String, String)], log: PathBuf) -> Process {
        let file = File::create(&log).expect("log file");
        let mut command = Command::new(service.path());
        command
            .arg("serve")
            .env("KEEL_HTTP__PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("service binary starts");
        Process {
            service,
            child,
            port,
            log,
        }
    }

    /// [`Process::spawn`] on a free port, then [`Process::wait_ready`].
    pub async fn start(service: Service, env: &[(String, String)], log: PathBuf) -> Process {
        let mut process = Process::spawn(service, free_port(), env, log);
        process.wait_ready(Duration::from_secs(60)).await;
        process
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of this process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `/readyz` answers 200; panics with the log when the
    /// process exits first or `within` passes.
    pub async fn wait_ready(&mut self, within: Duration) {
        let client = reqwest::Client::new();
        let url = self.url("/readyz");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = client.get(&url).send().await
                && response.status() == 200
            {
                return;
            }
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{} did not become ready (exit: {exited:?})\n{}",
                self.service.binary(),
                self.log_tail(30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then waits up to `within` for the exit code (graceful
    /// shutdown exits 0); `None` when it had to be killed.
    pub async fn terminate(mut self, within: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
