//! `POST /webhooks/{source}` against real PostgreSQL and RabbitMQ: every
//! scheme's accepted and refused deliveries, with the status API.md names,
//! and nothing stored for a refused one.

use std::time::{Duration, Instant};

use api_gateway::edge::rate_limit::ClassLimit;
use keel_webhooks::Scheme;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{TestApp, spawn_app_behind_proxies_with, spawn_app_with};
use crate::webhooks_support::{
    BODY_LIMIT, Delivery, Key, SCHEMES, configure, count, now, outbox_rows, stored_events,
};

async fn spawn() -> TestApp {
    spawn_app_with(configure).await
}

fn delivery_id() -> String {
    format!("evt_{}", Uuid::new_v4().simple())
}

/// Asserts a problem answer and returns its body.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    response.json().await.unwrap()
}

#[tokio::test]
async fn every_scheme_stores_a_validly_signed_delivery_with_its_job_and_event() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let id = delivery_id();
        let delivery = Delivery::valid(scheme, &id);
        let response = delivery.post(&app).await;
        assert_eq!(response.status(), StatusCode::OK, "{scheme:?}");
        let receipt: Value = response.json().await.unwrap();
        assert_eq!(receipt["duplicate"], false, "{scheme:?}");
        let event_id: Uuid = receipt["id"].as_str().unwrap().parse().unwrap();

        let client = app.db().pool().get().await.unwrap();
        let row = client
            .query_one(
                "SELECT source, delivery_id, body, headers, status FROM webhook_events WHERE id = $1",
                &[&event_id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), scheme.as_str());
        assert_eq!(row.get::<_, String>(1), id);
        assert_eq!(
            row.get::<_, Vec<u8>>(2),
            delivery.body,
            "stored byte for byte"
        );
        assert_eq!(row.get::<_, String>(4), "received");
        let headers: Value = row.get(3);
        let signature = scheme.signature_header().to_ascii_lowercase();
        assert_eq!(headers[&signature], "[redacted]", "{scheme:?}: {headers}");
        assert!(headers.get("authorization").is_none(), "{headers}");
        assert_eq!(headers["content-type"], "application/json");

        let queued = count(
            &app,
            &format!(
                "SELECT count(*) FROM outbox WHERE \
                 (message_type = 'webhook.process' OR message_type = 'webhook.received') \
                 AND payload->'data'->>'event_id' = '{event_id}'"
            ),
        )
        .await;
        assert_eq!(queued, 2, "{scheme:?}: job and domain event");
    }
    assert_eq!(stored_events(&app).await, 4);
    app.stop().await;
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let mut delivery = Delivery::valid(scheme, &delivery_id());
        // One byte: what a re-serialising proxy or an attacker would change.
        let last = delivery.body.len() - 2;
        delivery.body[last] ^= 0x01;
        let body = problem(delivery.post(&app).await, StatusCode::UNAUTHORIZED).await;
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("webhook-bad-signature"),
            "{scheme:?}: {body}"
        );
    }
    assert_eq!(stored_events(&app).await, 0);
    assert_eq!(outbox_rows(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_signed_with_a_wrong_secret_is_refused_with_401() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let delivery = Delivery::signed(scheme, Key::Wrong, &delivery_id(), now());
        let body = problem(delivery.post(&app).await, StatusCode::UNAUTHORIZED).await;
        assert!(
            body["detail"].as_str().unwrap().contains("signature"),
            "{scheme:?}: {body}"
        );
    }
    assert_eq!(stored_events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_removed_secret_is_refused_while_the_still_active_previous_one_is_accepted() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let retired = Delivery::signed(scheme, Key::Retired, &delivery_id(), now());
        problem(retired.post(&app).await, StatusCode::UNAUTHORIZED).await;
        let previous = Delivery::signed(scheme, Key::Previous, &delivery_id(), now());
        assert_eq!(
            previous.post(&app).await.status(),
            StatusCode::OK,
            "{scheme:?}"
        );
    }
    assert_eq!(
        stored_events(&app).await,
        4,
        "only the previous-secret deliveries"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_delivery_without_its_signature_headers_is_refused_with_401_naming_the_header() {
    let app = spawn().await;
    let cases = [
        (Scheme::Shopify, "X-Shopify-Hmac-Sha256"),
        (Scheme::Github, "X-Hub-Signature-256"),
        (Scheme::Stripe, "Stripe-Signature"),
        (Scheme::Standard, "webhook-signature"),
        (Scheme::Standard, "webhook-timestamp"),
    ];
    for (scheme, header) in cases {
        let delivery = Delivery::valid(scheme, &delivery_id()).without_header(header);
        let body = problem(delivery.post(&app).await, StatusCode::UNAUTHORIZED).await;
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("webhook-missing-header"),
            "{body}"
        );
        assert!(body["detail"].as_str().unwrap().contains(header), "{body}");
    }
    assert_eq!(stored_events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_signed_delivery_without_a_delivery_id_is_refused_with_400() {
    let app = spawn().await;
    let stripe_without_id = Delivery::sign(
        Scheme::Stripe,
        Key::Current,
        "",
        now(),
        br#"{"object":"event","type":"charge.succeeded"}"#.to_vec(),
    );
    let cases = [
        Delivery::valid(Scheme::Shopify, "x").without_header("X-Shopify-Event-Id"),
        Delivery::valid(Scheme::Github, "x").without_header("X-GitHub-Delivery"),
        Delivery::valid(Scheme::Standard, "x").without_header("webhook-id"),
        stripe_without_id,
    ];
    for delivery in cases {
        let body = problem(delivery.post(&app).await, StatusCode::BAD_REQUEST).await;
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("webhook-missing-delivery-id"),
            "{:?}: {body}",
            delivery.scheme
        );
    }
    assert_eq!(stored_events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_refused_with_400_for_stripe_and_standard() {
    let app = spawn().await;
    for scheme in [Scheme::Stripe, Scheme::Standard] {
        // Well past the 300 s tolerance: a request that reaches the server a
        // few seconds after signing (a loaded machine) must still be outside
        // it. The exact boundary is the scheme unit tests' to pin.
        for (offset, check) in [(-330, "stale-timestamp"), (330, "future-timestamp")] {
            let delivery = Delivery::signed(scheme, Key::Current, &delivery_id(), now() + offset);
            let body = problem(delivery.post(&app).await, StatusCode::BAD_REQUEST).await;
            assert!(
                body["type"].as_str().unwrap().ends_with(check),
                "{scheme:?} {offset}: {body}"
            );
        }
        // Inside the tolerance on either side: accepted.
        for offset in [-290, 290] {
            let delivery = Delivery::signed(scheme, Key::Current, &delivery_id(), now() + offset);
            assert_eq!(delivery.post(&app).await.status(), StatusCode::OK);
        }
    }
    assert_eq!(
        stored_events(&app).await,
        4,
        "only the four in-tolerance deliveries"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_the_sources_limit_is_refused_with_413_and_nothing_is_stored() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let id = delivery_id();
        let body = match scheme {
            Scheme::Stripe => format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(BODY_LIMIT)),
            _ => format!(r#"{{"pad":"{}"}}"#, "x".repeat(BODY_LIMIT)),
        };
        let delivery = Delivery::sign(scheme, Key::Current, &id, now(), body.into_bytes());
        problem(delivery.post(&app).await, StatusCode::PAYLOAD_TOO_LARGE).await;
    }
    assert_eq!(stored_events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted() {
    let app = spawn().await;
    let id = delivery_id();
    let filler = BODY_LIMIT - r#"{"pad":""}"#.len();
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(filler));
    assert_eq!(body.len(), BODY_LIMIT);
    let delivery = Delivery::sign(Scheme::Github, Key::Current, &id, now(), body.into_bytes());
    assert_eq!(delivery.post(&app).await.status(), StatusCode::OK);
    app.stop().await;
}

#[tokio::test]
async fn a_redelivery_answers_200_duplicate_with_the_first_events_id_and_is_stored_once() {
    let app = spawn().await;
    for scheme in SCHEMES {
        let delivery = Delivery::valid(scheme, &delivery_id());
        let first: Value = delivery.post(&app).await.json().await.unwrap();
        let again = delivery.post(&app).await;
        assert_eq!(again.status(), StatusCode::OK);
        let again: Value = again.json().await.unwrap();
        assert_eq!(first["duplicate"], false);
        assert_eq!(again["duplicate"], true, "{scheme:?}");
        assert_eq!(again["id"], first["id"], "{scheme:?}");
    }
    assert_eq!(stored_events(&app).await, 4);
    assert_eq!(
        outbox_rows(&app).await,
        8,
        "one job and one event per stored delivery"
    );
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_source_is_a_404_problem() {
    let app = spawn().await;
    let response = app
        .client
        .post(format!("{}/webhooks/nobody", app.address))
        .body("{}")
        .send()
        .await
        .unwrap();
    let body = problem(response, StatusCode::NOT_FOUND).await;
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .ends_with("webhook-unknown-source")
    );
    app.stop().await;
}

#[tokio::test]
async fn webhooks_need_no_bearer_token_and_other_methods_get_405() {
    let app = spawn().await;
    let response = app
        .client
        .get(format!("{}/webhooks/shopify", app.address))
        .send()
        .await
        .unwrap();
    problem(response, StatusCode::METHOD_NOT_ALLOWED).await;
    app.stop().await;
}

#[tokio::test]
async fn deliveries_are_counted_by_source_and_outcome_with_the_failed_check_as_label() {
    let app = spawn().await;
    Delivery::valid(Scheme::Shopify, &delivery_id())
        .post(&app)
        .await;
    Delivery::signed(Scheme::Github, Key::Wrong, &delivery_id(), now())
        .post(&app)
        .await;
    Delivery::signed(Scheme::Stripe, Key::Current, &delivery_id(), now() - 3600)
        .post(&app)
        .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for line in [
        r#"webhooks_received_total{source="shopify",outcome="stored"} 1"#,
        r#"webhooks_received_total{source="github",outcome="bad_signature"} 1"#,
        r#"webhooks_received_total{source="stripe",outcome="stale_timestamp"} 1"#,
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.ends_with(line) || l.contains(line)),
            "missing {line} in:\n{metrics}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn webhooks_are_accepted_while_rabbitmq_is_unreachable_and_published_once_it_returns() {
    let app = spawn_app_behind_proxies_with(configure).await;
    let proxies = app.proxies.as_ref().unwrap();
    proxies.rabbitmq.cut();

    let started = std::time::Instant::now();
    for scheme in SCHEMES {
        let response = Delivery::valid(scheme, &delivery_id()).post(&app).await;
        assert_eq!(response.status(), StatusCode::OK, "{scheme:?}");
    }
    // Never waits for the broker (its publish timeout is seconds).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stored_events(&app).await, 4);
    let unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
    assert_eq!(count(&app, unpublished).await, 8);

    proxies.rabbitmq.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = count(&app, unpublished).await;
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} outbox rows still unpublished 30 s after RabbitMQ returned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stored_delivery_wakes_the_relay_without_waiting_for_its_poll() {
    // The capture writes its outbox rows without NOTIFY (it would serialise
    // commits); the gateway's wake-up after commit must reach the relay.
    let app = spawn_app_with(|settings| {
        configure(settings);
        settings.outbox.poll_interval = Duration::from_secs(120);
    })
    .await;
    // Wait for the relay's LISTEN connection (a NOTIFY before it is lost;
    // under a loaded test run that can take more than a moment).
    let listening = "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'LISTEN %'";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(&app, listening).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = Delivery::valid(Scheme::Github, &delivery_id())
        .post(&app)
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let unpublished = "SELECT count(*) FROM outbox WHERE published_at IS NULL";
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(&app, unpublished).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "outbox rows still unpublished 10 s after the capture (poll interval 120 s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox_rows(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_client_address_over_its_webhook_budget_gets_a_429_problem_with_retry_after() {
    let app = spawn_app_with(|s| {
        configure(s);
        s.rate_limit.classes.insert(
            "webhooks".into(),
            ClassLimit {
                limit: 3,
                period: Duration::from_secs(60),
            },
        );
        // The test client plays an ingress forwarding for several senders.
        s.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let from = |address: &str| {
        let mut delivery = Delivery::valid(Scheme::Shopify, &delivery_id());
        delivery
            .headers
            .push(("X-Forwarded-For".into(), address.to_owned()));
        delivery
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.7").post(&app).await.status(), 200);
    }
    let refused = from("203.0.113.7").post(&app).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:keel:problem:rate-limited", "{body}");
    // Another sender's budget is its own.
    assert_eq!(from("198.51.100.9").post(&app).await.status(), 200);
    assert_eq!(stored_events(&app).await, 4);
    app.stop().await;
}

#[tokio::test]
async fn a_body_trickled_past_the_read_deadline_is_cut_with_a_408_and_nothing_is_stored() {
    let deadline = Duration::from_secs(1);
    let app = spawn_app_with(|s| {
        configure(s);
        s.webhooks.body_read_timeout = deadline;
    })
    .await;
    let delivery = Delivery::valid(Scheme::Shopify, &delivery_id());
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut head = format!(
        "POST /webhooks/shopify HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\n",
        delivery.body.len()
    );
    for (name, value) in &delivery.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // A slow sender: ten bytes of the body, then nothing more.
    stream.write_all(&delivery.body[..10]).await.unwrap();
    let sent = Instant::now();

    let slack = Duration::from_secs(4);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(deadline + slack, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        read.is_ok(),
        "no answer (or the connection left open) {slack:?} after the deadline: {answer:?}"
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        sent.elapsed() >= deadline - Duration::from_millis(100),
        "cut before the deadline: {:?}",
        sent.elapsed()
    );
    assert_eq!(stored_events(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn webhooks_are_accepted_without_a_limit_while_redis_is_unreachable() {
    let app = spawn_app_behind_proxies_with(|s| {
        configure(s);
        s.rate_limit.classes.insert(
            "webhooks".into(),
            ClassLimit {
                limit: 1,
                period: Duration::from_secs(60),
            },
        );
    })
    .await;
    app.proxies.as_ref().unwrap().redis.cut();
    // Fail open (rate_limit.fail_open): an outage of the limiter's store
    // must not turn senders away, even past the budget.
    for scheme in SCHEMES {
        let response = Delivery::valid(scheme, &delivery_id()).post(&app).await;
        assert_eq!(response.status(), StatusCode::OK, "{scheme:?}");
    }
    assert_eq!(stored_events(&app).await, 4);
    app.stop().await;
}
