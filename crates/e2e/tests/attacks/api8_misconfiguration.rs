//! API8:2023 Security Misconfiguration: response headers, CORS, errors
//! that would leak internals, unknown methods (and the metric labels they
//! could mint), header injection, links steered by `Host`, the services'
//! operational endpoints reached through the proxy, and spreadsheet
//! formulas smuggled into CSV exports.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::support::{Cases, Env, expect_problem, expect_raw_refusal, raw};

const CLASS: &str = "API8 security misconfiguration";
const FOREIGN_ORIGINS: [&str; 4] = [
    "https://evil.example",
    "null",
    "http://localhost:5173.evil.example",
    "http://evil-localhost:5173",
];

/// Text that would betray the implementation in an error body.
const INTERNALS: [&str; 12] = [
    "postgres",
    "sql",
    "select ",
    "panicked",
    "thread '",
    ".rs:",
    "tokio",
    "serde",
    "actix",
    "backtrace",
    "redis",
    "lapin",
];

fn assert_no_internals(text: &str) {
    let lower = text.to_lowercase();
    for word in INTERNALS {
        assert!(!lower.contains(word), "the body mentions {word:?}: {text}");
    }
}

/// A sample line's metric and labels, histogram buckets folded together.
fn series_key(line: &str) -> String {
    let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
    let series = series
        .replace("_bucket", "")
        .replace("_sum", "")
        .replace("_count", "");
    match series.find("le=\"") {
        Some(at) => {
            let end = series[at + 4..]
                .find('"')
                .map_or(series.len(), |e| at + 4 + e + 1);
            format!("{}{}", &series[..at], &series[end..])
                .replace(",}", "}")
                .replace("{,", "{")
        }
        None => series,
    }
}

