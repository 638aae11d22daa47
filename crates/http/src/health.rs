//! Operational endpoints every service serves.
//!
//! `/healthz` is liveness: 200 while the service's runtime makes progress,
//! 503 once its [`Liveness`] heartbeat has stalled (a wedged runtime: every
//! worker thread blocked, a task that never yields). A restart is the cure
//! for that, and only for that, so nothing about dependencies goes here.
//! The endpoint itself is answered by actix's worker threads, which run
//! apart from the runtime the heartbeat (and the service's background work)
//! runs on.
//!
//! `/readyz` is readiness: can this pod serve? It does a real round trip
//! to each dependency, concurrently and each within a budget. A dependency
//! added with [`Readiness::with`] is *required*: every request needs it, so
//! its failure answers 503 naming it and Kubernetes stops routing here
//! (without restarting; the service reconnects by itself). One added with
//! [`Readiness::reporting`] is *reported*: a path already survives its
//! outage (the outbox covers the broker, a fail-open limiter covers Redis),
//! and every replica shares it, so turning pods unready would only unroute
//! the whole fleet. Its failure leaves the answer 200 with the dependency
//! marked `degraded` in the body. Both kinds set the gauge
//! `keel_dependency_up{dependency}` on every probe, so operators and alerts
//! see a reported outage too.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use actix_web::{HttpResponse, web};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::observe::HttpMetrics;

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One dependency probe. The error string is logged, not returned to the client.
pub trait Check: Send + Sync {
    /// `postgres`, `redis`, `rabbitmq`, ...: the name `/readyz` reports.
    fn name(&self) -> &'static str;
    fn check(&self) -> CheckFuture<'_>;
}

/// Whether a failing check makes the pod unready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Every request needs it: failing answers 503.
    Required,
    /// A path survives its outage: failing is reported, the answer stays 200.
    Reported,
}

#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(Arc<dyn Check>, Role)>,
    timeout: Duration,
    /// `keel_dependency_up`, once [`Operational::new`] has registered it.
    up: Option<Family<DependencyLabels, Gauge>>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: &'static str,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .checks
            .iter()
            .map(|(check, role)| (check.name(), role))
            .collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

#[derive(Debug, Serialize)]
struct CheckReport {
    /// `ok`; `error` for a failing required dependency; `degraded` for a
    /// failing reported one.
    status: &'static str,
    /// Whether this dependency's failure makes the pod unready.
    required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

#[derive(Debug, Serialize)]
struct ReadinessReport {
    /// `ok`, `degraded` (200, a reported dependency is down) or
    /// `unavailable` (503, a required one is).
    status: &'static str,
    /// Failing required dependencies: why the pod is unready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<&'static str>,
    /// Failing reported dependencies: the pod still serves.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    degraded: Vec<&'static str>,
    checks: BTreeMap<&'static str, CheckReport>,
}

impl Readiness {
    pub fn new(timeout: Duration) -> Self {
        Self {
            checks: Vec::new(),
            timeout,
            up: None,
        }
    }

    /// Adds a dependency every request needs: while it fails, `/readyz`
    /// answers 503 naming it.
    pub fn with(mut self, check: impl Check + 'static) -> Self {
        self.checks.push((Arc::new(check), Role::Required));
        self
    }

    /// Adds a dependency whose outage a path already survives: while it
    /// fails, `/readyz` still answers 200 and reports it as `degraded`.
    pub fn reporting(mut self, check: impl Check + 'static) -> Self {
        self.checks.push((Arc::new(check), Role::Reported));
        self
    }

    /// Runs every check concurrently; returns the names of the failing
    /// required ones (what makes the pod unready).
    pub async fn failing(&self) -> Vec<&'static str> {
        self.report().await.failing
    }

    fn register(&mut self, registry: &mut Registry) {
        let up = Family::<DependencyLabels, Gauge>::default();
        registry.register(
            "dependency_up",
            "1 when the last /readyz round trip to the dependency succeeded, else 0",
            up.clone(),
        );
        self.up = Some(up);
    }

