//! API5:2023 Broken Function Level Authorization: admin functions reached
//! by a customer or anonymously, by every spelling of their path; role
//! changes; identity headers a client forges for the services behind the
//! gateway.
//!
//! Path spellings go out byte for byte (`support::raw`): an HTTP library
//! would normalise `..` and `%2e%2e` before sending.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{
    Cases, Env, SHOPIFY_SECRET, expect_problem, expect_raw_refusal, get_json, raw,
};
use keel_e2e::Service;

const CLASS: &str = "API5 function level authorization";

/// Spellings of `GET /api/v1/admin/webhook-events` a router, a proxy or a
/// prefix check might each read differently.
const SPELLINGS: [&str; 32] = [
    "/api/v1/admin/webhook-events",
    "/api/v1/admin/webhook-events/",
    "/api/v1/%61dmin/webhook-events",
    "/api/v1/%61%64%6d%69%6e/webhook-events",
    "/api/v1/%2561dmin/webhook-events",
    "/api/v1/ADMIN/webhook-events",
    "/api/v1/Admin/webhook-events",
    "/API/V1/ADMIN/WEBHOOK-EVENTS",
    "/api/v1//admin/webhook-events",
    "//api/v1/admin/webhook-events",
    "/api//v1/admin/webhook-events",
    "/api/v1/./admin/webhook-events",
    "/api/v1/admin/./webhook-events",
    "/api/v1/admin/x/../webhook-events",
    "/api/v1/auth/../admin/webhook-events",
    "/api/v1/auth/./../admin/webhook-events",
    "/api/v1/auth/%2e%2e/admin/webhook-events",
    "/api/v1/auth/%2E%2E/admin/webhook-events",
    "/api/v1/auth/.%2e/admin/webhook-events",
    "/api/v1/auth/..%2fadmin/webhook-events",
    "/api/v1/auth/..%2Fadmin/webhook-events",
    "/api/v1/auth%2f..%2fadmin/webhook-events",
    "/api/v1/orders/../admin/webhook-events",
    "/api/v1/analytics/../admin/webhook-events",
    "/api/v1/admin%2fwebhook-events",
    "/api/v1/admin;/webhook-events",
    "/api/v1/admin/webhook-events;.json",
    "/api/v1/admin/webhook%2Devents",
    "/api/v1/admin\\webhook-events",
    "/api/v1/auth/..\\admin/webhook-events",
    "/api/v1/admin/webhook-events%00",
    "http://127.0.0.1/api/v1/admin/webhook-events",
];

fn get(target: &str, token: Option<&str>) -> Vec<u8> {
    let headers: Vec<String> = token
        .map(|t| format!("Authorization: Bearer {t}"))
        .into_iter()
        .collect();
    raw::request("GET", target, &headers, None)
}

