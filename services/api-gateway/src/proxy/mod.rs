//! Reverse proxy to the auth and analytics services.
//!
//! `/api/v1/auth/*` goes to auth, `/api/v1/analytics/*` to analytics, path
//! and query unchanged. One pooled client per upstream (keep-alive
//! connections are reused across requests), bodies streamed both ways
//! (never buffered whole), hop-by-hop headers dropped, and the current
//! trace continued with a fresh `traceparent`. Every call is bounded by the
//! configured timeouts: an upstream that is down or silent becomes a
//! 503/504 problem, never a hanging request.
//!
//! **Only inside the prefix.** The upstream URL is built from the canonical
//! path the router matched (`keel_http::canonical`: no dot segments, no
//! encoded separators), and checked again once built: a path that would
//! leave the upstream's prefix (`/api/v1/auth/../../metrics` would reach
//! auth's `/metrics` once a URL library resolved it) is a 404 and never
//! sent.
//!
//! **One client address.** Upstreams are told the client's address the
//! gateway computed ([`ClientAddress`]: the TCP peer, or what a proxy in
//! `http.trusted_proxies` vouches for) as the whole of `X-Forwarded-For`
//! and `Forwarded`. Whatever the client sent in those, in `X-Real-IP` or
//! in any `X-Forwarded-*` header is dropped, never appended to: auth
//! trusts the gateway's `X-Forwarded-For` (login throttling, session
//! records), so a client-written entry there would pick its own throttling
//! bucket. Host and scheme are not forwarded either: upstreams build no
//! links from them, and the gateway could only repeat what the client said.

mod settings;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use bytes::Bytes;
use futures::StreamExt;
use keel_http::Problem;
use opentelemetry::propagation::Injector;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use settings::UpstreamSettings;

use crate::edge::ClientAddress;
use crate::identity::Caller;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus those the client or reqwest sets anew for the next hop.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Set by the gateway for analytics; never accepted from clients.
const USER_HEADER: &str = "x-keel-user-id";
const ROLE_HEADER: &str = "x-keel-role";

/// Client-sent headers that name a client address, host or scheme: only
/// the gateway's own computation is forwarded (see the module docs).
fn is_forwarding_header(name: &str) -> bool {
    matches!(name, "forwarded" | "x-real-ip") || name.starts_with("x-forwarded-")
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("{upstream} is unreachable: {source}")]
    Unreachable {
        upstream: &'static str,
        source: reqwest::Error,
    },
    #[error("{upstream} did not answer in time: {source}")]
    Timeout {
        upstream: &'static str,
        source: reqwest::Error,
    },
    #[error("{upstream} failed: {source}")]
    BadGateway {
        upstream: &'static str,
        source: reqwest::Error,
    },
    #[error("the request body is over the limit")]
    TooLarge,
    #[error("the path is outside the {upstream} service's prefix")]
    OutsidePrefix { upstream: &'static str },
}

impl ResponseError for ProxyError {
    fn status_code(&self) -> StatusCode {
        match self {
            ProxyError::Unreachable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::OutsidePrefix { .. } => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let problem = match self {
            ProxyError::Unreachable { upstream, .. } => Problem::unavailable(format!(
                "The {upstream} service is unavailable; retry shortly."
            )),
            ProxyError::Timeout { upstream, .. } => Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream-timeout",
                "Gateway Timeout",
            )
            .with_detail(format!("The {upstream} service did not answer in time.")),
            ProxyError::BadGateway { upstream, .. } => {
                Problem::new(StatusCode::BAD_GATEWAY, "bad-gateway", "Bad Gateway")
                    .with_detail(format!("The {upstream} service failed to answer."))
            }
            ProxyError::TooLarge => Problem::payload_too_large(),
            ProxyError::OutsidePrefix { .. } => Problem::not_found(),
        };
        if matches!(self, ProxyError::OutsidePrefix { .. }) {
            tracing::warn!(error = %self, "proxying refused");
        } else if !matches!(self, ProxyError::TooLarge) {
            tracing::warn!(error = %self, "proxying failed");
        }
        let mut response = problem.response_builder();
        if matches!(self, ProxyError::Unreachable { .. }) {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        response.json(&problem)
    }
}

/// One upstream service behind the gateway.
#[derive(Debug, Clone)]
pub struct Upstream {
    name: &'static str,
    base: url::Url,
    /// Every path proxied here starts with this (a whole segment, `/`
    /// included).
    prefix: &'static str,
    client: reqwest::Client,
}

/// The proxied upstreams and the body limit their requests share.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub auth: Upstream,
    pub analytics: Upstream,
    body_limit: usize,
}