    async fn report(&self) -> ReadinessReport {
        let results = futures::future::join_all(self.checks.iter().map(|(check, role)| async move {
            let outcome = tokio::time::timeout(self.timeout, check.check()).await;
            let error = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(dependency = check.name(), required = *role == Role::Required, error = %e, "readiness check failed");
                    Some("unreachable")
                }
                Err(_) => {
                    tracing::warn!(dependency = check.name(), required = *role == Role::Required, timeout = ?self.timeout, "readiness check timed out");
                    Some("timeout")
                }
            };
            (check.name(), *role, error)
        }))
        .await;

        let mut report = ReadinessReport {
            status: "ok",
            failing: Vec::new(),
            degraded: Vec::new(),
            checks: BTreeMap::new(),
        };
        for (name, role, error) in results {
            if let Some(up) = &self.up {
                up.get_or_create(&DependencyLabels { dependency: name })
                    .set(i64::from(error.is_none()));
            }
            let status = match (error, role) {
                (None, _) => "ok",
                (Some(_), Role::Required) => {
                    report.failing.push(name);
                    "error"
                }
                (Some(_), Role::Reported) => {
                    report.degraded.push(name);
                    "degraded"
                }
            };
            report.checks.insert(
                name,
                CheckReport {
                    status,
                    required: role == Role::Required,
                    error,
                },
            );
        }
        if !report.failing.is_empty() {
            report.status = "unavailable";
        } else if !report.degraded.is_empty() {
            report.status = "degraded";
        }
        report
    }
}

/// How often the heartbeat ticks.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// The heartbeat `/healthz` reads: a task on the service's runtime stamps
/// the time every second ([`run`](Self::run)); when the last stamp is older
/// than the stall threshold, the runtime is wedged and `/healthz` answers
/// 503. Until the heartbeat runs (a test app serving routes only), the
/// service counts as live.
#[derive(Debug, Clone)]
pub struct Liveness {
    inner: Arc<LivenessState>,
}

#[derive(Debug)]
struct LivenessState {
    origin: Instant,
    /// Milliseconds after `origin` of the last beat, plus one (0: never).
    last_beat: AtomicU64,
    /// Milliseconds without a beat after which the runtime counts as wedged.
    stall_after: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            inner: Arc::new(LivenessState {
                origin: Instant::now(),
                last_beat: AtomicU64::new(0),
                stall_after: AtomicU64::new(u64::MAX),
            }),
        }
    }
}

impl Liveness {
    /// Beats on the runtime this future is spawned on until `shutdown`;
    /// `/healthz` fails once no beat has landed for `stall_after`. Spawn
    /// it on the runtime that does the service's work (the one a wedge
    /// would stop), not on actix's.
    ///
    /// The clock starts at this call, not at the first poll: a runtime
    /// wedged before it ever runs the heartbeat fails liveness too.
    pub fn run(
        self,
        stall_after: Duration,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        self.inner
            .stall_after
            .store(millis(stall_after), Ordering::Relaxed);
        self.beat();
        async move {
            let mut ticks = tokio::time::interval(HEARTBEAT_PERIOD);
            // A late tick means the runtime was stuck: beat once and carry
            // on, not in a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = ticks.tick() => self.beat(),
                }
            }
        }
    }

    fn beat(&self) {
        let now = millis(self.inner.origin.elapsed()).saturating_add(1);
        self.inner.last_beat.store(now, Ordering::Relaxed);
    }

    /// How long since the last beat, or `None` while no heartbeat runs.
    fn stalled_for(&self) -> Option<Duration> {
        let last = self.inner.last_beat.load(Ordering::Relaxed);
        if last == 0 {
            return None;
        }
        let age = millis(self.inner.origin.elapsed())
            .saturating_add(1)
            .saturating_sub(last);
        let stall_after = self.inner.stall_after.load(Ordering::Relaxed);
        (age > stall_after).then(|| Duration::from_millis(age))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

async fn healthz(liveness: web::Data<Liveness>) -> HttpResponse {
    match liveness.stalled_for() {
        None => HttpResponse::Ok()
            .insert_header((CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({"status": "ok"})),
        Some(age) => {
            tracing::error!(
                heartbeat_age = ?age,
                "the runtime has not run its heartbeat; liveness fails"
            );
            HttpResponse::ServiceUnavailable()
                .insert_header((CACHE_CONTROL, "no-store"))
                .json(serde_json::json!({
                    "status": "stalled",
                    "heartbeat_age_ms": millis(age),
                }))
        }
    }
}

async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    let report = readiness.report().await;
    let mut response = if report.failing.is_empty() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(report)
}

async fn metrics(registry: web::Data<Registry>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        ))
        .body(keel_telemetry::metrics::render(&registry))
}

