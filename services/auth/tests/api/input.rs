use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, spawn_app};

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn bad_bodies_are_answered_with_problems_naming_the_field() {
    let app = spawn_app().await;
    let path = "/api/v1/auth/register";

    let (status, body) = problem(app.post_raw(path, "{\"email\": ").await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _) = problem(app.post_raw(path, b"\xff\xfe\xfd".to_vec()).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, body) = problem(app.post(path, &json!({"email": "a@example.com"})).await).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "password");

    let (status, body) = problem(
        app.post(path, &json!({"email": 42, "password": PASSWORD}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "email");

    let huge = json!({"email": "a@example.com", "password": "x".repeat(2 * 1024 * 1024)});
    let (status, _) = problem(app.post(path, &huge).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    let long_email = format!("{}@example.com", "a".repeat(5000));
    let (status, body) = problem(
        app.post(path, &json!({"email": long_email, "password": PASSWORD}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["field"], "email");
}

#[tokio::test]
async fn a_weak_password_is_422_naming_the_rule_and_nothing_is_written() {
    let app = spawn_app().await;
    for (password, rule) in [
        ("short", "shorter"),
        ("password123", "common"),
        ("weak@example.com", "email"),
    ] {
        let response = app
            .post(
                "/api/v1/auth/register",
                &json!({"email": "weak@example.com", "password": password}),
            )
            .await;
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "password");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(rule),
            "{body}"
        );
    }
    let client = app.pool().get().await.unwrap();
    let count: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[tokio::test]
async fn bearer_routes_without_a_valid_token_are_401_with_www_authenticate() {
    let app = spawn_app().await;
    let response = app.get_as("/api/v1/auth/me", "not-a-token").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().contains_key("www-authenticate"));
}
