//! API4:2023 Unrestricted Resource Consumption: bodies too large (declared,
//! chunked, or lied about), bodies and headers that trickle in, floods
//! past the rate limits (the auth class, webhooks per address, event
//! streams per user), and requests for more than a page.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::support::{Cases, Env, client_from, expect_problem, expect_raw_refusal, network, raw};

const CLASS: &str = "API4 resource consumption";
/// `http.body_limit` and the webhook sources' `body_limit` defaults.
const BODY_LIMIT: usize = 1024 * 1024;
/// The auth route class default: 30 requests a minute per client.
const AUTH_LIMIT: usize = 30;
/// The webhook class for this stack: requests a minute per sender address.
const WEBHOOK_LIMIT: usize = 200;

/// A JSON order body of about `size` bytes (one long SKU list).
fn big_order(size: usize) -> Vec<u8> {
    let filler = "x".repeat(size);
    format!(r#"{{"currency":"EUR","items":[{{"sku":"BIG","quantity":1,"unit_price_cents":1}}],"note":"{filler}"}}"#).into_bytes()
}

/// Sends the head of a request whose body never finishes, then waits for
/// what the server does: `Ok(status)` if it answers, `Err` if it closes
/// without an answer. Panics if it does neither within `within`.
async fn stalled_body(
    env: &Env,
    target: &str,
    extra: &[&str],
    within: Duration,
) -> Result<u16, String> {
    let mut stream = raw::connect(env.gateway_addr(), None).await;
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n{\"id\": ");
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let answer = raw::read_response(&mut stream, within).await;
    assert!(
        started.elapsed() < within,
        "after {within:?} the server still waits for the rest of the body"
    );
    answer.map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_slow_and_flooding_requests_are_bounded() {
    // Webhooks get a production budget of 6,000 a minute per address; a
    // smaller one keeps the flood case short (the mechanism is the same).
    let env = Env::start(&[(
        "KEEL_RATE_LIMIT__CLASSES__WEBHOOKS__LIMIT",
        WEBHOOK_LIMIT.to_string(),
    )])
    .await;
    let user = env.register(61, "heavy@api4.example").await;
    let mut cases = Cases::new(CLASS);

    cases
        .case("an order body over the limit is 413", async {
            let answer = user
                .http
                .post(env.url("/api/v1/orders"))
                .bearer_auth(&user.access)
                .header("Content-Type", "application/json")
                .body(big_order(2 * BODY_LIMIT))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 413, "payload-too-large").await;
        })
        .await;

    cases
        .case("a chunked order body over the limit is 413", async {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big_order(2 * BODY_LIMIT)
                .chunks(64 * 1024)
                .map(|c| Ok(c.to_vec()))
                .collect();
            let answer = user
                .http
                .post(env.url("/api/v1/orders"))
                .bearer_auth(&user.access)
                .header("Content-Type", "application/json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 413, "payload-too-large").await;
        })
        .await;

    cases
        .case("a declared Content-Length over the limit is 413 before the body is read", async {
            let request = format!(
                "POST /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 10737418240\r\nConnection: close\r\n\r\n{{",
                user.access
            );
            let answer = env.raw(request.as_bytes()).await.unwrap();
            expect_raw_refusal(&answer, &[413]);
        })
        .await;

    cases
        .case("a body over the limit proxied to auth is 413", async {
            let body = format!(
                r#"{{"email":"big@api4.example","password":"{}"}}"#,
                "p".repeat(2 * BODY_LIMIT)
            );
            let answer = client_from(network(62))
                .post(env.url("/api/v1/auth/register"))
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            expect_problem(answer, 413, "payload-too-large").await;
        })
        .await;

    cases
        .case("a webhook body over the source's limit is 413", async {
            let body = big_order(2 * BODY_LIMIT);
            let answer = user
                .http
                .post(env.url("/webhooks/shopify"))
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
                .header(
                    "X-Shopify-Hmac-Sha256",
                    keel_webhooks::sign::shopify(crate::support::SHOPIFY_SECRET, &body),
                )
                .body(body)
                .send()
                .await
                .unwrap();
            expect_problem(answer, 413, "payload-too-large").await;
        })
        .await;

    cases
        .case(
            "a webhook body that stops arriving is 408 within the read deadline",
            async {
                let status = stalled_body(
                    &env,
                    "/webhooks/shopify",
                    &[
                        "X-Shopify-Topic: orders/create",
                        "X-Shopify-Hmac-Sha256: AAAA",
                        "X-Shopify-Event-Id: slow-1",
                    ],
                    Duration::from_secs(45),
                )
                .await;
                assert_eq!(
                    status,
                    Ok(408),
                    "the stalled webhook was not timed out with 408"
                );
            },
        )
        .await;

    cases
        .case(
            "an API body that stops arriving ends with 408 or a closed connection",
            async {
                let status = stalled_body(
                    &env,
                    "/api/v1/orders",
                    &[&format!("Authorization: Bearer {}", user.access)],
                    Duration::from_secs(45),
                )
                .await;
                if let Ok(status) = status {
                    assert_eq!(status, 408, "a stalled body answered {status}");
                }
            },
        )
        .await;

    cases
        .case(
            "request headers that never finish are cut off (slowloris)",
            async {
                let mut stream = raw::connect(env.gateway_addr(), None).await;
                stream
                    .write_all(b"GET /api/v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n")
                    .await
                    .unwrap();
                let within = Duration::from_secs(30);
                let started = Instant::now();
                let answer = raw::read_response(&mut stream, within).await;
                assert!(
                    started.elapsed() < within,
                    "the half-sent head held the connection for {within:?}"
                );
                if let Ok(answer) = answer {
                    assert_eq!(answer.status, 408, "{}", answer.text());
                }
            },
        )
        .await;

    cases
        .case(
            "more headers than the server takes are refused with 400 or 431",
            async {
                let headers: Vec<String> = (0..200).map(|i| format!("X-Filler-{i}: {i}")).collect();
                let answer = env
                    .raw(&raw::request("GET", "/api/v1/orders", &headers, None))
                    .await
                    .unwrap();
                assert!(
                    [400, 431].contains(&answer.status),
                    "answered {}",
                    answer.status
                );
            },
        )
        .await;

    cases
        .case("a page larger than 500 is refused naming limit", async {
            let answer = user
                .http
                .get(env.url("/api/v1/orders?limit=100000"))
                .bearer_auth(&user.access)
                .send()
                .await
                .unwrap();
            let problem = expect_problem(answer, 422, "validation").await;
            assert_eq!(problem["errors"][0]["field"], "limit", "{problem}");
        })
        .await;

    cases
        .case(
            "an order of more than 100 lines is refused naming items",
            async {
                let items: Vec<_> = (0..101)
                .map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1, "unit_price_cents": 1}))
                .collect();
                let answer = user
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&user.access)
                    .json(&json!({"currency": "EUR", "items": items}))
                    .send()
                    .await
                    .unwrap();
                let problem = expect_problem(answer, 422, "validation").await;
                assert!(
                    problem["errors"][0]["field"]
                        .as_str()
                        .unwrap()
                        .starts_with("items"),
                    "{problem}"
                );
            },
        )
        .await;

    cases
        .case(
            "deeply nested JSON is refused with 400 and the gateway keeps answering",
            async {
                let depth = 100_000;
                let body = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let answer = user
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&user.access)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                assert!(status == 400 || status == 422, "answered {status}");
                let health = user.http.get(env.url("/healthz")).send().await.unwrap();
                assert_eq!(health.status(), StatusCode::OK);
            },
        )
        .await;

    cases
        .case(
            "the auth route class is limited per client: 429 with Retry-After past 30 a minute",
            async {
                let client = client_from(network(63));
                let mut limited = None;
                for i in 0..=AUTH_LIMIT + 5 {
                    let answer = client
                        .post(env.url("/api/v1/auth/refresh"))
                        .json(&json!({"refresh_token": format!("not-a-token-{i}")}))
                        .send()
                        .await
                        .unwrap();
                    if answer.status() == StatusCode::TOO_MANY_REQUESTS {
                        limited = Some((i, answer));
                        break;
                    }
                    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
                }
                let (at, answer) = limited.expect("never limited");
                assert!(at <= AUTH_LIMIT, "limited only after {at} requests");
                assert!(answer.headers().contains_key("retry-after"));
                expect_problem(answer, 429, "rate-limited").await;
            },
        )
        .await;

    cases
        .case(
            "a client's own X-Forwarded-For does not reset its rate-limit budget",
            async {
                let client = client_from(network(66));
                let mut limited_at = None;
                for i in 0..=AUTH_LIMIT + 5 {
                    let answer = client
                        .post(env.url("/api/v1/auth/refresh"))
                        .header("X-Forwarded-For", format!("203.0.113.{}", i + 1))
                        .header("X-Real-IP", format!("198.51.100.{}", i + 1))
                        .header("Forwarded", format!("for=192.0.2.{}", i + 1))
                        .json(&json!({"refresh_token": "not-a-token"}))
                        .send()
                        .await
                        .unwrap();
                    if answer.status() == StatusCode::TOO_MANY_REQUESTS {
                        limited_at = Some(i);
                        expect_problem(answer, 429, "rate-limited").await;
                        break;
                    }
                }
                let at = limited_at.expect("forged addresses escaped the per-client limit");
                assert!(at <= AUTH_LIMIT, "limited only after {at} requests");
            },
        )
        .await;

    cases
        .case(
            "another spelling of the auth routes counts against the same budget",
            async {
                // Network 63's auth budget is spent (case above).
                for target in [
                    "/api/v1/%61uth/refresh",
                    "/api/v1/auth/./refresh",
                    "/api/v1//auth/refresh",
                ] {
                    let request = raw::request(
                        "POST",
                        target,
                        &["Content-Type: application/json".into()],
                        Some(br#"{"refresh_token":"x"}"#),
                    );
                    let mut stream = raw::connect(env.gateway_addr(), Some(network(63))).await;
                    stream.write_all(&request).await.unwrap();
                    let answer = raw::read_response(&mut stream, Duration::from_secs(15))
                        .await
                        .unwrap();
                    assert!(
                        [400, 404, 429].contains(&answer.status),
                        "{target} answered {} past the auth budget: {}",
                        answer.status,
                        answer.text()
                    );
                }
            },
        )
        .await;

    cases
        .case(
            "a webhook flood from one address is limited with 429 while others still get through",
            async {
                let flooder = client_from(network(64));
                let mut limited = false;
                for i in 0..10 * WEBHOOK_LIMIT {
                    let answer = flooder
                        .post(env.url("/webhooks/shopify"))
                        .header("X-Shopify-Topic", "orders/create")
                        .header("X-Shopify-Event-Id", format!("flood-{i}"))
                        .header("X-Shopify-Hmac-Sha256", "bm90IGEgc2lnbmF0dXJl")
                        .body("{}")
                        .send()
                        .await
                        .unwrap();
                    if answer.status() == StatusCode::TOO_MANY_REQUESTS {
                        assert!(answer.headers().contains_key("retry-after"));
                        assert!(i <= WEBHOOK_LIMIT, "limited only after {i} deliveries");
                        expect_problem(answer, 429, "rate-limited").await;
                        limited = true;
                        break;
                    }
                    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
                }
                assert!(
                    limited,
                    "{} forged webhooks from one address were all verified",
                    10 * WEBHOOK_LIMIT
                );
                let answer = client_from(network(65))
                    .post(env.url("/webhooks/shopify"))
                    .header("X-Shopify-Topic", "orders/create")
                    .header("X-Shopify-Event-Id", "other-network")
                    .header("X-Shopify-Hmac-Sha256", "bm90IGEgc2lnbmF0dXJl")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "webhook-bad-signature").await;
            },
        )
        .await;

    cases
        .case("event streams past the per-user limit are 429", async {
            let mut open = Vec::new();
            let mut refused = None;
            for _ in 0..12 {
                let answer = user
                    .http
                    .get(env.url("/api/v1/events"))
                    .bearer_auth(&user.access)
                    .header("Accept", "text/event-stream")
                    .send()
                    .await
                    .unwrap();
                if answer.status() == StatusCode::TOO_MANY_REQUESTS {
                    refused = Some(answer);
                    break;
                }
                assert_eq!(answer.status(), StatusCode::OK);
                open.push(answer);
            }
            let answer = refused.expect("12 streams were opened");
            assert_eq!(open.len(), 8, "streams open before the refusal");
            assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        })
        .await;

    cases.finish(|| env.logs());
}
