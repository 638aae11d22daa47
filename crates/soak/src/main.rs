//! `keel-soak`: the chaos soak's driver and ledger checker. Started by
//! `scripts/soak`, which runs the servers, builds and migrates; this binary
//! starts the six service processes behind its fault proxies, drives the
//! load, injects the fault schedule, waits for quiet and proves (or
//! refutes) that nothing acknowledged was lost or applied twice.
//!
//! Exit codes: 0 pass; 1 an acknowledged write lost or doubled, or a
//! process's memory past its cap; 2 the soak could not run; 3 (with
//! `--strict`) another invariant broken.

mod check;
mod faults;
mod ledger;
mod load;
mod report;
mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::check::{Broker, eprintln_soak};
use crate::faults::{Poison, ROUND, Timing};
use crate::load::{Secrets, Shared};
use crate::report::{Findings, Memory};
use crate::stack::{Layout, Servers, Stack};

#[derive(Debug, Parser)]
#[command(about = "Chaos soak with a ledger checker (run through scripts/soak)")]
struct Args {
    /// Load duration: `150s`, `5m`, `30m`. Every fault kind is injected at
    /// least once; longer runs repeat the round of faults.
    #[arg(long, default_value = "150s", value_parser = parse_duration)]
    duration: Duration,
    /// Also write the report as markdown here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the service binaries are.
    #[arg(long)]
    bin_dir: PathBuf,
    #[arg(long)]
    log_dir: PathBuf,
    /// Pidfiles of the service processes (scripts/soak stops them on exit).
    #[arg(long)]
    run_dir: PathBuf,
    /// Six HTTP ports: auth, analytics, worker-1, worker-2, gateway-1, gateway-2.
    #[arg(long, value_delimiter = ',', required = true)]
    ports: Vec<u16>,
    #[arg(long)]
    namespace: String,
    #[arg(long)]
    pg_port: u16,
    #[arg(long)]
    redis_port: u16,
    #[arg(long)]
    amqp_port: u16,
    /// RabbitMQ management API with credentials.
    #[arg(long)]
    management_url: String,
    #[arg(long)]
    database: String,
    /// The server control script (scripts/lib/soak-ctl.sh).
    #[arg(long)]
    ctl: PathBuf,
    /// A process whose resident memory passes this fails the run.
    #[arg(long, default_value_t = 1024)]
    memory_cap_mib: u64,
    /// How long the system may take to become quiet after the faults.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    drain_bound: Duration,
    /// Fail (exit 3) on any broken invariant, not only on loss, double or memory.
    #[arg(long)]
    strict: bool,
    /// Leave out the faults whose kind contains this (repeatable; a
    /// diagnosis aid: the run then no longer injects every kind).
    #[arg(long)]
    without: Vec<String>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text}"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("not a duration: {text} (use 90s, 5m, 1h)")),
    };
    Ok(Duration::from_secs(seconds))
}

fn main() {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln_soak(&format!("no runtime: {error}"));
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async {
        match run(args).await {
            Ok(code) => code,
            Err(error) => {
                eprintln_soak(&format!("the soak could not run: {error:#}"));
                2
            }
        }
    });
    std::process::exit(code);
}

fn sample_memory(stack: &Stack, memory: &mut BTreeMap<String, Memory>) {
    for proc in &stack.procs {
        if let Some(kib) = proc.rss_kib() {
            let m = memory.entry(proc.name.clone()).or_insert(Memory {
                first_kib: kib,
                ..Memory::default()
            });
            m.peak_kib = m.peak_kib.max(kib);
            m.last_kib = kib;
        }
    }
}

async fn run(args: Args) -> Result<i32> {
    let servers = Servers {
        pg_port: args.pg_port,
        redis_port: args.redis_port,
        amqp_port: args.amqp_port,
        database: args.database.clone(),
        ctl: args.ctl.clone(),
    };
    let layout = Layout {
        bin_dir: args.bin_dir.clone(),
        log_dir: args.log_dir.clone(),
        run_dir: args.run_dir.clone(),
        ports: args.ports.clone(),
        namespace: args.namespace.clone(),
    };
    let secrets = Secrets::from_env()?;
    let db_url = servers.direct_database_url();
    eprintln_soak("starting auth, analytics, 2 workers, 2 gateways behind fault proxies");
    let mut stack = Stack::start(servers, &layout).await?;
    let result = soak(&args, &mut stack, &db_url, secrets).await;
    eprintln_soak("stopping the services");
    stack.stop().await;
    result
}

