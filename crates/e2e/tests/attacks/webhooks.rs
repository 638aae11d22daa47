//! Webhook attacks: replayed deliveries, re-dated and stale signatures
//! (Stripe and Standard Webhooks), tampered bodies, another source's
//! secret, missing or hostile delivery ids, a captured Shopify update
//! re-sent to roll an order back, and signed payloads whose content is not
//! to be trusted (API10:2023, Unsafe Consumption of APIs).

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::support::{
    Cases, Env, GITHUB_SECRET, SHOPIFY_SECRET, STANDARD_SECRET, STRIPE_SECRET, eventually,
    expect_problem,
};

const CLASS: &str = "webhooks";

fn shopify(
    env: &Env,
    client: &Client,
    topic: &str,
    delivery: &str,
    body: &str,
    signature: &str,
) -> RequestBuilder {
    client
        .post(env.url("/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Event-Id", delivery)
        .header("X-Shopify-Hmac-Sha256", signature)
        .body(body.to_owned())
}

fn stripe(env: &Env, client: &Client, body: &str, signature: &str) -> RequestBuilder {
    client
        .post(env.url("/webhooks/stripe"))
        .header("Content-Type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body.to_owned())
}

fn standard(
    env: &Env,
    client: &Client,
    id: &str,
    timestamp: i64,
    body: &str,
    signature: &str,
) -> RequestBuilder {
    client
        .post(env.url("/webhooks/standard"))
        .header("Content-Type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
}

fn stripe_event(id: &str) -> String {
    json!({"id": id, "type": "customer.created", "data": {"object": {"id": "cus_1", "object": "customer"}}}).to_string()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Rows stored for `(source, delivery_id)`.
async fn stored(env: &Env, source: &str, delivery: &str) -> i64 {
    env.db()
        .await
        .query_one(
            "SELECT count(*) FROM webhook_events WHERE source = $1 AND delivery_id = $2",
            &[&source, &delivery],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits until the event of `(source, delivery)` is no longer `received`.
async fn handled(env: &Env, source: &str, delivery: &str) -> String {
    eventually(
        env,
        "the webhook handled",
        Duration::from_secs(30),
        || async {
            let row = env
                .db()
                .await
                .query_opt(
                    "SELECT status FROM webhook_events WHERE source = $1 AND delivery_id = $2",
                    &[&source, &delivery],
                )
                .await
                .unwrap()?;
            let status: String = row.get(0);
            (status != "received").then_some(status)
        },
    )
    .await
}

fn shopify_order(id: u64, total: &str, updated_at: &str) -> String {
    json!({
        "id": id, "email": "buyer@webhooks.example", "currency": "EUR", "total_price": total,
        "updated_at": updated_at,
        "line_items": [{"id": id, "sku": "HOOK-1", "quantity": 1, "price": total}],
    })
    .to_string()
}

/// The stored total of the Shopify order `external_id`.
async fn shopify_total(env: &Env, external_id: u64) -> Option<i64> {
    env.db()
        .await
        .query_opt(
            "SELECT total_cents FROM orders WHERE source = 'webhook:shopify' AND external_id = $1",
            &[&external_id.to_string()],
        )
        .await
        .unwrap()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_redated_and_forged_webhooks_are_refused() {
    let env = Env::start(&[]).await;
    let client = Client::new();
    let mut cases = Cases::new(CLASS);

    cases
        .case(
            "a replayed Shopify delivery is acknowledged as a duplicate and stored once",
            async {
                let body = shopify_order(9001, "5.00", "2026-01-01T10:00:00Z");
                let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
                let delivery = uuid::Uuid::new_v4().to_string();
                let first: Value =
                    shopify(&env, &client, "orders/create", &delivery, &body, &signature)
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                assert_eq!(first["duplicate"], false, "{first}");
                for _ in 0..3 {
                    let again =
                        shopify(&env, &client, "orders/create", &delivery, &body, &signature)
                            .send()
                            .await
                            .unwrap();
                    assert_eq!(again.status(), StatusCode::OK);
                    let again: Value = again.json().await.unwrap();
                    assert_eq!(again["duplicate"], true, "{again}");
                    assert_eq!(again["id"], first["id"]);
                }
                assert_eq!(stored(&env, "shopify", &delivery).await, 1);
            },
        )
        .await;

    cases
        .case(
            "a replayed Stripe event within the tolerance is a duplicate, stored once",
            async {
                let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
                let body = stripe_event(&id);
                let signature = keel_webhooks::sign::stripe(STRIPE_SECRET, now(), body.as_bytes());
                let first: Value = stripe(&env, &client, &body, &signature)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(first["duplicate"], false, "{first}");
                let again: Value = stripe(&env, &client, &body, &signature)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(again["duplicate"], true, "{again}");
                assert_eq!(stored(&env, "stripe", &id).await, 1);
            },
        )
        .await;

    for (name, offset, slug) in [
        (
            "a Stripe event signed an hour ago is 400 and not stored",
            -3600,
            "webhook-stale-timestamp",
        ),
        (
            "a Stripe event signed just past the tolerance is 400",
            -310,
            "webhook-stale-timestamp",
        ),
        (
            "a Stripe event signed an hour ahead is 400 and not stored",
            3600,
            "webhook-future-timestamp",
        ),
    ] {
        cases
            .case(name, async {
                let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
                let body = stripe_event(&id);
                let signature =
                    keel_webhooks::sign::stripe(STRIPE_SECRET, now() + offset, body.as_bytes());
                expect_problem(
                    stripe(&env, &client, &body, &signature)
                        .send()
                        .await
                        .unwrap(),
                    400,
                    slug,
                )
                .await;
                assert_eq!(stored(&env, "stripe", &id).await, 0);
            })
            .await;
    }

    cases
        .case(
            "a captured Stripe signature re-dated to now is 401 and not stored",
            async {
                let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
                let body = stripe_event(&id);
                let captured =
                    keel_webhooks::sign::stripe(STRIPE_SECRET, now() - 3600, body.as_bytes());
                let v1 = captured.split(',').find(|p| p.starts_with("v1=")).unwrap();
                let redated = format!("t={},{v1}", now());
                expect_problem(
                    stripe(&env, &client, &body, &redated).send().await.unwrap(),
                    401,
                    "webhook-bad-signature",
                )
                .await;
                assert_eq!(stored(&env, "stripe", &id).await, 0);
            },
        )
        .await;

    cases
        .case("a Stripe signature in the v0 scheme only is 401", async {
            let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
            let body = stripe_event(&id);
            let genuine = keel_webhooks::sign::stripe(STRIPE_SECRET, now(), body.as_bytes());
            let v0 = genuine.replace("v1=", "v0=");
            let answer = stripe(&env, &client, &body, &v0).send().await.unwrap();
            let status = answer.status().as_u16();
            assert_eq!(status, 401, "{}", answer.text().await.unwrap_or_default());
            assert_eq!(stored(&env, "stripe", &id).await, 0);
        })
        .await;

    for (name, offset, redate, status, slug) in [
        (
            "a Standard Webhooks delivery signed an hour ago is 400",
            -3600,
            false,
            400,
            "webhook-stale-timestamp",
        ),
        (
            "a Standard Webhooks delivery signed an hour ahead is 400",
            3600,
            false,
            400,
            "webhook-future-timestamp",
        ),
        (
            "a Standard Webhooks signature re-dated to now is 401",
            -3600,
            true,
            401,
            "webhook-bad-signature",
        ),
    ] {
        cases
            .case(name, async {
                let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
                let body = json!({"type": "ping"}).to_string();
                let signed_at = now() + offset;
                let signature =
                    keel_webhooks::sign::standard(STANDARD_SECRET, &id, signed_at, body.as_bytes())
                        .unwrap();
                let sent_at = if redate { now() } else { signed_at };
                let answer = standard(&env, &client, &id, sent_at, &body, &signature)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, status, slug).await;
                assert_eq!(stored(&env, "standard", &id).await, 0);
            })
            .await;
    }

    cases
        .case(
            "a Shopify body changed after signing is 401 and not stored",
            async {
                let body = shopify_order(9002, "5.00", "2026-01-01T10:00:00Z");
                let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
                let tampered = body.replace("5.00", "0.01");
                let delivery = uuid::Uuid::new_v4().to_string();
                let answer = shopify(
                    &env,
                    &client,
                    "orders/create",
                    &delivery,
                    &tampered,
                    &signature,
                )
                .send()
                .await
                .unwrap();
                expect_problem(answer, 401, "webhook-bad-signature").await;
                assert_eq!(stored(&env, "shopify", &delivery).await, 0);
            },
        )
        .await;

    cases
        .case(
            "a Shopify delivery signed with another source's secret is 401",
            async {
                let body = shopify_order(9003, "5.00", "2026-01-01T10:00:00Z");
                let signature = keel_webhooks::sign::shopify(GITHUB_SECRET, body.as_bytes());
                let delivery = uuid::Uuid::new_v4().to_string();
                let answer = shopify(&env, &client, "orders/create", &delivery, &body, &signature)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "webhook-bad-signature").await;
                assert_eq!(stored(&env, "shopify", &delivery).await, 0);
            },
        )
        .await;

    cases
        .case(
            "a GitHub delivery with only the SHA-1 signature header is 401",
            async {
                let body = json!({"zen": "hello"}).to_string();
                let answer = client
                    .post(env.url("/webhooks/github"))
                    .header("X-GitHub-Event", "ping")
                    .header("X-GitHub-Delivery", uuid::Uuid::new_v4().to_string())
                    .header(
                        "X-Hub-Signature",
                        "sha1=0000000000000000000000000000000000000000",
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "webhook-missing-header").await;
            },
        )
        .await;

    cases
        .case("a Shopify delivery without a signature is 401", async {
            let answer = client
                .post(env.url("/webhooks/shopify"))
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
                .body(shopify_order(9004, "1.00", "2026-01-01T10:00:00Z"))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "webhook-missing-header").await;
        })
        .await;

    cases
        .case(
            "a signed Shopify delivery without a delivery id is 400",
            async {
                let body = shopify_order(9005, "1.00", "2026-01-01T10:00:00Z");
                let answer = client
                    .post(env.url("/webhooks/shopify"))
                    .header("X-Shopify-Topic", "orders/create")
                    .header(
                        "X-Shopify-Hmac-Sha256",
                        keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 400, "webhook-missing-delivery-id").await;
            },
        )
        .await;

    cases
        .case(
            "a signed Shopify delivery with a 300-character delivery id is 400",
            async {
                let body = shopify_order(9006, "1.00", "2026-01-01T10:00:00Z");
                let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
                let answer = shopify(
                    &env,
                    &client,
                    "orders/create",
                    &"d".repeat(300),
                    &body,
                    &signature,
                )
                .send()
                .await
                .unwrap();
                expect_problem(answer, 400, "webhook-invalid-delivery-id").await;
            },
        )
        .await;

    for source in ["unknown", "SHOPIFY", "shopify%20", "..%2fshopify", "admin"] {
        cases
            .case(
                &format!("POST /webhooks/{source} with a forged signature is refused"),
                async {
                    let body = shopify_order(9007, "1.00", "2026-01-01T10:00:00Z");
                    let answer = client
                        .post(env.url(&format!("/webhooks/{source}")))
                        .header("X-Shopify-Topic", "orders/create")
                        .header("X-Shopify-Event-Id", "spelled-1")
                        .header("X-Shopify-Hmac-Sha256", "bm90IGEgc2lnbmF0dXJl")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    // Unknown (404), the source under another spelling whose
                    // signature fails (401), or a path refused as not
                    // canonical (400, an encoded separator): never accepted.
                    match answer.status().as_u16() {
                        404 => expect_problem(answer, 404, "webhook-unknown-source").await,
                        401 => expect_problem(answer, 401, "webhook-bad-signature").await,
                        400 => expect_problem(answer, 400, "invalid-path").await,
                        other => panic!(
                            "answered {other}: {}",
                            answer.text().await.unwrap_or_default()
                        ),
                    };
                    assert_eq!(stored(&env, "shopify", "spelled-1").await, 0);
                },
            )
            .await;
    }

    cases
        .case("a captured Shopify update re-sent later under a new delivery id does not roll the order back", async {
            let id = 9100_u64;
            let send = |topic: &'static str, total: &'static str, updated_at: &'static str| {
                let body = shopify_order(id, total, updated_at);
                let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
                let delivery = uuid::Uuid::new_v4().to_string();
                let request = shopify(&env, &client, topic, &delivery, &body, &signature);
                async move {
                    assert_eq!(request.send().await.unwrap().status(), StatusCode::OK);
                    delivery
                }
            };
            let created = send("orders/create", "10.00", "2026-01-01T10:00:00Z").await;
            handled(&env, "shopify", &created).await;
            let newer = send("orders/updated", "30.00", "2026-01-01T12:00:00Z").await;
            handled(&env, "shopify", &newer).await;
            assert_eq!(shopify_total(&env, id).await, Some(3000));
            // The attacker kept the 11:00 update and sends it again now.
            let replayed = send("orders/updated", "20.00", "2026-01-01T11:00:00Z").await;
            handled(&env, "shopify", &replayed).await;
            assert_eq!(shopify_total(&env, id).await, Some(3000), "an older update overwrote a newer one");
        })
        .await;

    cases
        .case("a Shopify order re-sent under a new delivery id is not stored twice", async {
            let body = shopify_order(9200, "7.00", "2026-01-01T10:00:00Z");
            let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
            for _ in 0..2 {
                let delivery = uuid::Uuid::new_v4().to_string();
                shopify(&env, &client, "orders/create", &delivery, &body, &signature).send().await.unwrap();
                handled(&env, "shopify", &delivery).await;
            }
            let count: i64 = env
                .db()
                .await
                .query_one(
                    "SELECT count(*) FROM orders WHERE source = 'webhook:shopify' AND external_id = '9200'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(count, 1);
        })
        .await;

    for (name, external, price, quantity) in [
        ("a negative price", 9300_u64, "-5.00", 1),
        ("a negative quantity", 9301, "5.00", -2),
        ("an absurd quantity", 9302, "5.00", 1_000_000_000),
    ] {
        cases
            .case(
                &format!("a signed Shopify order with {name} is marked failed, not stored"),
                async {
                    let body = json!({
                    "id": external, "currency": "EUR", "total_price": "5.00",
                    "line_items": [{"id": 1, "sku": "BAD-1", "quantity": quantity, "price": price}],
                })
                .to_string();
                    let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
                    let delivery = uuid::Uuid::new_v4().to_string();
                    shopify(&env, &client, "orders/create", &delivery, &body, &signature)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(handled(&env, "shopify", &delivery).await, "failed");
                    assert_eq!(shopify_total(&env, external).await, None);
                },
            )
            .await;
    }

    cases.finish(|| env.logs());
}
