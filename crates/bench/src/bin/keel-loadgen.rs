//! `keel-loadgen`: an HTTP/1.1 keep-alive load generator.
//!
//! Opens N connections, each sending one request at a time (closed loop), or
//! paced to a fixed total rate (open loop: latency is measured from the time a
//! request *should* have been sent, so a stalled server is not hidden by
//! coordinated omission). Prints a single JSON object on stdout, so scripts can
//! read it with `jq` or `python3 -c 'import json'`.
//!
//! When `--target-pid` is given, the CPU time (user + system) the target
//! processes spent during the measurement is read from `/proc/PID/stat`, so a
//! report can show CPU milliseconds per request next to requests per second.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// HTTP/1.1 keep-alive load generator that prints one JSON object.
#[derive(Debug, Parser)]
#[command(name = "keel-loadgen", version)]
struct Args {
    /// Target URL (http only), e.g. `http://127.0.0.1:8080/healthz`.
    url: String,

    /// Number of concurrent keep-alive connections.
    #[arg(short = 'c', long, default_value_t = 64)]
    connections: u64,

    /// Measurement duration in seconds (ignored when --requests is given).
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,

    /// Stop after this many requests instead of after a duration.
    #[arg(short = 'n', long)]
    requests: Option<u64>,

    /// Keep sending until SIGTERM or SIGINT arrives (and, with --requests, at
    /// least that many have been sent), then report: for a load that must
    /// outlast an operation of unknown length, such as a rollout.
    #[arg(long)]
    until_signal: bool,

    /// Target total rate in requests per second (open loop). Default: as fast
    /// as the server answers (closed loop).
    #[arg(short = 'r', long)]
    rate: Option<f64>,

    /// Warm-up seconds before measuring (requests are sent but not recorded).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,

    /// HTTP method.
    #[arg(short = 'm', long, default_value = "GET")]
    method: String,

    /// Extra header, `Name: value`; repeatable (e.g. `-H 'Authorization: Bearer ...'`).
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,

    /// A header whose value is unique to each request (`<run id>-<n>`), for
    /// servers that de-duplicate on it (webhook delivery ids); repeatable.
    #[arg(long = "unique-header")]
    unique_headers: Vec<String>,

    /// Request body (sent with every request).
    #[arg(short = 'b', long, conflicts_with = "body_file")]
    body: Option<String>,

    /// Read the request body from this file.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,

    /// Replace every occurrence of this text in the body with a number unique
    /// to the request (and to this run), e.g. `-b '{"id":ORDER_ID}'
    /// --unique-body-token ORDER_ID`: each webhook then names its own order.
    #[arg(long)]
    unique_body_token: Option<String>,

    /// Sign each request's final body as Shopify does (`X-Shopify-Hmac-Sha256`,
    /// base64 HMAC-SHA256) with this secret; needed with --unique-body-token,
    /// whose bodies differ per request.
    #[arg(long)]
    shopify_secret: Option<String>,

    /// Tokio worker threads for the generator itself.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,

    /// PID of a process whose CPU time (user+sys) to measure; repeatable.
    #[arg(long = "target-pid")]
    target_pids: Vec<u32>,

    /// Per-request timeout in seconds (a timeout counts as a transport error).
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
}

/// Everything one request needs, shared by all connections.
#[derive(Debug)]
struct Plan {
    host: String,
    port: u16,
    authority: String,
    path: Uri,
    method: Method,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Sent with `<unique_prefix>-<counter>`, a fresh value per request.
    unique_headers: Vec<HeaderName>,
    unique_prefix: String,
    counter: std::sync::atomic::AtomicU64,
    body: Bytes,
    /// The body split at each unique token (a single part when there is none).
    body_parts: Option<Vec<String>>,
    /// Shopify numbers in unique bodies start here: distinct across runs.
    body_base: u64,
    shopify_secret: Option<String>,
    timeout: Duration,
    /// Gap between two requests of one connection, when a rate is set.
    interval: Option<Duration>,
}

/// What one connection task measured.
#[derive(Debug)]
struct TaskResult {
    histogram: Histogram<u64>,
    ok: u64,
    status_errors: u64,
    transport_errors: u64,
    first_error: Option<String>,
}