/// What the operational endpoints and middleware need, cloned into every
/// actix worker's app.
#[derive(Debug, Clone)]
pub struct Operational {
    readiness: web::Data<Readiness>,
    liveness: web::Data<Liveness>,
    registry: web::Data<Registry>,
    http_metrics: web::Data<HttpMetrics>,
}

impl Operational {
    /// Registers the HTTP and dependency metrics into `registry`, then
    /// freezes it for serving.
    pub fn new(mut readiness: Readiness, mut registry: Registry) -> Self {
        let http_metrics = HttpMetrics::register(&mut registry);
        readiness.register(&mut registry);
        Self {
            readiness: web::Data::new(readiness),
            liveness: web::Data::new(Liveness::default()),
            registry: web::Data::new(registry),
            http_metrics: web::Data::new(http_metrics),
        }
    }

    /// The heartbeat `/healthz` reads; [`Liveness::run`] it on the
    /// service's runtime.
    pub fn liveness(&self) -> Liveness {
        Liveness::clone(&self.liveness)
    }

    /// Mounts `/healthz`, `/readyz` and `/metrics` and the shared data the
    /// [`observe`](crate::observe) middleware reads.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.readiness.clone())
            .app_data(self.liveness.clone())
            .app_data(self.registry.clone())
            .app_data(self.http_metrics.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::test as actix_test;
    use std::sync::mpsc;

    /// `/healthz`'s status (a macro: actix's test service type cannot be
    /// named without a direct dependency on actix-http).
    macro_rules! healthz_status {
        ($app:expr) => {{
            let request = actix_test::TestRequest::get().uri("/healthz").to_request();
            actix_test::call_service($app, request)
                .await
                .status()
                .as_u16()
        }};
    }

    /// Polls `/healthz` (on actix's runtime, as in production) until it
    /// answers `want`, for up to ten seconds.
    macro_rules! wait_for_healthz {
        ($app:expr, $want:expr) => {{
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = healthz_status!($app);
                if status == $want || Instant::now() > deadline {
                    break status;
                }
                actix_rt::time::sleep(Duration::from_millis(100)).await;
            }
        }};
    }

