//! The edge decides on the path the router matches: every spelling of a
//! path (percent-encoded letters, dot segments, encoded separators, doubled
//! slashes) is either the one canonical path or refused, so no spelling
//! dodges the admin gate, the auth rate-limit class or the proxy's prefixes.
//! Upstreams are told one client address the gateway computed, and odd
//! methods and paths mint no metric label values.
//!
//! Requests go out byte for byte over TCP: an HTTP library would normalise
//! `..` and `%2e%2e` before sending.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use api_gateway::edge::rate_limit::ClassLimit;
use keel_token::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer};
use crate::helpers::{TestApp, spawn_app_with};

/// An answer read off the wire.
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Sends `target` exactly as written, with `headers`, and reads the answer.
async fn raw(app: &TestApp, method: &str, target: &str, headers: &[String]) -> Raw {
    let mut request =
        format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    if method == "POST" {
        request.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        request.push_str("\r\n");
    }
    let addr = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("the gateway answers and closes")
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

/// An upstream that records the request target of everything it receives
/// and echoes the forwarded-address headers.
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
    server: actix_web::dev::ServerHandle,
}

async fn record(req: HttpRequest, seen: web::Data<Arc<Mutex<Vec<String>>>>) -> HttpResponse {
    seen.lock().unwrap().push(req.uri().to_string());
    let all = |name: &str| -> Vec<String> {
        req.headers()
            .get_all(name)
            .map(|v| v.to_str().unwrap_or("<binary>").to_owned())
            .collect()
    };
    HttpResponse::Ok().json(serde_json::json!({
        "target": req.uri().to_string(),
        "x-forwarded-for": all("x-forwarded-for"),
        "forwarded": all("forwarded"),
        "x-real-ip": all("x-real-ip"),
        "x-forwarded-host": all("x-forwarded-host"),
        "x-forwarded-proto": all("x-forwarded-proto"),
    }))
}

