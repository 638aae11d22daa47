//! Load generator for `scripts/bench auth` (keel-loadgen repeats one fixed
//! request; refresh rotation needs each request to carry the previous
//! answer's token). Prints one JSON object like keel-loadgen's report.
//!
//!   auth-bench hash    [--memory-kib N --iterations N --parallelism N] [-n N]
//!   auth-bench refresh --url URL [-c N] [-d SECONDS]
//!   auth-bench login   --url URL [-c N] [-d SECONDS]

#![allow(clippy::print_stdout, reason = "the report goes to stdout")]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Raw argon2id hashes, one at a time: the login baseline.
    Hash {
        #[arg(long, default_value_t = 19456)]
        memory_kib: u32,
        #[arg(long, default_value_t = 2)]
        iterations: u32,
        #[arg(long, default_value_t = 1)]
        parallelism: u32,
        #[arg(short, default_value_t = 50)]
        n: usize,
    },
    /// Refresh-token rotations: each connection refreshes with the token
    /// its previous refresh returned.
    Refresh(Load),
    /// Logins of one account (successful, so never throttled).
    Login(Load),
}

#[derive(Debug, clap::Args)]
struct Load {
    #[arg(long)]
    url: String,
    #[arg(short, default_value_t = 16)]
    c: usize,
    #[arg(short, default_value_t = 10.0)]
    d: f64,
}

const PASSWORD: &str = "bench horse battery staple";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let report = match Cli::parse().mode {
        Mode::Hash {
            memory_kib,
            iterations,
            parallelism,
            n,
        } => hash(memory_kib, iterations, parallelism, n)?,
        Mode::Refresh(load) => run(load, true).await?,
        Mode::Login(load) => run(load, false).await?,
    };
    println!("{report}");
    Ok(())
}

fn hash(memory_kib: u32, iterations: u32, parallelism: u32, n: usize) -> anyhow::Result<Value> {
    let hasher = auth::passwords::Hasher::new(&auth::settings::PasswordSettings {
        memory_kib,
        iterations,
        parallelism,
        max_concurrent_hashes: 1,
    })?;
    let mut latencies = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        hasher.hash_blocking(PASSWORD)?;
        latencies.push(t.elapsed());
    }
    Ok(summary(latencies, started.elapsed(), 0, 1))
}

async fn run(load: Load, refresh: bool) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
    let status = client
        .post(format!("{}/api/v1/auth/register", load.url))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?
        .status();
    if !status.is_success() {
        bail!("register answered {status}");
    }
    let until = Instant::now() + Duration::from_secs_f64(load.d);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..load.c {
        let (client, url, email) = (client.clone(), load.url.clone(), email.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut token = login(&client, &url, &email).await?.1;
            while Instant::now() < until {
                let t = Instant::now();
                let outcome = if refresh {
                    client
                        .post(format!("{url}/api/v1/auth/refresh"))
                        .json(&json!({"refresh_token": token}))
                        .send()
                        .await
                } else {
                    client
                        .post(format!("{url}/api/v1/auth/login"))
                        .json(&json!({"email": email, "password": PASSWORD}))
                        .send()
                        .await
                };
                match outcome {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await?;
                        if refresh {
                            token = body["refresh_token"]
                                .as_str()
                                .context("no refresh_token")?
                                .to_owned();
                        }
                        latencies.push(t.elapsed());
                    }
                    _ => {
                        errors += 1;
                        token = login(&client, &url, &email).await?.1;
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await??;
        all.extend(latencies);
        errors += e;
    }
    Ok(summary(all, started.elapsed(), errors, load.c))
}

async fn login(
    client: &reqwest::Client,
    url: &str,
    email: &str,
) -> anyhow::Result<(String, String)> {
    let body: Value = client
        .post(format!("{url}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok((
        body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned(),
        body["refresh_token"]
            .as_str()
            .context("no refresh_token")?
            .to_owned(),
    ))
}

fn summary(
    mut latencies: Vec<Duration>,
    elapsed: Duration,
    errors: u64,
    connections: usize,
) -> Value {
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let q = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| ms(*d))
    };
    json!({
        "rate": latencies.len() as f64 / elapsed.as_secs_f64(),
        "p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99),
        "max_ms": latencies.last().map(|d| ms(*d)),
        "errors": errors, "connections": connections, "count": latencies.len(),
    })
}
