//! The OpenAPI document: served, 3.1, covering the API, and identical to
//! the committed `proto/openapi/openapi.json` (`UPDATE_SNAPSHOTS=1`
//! rewrites it).

use std::path::PathBuf;

use crate::helpers::spawn_app;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/openapi/openapi.json")
}

#[test]
fn the_committed_openapi_document_matches_the_code() {
    let generated = api_gateway::openapi::document_json();
    let path = committed();
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == generated,
        "proto/openapi/openapi.json is out of date: run UPDATE_SNAPSHOTS=1 cargo nextest run -p api-gateway openapi"
    );
}

#[tokio::test]
async fn the_document_is_served_as_openapi_3_1_and_covers_the_api() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: serde_json::Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout-all",
        "/api/v1/auth/me",
        "/api/v1/auth/password",
        "/api/v1/auth/sessions",
        "/api/v1/auth/sessions/{id}",
        "/.well-known/jwks.json",
        "/api/v1/analytics/summary",
        "/api/v1/analytics/timeseries",
        "/api/v1/openapi.json",
        "/api/v1/orders",
        "/api/v1/orders/{id}",
        "/api/v1/exports",
        "/api/v1/exports/{id}",
        "/api/v1/exports/{id}/download",
        "/api/v1/events",
        "/webhooks/{source}",
        "/api/v1/admin/webhook-events",
        "/api/v1/admin/webhook-events/{id}",
        "/api/v1/admin/webhook-events/{id}/replay",
        "/api/v1/admin/dead-letters",
        "/api/v1/admin/dead-letters/{id}/requeue",
        "/api/v1/admin/queues",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    app.stop().await;
}
