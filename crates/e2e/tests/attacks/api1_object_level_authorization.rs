//! API1:2023 Broken Object Level Authorization: Bob, a customer, reaches
//! for Alice's objects by id on every route that takes one. Each answer
//! must be the same 404 a missing object gets (no oracle), and nothing of
//! Alice's may change.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Cases, Env, expect_problem, get_json};

const CLASS: &str = "API1 object level authorization";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_reach_another_customers_objects_by_id() {
    let env = Env::start(&[]).await;
    let alice = env.register(11, "alice@api1.example").await;
    let bob = env.register(12, "bob@api1.example").await;

    // Bob listens for his own events before Alice's export completes.
    let mut bob_events = bob
        .http
        .get(env.url("/api/v1/events"))
        .bearer_auth(&bob.access)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(bob_events.status(), StatusCode::OK);

    let order = env.simple_order(&alice).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let keyed_body = json!({"currency": "EUR", "items": [{"sku": "KEYED-1", "quantity": 1, "unit_price_cents": 500}]});
    let keyed = alice
        .http
        .post(env.url("/api/v1/orders"))
        .bearer_auth(&alice.access)
        .header("Idempotency-Key", "shared-key-1")
        .json(&keyed_body)
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), StatusCode::CREATED);
    let keyed: Value = keyed.json().await.unwrap();
    let external = env
        .order(
            &alice,
            json!({"currency": "EUR", "external_id": "alice-ref-1",
                   "items": [{"sku": "REF-1", "quantity": 1, "unit_price_cents": 700}]}),
        )
        .await;
    let etag = alice
        .http
        .get(env.url(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&alice.access)
        .send()
        .await
        .unwrap()
        .headers()
        .get("etag")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let alice_export = env.finished_export(&alice, "csv").await;
    let export_id = alice_export["id"].as_str().unwrap().to_owned();
    env.simple_order(&bob).await;
    let bob_export = env.finished_export(&bob, "csv").await;
    let (_, sessions) = get_json(
        &alice.http,
        &env.url("/api/v1/auth/sessions"),
        &alice.access,
    )
    .await;
    let alice_session = sessions["items"][0]["id"].as_str().unwrap().to_owned();

    let mut cases = Cases::new(CLASS);
    let order_url = env.url(&format!("/api/v1/orders/{order_id}"));

    // What a missing order looks like: Alice's must look the same to Bob.
    let missing = bob
        .http
        .get(env.url(&format!("/api/v1/orders/{}", uuid::Uuid::new_v4())))
        .bearer_auth(&bob.access)
        .send()
        .await
        .unwrap();
    let missing = expect_problem(missing, 404, "order-not-found").await;

    cases
        .case(
            "GET another customer's order answers 404 like a missing one",
            async {
                let response = bob
                    .http
                    .get(&order_url)
                    .bearer_auth(&bob.access)
                    .send()
                    .await
                    .unwrap();
                let body = expect_problem(response, 404, "order-not-found").await;
                assert_eq!(body["title"], missing["title"]);
                assert_eq!(body["detail"], missing["detail"]);
            },
        )
        .await;

    cases
        .case(
            "GET another customer's order with its ETag in If-None-Match is 404, not 304",
            async {
                let response = bob
                    .http
                    .get(&order_url)
                    .bearer_auth(&bob.access)
                    .header("If-None-Match", &etag)
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 404, "order-not-found").await;
            },
        )
        .await;

    cases
        .case(
            "PATCH another customer's order is 404 and leaves it pending",
            async {
                let response = bob
                    .http
                    .patch(&order_url)
                    .bearer_auth(&bob.access)
                    .json(&json!({"status": "cancelled"}))
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 404, "order-not-found").await;
                let (status, _, _, _) = env.stored_order(&order_id).await.unwrap();
                assert_eq!(status, "pending");
            },
        )
        .await;

    cases
        .case(
            "DELETE another customer's order is 404 and leaves it pending",
            async {
                let response = bob
                    .http
                    .delete(&order_url)
                    .bearer_auth(&bob.access)
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 404, "order-not-found").await;
                let (status, _, _, _) = env.stored_order(&order_id).await.unwrap();
                assert_eq!(status, "pending");
            },
        )
        .await;

    cases
        .case(
            "listing orders with another user's id in the query shows only the caller's",
            async {
                for query in [
                    format!("user_id={}", alice.id),
                    format!("owner={}", alice.id),
                    "scope=all".to_owned(),
                ] {
                    let (status, page) = get_json(
                        &bob.http,
                        &env.url(&format!("/api/v1/orders?{query}")),
                        &bob.access,
                    )
                    .await;
                    // Unknown filters are either refused or ignored, never obeyed.
                    if status == StatusCode::UNPROCESSABLE_ENTITY {
                        continue;
                    }
                    assert_eq!(status, StatusCode::OK, "{query}: {page}");
                    let items = page["items"].as_array().unwrap();
                    assert!(!items.is_empty(), "Bob's own order is listed");
                    assert!(
                        items.iter().all(|o| o["user_id"] == bob.id.as_str()),
                        "{query}: {page}"
                    );
                }
            },
        )
        .await;

    cases
        .case(
            "the same Idempotency-Key from another customer does not replay her order",
            async {
                let response = bob
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&bob.access)
                    .header("Idempotency-Key", "shared-key-1")
                    .json(&keyed_body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::CREATED);
                let replayed: Value = response.json().await.unwrap();
                assert_ne!(
                    replayed["id"], keyed["id"],
                    "Alice's order was replayed to Bob"
                );
                assert_eq!(replayed["user_id"], bob.id.as_str());
            },
        )
        .await;

    cases
        .case(
            "another customer's external_id neither collides nor reveals her order",
            async {
                let response = bob
                    .http
                    .post(env.url("/api/v1/orders"))
                    .bearer_auth(&bob.access)
                    .json(&json!({"currency": "EUR", "external_id": "alice-ref-1",
                              "items": [{"sku": "REF-1", "quantity": 1, "unit_price_cents": 1}]}))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    status,
                    StatusCode::CREATED,
                    "a 409 tells Bob that Alice's reference exists: {body}"
                );
                assert_eq!(body["user_id"], bob.id.as_str());
                let (_, total, owner, _) = env
                    .stored_order(external["id"].as_str().unwrap())
                    .await
                    .unwrap();
                assert_eq!(total, 700);
                assert_eq!(owner.map(|u| u.to_string()), Some(alice.id.clone()));
            },
        )
        .await;

    cases
        .case("GET another customer's export is 404", async {
            let response = bob
                .http
                .get(env.url(&format!("/api/v1/exports/{export_id}")))
                .bearer_auth(&bob.access)
                .send()
                .await
                .unwrap();
            expect_problem(response, 404, "export-not-found").await;
        })
        .await;

    cases
        .case(
            "downloading another customer's export with a Bearer token is 404",
            async {
                let response = bob
                    .http
                    .get(env.url(&format!("/api/v1/exports/{export_id}/download")))
                    .bearer_auth(&bob.access)
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 404, "export-not-found").await;
            },
        )
        .await;

    cases
        .case(
            "a signed link of one's own export does not open another's export",
            async {
                let link = bob_export["download_url"].as_str().unwrap();
                let query = link.split_once('?').unwrap().1;
                let response = bob
                    .http
                    .get(env.url(&format!("/api/v1/exports/{export_id}/download?{query}")))
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 403, "invalid-download-link").await;
            },
        )
        .await;

    cases
        .case("listing exports shows none of another customer's", async {
            let (status, page) = get_json(
                &bob.http,
                &env.url(&format!("/api/v1/exports?user_id={}", alice.id)),
                &bob.access,
            )
            .await;
            if status != StatusCode::UNPROCESSABLE_ENTITY {
                assert_eq!(status, StatusCode::OK, "{page}");
                let items = page["items"].as_array().unwrap();
                assert!(
                    items.iter().all(|e| e["id"] != export_id.as_str()),
                    "{page}"
                );
            }
        })
        .await;

    cases
        .case(
            "another customer's export notification is not streamed to the caller",
            async {
                let mut seen = String::new();
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Ok(Some(chunk)) = bob_events.chunk().await {
                        seen.push_str(&String::from_utf8_lossy(&chunk));
                    }
                })
                .await;
                assert!(
                    !seen.contains(&export_id),
                    "Bob's stream carried Alice's export: {seen}"
                );
            },
        )
        .await;

    cases
        .case(
            "resuming the event stream from before another customer's export replays only one's own",
            async {
                // A position at the epoch: everything finished since is
                // replayed, but only the caller's.
                let mut stream = bob
                    .http
                    .get(env.url("/api/v1/events"))
                    .bearer_auth(&bob.access)
                    .header("Accept", "text/event-stream")
                    .header("Last-Event-ID", "0-00000000-0000-0000-0000-000000000000")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(stream.status(), StatusCode::OK);
                let bob_export_id = bob_export["id"].as_str().unwrap();
                let mut seen = String::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Ok(Some(chunk)) = stream.chunk().await {
                        seen.push_str(&String::from_utf8_lossy(&chunk));
                        if seen.contains(bob_export_id) {
                            // His own replay arrived; give anything else a moment.
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            while let Ok(Ok(Some(more))) =
                                tokio::time::timeout(Duration::from_millis(300), stream.chunk()).await
                            {
                                seen.push_str(&String::from_utf8_lossy(&more));
                            }
                            break;
                        }
                    }
                })
                .await;
                assert!(seen.contains(bob_export_id), "the replay did not run: {seen}");
                assert!(!seen.contains(&export_id), "Alice's export was replayed to Bob: {seen}");
            },
        )
        .await;

    cases
        .case(
            "DELETE another user's session is 404 and her session lives on",
            async {
                let response = bob
                    .http
                    .delete(env.url(&format!("/api/v1/auth/sessions/{alice_session}")))
                    .bearer_auth(&bob.access)
                    .send()
                    .await
                    .unwrap();
                expect_problem(response, 404, "not-found").await;
                let (status, _) = get_json(
                    &alice.http,
                    &env.url("/api/v1/auth/sessions"),
                    &alice.access,
                )
                .await;
                assert_eq!(status, StatusCode::OK);
                let refreshed = alice
                    .http
                    .post(env.url("/api/v1/auth/refresh"))
                    .json(&json!({"refresh_token": alice.refresh}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    refreshed.status(),
                    StatusCode::OK,
                    "Alice's session was revoked by Bob"
                );
            },
        )
        .await;

    cases
        .case(
            "analytics with another user's id in the query shows the caller's own figures",
            async {
                let day = chrono::Utc::now().date_naive();
                let range = format!(
                    "from={day}T00:00:00Z&to={}T00:00:00Z",
                    day.succ_opt().unwrap()
                );
                let url =
                    |extra: &str| env.url(&format!("/api/v1/analytics/summary?{range}{extra}"));
                let bob_id: uuid::Uuid = bob.id.parse().unwrap();
                let bob_orders: i64 = env
                    .db()
                    .await
                    .query_one("SELECT count(*) FROM orders WHERE user_id = $1", &[&bob_id])
                    .await
                    .unwrap()
                    .get(0);
                // Both customers' orders are counted first...
                crate::support::eventually(
                    &env,
                    "the analytics figures",
                    Duration::from_secs(30),
                    || async {
                        let (_, a) = get_json(&alice.http, &url(""), &alice.access).await;
                        let (_, b) = get_json(&bob.http, &url(""), &bob.access).await;
                        (a["orders_created"] == 3 && b["orders_created"] == bob_orders)
                            .then_some(())
                    },
                )
                .await;
                // ...then Bob, naming Alice, still sees only his own.
                for extra in [format!("&user_id={}", alice.id), "&scope=all".to_owned()] {
                    let (status, summary) = get_json(&bob.http, &url(&extra), &bob.access).await;
                    if status == StatusCode::UNPROCESSABLE_ENTITY {
                        continue;
                    }
                    assert_eq!(status, StatusCode::OK, "{summary}");
                    assert_eq!(summary["orders_created"], bob_orders, "{extra}: {summary}");
                }
            },
        )
        .await;

    cases.finish(|| env.logs());
}
