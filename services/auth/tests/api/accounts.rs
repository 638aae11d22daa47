use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn registering_a_taken_email_in_another_case_is_409() {
    let app = spawn_app().await;
    app.register("dup@example.com").await;
    let response = app
        .post(
            "/api/v1/auth/register",
            &json!({"email": "DUP@Example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
}

#[tokio::test]
async fn registration_and_login_go_out_through_the_outbox() {
    let app = spawn_app().await;
    app.signed_in("events@example.com").await;
    let client = app.pool().get().await.unwrap();
    let rows = client
        .query("SELECT message_type FROM outbox ORDER BY created_at", &[])
        .await
        .unwrap();
    let types: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(types, ["user.registered", "user.logged_in"]);
}

#[tokio::test]
async fn a_legacy_bcrypt_hash_logs_in_and_is_stored_as_argon2id_afterwards() {
    let app = spawn_app().await;
    let legacy = bcrypt::hash(PASSWORD, 4).unwrap();
    let client = app.pool().get().await.unwrap();
    client
        .execute(
            "INSERT INTO users (id, email, password_hash) VALUES ($1, 'legacy@example.com', $2)",
            &[&uuid::Uuid::new_v4(), &legacy],
        )
        .await
        .unwrap();
    assert_eq!(
        app.login("legacy@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
    let stored: String = client
        .query_one(
            "SELECT password_hash FROM users WHERE email = 'legacy@example.com'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    assert_eq!(
        app.login("legacy@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn only_an_admin_changes_roles_and_the_next_refresh_carries_them() {
    let app = crate::helpers::spawn_app().await;
    let admin_pool = app.pool().clone();
    let user = app.register("promote@example.com").await;
    let admin = app.signed_in("boss@example.com").await;
    let path = format!("/api/v1/auth/users/{}/roles", user["id"].as_str().unwrap());

    let forbidden = app
        .client
        .put(app.url(&path))
        .bearer_auth(&admin.access)
        .json(&json!({"roles": ["customer", "admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);

    // Make boss an admin the way operators do (create-admin promotes).
    let hasher = auth::passwords::Hasher::new(&crate::helpers::test_settings().passwords).unwrap();
    let outcome = auth::admin::ensure_admin(
        &auth::users::Users::new(admin_pool),
        &hasher,
        "boss@example.com",
        PASSWORD,
    )
    .await
    .unwrap();
    assert_eq!(outcome, auth::admin::Outcome::Promoted);
    let admin = app.login_ok("boss@example.com").await;

    let response = app
        .client
        .put(app.url(&path))
        .bearer_auth(&admin.access)
        .json(&json!({"roles": ["customer", "admin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["roles"], json!(["customer", "admin"]));
}