/// The JSON printed at the end.
#[derive(Debug, Serialize)]
struct Report {
    url: String,
    method: String,
    connections: u64,
    target_rate: Option<f64>,
    requests: u64,
    ok: u64,
    errors: u64,
    errors_status: u64,
    errors_transport: u64,
    first_error: Option<String>,
    duration_s: f64,
    rps: f64,
    latency_mean_ms: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    target_pids: Vec<u32>,
    target_cpu_s: Option<f64>,
    target_cpu_ms_per_request: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let report = runtime.block_on(run(args))?;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report).context("writing the report")?;
    writeln!(out).context("writing the report")?;
    Ok(())
}

async fn run(args: Args) -> Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let plan = Arc::new(build_plan(&args)?);

    if args.warmup > 0.0 {
        let until = Instant::now() + Duration::from_secs_f64(args.warmup);
        run_load(&plan, args.connections, Stop::At(until), None).await?;
    }

    let cpu_before = cpu_seconds(&args.target_pids)?;
    let started = Instant::now();
    let stop = match (args.until_signal, args.requests) {
        (true, minimum) => Stop::Signalled {
            signalled: stop_on_signal()?,
            sent: Arc::new(AtomicU64::new(0)),
            minimum: minimum.unwrap_or(0),
        },
        (false, Some(n)) => Stop::Count(Arc::new(AtomicU64::new(n))),
        (false, None) => Stop::At(started + Duration::from_secs_f64(args.duration)),
    };
    let results = run_load(&plan, args.connections, stop, Some(started)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(&args.target_pids)?;

    let mut histogram = new_histogram()?;
    let (mut ok, mut status_errors, mut transport_errors) = (0, 0, 0);
    let mut first_error = None;
    for r in results {
        histogram.add(&r.histogram).context("merging histograms")?;
        ok += r.ok;
        status_errors += r.status_errors;
        transport_errors += r.transport_errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let requests = ok + status_errors + transport_errors;
    let ms = |micros: u64| micros as f64 / 1000.0;
    let target_cpu_s = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(Report {
        url: args.url,
        method: plan.method.to_string(),
        connections: args.connections,
        target_rate: args.rate,
        requests,
        ok,
        errors: status_errors + transport_errors,
        errors_status: status_errors,
        errors_transport: transport_errors,
        first_error,
        duration_s: elapsed,
        rps: if elapsed > 0.0 {
            requests as f64 / elapsed
        } else {
            0.0
        },
        latency_mean_ms: histogram.mean() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p95_ms: ms(histogram.value_at_quantile(0.95)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        max_ms: ms(histogram.max()),
        target_pids: args.target_pids,
        target_cpu_s,
        target_cpu_ms_per_request: target_cpu_s
            .filter(|_| requests > 0)
            .map(|s| s * 1000.0 / requests as f64),
    })
}

fn build_plan(args: &Args) -> Result<Plan> {
    let uri: Uri = args.url.parse().context("parsing the URL")?;
    if uri.scheme_str() != Some("http") {
        bail!("only http:// URLs are supported, got {}", args.url);
    }
    let host = uri.host().context("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .context("the URL has no authority")?;
    let path: Uri = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .context("parsing the URL path")?;
    let method: Method = args
        .method
        .to_uppercase()
        .parse()
        .context("parsing --method")?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<Result<Vec<_>>>()?;
    let unique_headers = args
        .unique_headers
        .iter()
        .map(|name| HeaderName::try_from(name.trim()).context("parsing --unique-header"))
        .collect::<Result<Vec<_>>>()?;
    // Distinct across runs too: the process id and the start time.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let unique_prefix = format!("{}-{started}", std::process::id());
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Bytes::from(b.clone()),
        (None, Some(f)) => {
            Bytes::from(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?)
        }
        (None, None) => Bytes::new(),
    };
    let body_parts = match &args.unique_body_token {
        Some(token) if !token.is_empty() => {
            let text =
                std::str::from_utf8(&body).context("--unique-body-token needs a UTF-8 body")?;
            if !text.contains(token.as_str()) {
                bail!("the body does not contain the --unique-body-token {token:?}");
            }
            Some(text.split(token.as_str()).map(str::to_owned).collect())
        }
        Some(_) => bail!("--unique-body-token must not be empty"),
        None => None,
    };
    // 10^14 + (start in ms mod 10^9) * 10^6 + n: below 2^53 (JSON numbers
    // stay exact), and two runs started a millisecond apart only meet after
    // a million requests.
    let started_ms = u64::try_from(started / 1_000_000).unwrap_or(u64::MAX);
    let body_base = 100_000_000_000_000 + (started_ms % 1_000_000_000) * 1_000_000;
    let interval = match args.rate {
        Some(rate) if rate > 0.0 => Some(Duration::from_secs_f64(args.connections as f64 / rate)),
        Some(_) => bail!("--rate must be positive"),
        None => None,
    };
    Ok(Plan {
        host,
        port,
        authority,
        path,
        method,
        headers,
        unique_headers,
        unique_prefix,
        counter: std::sync::atomic::AtomicU64::new(0),
        body,
        body_parts,
        body_base,
        shopify_secret: args.shopify_secret.clone(),
        timeout: Duration::from_secs_f64(args.timeout),
        interval,
    })
}

fn parse_header(raw: &str) -> Result<(HeaderName, HeaderValue)> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| anyhow!("header {raw:?} is not `Name: value`"))?;
    Ok((
        HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("bad header name in {raw:?}"))?,
        HeaderValue::from_str(value.trim())
            .with_context(|| format!("bad header value in {raw:?}"))?,
    ))
}

