//! API9:2023 Improper Inventory Management: every route the gateway serves
//! is in its OpenAPI document (or is one of the operational endpoints the
//! contract lists), other API versions and leftover debug or source files
//! are not served, and the document names no internal host.

use std::collections::HashSet;

use serde_json::Value;

use crate::support::{Cases, Env, raw};

const CLASS: &str = "API9 inventory";

/// Routes outside the OpenAPI document that the contract (API.md) lists.
const OPERATIONAL: [(&str, &str); 7] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/.well-known/jwks.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/console/"),
];

/// (method, path to request as the admin, the template it would be
/// documented under):
/// the auth service's own routes (all proxied), names an API commonly
/// grows, and the contract's routes not built yet.
const CANDIDATES: [(&str, &str, &str); 24] = [
    (
        "PUT",
        "/api/v1/auth/users/00000000-0000-0000-0000-000000000001/roles",
        "/api/v1/auth/users/{id}/roles",
    ),
    ("GET", "/api/v1/auth/users", "/api/v1/auth/users"),
    (
        "GET",
        "/api/v1/auth/users/00000000-0000-0000-0000-000000000001",
        "/api/v1/auth/users/{id}",
    ),
    ("GET", "/api/v1/auth/sessions", "/api/v1/auth/sessions"),
    (
        "DELETE",
        "/api/v1/auth/sessions/00000000-0000-0000-0000-000000000001",
        "/api/v1/auth/sessions/{id}",
    ),
    ("GET", "/api/v1/auth/jwks", "/api/v1/auth/jwks"),
    ("GET", "/api/v1/auth/keys", "/api/v1/auth/keys"),
    ("GET", "/api/v1/auth/admin", "/api/v1/auth/admin"),
    ("GET", "/api/v1/auth/debug", "/api/v1/auth/debug"),
    ("GET", "/api/v1/auth/providers", "/api/v1/auth/providers"),
    ("POST", "/api/v1/auth/token", "/api/v1/auth/token"),
    ("GET", "/api/v1/users", "/api/v1/users"),
    ("GET", "/api/v1/admin/users", "/api/v1/admin/users"),
    ("GET", "/api/v1/admin/audit", "/api/v1/admin/audit"),
    (
        "GET",
        "/api/v1/admin/webhook-sources",
        "/api/v1/admin/webhook-sources",
    ),
    ("GET", "/api/v1/admin/config", "/api/v1/admin/config"),
    ("GET", "/api/v1/analytics/raw", "/api/v1/analytics/raw"),
    (
        "GET",
        "/api/v1/analytics/events",
        "/api/v1/analytics/events",
    ),
    ("GET", "/api/v1/internal/orders", "/api/v1/internal/orders"),
    ("GET", "/api/v1/debug", "/api/v1/debug"),
    ("GET", "/api/v1/config", "/api/v1/config"),
    ("POST", "/api/v1/graphql", "/api/v1/graphql"),
    ("GET", "/api/v1/swagger.json", "/api/v1/swagger.json"),
    ("GET", "/api/v1/orders/export", "/api/v1/orders/{id}"),
];

const OTHER_VERSIONS: [&str; 7] = [
    "/api/v0/orders",
    "/api/v2/orders",
    "/api/orders",
    "/v1/orders",
    "/api/v1.0/orders",
    "/api/latest/orders",
    "/api/V1/orders",
];

const LEFTOVERS: [&str; 14] = [
    "/.env",
    "/.git/config",
    "/.git/HEAD",
    "/.keel/keys",
    "/Cargo.toml",
    "/config/defaults.toml",
    "/debug/pprof/",
    "/actuator/health",
    "/actuator/env",
    "/server-status",
    "/swagger-ui/",
    "/console/../Cargo.toml",
    "/api/v1/../../etc/passwd",
    "/webhooks/../.env",
];

fn documented(doc: &Value) -> HashSet<(String, String)> {
    let mut out = HashSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.to_uppercase(), path.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_documented_routes_are_served() {
    let env = Env::start(&[]).await;
    // The admin probes: the admin gate answers 403 to customers for any
    // /api/v1/admin/* path, served or not; an admin sees what is there.
    let user = env.admin(101).await;
    let doc: Value = user
        .http
        .get(env.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let known = documented(&doc);
    let mut cases = Cases::new(CLASS);

    for (method, path, template) in CANDIDATES {
        let known = &known;
        cases
            .case(
                &format!("{method} {template} is documented or not served"),
                async {
                    let mut headers = vec![format!("Authorization: Bearer {}", user.access)];
                    let body = (method != "GET" && method != "DELETE").then_some(&b"{}"[..]);
                    if body.is_some() {
                        headers.push("Content-Type: application/json".into());
                    }
                    let answer = env
                        .raw(&raw::request(method, path, &headers, body))
                        .await
                        .unwrap();
                    let served = !(answer.status == 404 || answer.status == 405);
                    let listed = known.contains(&(method.to_owned(), template.to_owned()))
                        || OPERATIONAL.contains(&(method, template));
                    assert!(
                        !served || listed,
                        "{method} {path} is served ({}) but not in the OpenAPI document: {}",
                        answer.status,
                        answer.text()
                    );
                },
            )
            .await;
    }

    for path in OTHER_VERSIONS {
        cases
            .case(&format!("GET {path} (another API version) is 404"), async {
                let answer = env
                    .raw(&raw::request(
                        "GET",
                        path,
                        &[format!("Authorization: Bearer {}", user.access)],
                        None,
                    ))
                    .await
                    .unwrap();
                assert_eq!(answer.status, 404, "{}", answer.text());
                assert_eq!(answer.problem_type(), "urn:keel:problem:not-found");
            })
            .await;
    }

    for path in LEFTOVERS {
        cases
            .case(&format!("GET {path} is not served"), async {
                let answer = env
                    .raw(&raw::request("GET", path, &[], None))
                    .await
                    .unwrap();
                assert!(
                    answer.status == 404 || answer.status == 400,
                    "{path} answered {}: {}",
                    answer.status,
                    answer.text()
                );
                let text = answer.text();
                assert!(
                    !text.contains("[package]")
                        && !text.contains("root:")
                        && !text.contains("BEGIN"),
                    "{text}"
                );
            })
            .await;
    }

    cases
        .case(
            "the OpenAPI document names no internal host or credential",
            async {
                let text = doc.to_string();
                for internal in [
                    "127.0.0.1:",
                    "localhost:",
                    "amqp://",
                    "postgres://",
                    "redis://",
                    "whsec_",
                    "guest:guest",
                ] {
                    assert!(!text.contains(internal), "the document mentions {internal}");
                }
            },
        )
        .await;

    cases.finish(|| env.logs());
}
