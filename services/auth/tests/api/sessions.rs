use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn changing_the_password_revokes_the_other_sessions_but_not_this_one() {
    let app = spawn_app().await;
    let here = app.signed_in("change@example.com").await;
    let elsewhere = app.login_ok("change@example.com").await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&here.access)
        .json(&json!({"current_password": PASSWORD, "new_password": "a much better passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&elsewhere.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&here.refresh).await.status(), StatusCode::OK);
    assert_eq!(
        app.login("change@example.com", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("change@example.com", "a much better passphrase")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing() {
    let app = spawn_app().await;
    let tokens = app.signed_in("keep@example.com").await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/password"))
        .bearer_auth(&tokens.access)
        .json(&json!({"current_password": "not the password", "new_password": "a much better passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.login("keep@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_stops_that_sessions_refresh_tokens_only() {
    let app = spawn_app().await;
    let one = app.signed_in("out@example.com").await;
    let two = app.login_ok("out@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/logout",
            &json!({"refresh_token": one.refresh}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&one.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&two.refresh).await.status(), StatusCode::OK);
    // Logging out again, or with garbage, is still 204.
    let again = app
        .post(
            "/api/v1/auth/logout",
            &json!({"refresh_token": one.refresh}),
        )
        .await;
    assert_eq!(again.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn logout_all_revokes_every_session_of_the_user() {
    let app = spawn_app().await;
    let one = app.signed_in("all@example.com").await;
    let two = app.login_ok("all@example.com").await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/logout-all"))
        .bearer_auth(&one.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&one.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&two.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.client
            .post(app.url("/api/v1/auth/logout-all"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_one_by_one() {
    let app = spawn_app().await;
    let one = app.signed_in("list@example.com").await;
    let two = app.login_ok("list@example.com").await;
    let other = app.signed_in("stranger@example.com").await;

    let list: Value = app
        .get_as("/api/v1/auth/sessions", &one.access)
        .await
        .json()
        .await
        .unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        for field in ["id", "created_at", "last_used_at", "user_agent", "ip"] {
            assert!(item.get(field).is_some(), "{field} in {item}");
        }
    }
    let two_sid = two.refresh.split('.').next().unwrap();
    let two_id = uuid::Uuid::try_parse(two_sid).unwrap().to_string();

    // Someone else's session is not found.
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{two_id}")))
        .bearer_auth(&other.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let response = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{two_id}")))
        .bearer_auth(&one.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.refresh(&two.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let list: Value = app
        .get_as("/api/v1/auth/sessions", &one.access)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// Behind the gateway every login arrives from the gateway's address; the
/// session records (and throttles) the client the trusted proxy vouches for,
/// and ignores what an untrusted peer claims.
#[tokio::test]
async fn a_session_records_the_client_address_a_trusted_proxy_forwarded() {
    let app = spawn_app().await;
    app.register("forwarded@example.com").await;
    let login = |forwarded: &'static str| {
        app.client
            .post(app.url("/api/v1/auth/login"))
            .header("X-Forwarded-For", forwarded)
            .json(&json!({"email": "forwarded@example.com", "password": PASSWORD}))
            .send()
    };
    // The test connects from 127.0.0.1, which the defaults trust (the
    // gateway runs there in development); the leftmost entry is forged.
    let response = login("6.6.6.6, 198.51.100.20").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let tokens: Value = response.json().await.unwrap();
    let sessions: Value = app
        .get_as(
            "/api/v1/auth/sessions",
            tokens["access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"][0]["ip"], "198.51.100.20", "{sessions}");
    app.stop().await;
}

#[tokio::test]
async fn without_trusted_proxies_the_forwarded_header_is_ignored() {
    let app = crate::helpers::spawn_app_with(|s| s.http.trusted_proxies.clear()).await;
    app.register("direct@example.com").await;
    let response = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("X-Forwarded-For", "198.51.100.20")
        .json(&json!({"email": "direct@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let tokens: Value = response.json().await.unwrap();
    let sessions: Value = app
        .get_as(
            "/api/v1/auth/sessions",
            tokens["access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sessions["items"][0]["ip"], "127.0.0.1", "{sessions}");
    app.stop().await;
}