    #[test]
    fn liveness_goes_red_when_the_runtime_is_wedged() {
        // The service's runtime, shaped like production's on two cores.
        let service_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let operational =
            Operational::new(Readiness::new(Duration::from_secs(1)), Registry::default());
        let shutdown = CancellationToken::new();
        service_runtime.spawn(
            operational
                .liveness()
                .run(Duration::from_secs(2), shutdown.clone()),
        );

        actix_rt::System::new().block_on(async {
            let app =
                actix_test::init_service(App::new().configure(|cfg| operational.configure(cfg)))
                    .await;
            assert_eq!(wait_for_healthz!(&app, 200), 200, "live while it beats");

            // Wedge it: one task per worker thread, each blocking its
            // thread (as a synchronous call or a lock held across a wait
            // would), spawned from outside so each lands on its own worker.
            let (blocked_tx, blocked) = mpsc::channel();
            let mut releases = Vec::new();
            for _ in 0..2 {
                let (release, wait) = mpsc::channel::<()>();
                releases.push(release);
                let blocked_tx = blocked_tx.clone();
                service_runtime.spawn(async move {
                    blocked_tx.send(()).unwrap();
                    let _ = wait.recv();
                });
            }
            for _ in 0..2 {
                blocked.recv_timeout(Duration::from_secs(5)).unwrap();
            }
            eprintln!(
                "DEBUG last_beat={} stall={} now={}",
                operational
                    .liveness()
                    .inner
                    .last_beat
                    .load(Ordering::Relaxed),
                operational
                    .liveness()
                    .inner
                    .stall_after
                    .load(Ordering::Relaxed),
                millis(operational.liveness().inner.origin.elapsed())
            );
            assert_eq!(
                wait_for_healthz!(&app, 503),
                503,
                "a wedged runtime fails liveness"
            );

            drop(releases);
            assert_eq!(
                wait_for_healthz!(&app, 200),
                200,
                "live again once the runtime runs"
            );
        });
        shutdown.cancel();
    }

    #[actix_rt::test]
    async fn liveness_is_green_while_no_heartbeat_runs() {
        let operational =
            Operational::new(Readiness::new(Duration::from_secs(1)), Registry::default());
        let app =
            actix_test::init_service(App::new().configure(|cfg| operational.configure(cfg))).await;
        assert_eq!(healthz_status!(&app), 200);
    }

    #[derive(Debug)]
    struct Fixed(&'static str, bool);

    impl Check for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }

        fn check(&self) -> CheckFuture<'_> {
            let ok = self.1;
            Box::pin(async move { if ok { Ok(()) } else { Err("down".to_owned()) } })
        }
    }

    async fn readyz_of(readiness: Readiness) -> (u16, serde_json::Value, String) {
        let operational = Operational::new(readiness, Registry::default());
        let app =
            actix_test::init_service(App::new().configure(|cfg| operational.configure(cfg))).await;
        let response = actix_test::call_service(
            &app,
            actix_test::TestRequest::get().uri("/readyz").to_request(),
        )
        .await;
        let status = response.status().as_u16();
        let body: serde_json::Value = actix_test::read_body_json(response).await;
        let metrics = actix_test::call_service(
            &app,
            actix_test::TestRequest::get().uri("/metrics").to_request(),
        )
        .await;
        let metrics = String::from_utf8(actix_test::read_body(metrics).await.to_vec()).unwrap();
        (status, body, metrics)
    }

    #[actix_rt::test]
    async fn a_failing_reported_dependency_is_degraded_not_unready_and_counted_down() {
        let readiness = Readiness::new(Duration::from_secs(1))
            .with(Fixed("postgres", true))
            .reporting(Fixed("rabbitmq", false));
        let (status, body, metrics) = readyz_of(readiness).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "degraded");
        assert_eq!(body["degraded"], serde_json::json!(["rabbitmq"]));
        assert_eq!(body["checks"]["rabbitmq"]["status"], "degraded");
        assert_eq!(body["checks"]["postgres"]["status"], "ok");
        assert!(
            metrics.contains("dependency_up{dependency=\"rabbitmq\"} 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("dependency_up{dependency=\"postgres\"} 1"),
            "{metrics}"
        );
    }

    #[actix_rt::test]
    async fn a_failing_required_dependency_makes_the_pod_unready() {
        let readiness = Readiness::new(Duration::from_secs(1))
            .with(Fixed("postgres", false))
            .reporting(Fixed("rabbitmq", true));
        let (status, body, _) = readyz_of(readiness).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["failing"], serde_json::json!(["postgres"]));
        assert_eq!(body["checks"]["postgres"]["status"], "error");
    }
}