async fn soak(args: &Args, stack: &mut Stack, db_url: &str, secrets: Secrets) -> Result<i32> {
    let shared = Arc::new(Shared::new(stack.gateways(), secrets, 4)?);
    load::setup_users(&shared)
        .await
        .context("setting up users")?;
    let mut tasks = Vec::new();
    let pace = Duration::from_millis;
    tasks.push(tokio::spawn(load::webhooks(shared.clone(), pace(40))));
    tasks.push(tokio::spawn(load::webhooks(shared.clone(), pace(40))));
    tasks.push(tokio::spawn(load::orders(shared.clone(), pace(60))));
    tasks.push(tokio::spawn(load::orders(shared.clone(), pace(60))));
    tasks.push(tokio::spawn(load::exports(shared.clone(), pace(3_000))));
    tasks.push(tokio::spawn(load::sessions(shared.clone(), pace(700))));
    tasks.push(tokio::spawn(load::analytics(shared.clone(), pace(500))));

    let mut memory = BTreeMap::new();
    let long_form = args.duration.as_secs() >= faults::LONG_FORM_SECS;
    let long_secs: u64 = if long_form {
        faults::LONG.iter().map(|f| f.long_secs()).sum()
    } else {
        0
    };
    let rounds = ((args.duration.as_secs().saturating_sub(long_secs)) / 150).max(1) as usize;
    let schedule: Vec<_> = (0..rounds)
        .flat_map(|round| {
            let mut faults = ROUND.to_vec();
            if long_form && round == 1 {
                faults.insert(ROUND.len() / 2, faults::LONG[0]);
                faults.push(faults::LONG[1]);
            }
            faults
        })
        .filter(|fault| {
            !args
                .without
                .iter()
                .any(|w| fault.kind().contains(w.as_str()))
        })
        .collect();
    if schedule.is_empty() {
        bail!("--without left no fault to inject");
    }
    // The long outages take their own time; the other faults share the rest.
    let slot = args.duration.saturating_sub(Duration::from_secs(long_secs)) / schedule.len() as u32;
    let timing = Timing {
        hold: (slot / 2).clamp(Duration::from_secs(2), Duration::from_secs(8)),
        latency: Duration::from_millis(250),
        recovery_bound: Duration::from_secs(90),
    };
    let mut poison = Poison::default();
    let mut records = Vec::new();
    let load_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, fault) in schedule.iter().enumerate() {
        let long_so_far: u64 = schedule[..=i].iter().map(|f| f.long_secs()).sum();
        let slot_end = load_started + slot * (i as u32 + 1) + Duration::from_secs(long_so_far);
        eprintln_soak(&format!(
            "t+{}s fault {}/{}: {} {}",
            shared.now_ms() / 1000,
            i + 1,
            schedule.len(),
            fault.kind(),
            fault.target()
        ));
        let record = faults::inject(*fault, stack, &shared, db_url, &mut poison, timing).await;
        if record.recovered_ms.is_none() {
            eprintln_soak(&format!(
                "  not recovered within {:?}",
                timing.recovery_bound
            ));
        }
        records.push(record);
        sample_memory(stack, &mut memory);
        while Instant::now() < slot_end {
            tokio::time::sleep(Duration::from_secs(1)).await;
            sample_memory(stack, &mut memory);
        }
    }
    eprintln_soak("faults done; load finishing its retries");
    shared.stopping.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(60), task).await;
    }
    let duration_s = load_started.elapsed().as_secs();

    eprintln_soak("waiting for quiet (outbox, webhook events, queues)");
    let broker = Broker {
        management_url: args.management_url.clone(),
        namespace: stack.namespace.clone(),
    };
    // A fresh connection: the faults restarted PostgreSQL under any older one.
    let db = &check::connect(db_url).await?;
    let (backlog, drained) =
        check::wait_quiet(db, &broker, &shared.client, &poison, args.drain_bound).await;
    sample_memory(stack, &mut memory);

    eprintln_soak("checking the ledger");
    let crashed: Vec<String> = stack.procs.iter_mut().filter_map(|p| p.exited()).collect();
    let observed = check::observe(db, &shared, &poison).await?;
    let ledger = shared.ledger().clone();
    let tally = ledger::reconcile(&ledger, &observed);
    let (dl_found, dl_missing, dl_unexpected) = check::dead_letters(db, &poison).await?;
    let findings = Findings {
        duration_s,
        samples: shared.samples(),
        acknowledged: ledger.acknowledged(),
        gave_up: shared.gave_up.load(Ordering::Relaxed),
        tally,
        records,
        drain_s: drained.as_secs(),
        backlog: backlog.describe(),
        quiet: backlog.quiet(),
        analytics_mismatches: check::analytics_rebuild(db).await?,
        dead_letters_expected: dl_found,
        dead_letters_missing: dl_missing,
        dead_letters_unexpected: dl_unexpected,
        unroutable: check::unroutable_rows(db, &poison)
            .await?
            .into_iter()
            .map(|(id, dropped, state)| (id.to_string(), dropped, state))
            .collect(),
        memory,
        memory_cap_mib: args.memory_cap_mib,
        crashed,
    };
    let screen = findings.render(false);
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(screen.as_bytes());
        let _ = out.flush();
    }
    if let Some(path) = &args.report {
        std::fs::write(path, findings.render(true))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !findings.tally.lost.is_empty()
        || !findings.tally.doubled.is_empty()
        || !findings.memory_unbounded().is_empty()
    {
        return Ok(1);
    }
    if args.strict && !findings.violations().is_empty() {
        return Ok(3);
    }
    if shared.requests.load(Ordering::Relaxed) == 0 {
        bail!("no request was sent");
    }
    Ok(0)
}
