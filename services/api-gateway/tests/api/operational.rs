use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    app.stop().await;
}

#[tokio::test]
async fn readyz_reports_every_dependency_ok() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    for dependency in ["postgres", "redis", "rabbitmq"] {
        assert_eq!(body["checks"][dependency]["status"], "ok", "{body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem_carrying_the_request_id() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/no/such/route", app.address))
        .header("X-Request-Id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], 404);
    assert_eq!(body["type"], "urn:keel:problem:not-found");
    assert_eq!(body["request_id"], "client-chosen-42");
    app.stop().await;
}

#[tokio::test]
async fn an_insane_request_id_is_replaced_by_a_generated_one() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "two words")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(id, "two words");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    app.stop().await;
}

#[tokio::test]
async fn metrics_expose_build_info_and_request_counts_by_route() {
    let app = spawn_app().await;
    app.get("/healthz").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"keel_build_info{service="api-gateway",version="test"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"keel_http_requests_total{method="GET",route="/healthz",status="200"} 1"#),
        "{text}"
    );
    app.stop().await;
}