/// A refusal by any spelling: a problem, never a 2xx/3xx, never the list.
fn refused(answer: &raw::RawResponse, allowed: &[u16]) {
    expect_raw_refusal(answer, allowed);
    assert!(
        answer.json().get("items").is_none(),
        "admin data leaked: {}",
        answer.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_functions_stay_closed_to_customers_by_every_path_spelling() {
    let env = Env::start(&[]).await;
    let customer = env.register(51, "carol@api5.example").await;
    let other = env.register(53, "dave@api5.example").await;
    let admin = env.admin(52).await;

    // A captured event for the by-id admin routes.
    let body = json!({"id": 5150_u64, "currency": "EUR", "total_price": "2.00", "line_items": []})
        .to_string();
    let receipt: Value = admin
        .http
        .post(env.url("/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
        .header(
            "X-Shopify-Hmac-Sha256",
            keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event_id = receipt["id"].as_str().unwrap().to_owned();
    // The admin route works for the admin: the refusals below are refusals.
    let (status, _) = get_json(
        &admin.http,
        &env.url("/api/v1/admin/webhook-events"),
        &admin.access,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut cases = Cases::new(CLASS);

    for spelling in SPELLINGS {
        cases
            .case(
                &format!("GET {spelling} is refused to anonymous callers and customers"),
                async {
                    let anonymous = env.raw(&get(spelling, None)).await.unwrap();
                    refused(&anonymous, &[400, 401, 404]);
                    let as_customer = env
                        .raw(&get(spelling, Some(&customer.access)))
                        .await
                        .unwrap();
                    refused(&as_customer, &[400, 403, 404]);
                },
            )
            .await;
    }

    let attempts = || async {
        let event_uuid: uuid::Uuid = event_id.parse().unwrap();
        let row = env
            .db()
            .await
            .query_one(
                "SELECT attempts, status FROM webhook_events WHERE id = $1",
                &[&event_uuid],
            )
            .await
            .unwrap();
        (row.get::<_, i32>(0), row.get::<_, String>(1))
    };

    for spelling in [
        "/api/v1/admin/webhook-events/{id}/replay",
        "/api/v1/%61dmin/webhook-events/{id}/replay",
        "/api/v1/auth/../admin/webhook-events/{id}/replay",
        "/api/v1//admin/webhook-events/{id}/replay",
        "/api/v1/ADMIN/webhook-events/{id}/replay",
    ] {
        let target = spelling.replace("{id}", &event_id);
        cases
            .case(
                &format!("POST {spelling} by a customer is refused and replays nothing"),
                async {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let before = attempts().await;
                    let request = raw::request(
                        "POST",
                        &target,
                        &[
                            format!("Authorization: Bearer {}", customer.access),
                            "Content-Type: application/json".into(),
                        ],
                        Some(b"{}"),
                    );
                    let answer = env.raw(&request).await.unwrap();
                    refused(&answer, &[400, 403, 404]);
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    assert_eq!(attempts().await, before, "the event was processed again");
                },
            )
            .await;
    }

    for (method, path) in [
        ("GET", format!("/api/v1/admin/webhook-events/{event_id}")),
        ("GET", "/api/v1/admin/dead-letters".to_owned()),
        (
            "GET",
            format!("/api/v1/admin/dead-letters/{}", uuid::Uuid::new_v4()),
        ),
        (
            "POST",
            format!(
                "/api/v1/admin/dead-letters/{}/requeue",
                uuid::Uuid::new_v4()
            ),
        ),
        ("GET", "/api/v1/admin/queues".to_owned()),
    ] {
        cases
            .case(
                &format!(
                    "{method} {} by a customer is 403",
                    path.replace(&event_id, "{id}")
                ),
                async {
                    let url = env.url(&path);
                    let request = match method {
                        "POST" => customer.http.post(&url).json(&json!({})),
                        _ => customer.http.get(&url),
                    };
                    let answer = request.bearer_auth(&customer.access).send().await.unwrap();
                    expect_problem(answer, 403, "forbidden").await;
                },
            )
            .await;
    }

    cases
        .case(
            "a customer granting herself the admin role is 403 and stays a customer",
            async {
                let answer = customer
                    .http
                    .put(env.url(&format!("/api/v1/auth/users/{}/roles", customer.id)))
                    .bearer_auth(&customer.access)
                    .json(&json!({"roles": ["admin"]}))
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 403, "forbidden").await;
                let (_, me) = get_json(
                    &customer.http,
                    &env.url("/api/v1/auth/me"),
                    &customer.access,
                )
                .await;
                assert_eq!(me["roles"], json!(["customer"]), "{me}");
            },
        )
        .await;

    cases
        .case("a customer changing another user's roles is 403", async {
            let answer = customer
                .http
                .put(env.url(&format!("/api/v1/auth/users/{}/roles", other.id)))
                .bearer_auth(&customer.access)
                .json(&json!({"roles": ["admin"]}))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 403, "forbidden").await;
        })
        .await;

    cases
        .case("an anonymous role change is 401", async {
            let answer = customer
                .http
                .put(env.url(&format!("/api/v1/auth/users/{}/roles", customer.id)))
                .json(&json!({"roles": ["admin"]}))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "unauthenticated").await;
        })
        .await;

    cases
        .case(
            "the identity proxy's headers from a client are ignored (401 on admin routes)",
            async {
                let answer = customer
                    .http
                    .get(env.url("/api/v1/admin/webhook-events"))
                    .header("X-Email", "ops@attacks.example")
                    .header("X-Forwarded-Groups", "admin")
                    .header("X-Forwarded-Email", "ops@attacks.example")
                    .header("X-Forwarded-User", "ops")
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "unauthenticated").await;
            },
        )
        .await;

    cases
        .case(
            "X-Original-URL and X-Rewrite-URL do not reroute a request to an admin route",
            async {
                let answer = customer
                    .http
                    .get(env.url("/api/v1/orders"))
                    .bearer_auth(&customer.access)
                    .header("X-Original-URL", "/api/v1/admin/webhook-events")
                    .header("X-Rewrite-URL", "/api/v1/admin/webhook-events")
                    .header("X-HTTP-Method-Override", "DELETE")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                let page: Value = answer.json().await.unwrap();
                assert!(
                    page["items"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|o| o.get("currency").is_some()),
                    "{page}"
                );
            },
        )
        .await;

    let day = chrono::Utc::now().date_naive();
    let range = format!(
        "from={day}T00:00:00Z&to={}T00:00:00Z",
        day.succ_opt().unwrap()
    );
    let summary_path = format!("/api/v1/analytics/summary?{range}");

    cases
        .case(
            "X-Keel-User-Id and X-Keel-Role sent through the gateway are ignored by analytics",
            async {
                let (_, own) =
                    get_json(&customer.http, &env.url(&summary_path), &customer.access).await;
                let answer = customer
                    .http
                    .get(env.url(&summary_path))
                    .bearer_auth(&customer.access)
                    .header("X-Keel-User-Id", other.id.as_str())
                    .header("X-Keel-Role", "admin")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), StatusCode::OK);
                let forged: Value = answer.json().await.unwrap();
                // Only the admin's view counts registrations store-wide.
                assert_eq!(
                    forged["users_registered"], own["users_registered"],
                    "{forged} vs {own}"
                );
                assert_eq!(
                    forged["orders_created"], own["orders_created"],
                    "{forged} vs {own}"
                );
            },
        )
        .await;

    cases
        .case(
            "X-Keel-User-Id and X-Keel-Role without a token through the gateway are 401",
            async {
                let answer = customer
                    .http
                    .get(env.url(&summary_path))
                    .header("X-Keel-User-Id", other.id.as_str())
                    .header("X-Keel-Role", "admin")
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "unauthenticated").await;
            },
        )
        .await;

    cases
        .case(
            "analytics reached directly with forged identity headers refuses them",
            async {
                // Only the gateway may name the caller: the identity headers
                // carry a secret shared with it.
                let answer = customer
                    .http
                    .get(env.stack.service_url(Service::Analytics, &summary_path))
                    .header("X-Keel-User-Id", other.id.as_str())
                    .header("X-Keel-Role", "admin")
                    .send()
                    .await
                    .unwrap();
                let status = answer.status().as_u16();
                let text = answer.text().await.unwrap_or_default();
                assert!(
                    status == 401 || status == 403,
                    "analytics answered {status}: {text}"
                );
            },
        )
        .await;

    cases.finish(|| env.logs());
}