impl Upstreams {
    pub fn new(settings: &UpstreamSettings, body_limit: usize) -> Result<Self, reqwest::Error> {
        Ok(Self {
            auth: Upstream {
                name: "auth",
                base: settings.auth_url.clone(),
                prefix: "/api/v1/auth/",
                client: settings.client()?,
            },
            analytics: Upstream {
                name: "analytics",
                base: settings.analytics_url.clone(),
                prefix: "/api/v1/analytics/",
                client: settings.client()?,
            },
            body_limit,
        })
    }

    /// The pooled client of the auth service (the JWK Set is fetched with it).
    pub fn auth_client(&self) -> reqwest::Client {
        self.auth.client.clone()
    }

    pub fn jwks_url(&self) -> String {
        let mut url = self.auth.base.clone();
        url.set_path("/.well-known/jwks.json");
        url.into()
    }

    /// `/auth/*` and `/analytics/*`, inside the `/api/v1` scope.
    pub fn configure_api(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .service(web::scope("/auth").default_service(web::to(auth)))
            .service(web::scope("/analytics").default_service(web::to(analytics)));
    }
}

impl Upstream {
    /// The upstream URL of `path` (canonical, as routed) and `query`, or
    /// `None` when the path is not inside this upstream's prefix, before or
    /// after the URL library has parsed it (it resolves dot segments, in
    /// `%2e` spellings too, and reads `\` as `/`).
    fn url(&self, path: &str, query: Option<&str>) -> Option<String> {
        let inside = |p: &str| {
            p.starts_with(self.prefix)
                && matches!(keel_http::canonical::canonicalize(p), Ok(c) if c == p)
        };
        if !inside(path) {
            return None;
        }
        let mut url = self.base.clone();
        url.set_path(path);
        url.set_query(query.filter(|q| !q.is_empty()));
        inside(url.path()).then(|| url.into())
    }
}

async fn auth(
    req: HttpRequest,
    payload: web::Payload,
    upstreams: web::Data<Upstreams>,
) -> Result<HttpResponse, ProxyError> {
    forward(&upstreams.auth, upstreams.body_limit, &req, payload, None).await
}

/// Analytics answers per caller (customers see their own figures), so the
/// gateway authenticates and names the caller in headers it controls.
async fn analytics(
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
    upstreams: web::Data<Upstreams>,
) -> Result<HttpResponse, ProxyError> {
    forward(
        &upstreams.analytics,
        upstreams.body_limit,
        &req,
        payload,
        Some(&caller),
    )
    .await
}

struct ReqwestHeaders<'a>(&'a mut reqwest::header::HeaderMap);

impl Injector for ReqwestHeaders<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Header names the `Connection` header lists are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || listed.iter().any(|l| l == name)
}

fn upstream_headers(req: &HttpRequest, caller: Option<&Caller>) -> reqwest::header::HeaderMap {
    let listed = connection_listed(req.headers());
    let mut out = reqwest::header::HeaderMap::with_capacity(req.headers().len() + 4);
    for (name, value) in req.headers() {
        let lower = name.as_str();
        if is_hop_by_hop(lower, &listed)
            || is_forwarding_header(lower)
            || matches!(
                lower,
                "content-length" | "traceparent" | "tracestate" | USER_HEADER | ROLE_HEADER
            )
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            out.append(name, value);
        }
    }
    // The one address the edge computed; none (rather than one invented
    // here) on a route outside the edge.
    let client = req.extensions().get::<ClientAddress>().and_then(|c| c.0);
    if let Some(client) = client {
        for (name, value) in [
            ("x-forwarded-for", client.to_string()),
            ("forwarded", keel_http::client_ip::forwarded_element(client)),
        ] {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        }
    }
    if let Some(caller) = caller {
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&caller.user_id.to_string()) {
            out.insert(USER_HEADER, value);
        }
        out.insert(
            ROLE_HEADER,
            reqwest::header::HeaderValue::from_static(if caller.is_admin {
                "admin"
            } else {
                "customer"
            }),
        );
    }
    // Continue the trace: the client span below is the upstream's parent.
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut ReqwestHeaders(&mut out));
    });
    out
}

