//! API6:2023 Unrestricted Access to Sensitive Business Flows: a customer
//! paying or fulfilling her own order by asking, cancelling what is already
//! paid, a payment event whose amount or currency is not the order's, and
//! order bodies that bend the arithmetic.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Cases, Env, STRIPE_SECRET, User, eventually, expect_problem};

const CLASS: &str = "API6 sensitive business flows";

async fn patch_status(env: &Env, user: &User, id: &str, status: &str) -> reqwest::Response {
    user.http
        .patch(env.url(&format!("/api/v1/orders/{id}")))
        .bearer_auth(&user.access)
        .json(&json!({"status": status}))
        .send()
        .await
        .unwrap()
}

/// Sends a signed `payment_intent.succeeded` for `order_id` and waits until
/// the worker has finished with it (whatever it decided); returns the
/// event's final status.
async fn pay_with_stripe(env: &Env, order_id: &str, amount: i64, currency: &str) -> String {
    let body = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": format!("pi_{}", uuid::Uuid::new_v4().simple()),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount,
            "currency": currency,
            "metadata": {"order_id": order_id},
        }},
    })
    .to_string();
    let answer = reqwest::Client::new()
        .post(env.url("/webhooks/stripe"))
        .header("Content-Type", "application/json")
        .header(
            "Stripe-Signature",
            keel_webhooks::sign::stripe(
                STRIPE_SECRET,
                chrono::Utc::now().timestamp(),
                body.as_bytes(),
            ),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let event_id: uuid::Uuid = answer.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually(
        env,
        "the payment event handled",
        Duration::from_secs(30),
        || async {
            let status: String = env
                .db()
                .await
                .query_one(
                    "SELECT status FROM webhook_events WHERE id = $1",
                    &[&event_id],
                )
                .await
                .unwrap()
                .get(0);
            (status != "received").then_some(status)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn business_rules_hold_against_customers_and_forged_flows() {
    let env = Env::start(&[]).await;
    let customer = env.register(71, "erin@api6.example").await;
    let admin = env.admin(72).await;
    let mut cases = Cases::new(CLASS);

    for next in ["paid", "fulfilled"] {
        cases
            .case(
                &format!(
                    "a customer marking her own pending order {next} is 403 and it stays pending"
                ),
                async {
                    let order = env.simple_order(&customer).await;
                    let id = order["id"].as_str().unwrap();
                    expect_problem(
                        patch_status(&env, &customer, id, next).await,
                        403,
                        "forbidden",
                    )
                    .await;
                    let (status, _, _, _) = env.stored_order(id).await.unwrap();
                    assert_eq!(status, "pending");
                },
            )
            .await;
    }

    let paid = env.simple_order(&customer).await;
    let paid_id = paid["id"].as_str().unwrap().to_owned();
    let answer = patch_status(&env, &admin, &paid_id, "paid").await;
    assert_eq!(answer.status(), StatusCode::OK, "the admin marks it paid");

    cases
        .case(
            "a customer cancelling her paid order is refused and it stays paid",
            async {
                let answer = patch_status(&env, &customer, &paid_id, "cancelled").await;
                let status = answer.status().as_u16();
                match status {
                    403 => expect_problem(answer, 403, "forbidden").await,
                    409 => expect_problem(answer, 409, "illegal-transition").await,
                    other => panic!(
                        "answered {other}: {}",
                        answer.text().await.unwrap_or_default()
                    ),
                };
                assert_eq!(env.stored_order(&paid_id).await.unwrap().0, "paid");
            },
        )
        .await;

    cases
        .case(
            "a customer deleting her paid order is refused and it stays paid",
            async {
                let answer = customer
                    .http
                    .delete(env.url(&format!("/api/v1/orders/{paid_id}")))
                    .bearer_auth(&customer.access)
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                assert!(status == 403 || status == 409, "answered {status}");
                assert_eq!(env.stored_order(&paid_id).await.unwrap().0, "paid");
            },
        )
        .await;

    cases
        .case(
            "a payment for less than the order's total does not mark it paid",
            async {
                let order = env.simple_order(&customer).await;
                let id = order["id"].as_str().unwrap();
                pay_with_stripe(&env, id, 1, "eur").await;
                assert_eq!(env.stored_order(id).await.unwrap().0, "pending");
            },
        )
        .await;

    cases
        .case(
            "a payment in another currency does not mark the order paid",
            async {
                let order = env.simple_order(&customer).await;
                let id = order["id"].as_str().unwrap();
                pay_with_stripe(&env, id, 2500, "usd").await;
                assert_eq!(env.stored_order(id).await.unwrap().0, "pending");
            },
        )
        .await;

    cases
        .case(
            "a payment for a cancelled order does not revive it",
            async {
                let order = env.simple_order(&customer).await;
                let id = order["id"].as_str().unwrap();
                assert_eq!(
                    patch_status(&env, &customer, id, "cancelled")
                        .await
                        .status(),
                    StatusCode::OK
                );
                pay_with_stripe(&env, id, 2500, "eur").await;
                assert_eq!(env.stored_order(id).await.unwrap().0, "cancelled");
            },
        )
        .await;

    cases
        .case("an Idempotency-Key reused with another body is 422 and creates nothing", async {
            let send = |quantity: i64| {
                customer
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&customer.access)
                    .header("Idempotency-Key", "checkout-42")
                    .json(&json!({"currency": "EUR", "items": [{"sku": "IDEM-1", "quantity": quantity, "unit_price_cents": 100}]}))
                    .send()
            };
            assert_eq!(send(1).await.unwrap().status(), StatusCode::CREATED);
            let count = || async {
                let user: uuid::Uuid = customer.id.parse().unwrap();
                env.db()
                    .await
                    .query_one("SELECT count(*) FROM orders WHERE user_id = $1", &[&user])
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            };
            let before = count().await;
            expect_problem(send(50).await.unwrap(), 422, "idempotency-key-reused").await;
            assert_eq!(count().await, before);
        })
        .await;

    for (name, item, field) in [
        (
            "a zero quantity",
            json!({"sku": "Q-0", "quantity": 0, "unit_price_cents": 100}),
            "items[0].quantity",
        ),
        (
            "a negative quantity",
            json!({"sku": "Q-1", "quantity": -3, "unit_price_cents": 100}),
            "items[0].quantity",
        ),
        (
            "a negative price",
            json!({"sku": "P-1", "quantity": 1, "unit_price_cents": -100}),
            "items[0].unit_price_cents",
        ),
        (
            "a quantity past the maximum",
            json!({"sku": "Q-2", "quantity": 10_001, "unit_price_cents": 1}),
            "items[0].quantity",
        ),
        (
            "a price that overflows 64 bits",
            json!({"sku": "P-2", "quantity": 1, "unit_price_cents": 9_223_372_036_854_775_807_i64}),
            "items[0].unit_price_cents",
        ),
    ] {
        cases
            .case(
                &format!("an order with {name} is refused naming {field}"),
                async {
                    let answer = customer
                        .http
                        .post(env.url("/api/v1/orders"))
                        .bearer_auth(&customer.access)
                        .json(&json!({"currency": "EUR", "items": [item]}))
                        .send()
                        .await
                        .unwrap();
                    let problem = expect_problem(answer, 422, "validation").await;
                    let fields: Vec<&str> = problem["errors"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|e| e["field"].as_str())
                        .collect();
                    assert!(fields.contains(&field), "{problem}");
                },
            )
            .await;
    }

    cases
        .case("an order with a made-up currency is refused naming currency", async {
            let answer = customer
                .http
                .post(env.url("/api/v1/orders"))
                .bearer_auth(&customer.access)
                .json(&json!({"currency": "eur'; --", "items": [{"sku": "C-1", "quantity": 1, "unit_price_cents": 1}]}))
                .send()
                .await
                .unwrap();
            let problem = expect_problem(answer, 422, "validation").await;
            assert_eq!(problem["errors"][0]["field"], "currency", "{problem}");
        })
        .await;

    cases.finish(|| env.logs());
}