impl Recorder {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::new(seen.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(record))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            server: handle,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

/// Spellings of `GET /api/v1/admin/webhook-events` that the router may
/// reach the admin area by (or that must be refused outright).
const ADMIN_SPELLINGS: [&str; 9] = [
    "/api/v1/admin/webhook-events",
    "/api/v1/%61dmin/webhook-events",
    "/api/v1/%61%64%6d%69%6e/webhook-events",
    "/api/v1/admin/webhook%2Devents",
    "/api/v1/admin/webhook-events/",
    "/api/v1/auth/../admin/webhook-events",
    "/api/v1/auth/%2e%2e/admin/webhook-events",
    "/api/v1//admin/webhook-events",
    "/api/v1/admin%2fwebhook-events",
];

/// The admin gate answers before any handler: its refusals carry no
/// `RateLimit-*` headers (the limiter sits inside the gate), a handler's
/// refusal would.
#[tokio::test]
async fn the_admin_gate_refuses_every_spelling_of_an_admin_path_before_any_handler() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let (_, customer) = upstream.customer_token();
    let admin = upstream.token_for(Uuid::new_v4(), vec![Role::Admin]);
    // The route works for an admin: the refusals below are refusals.
    let ok = raw(
        &app,
        "GET",
        "/api/v1/%61dmin/webhook-events",
        &[format!("Authorization: {}", bearer(&admin))],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    for spelling in ADMIN_SPELLINGS {
        let anonymous = raw(&app, "GET", spelling, &[]).await;
        assert!(
            [400, 401, 404].contains(&anonymous.status),
            "anonymous {spelling}: {} {}",
            anonymous.status,
            anonymous.body
        );
        let as_customer = raw(
            &app,
            "GET",
            spelling,
            &[format!("Authorization: {}", bearer(&customer))],
        )
        .await;
        assert!(
            [400, 403, 404].contains(&as_customer.status),
            "customer {spelling}: {} {}",
            as_customer.status,
            as_customer.body
        );
        for answer in [&anonymous, &as_customer] {
            if matches!(answer.status, 401 | 403) {
                assert!(
                    answer.header("ratelimit-limit").is_none(),
                    "{spelling} was refused by a handler, not the admin gate:\n{}",
                    answer.head
                );
            }
            assert!(
                answer
                    .header("content-type")
                    .is_some_and(|v| v.starts_with("application/problem+json")),
                "{spelling}: {}",
                answer.head
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn a_percent_encoded_spelling_of_an_auth_route_draws_from_the_auth_budget() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.rate_limit.classes.insert(
            "auth".into(),
            ClassLimit {
                limit: 2,
                period: Duration::from_secs(60),
            },
        );
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            raw(&app, "POST", "/api/v1/auth/login", &[]).await.status,
            200
        );
    }
    for spelling in ["/api/v1/%61uth/login", "/api/v1/%61%75%74%68/login"] {
        let answer = raw(&app, "POST", spelling, &[]).await;
        assert_eq!(answer.status, 429, "{spelling}: {}", answer.body);
    }
    app.stop().await;
}

/// Spellings that would leave an upstream's prefix once the upstream (or
/// the URL library building the upstream request) resolves them.
const ESCAPES: [&str; 11] = [
    "/api/v1/auth/../admin/webhook-events",
    "/api/v1/auth/%2e%2e/orders",
    "/api/v1/auth/%2E%2E/%2e%2E/metrics",
    "/api/v1/auth/.%2e/.%2e/.%2e/readyz",
    "/api/v1/auth/./login",
    "/api/v1/auth/..%2f..%2fmetrics",
    "/api/v1/auth/..%5c..%5cmetrics",
    "/api/v1/auth/..\\..\\metrics",
    "/api/v1/auth//login",
    "/api/v1/auth/login%00",
    "/api/v1/auth/%zz",
];

#[tokio::test]
async fn dot_segments_and_encoded_separators_never_reach_the_auth_upstream() {
    let recorder = Recorder::start().await;
    let app = spawn_app_with(|s| {
        s.upstreams.auth_url = recorder.url.parse().unwrap();
    })
    .await;
    for spelling in ESCAPES {
        let answer = raw(&app, "GET", spelling, &[]).await;
        assert!(
            [400, 404].contains(&answer.status),
            "{spelling}: {} {}",
            answer.status,
            answer.body
        );
        // A problem, unless the HTTP parser refused the bytes itself.
        assert!(
            answer.status == 400 && answer.body.is_empty()
                || answer
                    .header("content-type")
                    .is_some_and(|v| v.starts_with("application/problem+json")),
            "{spelling}: {}",
            answer.head
        );
        // The problem names the path, but does not echo it.
        assert!(!answer.body.contains("metrics"), "{}", answer.body);
    }
    assert_eq!(recorder.seen(), Vec::<String>::new());

    // The canonical spelling of an encoded letter is proxied as the path
    // the router matched.
    let answer = raw(&app, "GET", "/api/v1/auth/%6De?x=%2F", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(recorder.seen(), ["/api/v1/auth/me?x=%2F"]);
    app.stop().await;
    recorder.stop().await;
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_never_reach_the_analytics_upstream() {
    let keys = FakeUpstream::start().await;
    let recorder = Recorder::start().await;
    let app = spawn_app_with(|s| {
        keys.configure(s);
        s.upstreams.analytics_url = recorder.url.parse().unwrap();
    })
    .await;
    let (_, token) = keys.customer_token();
    let authorization = [format!("Authorization: {}", bearer(&token))];
    for spelling in [
        "/api/v1/analytics/..%2f..%2fadmin",
        "/api/v1/analytics/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/analytics/../../../readyz",
        "/api/v1/analytics/summary/..",
    ] {
        let answer = raw(&app, "GET", spelling, &authorization).await;
        assert!(
            [400, 404].contains(&answer.status),
            "{spelling}: {} {}",
            answer.status,
            answer.body
        );
    }
    assert_eq!(recorder.seen(), Vec::<String>::new());
    let answer = raw(&app, "GET", "/api/v1/analytics/summary", &authorization).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(recorder.seen(), ["/api/v1/analytics/summary"]);
    app.stop().await;
    recorder.stop().await;
}

async fn forwarded_headers(app: &TestApp, headers: &[String]) -> serde_json::Value {
    let answer = raw(app, "GET", "/api/v1/auth/me", headers).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

#[tokio::test]
async fn the_upstream_is_told_one_client_address_the_gateway_computed() {
    let recorder = Recorder::start().await;
    let forged = [
        "X-Forwarded-For: 1.2.3.4".to_owned(),
        "X-Forwarded-For: 5.6.7.8, 9.9.9.9".to_owned(),
        "Forwarded: for=1.2.3.4;host=evil.example".to_owned(),
        "X-Real-IP: 1.2.3.4".to_owned(),
        "X-Forwarded-Host: evil.example".to_owned(),
        "X-Forwarded-Proto: https".to_owned(),
    ];

    // At the edge (no trusted proxy): the TCP peer, whatever the client says.
    let at_the_edge = spawn_app_with(|s| {
        s.upstreams.auth_url = recorder.url.parse().unwrap();
    })
    .await;
    let seen = forwarded_headers(&at_the_edge, &forged).await;
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(seen["forwarded"], serde_json::json!(["for=127.0.0.1"]));
    assert_eq!(seen["x-real-ip"], serde_json::json!([]));
    assert_eq!(seen["x-forwarded-host"], serde_json::json!([]));
    assert_eq!(seen["x-forwarded-proto"], serde_json::json!([]));
    at_the_edge.stop().await;

    // Behind a trusted ingress: the client it vouches for, read from every
    // X-Forwarded-For line joined in order, and only that one address.
    let behind_ingress = spawn_app_with(|s| {
        s.upstreams.auth_url = recorder.url.parse().unwrap();
        s.http.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let seen = forwarded_headers(
        &behind_ingress,
        &[
            "X-Forwarded-For: 6.6.6.6".to_owned(),
            "X-Forwarded-For: 198.51.100.7".to_owned(),
        ],
    )
    .await;
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["198.51.100.7"]));
    assert_eq!(seen["forwarded"], serde_json::json!(["for=198.51.100.7"]));
    let seen = forwarded_headers(
        &behind_ingress,
        &["X-Forwarded-For: 2001:db8::7".to_owned()],
    )
    .await;
    assert_eq!(seen["x-forwarded-for"], serde_json::json!(["2001:db8::7"]));
    assert_eq!(
        seen["forwarded"],
        serde_json::json!(["for=\"[2001:db8::7]\""])
    );
    behind_ingress.stop().await;
    recorder.stop().await;
}

/// The label sets of `keel_http_requests_total`.
async fn request_series(app: &TestApp) -> Vec<String> {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("keel_http_requests_total{"))
        .filter_map(|l| l.rsplit_once(' ').map(|(key, _)| key.to_owned()))
        .collect()
}

#[tokio::test]
async fn unknown_methods_and_random_paths_add_no_metric_label_sets() {
    let app = spawn_app_with(|_| {}).await;
    // One odd request of each kind first: the closed set's own members
    // (and the scrape itself) are counted before.
    raw(&app, "QWARMUP", "/api/v1/orders", &[]).await;
    raw(&app, "QWARMUP", "/warmup", &[]).await;
    raw(&app, "GET", "/api/v1/warmup", &[]).await;
    raw(&app, "GET", "/warmup/x", &[]).await;
    request_series(&app).await;
    let before = request_series(&app).await;
    let tokens: Vec<String> = (0..50)
        .map(|_| format!("q{}", &Uuid::new_v4().simple().to_string()[..10]))
        .collect();
    for token in &tokens {
        raw(&app, &token.to_uppercase(), "/api/v1/orders", &[]).await;
        raw(&app, &token.to_uppercase(), &format!("/{token}"), &[]).await;
        raw(&app, "GET", &format!("/api/v1/{token}"), &[]).await;
        raw(&app, "GET", &format!("/{token}/x"), &[]).await;
    }
    let after = request_series(&app).await;
    let text = after.join("\n").to_lowercase();
    for token in &tokens {
        assert!(!text.contains(token.as_str()), "a label holds {token}");
    }
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.len() <= 2,
        "{} new label sets from 200 odd requests: {new:#?}",
        new.len()
    );
    app.stop().await;
}
