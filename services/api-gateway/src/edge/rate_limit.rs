//! Rate limiting in Redis with GCRA (the generic cell rate algorithm).
//!
//! GCRA keeps one number per client and route class, the "theoretical
//! arrival time" (TAT) of the next request, instead of a counter and a
//! window: no burst at window edges, one key, one atomic script. With a
//! limit of `L` requests per period `T`, each request moves the TAT by
//! `T / L`; a request is refused while the TAT would run more than `T`
//! ahead of now. The script runs atomically in Redis, so every gateway
//! replica shares the budget, and uses Redis's clock, so replicas' clocks
//! do not matter.
//!
//! Hot keys reserve several requests per round trip: each replica counts
//! how often a key was seen in the previous 100 ms window and reserves that
//! many (at most a tenth of the limit, at most 100) in one script call,
//! spending them locally for the next 100 ms. Every admitted request is
//! still paid for in Redis before it is admitted, so the limit holds across
//! replicas; a reservation left unspent when a client stops is lost, which
//! only errs on the strict side, and a client sending one request at a time
//! always reserves exactly one.
//!
//! Keys: the user for authenticated requests, the client IP otherwise.
//! Redis unreachable or slow → the request passes (fail open, configurable),
//! logged and counted: a cache outage must not become an API outage.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use keel_cache::Redis;
use keel_config::{Invalid, Validate};
use keel_http::Problem;
use moka::sync::Cache;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::identity::Caller;

/// `{allowed, remaining, reset_us, retry_after_us}`; times in microseconds
/// from Redis's clock (doubles hold them exactly until the year 2255).
/// `ARGV[3]` is the cost: how many requests this call reserves at once.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local period = interval * limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval * tonumber(ARGV[3])
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((period - (new_tat - now)) / interval), new_tat - now, 0}
";

pub const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The `rate_limit` section.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    /// Redis unreachable: let requests through (true) or answer 503 (false).
    pub fail_open: bool,
    /// Budget of one limiter round trip to Redis.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Route classes: `auth` (`/api/v1/auth/*`), `write` (other non-GET
    /// requests), `read` (the rest).
    pub classes: BTreeMap<String, ClassLimit>,
}

/// `limit` requests per `period`, bursts up to `limit` (at most one
/// request per microsecond is tracked: finer limits act as that).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ClassLimit {
    pub limit: u32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
}

const CLASSES: [&str; 3] = ["auth", "read", "write"];
/// Classes that may be left out: `webhooks` (`POST /webhooks/*`, keyed by
/// the sender's address; not limited when absent).
const OPTIONAL_CLASSES: [&str; 1] = ["webhooks"];

