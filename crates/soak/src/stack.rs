//! The stack under test: six service processes (two gateways, two workers,
//! auth, analytics) whose PostgreSQL, Redis and RabbitMQ connections all
//! pass through fault proxies this process controls, and the servers
//! themselves, restarted through `scripts/lib/soak-ctl.sh`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use keel_testkit::proxy::TcpProxy;
use tokio::process::{Child, Command};

/// A service binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Auth,
    Analytics,
    Worker,
    Gateway,
}

impl Kind {
    pub fn binary(self) -> &'static str {
        match self {
            Kind::Auth => "auth",
            Kind::Analytics => "analytics",
            Kind::Worker => "worker",
            Kind::Gateway => "api-gateway",
        }
    }
}

/// A backing server, and the proxy the services reach it through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dependency {
    Postgres,
    Redis,
    Rabbitmq,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Dependency::Postgres => "postgres",
            Dependency::Redis => "redis",
            Dependency::Rabbitmq => "rabbitmq",
        }
    }
}

/// Where the real servers listen and how to reach the stack's data.
#[derive(Debug, Clone)]
pub struct Servers {
    pub pg_port: u16,
    pub redis_port: u16,
    pub amqp_port: u16,
    pub database: String,
    /// `scripts/lib/soak-ctl.sh`: restarts a server (its environment,
    /// set by `scripts/soak`, names the folder and ports).
    pub ctl: PathBuf,
}

impl Servers {
    /// The database, directly (the checker and poison injection: never
    /// through a proxy).
    pub fn direct_database_url(&self) -> String {
        format!(
            "postgres://keel@127.0.0.1:{}/{}",
            self.pg_port, self.database
        )
    }

    /// Restarts `dependency` (`pg_ctl restart -m immediate` for
    /// PostgreSQL; stop and start for the others) and waits for it.
    pub async fn restart(&self, dependency: Dependency) -> Result<()> {
        let status = Command::new("bash")
            .arg(&self.ctl)
            .arg(format!("restart-{}", dependency.name()))
            .stdin(Stdio::null())
            .status()
            .await
            .with_context(|| format!("running {}", self.ctl.display()))?;
        if !status.success() {
            bail!(
                "{} restart-{} failed: {status}",
                self.ctl.display(),
                dependency.name()
            );
        }
        Ok(())
    }
}

/// One running (or stopped) service process.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub kind: Kind,
    pub port: u16,
    child: Option<Child>,
    /// `RUNDIR/<name>.pid`: `scripts/soak` stops whatever it names on exit,
    /// even when this process dies first.
    pidfile: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    binary: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .arg("serve")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KEEL_HTTP__PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        if let Some(pid) = child.id() {
            std::fs::write(&self.pidfile, pid.to_string())?;
        }
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`, reaped.
    pub async fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a hung process.
    pub async fn freeze(&self, stop: bool) -> Result<()> {
        let Some(pid) = self.pid() else {
            bail!("{} is not running", self.name)
        };
        let signal = if stop { "-STOP" } else { "-CONT" };
        Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await?;
        Ok(())
    }

    /// SIGTERM, then waits (graceful drain), then kills.
    pub async fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status()
                    .await;
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        let _ = std::fs::remove_file(&self.pidfile);
    }

    /// How the process ended, if it exited on its own (a crash the
    /// schedule did not cause).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited on its own: {status}", self.name)),
            _ => None,
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.spawn()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The proxies and the processes.
#[derive(Debug)]
pub struct Stack {
    pub servers: Servers,
    pub proxies: BTreeMap<Dependency, TcpProxy>,
    pub procs: Vec<Proc>,
    pub namespace: String,
}

/// How `Stack::start` lays things out.
#[derive(Debug, Clone)]
pub struct Layout {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub run_dir: PathBuf,
    pub ports: Vec<u16>,
    pub namespace: String,
}

impl Stack {
    /// Starts the proxies, then auth, analytics, two workers and two
    /// gateways (the environment `scripts/soak` exported, with the
    /// dependency URLs pointed at the proxies), each ready before the next.
    pub async fn start(servers: Servers, layout: &Layout) -> Result<Stack> {
        let mut proxies = BTreeMap::new();
        for (dependency, port) in [
            (Dependency::Postgres, servers.pg_port),
            (Dependency::Redis, servers.redis_port),
            (Dependency::Rabbitmq, servers.amqp_port),
        ] {
            let upstream = SocketAddr::from(([127, 0, 0, 1], port));
            proxies.insert(dependency, TcpProxy::start(upstream).await);
        }
        let via = |d: Dependency| proxies[&d].addr().port();
        let env = vec![
            (
                "KEEL_DATABASE__URL".to_owned(),
                format!(
                    "postgres://keel@127.0.0.1:{}/{}",
                    via(Dependency::Postgres),
                    servers.database
                ),
            ),
            (
                "KEEL_REDIS__URL".to_owned(),
                format!("redis://127.0.0.1:{}", via(Dependency::Redis)),
            ),
            (
                "KEEL_AMQP__URL".to_owned(),
                format!(
                    "amqp://guest:guest@127.0.0.1:{}/%2f",
                    via(Dependency::Rabbitmq)
                ),
            ),
        ];
        let plan = [
            ("auth", Kind::Auth),
            ("analytics", Kind::Analytics),
            ("worker-1", Kind::Worker),
            ("worker-2", Kind::Worker),
            ("gateway-1", Kind::Gateway),
            ("gateway-2", Kind::Gateway),
        ];
        if layout.ports.len() < plan.len() {
            bail!("{} ports given, {} needed", layout.ports.len(), plan.len());
        }
        let mut stack = Stack {
            servers,
            proxies,
            procs: Vec::new(),
            namespace: layout.namespace.clone(),
        };
        for ((name, kind), port) in plan.into_iter().zip(&layout.ports) {
            let mut proc = Proc {
                name: name.to_owned(),
                kind,
                port: *port,
                child: None,
                pidfile: layout.run_dir.join(format!("{name}.pid")),
                log: layout.log_dir.join(format!("{name}.log")),
                env: env.clone(),
                binary: layout.bin_dir.join(kind.binary()),
            };
            proc.spawn()?;
            stack.procs.push(proc);
            let index = stack.procs.len() - 1;
            stack.wait_ready(index, Duration::from_secs(90)).await?;
        }
        Ok(stack)
    }

    pub fn gateways(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.kind == Kind::Gateway)
            .map(|p| p.url(""))
            .collect()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.procs.iter().position(|p| p.name == name)
    }

    /// Waits for `/readyz` 200 of one process.
    pub async fn wait_ready(&self, index: usize, within: Duration) -> Result<()> {
        let proc = &self.procs[index];
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(response) = client.get(proc.url("/readyz")).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after {within:?}; log tail:\n{}",
                    proc.name,
                    proc.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(&mut self) {
        // Reverse start order: gateways first, so nothing is accepted that
        // the workers could not take.
        for proc in self.procs.iter_mut().rev() {
            proc.terminate().await;
        }
    }
}