/// When the connections stop sending.
#[derive(Debug, Clone)]
enum Stop {
    At(Instant),
    /// Requests left to send, shared by all connections.
    Count(Arc<AtomicU64>),
    /// Until a signal has arrived and at least `minimum` requests were sent.
    Signalled {
        signalled: Arc<AtomicBool>,
        sent: Arc<AtomicU64>,
        minimum: u64,
    },
}

impl Stop {
    /// Claims the right to send one more request.
    fn take(&self) -> bool {
        match self {
            Stop::At(deadline) => Instant::now() < *deadline,
            Stop::Count(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
            Stop::Signalled {
                signalled,
                sent,
                minimum,
            } => {
                sent.fetch_add(1, Ordering::Relaxed) < *minimum
                    || !signalled.load(Ordering::Relaxed)
            }
        }
    }
}

/// A flag raised by the first SIGTERM or SIGINT.
fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    use tokio::signal::unix::{SignalKind, signal};
    let flag = Arc::new(AtomicBool::new(false));
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let raised = Arc::clone(&flag);
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        raised.store(true, Ordering::Relaxed);
    });
    Ok(flag)
}

/// Runs all connections until `stop`; records latencies when `started` is set.
async fn run_load(
    plan: &Arc<Plan>,
    connections: u64,
    stop: Stop,
    started: Option<Instant>,
) -> Result<Vec<TaskResult>> {
    let base = started.unwrap_or_else(Instant::now);
    let mut tasks = Vec::new();
    for i in 0..connections {
        let plan = Arc::clone(plan);
        let stop = stop.clone();
        // Stagger paced connections so they do not all fire at once.
        let offset = plan
            .interval
            .map(|iv| iv.mul_f64(i as f64 / connections as f64))
            .unwrap_or_default();
        tasks.push(tokio::spawn(connection_loop(plan, stop, base + offset)));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.context("a connection task panicked")??);
    }
    Ok(results)
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(plan: &Plan) -> Result<Sender> {
    let stream = TcpStream::connect((plan.host.as_str(), plan.port))
        .await
        .with_context(|| format!("connecting to {}:{}", plan.host, plan.port))?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake")?;
    // The connection future drives the socket; it ends when the sender is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// One keep-alive connection: sends requests one after another, reconnecting
/// after a transport error.
async fn connection_loop(plan: Arc<Plan>, stop: Stop, first_at: Instant) -> Result<TaskResult> {
    let mut result = TaskResult {
        histogram: new_histogram()?,
        ok: 0,
        status_errors: 0,
        transport_errors: 0,
        first_error: None,
    };
    let mut sender: Option<Sender> = None;
    let mut scheduled = first_at;
    while stop.take() {
        // Open loop: wait for this request's slot. When the previous answer
        // came back after the slot, the server caused the delay and latency is
        // measured from the slot (no coordinated omission); when we had to
        // sleep, it is measured from the actual send so the timer's ~1 ms
        // granularity is not charged to the server.
        let t0 = if let Some(interval) = plan.interval {
            let slot = scheduled;
            scheduled += interval;
            if matches!(&stop, Stop::At(deadline) if slot >= *deadline) {
                break;
            }
            if Instant::now() >= slot {
                slot
            } else {
                tokio::time::sleep_until(slot).await;
                Instant::now()
            }
        } else {
            Instant::now()
        };
        let outcome = tokio::time::timeout(plan.timeout, send_one(&plan, &mut sender)).await;
        let latency = t0.elapsed();
        match outcome {
            Ok(Ok(status)) if status < 400 => result.ok += 1,
            Ok(Ok(status)) => {
                result.status_errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("HTTP status {status}"));
            }
            Ok(Err(e)) => {
                result.transport_errors += 1;
                result.first_error.get_or_insert_with(|| format!("{e:#}"));
                sender = None;
                // Do not spin on a refused connection.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(_) => {
                result.transport_errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| "request timed out".to_owned());
                sender = None;
                continue;
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        result.histogram.saturating_record(micros.max(1));
    }
    Ok(result)
}

/// Sends one request on the connection (opening it if needed) and reads the
/// whole response body, so the connection can be reused.
async fn send_one(plan: &Plan, sender: &mut Option<Sender>) -> Result<u16> {
    let s = match sender {
        Some(s) if !s.is_closed() => s,
        _ => sender.insert(connect(plan).await?),
    };
    s.ready().await.context("waiting for the connection")?;
    let mut builder = Request::builder()
        .method(plan.method.clone())
        .uri(plan.path.clone())
        .header(hyper::header::HOST, plan.authority.as_str());
    for (name, value) in &plan.headers {
        builder = builder.header(name, value);
    }
    // One number per request names it in every unique header and body token.
    let n = plan
        .counter
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    for name in &plan.unique_headers {
        builder = builder.header(name, format!("{}-{n}", plan.unique_prefix));
    }
    let body = match &plan.body_parts {
        Some(parts) => Bytes::from(parts.join(&(plan.body_base + n).to_string())),
        None => plan.body.clone(),
    };
    if let Some(secret) = &plan.shopify_secret {
        builder = builder.header(
            "X-Shopify-Hmac-Sha256",
            keel_webhooks::sign::shopify(secret, &body),
        );
    }
    if !plan.body.is_empty()
        && !plan
            .headers
            .iter()
            .any(|(n, _)| n == hyper::header::CONTENT_TYPE)
    {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(body))
        .context("building the request")?;
    let response = s
        .send_request(request)
        .await
        .context("sending the request")?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .context("reading the response body")?;
    Ok(status)
}

fn new_histogram() -> Result<Histogram<u64>> {
    // Microseconds, 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a histogram")
}

/// Sum of user + system CPU seconds of the given processes (all threads), or
/// `None` when no PID was given.
fn cpu_seconds(pids: &[u32]) -> Result<Option<f64>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let ticks_per_second = clock_ticks();
    let mut total = 0.0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (is the target running?)"))?;
        // The command name (field 2) may contain spaces; fields after its ')' are plain.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unexpected /proc/PID/stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After ')': field 3 is index 0, so utime (14) is index 11 and stime (15) index 12.
        let parse = |i: usize| -> Result<f64> {
            fields
                .get(i)
                .context("short /proc/PID/stat")?
                .parse::<f64>()
                .context("parsing /proc/PID/stat")
        };
        total += (parse(11)? + parse(12)?) / ticks_per_second;
    }
    Ok(Some(total))
}

/// `sysconf(_SC_CLK_TCK)` without unsafe code: ask `getconf`, default 100 (Linux's USER_HZ).
fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}