impl Validate for RateLimitSettings {
    fn validate(&self) -> Result<(), Invalid> {
        if self.timeout.is_zero() {
            return Err(Invalid::new("timeout", "must be greater than zero").within("rate_limit"));
        }
        for class in OPTIONAL_CLASSES {
            if self
                .classes
                .get(class)
                .is_some_and(|l| l.limit == 0 || l.period.is_zero())
            {
                return Err(
                    Invalid::new(class, "needs limit >= 1 and a period greater than zero")
                        .within("classes")
                        .within("rate_limit"),
                );
            }
        }
        for class in CLASSES {
            let Some(limit) = self.classes.get(class) else {
                return Err(
                    Invalid::new(class, "is missing (auth, read and write are required)")
                        .within("classes")
                        .within("rate_limit"),
                );
            };
            if limit.limit == 0 || limit.period.is_zero() {
                return Err(
                    Invalid::new(class, "needs limit >= 1 and a period greater than zero")
                        .within("classes")
                        .within("rate_limit"),
                );
            }
        }
        if let Some(unknown) = self
            .classes
            .keys()
            .find(|k| !CLASSES.contains(&k.as_str()) && !OPTIONAL_CLASSES.contains(&k.as_str()))
        {
            return Err(Invalid::new(
                unknown.as_str(),
                "is not a route class (auth, read, write, webhooks)",
            )
            .within("classes")
            .within("rate_limit"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    limited: Family<ClassLabel, Counter>,
    redis_failures: Counter,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u64,
    pub reset: Duration,
    pub retry_after: Duration,
}

pub struct RateLimiter {
    redis: Redis,
    settings: RateLimitSettings,
    script: redis::Script,
    metrics: Metrics,
    /// Per-key demand and unspent reservations of this replica.
    local: Cache<String, Arc<Mutex<Local>>>,
}

/// How long a reservation may be spent, and the demand-counting window.
const WINDOW: Duration = Duration::from_millis(100);
/// Upper bound of one reservation.
const MAX_BATCH: u32 = 100;

/// One key's state in this replica.
#[derive(Debug)]
struct Local {
    window_start: Instant,
    seen: u32,
    seen_before: u32,
    reserved_at: Instant,
    left: u32,
    /// Redis's `remaining` and `reset` when the reservation was made.
    remaining: u64,
    reset: Duration,
}

impl Local {
    fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            seen: 0,
            seen_before: 0,
            reserved_at: now,
            left: 0,
            remaining: 0,
            reset: Duration::ZERO,
        }
    }

    /// Counts this request; spends a reserved one if there is any left.
    fn take(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= WINDOW {
            self.seen_before = if elapsed < WINDOW * 2 { self.seen } else { 0 };
            self.seen = 0;
            self.window_start = now;
        }
        self.seen = self.seen.saturating_add(1);
        let age = now.duration_since(self.reserved_at);
        if self.left > 0 && age < WINDOW {
            self.left -= 1;
            return Some((
                self.remaining + u64::from(self.left),
                self.reset.saturating_sub(age),
            ));
        }
        None
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    #[error(transparent)]
    Redis(#[from] keel_cache::Error),
    #[error("the limiter did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<redis::RedisError> for LimiterError {
    fn from(e: redis::RedisError) -> Self {
        LimiterError::Redis(e.into())
    }
}

/// Which budget a request draws from. `path` is canonical (the one the
/// router matched, see the `edge` docs), so every spelling of an auth route
/// draws from the auth budget; the prefix matches whole segments.
pub fn class_of(method: &Method, path: &str) -> &'static str {
    if path.starts_with("/webhooks/") {
        "webhooks"
    } else if keel_http::canonical::is_under(path, "/api/v1/auth") {
        "auth"
    } else if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        "read"
    } else {
        "write"
    }
}

impl RateLimiter {
    pub fn new(redis: Redis, settings: RateLimitSettings, registry: &mut Registry) -> Self {
        let metrics = Metrics::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused with 429, by route class",
            metrics.limited.clone(),
        );
        registry.register(
            "rate_limiter_redis_failures",
            "Rate limit checks that could not reach Redis (the request was let through when failing open)",
            metrics.redis_failures.clone(),
        );
        Self {
            redis,
            settings,
            script: redis::Script::new(GCRA),
            metrics,
            local: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(WINDOW * 3)
                .build(),
        }
    }

    /// One GCRA step for `subject` (e.g. `user:<uuid>` or `ip:<addr>`).
    pub async fn check(
        &self,
        class: &str,
        subject: &str,
    ) -> Result<Option<Decision>, LimiterError> {
        let Some(limit) = self.settings.classes.get(class).copied() else {
            return Ok(None);
        };
        // The script counts in whole microseconds: limits finer than one
        // request per µs (a million per second, e.g. "unlimited" in
        // benchmarks) are held to that.
        let interval_us = u64::try_from(limit.period.as_micros() / u128::from(limit.limit))
            .unwrap_or(u64::MAX)
            .max(1);
        let key = self.redis.key(&format!("ratelimit:{class}:{subject}"));
        let max_batch = (limit.limit / 10).clamp(1, MAX_BATCH);
        let now = Instant::now();
        let local = self
            .local
            .get_with_by_ref(&key, || Arc::new(Mutex::new(Local::new(now))));
        let batch = {
            let mut state = local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((remaining, reset)) = state.take(now) {
                return Ok(Some(Decision {
                    allowed: true,
                    limit: limit.limit,
                    remaining,
                    reset,
                    retry_after: Duration::ZERO,
                }));
            }
            state.seen_before.clamp(1, max_batch)
        };
        let mut decision = self.gcra(&key, interval_us, limit.limit, batch).await?;
        if batch > 1 {
            if decision.allowed {
                let mut state = local.lock().unwrap_or_else(|e| e.into_inner());
                state.reserved_at = now;
                state.left = batch - 1;
                state.remaining = decision.remaining;
                state.reset = decision.reset;
                decision.remaining += u64::from(batch - 1);
            } else {
                // Not enough budget for a batch: maybe for this one request.
                decision = self.gcra(&key, interval_us, limit.limit, 1).await?;
            }
        }
        Ok(Some(decision))
    }

    /// One script call reserving `cost` requests.
    async fn gcra(
        &self,
        key: &str,
        interval_us: u64,
        limit: u32,
        cost: u32,
    ) -> Result<Decision, LimiterError> {
        let call = async {
            let mut conn = self.redis.connection().await?;
            let reply: Vec<i64> = self
                .script
                .key(key)
                .arg(interval_us)
                .arg(limit)
                .arg(cost)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, LimiterError>(reply)
        };
        let reply = tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| LimiterError::Timeout(self.settings.timeout))??;
        let micros = |i: usize| {
            Duration::from_micros(u64::try_from(reply.get(i).copied().unwrap_or(0)).unwrap_or(0))
        };
        Ok(Decision {
            allowed: reply.first().copied() == Some(1),
            limit,
            remaining: u64::try_from(reply.get(1).copied().unwrap_or(0)).unwrap_or(0),
            reset: micros(2),
            retry_after: micros(3),
        })
    }
}

