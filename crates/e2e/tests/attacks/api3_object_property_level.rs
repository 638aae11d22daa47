//! API3:2023 Broken Object Property Level Authorization: properties a
//! customer must not write (owner, source, status, totals, ids, roles) are
//! ignored or refused, and properties nobody should read (password hashes,
//! refresh tokens, webhook signatures) never appear in a response.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Cases, Env, PASSWORD, SHOPIFY_SECRET, client_from, eventually, expect_problem, get_json,
    network,
};

const CLASS: &str = "API3 object property level authorization";

/// POSTs an order with `extra` merged in; `Some(order)` when it was
/// created, `None` when refused with a 422 naming a field.
async fn order_with(env: &Env, user: &crate::support::User, extra: Value) -> Option<Value> {
    let mut body = json!({"currency": "EUR", "items": [{"sku": "PROP-1", "quantity": 2, "unit_price_cents": 1250}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let answer = user
        .http
        .post(env.url("/api/v1/orders"))
        .bearer_auth(&user.access)
        .json(&body)
        .send()
        .await
        .unwrap();
    match answer.status().as_u16() {
        201 => Some(answer.json().await.unwrap()),
        422 => {
            let problem = expect_problem(answer, 422, "validation").await;
            assert!(problem["errors"][0]["field"].is_string(), "{problem}");
            None
        }
        other => panic!(
            "answered {other}: {}",
            answer.text().await.unwrap_or_default()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_a_customer_must_not_write_or_read_stay_out_of_reach() {
    let env = Env::start(&[]).await;
    let alice = env.register(41, "alice@api3.example").await;
    let bob = env.register(42, "bob@api3.example").await;
    let admin = env.admin(43).await;
    let mut cases = Cases::new(CLASS);

    cases
        .case(
            "user_id in a new order is ignored or refused: the order is the caller's",
            async {
                if let Some(order) = order_with(&env, &alice, json!({"user_id": bob.id})).await {
                    assert_eq!(order["user_id"], alice.id.as_str());
                    let (_, _, owner, _) = env
                        .stored_order(order["id"].as_str().unwrap())
                        .await
                        .unwrap();
                    assert_eq!(owner.unwrap().to_string(), alice.id);
                }
            },
        )
        .await;

    cases
        .case(
            "source in a new order is ignored or refused: it stays api",
            async {
                if let Some(order) =
                    order_with(&env, &alice, json!({"source": "webhook:shopify"})).await
                {
                    assert_eq!(order["source"], "api");
                    let (_, _, _, source) = env
                        .stored_order(order["id"].as_str().unwrap())
                        .await
                        .unwrap();
                    assert_eq!(source, "api");
                }
            },
        )
        .await;

    cases
        .case(
            "status paid in a new order is ignored or refused: it starts pending",
            async {
                if let Some(order) = order_with(&env, &alice, json!({"status": "paid"})).await {
                    assert_eq!(order["status"], "pending");
                    let (status, _, _, _) = env
                        .stored_order(order["id"].as_str().unwrap())
                        .await
                        .unwrap();
                    assert_eq!(status, "pending");
                }
            },
        )
        .await;

    cases
        .case(
            "total_cents in a new order is ignored or refused: the total is computed",
            async {
                if let Some(order) = order_with(&env, &alice, json!({"total_cents": 1})).await {
                    assert_eq!(order["total_cents"], 2500);
                    let (_, total, _, _) = env
                        .stored_order(order["id"].as_str().unwrap())
                        .await
                        .unwrap();
                    assert_eq!(total, 2500);
                }
            },
        )
        .await;

    cases
        .case("id and timestamps in a new order are ignored or refused", async {
            let chosen = uuid::Uuid::new_v4().to_string();
            if let Some(order) = order_with(
                &env,
                &alice,
                json!({"id": chosen, "created_at": "2000-01-01T00:00:00Z", "updated_at": "2000-01-01T00:00:00Z"}),
            )
            .await
            {
                assert_ne!(order["id"], chosen.as_str());
                assert!(!order["created_at"].as_str().unwrap().starts_with("2000"), "{order}");
            }
        })
        .await;

    let target = env.simple_order(&alice).await;
    let target_id = target["id"].as_str().unwrap().to_owned();

    cases
        .case("a PATCH carrying total_cents, user_id and source changes none of them", async {
            let answer = alice
                .http
                .patch(env.url(&format!("/api/v1/orders/{target_id}")))
                .bearer_auth(&alice.access)
                .json(&json!({"status": "cancelled", "total_cents": 1, "user_id": bob.id, "source": "webhook:stripe"}))
                .send()
                .await
                .unwrap();
            let status = answer.status();
            assert!(
                status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
                "answered {status}"
            );
            let (_, total, owner, source) = env.stored_order(&target_id).await.unwrap();
            assert_eq!(total, 2500);
            assert_eq!(owner.unwrap().to_string(), alice.id);
            assert_eq!(source, "api");
        })
        .await;

    cases
        .case("roles in a registration are ignored: the account is a customer", async {
            let client = client_from(network(44));
            let answer = client
                .post(env.url("/api/v1/auth/register"))
                .json(&json!({"email": "climber@api3.example", "password": PASSWORD, "roles": ["admin"],
                              "is_admin": true, "role": "admin"}))
                .send()
                .await
                .unwrap();
            let status = answer.status();
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            if status == StatusCode::UNPROCESSABLE_ENTITY {
                return;
            }
            assert_eq!(status, StatusCode::CREATED, "{body}");
            assert_eq!(body["roles"], json!(["customer"]), "{body}");
            let climber = env.login_from(44, "climber@api3.example", PASSWORD).await;
            let answer = climber
                .http
                .get(env.url("/api/v1/admin/queues"))
                .bearer_auth(&climber.access)
                .send()
                .await
                .unwrap();
            expect_problem(answer, 403, "forbidden").await;
        })
        .await;

    cases
        .case("roles in a login body do not reach the token", async {
            let answer = alice
                .http
                .post(env.url("/api/v1/auth/login"))
                .json(&json!({"email": alice.email, "password": PASSWORD, "roles": ["admin"], "scope": "admin"}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let pair: Value = answer.json().await.unwrap();
            let answer = alice
                .http
                .get(env.url("/api/v1/admin/queues"))
                .bearer_auth(pair["access_token"].as_str().unwrap())
                .send()
                .await
                .unwrap();
            expect_problem(answer, 403, "forbidden").await;
        })
        .await;

    cases
        .case(
            "the user resource never shows a password or its hash",
            async {
                let (status, me) =
                    get_json(&alice.http, &env.url("/api/v1/auth/me"), &alice.access).await;
                assert_eq!(status, StatusCode::OK);
                let text = me.to_string().to_lowercase();
                for secret in ["password", "hash", "argon2", PASSWORD] {
                    assert!(!text.contains(&secret.to_lowercase()), "{secret} in {me}");
                }
            },
        )
        .await;

    cases
        .case("the session list never shows refresh tokens", async {
            let (status, sessions) = get_json(
                &alice.http,
                &env.url("/api/v1/auth/sessions"),
                &alice.access,
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            let text = sessions.to_string();
            assert!(!text.contains(&alice.refresh), "{sessions}");
            for item in sessions["items"].as_array().unwrap() {
                for key in item.as_object().unwrap().keys() {
                    assert!(
                        !key.contains("token") && !key.contains("hash"),
                        "{key} in {item}"
                    );
                }
            }
        })
        .await;

    cases
        .case("problem bodies never echo a submitted password", async {
            let distinct = "Zq9-distinctive-guess-4417";
            let answer = alice
                .http
                .post(env.url("/api/v1/auth/login"))
                .json(&json!({"email": alice.email, "password": distinct}))
                .send()
                .await
                .unwrap();
            let text = answer.text().await.unwrap();
            assert!(!text.contains(distinct), "{text}");
            let long = format!("{distinct}{}", "x".repeat(200));
            let answer = alice
                .http
                .post(env.url("/api/v1/auth/register"))
                .json(&json!({"email": "long@api3.example", "password": long}))
                .send()
                .await
                .unwrap();
            let text = answer.text().await.unwrap();
            assert!(!text.contains(distinct), "{text}");
        })
        .await;

    cases
        .case("an admin reading a webhook event sees its signature redacted", async {
            let body = json!({"id": 4242_u64, "currency": "EUR", "total_price": "1.00", "line_items": []}).to_string();
            let signature = keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes());
            let answer = admin
                .http
                .post(env.url("/webhooks/shopify"))
                .header("Content-Type", "application/json")
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
                .header("X-Shopify-Hmac-Sha256", &signature)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            let receipt: Value = answer.json().await.unwrap();
            let (status, event) = get_json(
                &admin.http,
                &env.url(&format!("/api/v1/admin/webhook-events/{}", receipt["id"].as_str().unwrap())),
                &admin.access,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{event}");
            let text = event.to_string();
            assert!(!text.contains(&signature), "the signature is shown: {event}");
            assert!(!text.contains(SHOPIFY_SECRET), "the secret is shown: {event}");
        })
        .await;

    cases
        .case("an export filter naming another user exports only the caller's orders", async {
            env.simple_order(&bob).await;
            let answer = alice
                .http
                .post(env.url("/api/v1/exports"))
                .bearer_auth(&alice.access)
                .json(&json!({"resource": "orders", "format": "ndjson", "filter": {"user_id": bob.id}, "user_id": bob.id}))
                .send()
                .await
                .unwrap();
            if answer.status() == StatusCode::UNPROCESSABLE_ENTITY {
                expect_problem(answer, 422, "validation").await;
                return;
            }
            assert_eq!(answer.status(), StatusCode::ACCEPTED);
            let id = answer.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
            let export = eventually(&env, "the export", Duration::from_secs(60), || async {
                let (_, e) = get_json(&alice.http, &env.url(&format!("/api/v1/exports/{id}")), &alice.access).await;
                (e["status"] == "succeeded").then_some(e)
            })
            .await;
            assert!(export["rows_written"].as_i64().unwrap() > 0, "{export}");
            let file = alice
                .http
                .get(env.url(&format!("/api/v1/exports/{id}/download")))
                .bearer_auth(&alice.access)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            for line in file.lines() {
                let row: Value = serde_json::from_str(line).unwrap();
                assert_eq!(row["user_id"], alice.id.as_str(), "{line}");
            }
        })
        .await;

    cases.finish(|| env.logs());
}