/// Whether the client announced a body (GETs normally do not; sending them
/// a chunked empty body would confuse some servers).
fn has_body(req: &HttpRequest) -> bool {
    req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// Streams the client's body into a channel: actix's payload lives on
/// this worker thread, reqwest wants a `Send` stream. Stops (and flags it)
/// once the body passes `limit`.
fn body_stream(
    mut payload: web::Payload,
    limit: usize,
    too_large: Arc<AtomicBool>,
) -> reqwest::Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    actix_web::rt::spawn(async move {
        let mut seen = 0usize;
        while let Some(chunk) = payload.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    seen = seen.saturating_add(bytes.len());
                    if seen > limit {
                        too_large.store(true, Ordering::Relaxed);
                        Err(std::io::Error::other("request body over the limit"))
                    } else {
                        Ok(bytes)
                    }
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    reqwest::Body::wrap_stream(tokio_stream_from(rx))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn forward(
    upstream: &Upstream,
    body_limit: usize,
    req: &HttpRequest,
    payload: web::Payload,
    caller: Option<&Caller>,
) -> Result<HttpResponse, ProxyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit as u64) {
        return Err(ProxyError::TooLarge);
    }
    let url =
        upstream
            .url(req.path(), Some(req.query_string()))
            .ok_or(ProxyError::OutsidePrefix {
                upstream: upstream.name,
            })?;
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let span = tracing::info_span!(
        "http.client",
        otel.name = %format!("{} {}", method, upstream.name),
        otel.kind = "client",
        http.request.method = %method,
        server.address = upstream.name,
        http.response.status_code = tracing::field::Empty,
    );
    let too_large = Arc::new(AtomicBool::new(false));
    let sent = async {
        let headers = upstream_headers(req, caller);
        let mut request = upstream.client.request(method, url).headers(headers);
        if has_body(req) {
            request = request.body(body_stream(payload, body_limit, too_large.clone()));
        }
        request.send().await
    }
    .instrument(span.clone())
    .await;
    let response = sent.map_err(|source| {
        if too_large.load(Ordering::Relaxed) {
            ProxyError::TooLarge
        } else if source.is_timeout() {
            ProxyError::Timeout {
                upstream: upstream.name,
                source,
            }
        } else if source.is_connect() {
            ProxyError::Unreachable {
                upstream: upstream.name,
                source,
            }
        } else {
            ProxyError::BadGateway {
                upstream: upstream.name,
                source,
            }
        }
    })?;
    span.record("http.response.status_code", response.status().as_u16());

    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut builder = HttpResponse::build(status);
    let listed: Vec<String> = response
        .headers()
        .get_all(reqwest::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in response.headers() {
        if is_hop_by_hop(name.as_str(), &listed) || name.as_str() == "content-length" {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_str().as_bytes()),
            header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder.append_header((name, value));
        }
    }
    let length = response.content_length();
    let name = upstream.name;
    let body = response.bytes_stream().map(move |chunk| {
        chunk.map_err(|e| {
            tracing::warn!(upstream = name, error = %e, "upstream body interrupted");
            std::io::Error::other(e)
        })
    });
    match length {
        // A known length keeps `Content-Length` (clients show progress,
        // HEAD and 204 stay bodiless).
        Some(length) => Ok(builder.body(actix_web::body::SizedStream::new(length, body))),
        None => Ok(builder.streaming(body)),
    }
}