/// Whole seconds, rounded up: a client told "0" would retry at once.
fn ceil_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).try_into().unwrap_or(u64::MAX)
}

fn header_value(n: u64) -> HeaderValue {
    HeaderValue::from(n)
}

/// Middleware for the `/api/v1` scope, inside authentication (it keys
/// authenticated requests by user).
pub async fn middleware(
    limiter: Arc<RateLimiter>,
    client_ip: Option<IpAddr>,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !limiter.settings.enabled || req.method() == Method::OPTIONS {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let class = class_of(req.method(), req.path());
    let subject = match req.extensions().get::<Caller>() {
        Some(caller) => format!("user:{}", caller.user_id),
        None => format!(
            "ip:{}",
            client_ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
        ),
    };
    let decision = match limiter.check(class, &subject).await {
        Ok(decision) => decision,
        Err(e) => {
            limiter.metrics.redis_failures.inc();
            if limiter.settings.fail_open {
                tracing::warn!(error = %e, class, "rate limiter unavailable; letting the request through");
                None
            } else {
                tracing::error!(error = %e, class, "rate limiter unavailable; refusing the request");
                let problem = Problem::unavailable("Rate limiting is unavailable; retry shortly.");
                let response = problem
                    .response_builder()
                    .insert_header((RETRY_AFTER, "1"))
                    .json(&problem);
                return Ok(req.into_response(response).map_into_right_body());
            }
        }
    };
    let Some(decision) = decision else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    if !decision.allowed {
        limiter
            .metrics
            .limited
            .get_or_create(&ClassLabel {
                class: class.to_owned(),
            })
            .inc();
        let retry_after = ceil_secs(decision.retry_after).max(1);
        let problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too Many Requests",
        )
        .with_detail(format!(
            "Rate limit of {} requests for this kind of request reached; retry in {retry_after} s.",
            decision.limit
        ));
        let response = problem
            .response_builder()
            .insert_header((RETRY_AFTER, header_value(retry_after)))
            .insert_header((LIMIT, header_value(u64::from(decision.limit))))
            .insert_header((REMAINING, header_value(0)))
            .insert_header((RESET, header_value(ceil_secs(decision.reset))))
            .json(&problem);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(LIMIT, header_value(u64::from(decision.limit)));
    headers.insert(REMAINING, header_value(decision.remaining));
    headers.insert(RESET, header_value(ceil_secs(decision.reset)));
    Ok(res.map_into_left_body())
}
