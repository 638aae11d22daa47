//! The end-to-end scenario: the four services as separate processes, and a
//! user, a third party and an admin who only ever talk to the gateway.
//!
//! register → log in → create orders → signed webhooks applied by the
//! worker → export, live notification, download → analytics that agree
//! with all of it → refresh-token rotation → log out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use keel_e2e::Stack;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SHOPIFY_SECRET: &str = "e2e-shopify-secret";
const STRIPE_SECRET: &str = "whsec_e2e-stripe-secret";
const ADMIN_EMAIL: &str = "ops@e2e.example";
const ADMIN_PASSWORD: &str = "correct horse battery staple e2e";

struct User {
    access: String,
    refresh: String,
    id: String,
}

async fn register_and_login(client: &Client, stack: &Stack, email: &str) -> User {
    let password = "a long and unguessable passphrase 42";
    let registered = client
        .post(stack.gateway("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        registered.status(),
        StatusCode::CREATED,
        "{}",
        stack.log_tails()
    );
    let user: Value = registered.json().await.unwrap();
    let mut tokens = login(client, stack, email, password).await;
    tokens.id = user["id"].as_str().unwrap().to_owned();
    tokens
}

async fn login(client: &Client, stack: &Stack, email: &str, password: &str) -> User {
    let response = client
        .post(stack.gateway("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    User {
        access: body["access_token"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
        id: String::new(),
    }
}

/// Polls `probe` until it returns `Some`, failing with the services' logs
/// after `within`.
async fn eventually<T, F, Fut>(stack: &Stack, what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            stack.log_tails()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_json(client: &Client, url: &str, token: &str) -> (StatusCode, Value) {
    let response = client.get(url).bearer_auth(token).send().await.unwrap();
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_day_through_the_gateway() {
    let stack = Stack::start(&[
        ("KEEL_BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.to_owned()),
        ("KEEL_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.to_owned()),
        ("KEEL_WEBHOOK_SECRET_SHOPIFY", SHOPIFY_SECRET.to_owned()),
        ("KEEL_WEBHOOK_SECRET_STRIPE", STRIPE_SECRET.to_owned()),
        // Generous limits: the scenario is one client doing a lot quickly.
        ("KEEL_RATE_LIMIT__ENABLED", "false".to_owned()),
    ])
    .await;
    let client = Client::new();

    // --- Accounts ---------------------------------------------------------
    let alice = register_and_login(&client, &stack, "alice@e2e.example").await;
    let bob = register_and_login(&client, &stack, "bob@e2e.example").await;
    let admin = login(&client, &stack, ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // --- Orders -------------------------------------------------------------
    let mut alice_orders = Vec::new();
    for (sku, quantity, price) in [("MUG-1", 2, 1_250), ("TEE-2", 1, 2_000), ("CAP-3", 3, 999)] {
        let response = client
            .post(stack.gateway("/api/v1/orders"))
            .bearer_auth(&alice.access)
            .json(&json!({
                "currency": "EUR",
                "items": [{"sku": sku, "quantity": quantity, "unit_price_cents": price}],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let order: Value = response.json().await.unwrap();
        assert_eq!(order["total_cents"], quantity * price);
        alice_orders.push(order);
    }
    let bob_order: Value = client
        .post(stack.gateway("/api/v1/orders"))
        .bearer_auth(&bob.access)
        .json(&json!({"currency": "USD", "items": [{"sku": "BOOK-9", "quantity": 1, "unit_price_cents": 4_200}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Alice cannot see Bob's order.
    let (status, _) = get_json(
        &client,
        &stack.gateway(&format!(
            "/api/v1/orders/{}",
            bob_order["id"].as_str().unwrap()
        )),
        &alice.access,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // --- Webhooks: Shopify creates an order, Stripe pays Alice's first ------
    let shopify_body = json!({
        "id": 820982911946154508_i64,
        "email": "shopper@e2e.example",
        "currency": "EUR",
        "total_price": "59.90",
        "line_items": [{"id": 866550311766439020_i64, "sku": "LAMP-7", "quantity": 1, "price": "59.90"}],
    })
    .to_string();
    let response = client
        .post(stack.gateway("/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
        .header(
            "X-Shopify-Hmac-Sha256",
            keel_webhooks::sign::shopify(SHOPIFY_SECRET, shopify_body.as_bytes()),
        )
        .body(shopify_body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", stack.log_tails());
    let shopify_receipt: Value = response.json().await.unwrap();
    assert_eq!(shopify_receipt["duplicate"], false);

    let paid_order_id = alice_orders[0]["id"].as_str().unwrap().to_owned();
    let stripe_body = json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": "pi_e2e",
            "object": "payment_intent",
            "amount": 2_500,
            "amount_received": 2_500,
            "currency": "eur",
            "metadata": {"order_id": paid_order_id},
        }},
    })
    .to_string();
    let response = client
        .post(stack.gateway("/webhooks/stripe"))
        .header("Content-Type", "application/json")
        .header(
            "Stripe-Signature",
            keel_webhooks::sign::stripe(
                STRIPE_SECRET,
                chrono::Utc::now().timestamp(),
                stripe_body.as_bytes(),
            ),
        )
        .body(stripe_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", stack.log_tails());

    // The worker applies both: the admin sees the Shopify order, Alice sees hers paid.
    let shopify_order = eventually(
        &stack,
        "the Shopify order",
        Duration::from_secs(30),
        || async {
            let (_, page) = get_json(
                &client,
                &stack.gateway("/api/v1/orders?limit=500"),
                &admin.access,
            )
            .await;
            page["items"]
                .as_array()?
                .iter()
                .find(|o| o["source"] == "webhook:shopify")
                .cloned()
        },
    )
    .await;
    assert_eq!(shopify_order["external_id"], "820982911946154508");
    assert_eq!(shopify_order["total_cents"], 5_990);
    eventually(
        &stack,
        "Alice's order paid",
        Duration::from_secs(30),
        || async {
            let (_, order) = get_json(
                &client,
                &stack.gateway(&format!("/api/v1/orders/{paid_order_id}")),
                &alice.access,
            )
            .await;
            (order["status"] == "paid").then_some(())
        },
    )
    .await;
    let (status, events) = get_json(
        &client,
        &stack.gateway("/api/v1/admin/webhook-events?status=processed"),
        &admin.access,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events["items"].as_array().unwrap().len(), 2, "{events}");
    // A customer is not an admin.
    let (status, _) = get_json(
        &client,
        &stack.gateway("/api/v1/admin/webhook-events"),
        &alice.access,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // --- Export with a live notification --------------------------------
    let mut sse = client
        .get(stack.gateway("/api/v1/events"))
        .bearer_auth(&alice.access)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), StatusCode::OK);
    let response = client
        .post(stack.gateway("/api/v1/exports"))
        .bearer_auth(&alice.access)
        .json(&json!({"resource": "orders", "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::ACCEPTED,
        "{}",
        stack.log_tails()
    );
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let export: Value = response.json().await.unwrap();
    let export_id = export["id"].as_str().unwrap().to_owned();

    let notified = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buffer = String::new();
        while let Some(chunk) = sse.chunk().await.unwrap() {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(at) = buffer.find("event: export.completed") {
                return buffer[at..].to_owned();
            }
        }
        panic!("the event stream ended before export.completed: {buffer}");
    })
    .await
    .unwrap_or_else(|_| panic!("no export.completed within 60 s\n{}", stack.log_tails()));
    assert!(notified.contains(&export_id), "{notified}");

    let (status, export) = get_json(&client, &stack.gateway(&location), &alice.access).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(export["status"], "succeeded", "{export}");
    assert_eq!(export["rows_written"], 3, "{export}");
    // The signed link works without the Bearer header, as a browser follows it.
    let download_url = export["download_url"].as_str().unwrap();
    let download_url = if download_url.starts_with("http") {
        download_url.to_owned()
    } else {
        stack.gateway(download_url)
    };
    let file = client.get(&download_url).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let bytes = file.bytes().await.unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        export["sha256"].as_str().unwrap()
    );
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    for order in &alice_orders {
        assert!(text.contains(order["id"].as_str().unwrap()), "{text}");
    }
    assert!(!text.contains(bob_order["id"].as_str().unwrap()), "{text}");
    // Bob cannot see Alice's export.
    let (status, _) = get_json(&client, &stack.gateway(&location), &bob.access).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // --- Analytics agree with what happened ------------------------------
    let day = chrono::Utc::now().date_naive();
    let range = format!(
        "from={}T00:00:00Z&to={}T00:00:00Z",
        day,
        day.succ_opt().unwrap()
    );
    let alice_summary = eventually(
        &stack,
        "Alice's analytics",
        Duration::from_secs(30),
        || async {
            let (status, summary) = get_json(
                &client,
                &stack.gateway(&format!("/api/v1/analytics/summary?{range}")),
                &alice.access,
            )
            .await;
            (status == StatusCode::OK
                && summary["orders_created"] == 3
                && summary["exports_completed"] == 1)
                .then_some(summary)
        },
    )
    .await;
    assert_eq!(
        alice_summary["revenue_cents"]["EUR"],
        2 * 1_250 + 2_000 + 3 * 999,
        "{alice_summary}"
    );
    assert!(
        alice_summary["revenue_cents"].get("USD").is_none(),
        "{alice_summary}"
    );

    let store_summary = eventually(
        &stack,
        "the store's analytics",
        Duration::from_secs(30),
        || async {
            let (status, summary) = get_json(
                &client,
                &stack.gateway(&format!("/api/v1/analytics/summary?{range}")),
                &admin.access,
            )
            .await;
            (status == StatusCode::OK
                && summary["orders_created"] == 5
                && summary["webhooks_received"] == 2)
                .then_some(summary)
        },
    )
    .await;
    assert_eq!(
        store_summary["revenue_cents"]["USD"], 4_200,
        "{store_summary}"
    );
    assert_eq!(
        store_summary["revenue_cents"]["EUR"],
        2 * 1_250 + 2_000 + 3 * 999 + 5_990,
        "{store_summary}"
    );
    // Alice, Bob and the bootstrap admin. The admin's `user.registered` is
    // published by auth before analytics has ever started: it reaches
    // analytics because the topology declares analytics' queue for every
    // publisher (ADR 0024), where it used to be confirmed into nowhere.
    assert_eq!(store_summary["users_registered"], 3, "{store_summary}");
    assert_eq!(store_summary["exports_completed"], 1, "{store_summary}");

    let (status, series) = get_json(
        &client,
        &stack.gateway(&format!(
            "/api/v1/analytics/timeseries?metric=order.created&interval=hour&{range}"
        )),
        &admin.access,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{series}");
    let total: i64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 5, "{series}");

    // --- Refresh-token rotation and logout ----------------------------------
    let rotated: Value = client
        .post(stack.gateway("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": alice.refresh}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_refresh = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(new_refresh, alice.refresh);
    let (status, me) = get_json(
        &client,
        &stack.gateway("/api/v1/auth/me"),
        rotated["access_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], alice.id.as_str());

    let logout = client
        .post(stack.gateway("/api/v1/auth/logout"))
        .json(&json!({"refresh_token": new_refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    let after = client
        .post(stack.gateway("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": new_refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);

    // --- Everyone stops cleanly -------------------------------------------
    drop(sse);
    for (service, code) in stack.stop().await {
        assert_eq!(
            code,
            Some(0),
            "{} did not exit 0 on SIGTERM",
            service.binary()
        );
    }
}