async fn metric_lines(env: &Env) -> Vec<String> {
    reqwest::get(env.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigurations_are_absent_at_the_edge() {
    let env = Env::start(&[]).await;
    let user = env.register(91, "grace@api8.example").await;
    let mut cases = Cases::new(CLASS);

    cases
        .case("every kind of answer carries the security headers", async {
            for (path, token) in [
                ("/api/v1/orders", Some(&user.access)),
                ("/api/v1/orders", None),
                ("/api/v1/no-such-route", None),
                ("/api/v1/auth/me", Some(&user.access)),
            ] {
                let mut request = user.http.get(env.url(path));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let answer = request.send().await.unwrap();
                let headers = answer.headers();
                assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
                assert_eq!(headers["x-frame-options"], "DENY", "{path}");
                assert!(headers.contains_key("content-security-policy"), "{path}");
                assert!(headers.contains_key("cache-control"), "{path}");
                assert!(headers.contains_key("x-request-id"), "{path}");
            }
        })
        .await;

    // The configured frontend is granted (so the refusals below can fail);
    // a grant is Access-Control-Allow-Origin naming the page's origin (a
    // stray Allow-Credentials without it lets nothing through).
    let allowed = user
        .http
        .get(env.url("/api/v1/orders"))
        .bearer_auth(&user.access)
        .header("Origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
    for origin in FOREIGN_ORIGINS {
        cases
            .case(
                &format!("the origin {origin} gets no CORS grant, preflight or not"),
                async {
                    let preflight = user
                        .http
                        .request(reqwest::Method::OPTIONS, env.url("/api/v1/orders"))
                        .header("Origin", origin)
                        .header("Access-Control-Request-Method", "POST")
                        .header(
                            "Access-Control-Request-Headers",
                            "authorization, content-type",
                        )
                        .send()
                        .await
                        .unwrap();
                    assert!(
                        !preflight
                            .headers()
                            .contains_key("access-control-allow-origin"),
                        "preflight granted"
                    );
                    let answer = user
                        .http
                        .get(env.url("/api/v1/orders"))
                        .bearer_auth(&user.access)
                        .header("Origin", origin)
                        .send()
                        .await
                        .unwrap();
                    assert!(
                        !answer.headers().contains_key("access-control-allow-origin"),
                        "request granted"
                    );
                },
            )
            .await;
    }

    for method in ["FOO", "PROPFIND", "TRACE", "TRACK", "DEBUG"] {
        cases
            .case(
                &format!("the method {method} is a 405 or 404 problem that echoes nothing"),
                async {
                    let request = raw::request(
                        method,
                        "/api/v1/orders",
                        &[
                            format!("Authorization: Bearer {}", user.access),
                            "X-Echo-Canary: zebra-4711".into(),
                        ],
                        None,
                    );
                    let answer = env.raw(&request).await.unwrap();
                    expect_raw_refusal(&answer, &[400, 404, 405]);
                    if answer.status != 400 {
                        let kind = answer.problem_type();
                        assert!(
                            kind == "urn:keel:problem:method-not-allowed"
                                || kind == "urn:keel:problem:not-found",
                            "{kind}"
                        );
                    }
                    let text = answer.text();
                    assert!(
                        !text.contains("zebra-4711") && !text.contains(&user.access),
                        "echoed: {text}"
                    );
                },
            )
            .await;
    }

    cases
        .case(
            "unknown methods and paths mint no new metric label values",
            async {
                let before: HashSet<String> = metric_lines(&env).await.into_iter().collect();
                let tokens: Vec<String> = (0..20)
                    .map(|_| format!("q{}", &uuid::Uuid::new_v4().simple().to_string()[..10]))
                    .collect();
                for token in &tokens {
                    let method = token.to_uppercase();
                    let _ = env
                        .raw(&raw::request(&method, "/api/v1/orders", &[], None))
                        .await;
                    let _ = env
                        .raw(&raw::request("GET", &format!("/api/v1/{token}"), &[], None))
                        .await;
                    let _ = env
                        .raw(&raw::request("GET", &format!("/{token}/x"), &[], None))
                        .await;
                    let _ = env
                        .raw(&raw::request(
                            "POST",
                            &format!("/webhooks/{token}"),
                            &[],
                            Some(b"{}"),
                        ))
                        .await;
                }
                let after = metric_lines(&env).await;
                let after_text = after.join("\n").to_lowercase();
                for token in &tokens {
                    assert!(
                        !after_text.contains(token.as_str()),
                        "a label holds {token}"
                    );
                }
                let before_keys: HashSet<String> = before.iter().map(|l| series_key(l)).collect();
                let new_series: HashSet<String> = after
                    .iter()
                    .map(|l| series_key(l))
                    .filter(|k| !before_keys.contains(k))
                    .collect();
                // A closed label set allows a handful of new combinations (an
                // "other" method or an unmatched route with each status), not one
                // per odd request.
                assert!(
                    new_series.len() <= 10,
                    "{} new series from 80 odd requests: {new_series:?}",
                    new_series.len()
                );
            },
        )
        .await;

    cases
        .case("error bodies name no internals", async {
            let mut answers = Vec::new();
            for (method, path, body) in [
                (
                    "POST",
                    "/api/v1/orders",
                    "{\"currency\": \"EUR\", \"items\": [}",
                ),
                (
                    "POST",
                    "/api/v1/orders",
                    "{\"currency\": 42, \"items\": \"x\"}",
                ),
                ("GET", "/api/v1/orders/not-a-uuid", ""),
                ("GET", "/api/v1/orders?cursor=%27%20OR%201%3D1--", ""),
                ("GET", "/api/v1/orders?created_after=yesterday'--", ""),
                ("GET", "/api/v1/orders?limit=99999999999999999999", ""),
                (
                    "PATCH",
                    "/api/v1/orders/00000000-0000-0000-0000-000000000000",
                    "{\"status\": \"\\u0000\"}",
                ),
                (
                    "POST",
                    "/api/v1/exports",
                    "{\"resource\": \"users; DROP TABLE orders\", \"format\": \"xlsx\"}",
                ),
            ] {
                let request = user
                    .http
                    .request(method.parse().unwrap(), env.url(path))
                    .bearer_auth(&user.access)
                    .header("Content-Type", "application/json")
                    .body(body.to_owned());
                let answer = request.send().await.unwrap();
                let status = answer.status();
                let text = answer.text().await.unwrap();
                assert!(
                    status.is_client_error(),
                    "{method} {path} answered {status}: {text}"
                );
                answers.push(text);
            }
            for text in answers {
                assert_no_internals(&text);
            }
        })
        .await;

    cases
        .case("the Server header names no software or version", async {
            let answer = user.http.get(env.url("/healthz")).send().await.unwrap();
            if let Some(server) = answer.headers().get("server") {
                let server = server.to_str().unwrap().to_lowercase();
                assert!(
                    !server.contains("actix") && !server.chars().any(|c| c.is_ascii_digit()),
                    "{server}"
                );
            }
            assert!(!answer.headers().contains_key("x-powered-by"));
        })
        .await;

    cases
        .case("an Idempotency-Key folded over two lines (CRLF injection) is refused with 400", async {
            let body = br#"{"currency":"EUR","items":[{"sku":"IK-2","quantity":1,"unit_price_cents":1}]}"#;
            let head = format!(
                "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nIdempotency-Key: k1\r\n Set-Cookie: pwn=1\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                user.access,
                body.len()
            );
            let mut request = head.into_bytes();
            request.extend_from_slice(body);
            let answer = env.raw(&request).await.unwrap();
            assert_eq!(answer.status, 400, "{}", answer.text());
            assert!(answer.header("set-cookie").is_none());
        })
        .await;

    cases
        .case("a header folded over two lines (CRLF injection) is refused with 400", async {
            let request = b"GET /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: abc\r\n Set-Cookie: pwn=1\r\nConnection: close\r\n\r\n";
            let answer = env.raw(request).await.unwrap();
            assert_eq!(answer.status, 400, "{}", answer.text());
            assert!(answer.header("set-cookie").is_none());
        })
        .await;

    for sent in [
        "abc%0d%0aSet-Cookie:%20pwn=1",
        "<script>alert(1)</script>",
        "id with spaces",
        &"x".repeat(500),
    ] {
        cases
            .case(
                &format!(
                    "an unsafe X-Request-Id ({}...) is replaced, not echoed",
                    &sent[..sent.len().min(20)]
                ),
                async {
                    let answer = env
                        .raw(&raw::request(
                            "GET",
                            "/healthz",
                            &[format!("X-Request-Id: {sent}")],
                            None,
                        ))
                        .await
                        .unwrap();
                    let echoed = answer.header("x-request-id").unwrap_or_default().to_owned();
                    assert_ne!(echoed, sent);
                    assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
                    assert!(answer.header("set-cookie").is_none());
                },
            )
            .await;
    }

    for (name, key) in [("a tab", "key\twith-tab"), ("non-ASCII bytes", "ключ-1")] {
        cases
            .case(&format!("an Idempotency-Key with {name} is 422 naming Idempotency-Key"), async {
                let body = br#"{"currency":"EUR","items":[{"sku":"IK-1","quantity":1,"unit_price_cents":1}]}"#;
                let request = raw::request(
                    "POST",
                    "/api/v1/orders",
                    &[
                        format!("Authorization: Bearer {}", user.access),
                        "Content-Type: application/json".into(),
                        format!("Idempotency-Key: {key}"),
                    ],
                    Some(body),
                );
                let answer = env.raw(&request).await.unwrap();
                assert_eq!(answer.status, 422, "{}", answer.text());
                assert_eq!(answer.problem_type(), "urn:keel:problem:validation");
                assert_eq!(answer.json()["errors"][0]["field"], "Idempotency-Key");
            })
            .await;
    }

    cases
        .case("Host and X-Forwarded-Host do not steer generated links", async {
            let body = br#"{"currency":"EUR","items":[{"sku":"HOST-1","quantity":1,"unit_price_cents":1}]}"#;
            let request = format!(
                "POST /api/v1/orders HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\n\
                 X-Forwarded-Proto: https\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                user.access,
                body.len()
            );
            let mut bytes = request.into_bytes();
            bytes.extend_from_slice(body);
            let answer = env.raw(&bytes).await.unwrap();
            assert_eq!(answer.status, 201, "{}", answer.text());
            let location = answer.header("location").unwrap();
            assert!(location.starts_with("/api/v1/orders/"), "{location}");
            let export = env.finished_export(&user, "csv").await;
            let request = raw::request(
                "GET",
                &format!("/api/v1/exports/{}", export["id"].as_str().unwrap()),
                &[
                    format!("Authorization: Bearer {}", user.access),
                    "X-Forwarded-Host: evil.example".into(),
                    "Forwarded: host=evil.example;proto=https".into(),
                ],
                None,
            );
            let mut request = String::from_utf8(request).unwrap();
            request = request.replace("Host: 127.0.0.1", "Host: evil.example");
            let answer = env.raw(request.as_bytes()).await.unwrap();
            assert_eq!(answer.status, 200, "{}", answer.text());
            assert!(!answer.text().contains("evil.example"), "{}", answer.text());
        })
        .await;

    for target in [
        "/api/v1/auth/../../../metrics",
        "/api/v1/auth/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/auth/..%2f..%2f..%2fmetrics",
        "/api/v1/auth/%2e%2e/%2e%2e/%2e%2e/readyz",
        "/api/v1/analytics/%2e%2e/%2e%2e/%2e%2e/metrics",
        "/api/v1/metrics",
    ] {
        cases
            .case(
                &format!("{target} does not reach a service's operational endpoints"),
                async {
                    let answer = env
                        .raw(&raw::request(
                            "GET",
                            target,
                            &[format!("Authorization: Bearer {}", user.access)],
                            None,
                        ))
                        .await
                        .unwrap();
                    let text = answer.text();
                    assert!(
                        !text.contains("# TYPE") && !text.contains("# HELP"),
                        "metrics leaked: {text:.200}"
                    );
                    assert!(
                        !text.contains("\"checks\"") && !text.contains("failing"),
                        "readiness leaked: {text}"
                    );
                    expect_raw_refusal(&answer, &[400, 401, 404]);
                },
            )
            .await;
    }

    // CSV formula injection: a customer's own fields that a spreadsheet would
    // run when the export is opened.
    let formulas = [
        "=1+2",
        "+SUM(A1:A9)",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1,2)",
        "=HYPERLINK(\"http://evil.example\")",
    ];
    for formula in formulas {
        env.order(
            &user,
            json!({"currency": "EUR", "external_id": formula,
                   "items": [{"sku": "CSV-1", "quantity": 1, "unit_price_cents": 1}]}),
        )
        .await;
    }
    env.order(
        &user,
        json!({"currency": "EUR", "customer_email": "=1+1@csv.example",
               "items": [{"sku": "CSV-2", "quantity": 1, "unit_price_cents": 1}]}),
    )
    .await;
    let export = env.finished_export(&user, "csv").await;

    cases
        .case(
            "CSV export cells that start with = + - @ are neutralised",
            async {
                let file = user
                    .http
                    .get(env.url(&format!(
                        "/api/v1/exports/{}/download",
                        export["id"].as_str().unwrap()
                    )))
                    .bearer_auth(&user.access)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                let mut reader = csv::ReaderBuilder::new().from_reader(&file[..]);
                let header: Vec<String> = reader
                    .headers()
                    .unwrap()
                    .iter()
                    .map(str::to_owned)
                    .collect();
                let mut checked = 0;
                for record in reader.records() {
                    let record = record.unwrap();
                    for (column, cell) in header.iter().zip(record.iter()) {
                        assert!(
                            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                            "{column} cell {cell:?} would run as a formula"
                        );
                        if formulas.iter().any(|f| cell.contains(f))
                            || cell.contains("=1+1@csv.example")
                        {
                            checked += 1;
                        }
                    }
                }
                assert_eq!(
                    checked,
                    formulas.len() + 1,
                    "every formula is still in the file, neutralised"
                );
            },
        )
        .await;

    for (name, field, value) in [
        ("a leading tab", "external_id", "\t=1+2"),
        ("a leading carriage return", "external_id", "\r=1+2"),
        ("a leading tab", "customer_email", "\t=1@csv.example"),
    ] {
        cases
            .case(&format!("{field} with {name} is refused naming {field}"), async {
                let mut body = json!({"currency": "EUR", "items": [{"sku": "CSV-3", "quantity": 1, "unit_price_cents": 1}]});
                body[field] = Value::from(value);
                let answer = user
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&user.access)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let problem = expect_problem(answer, 422, "validation").await;
                assert_eq!(problem["errors"][0]["field"], field, "{problem}");
            })
            .await;
    }

    cases.finish(|| env.logs());
}
