use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, spawn_app};

#[tokio::test]
async fn ten_wrong_passwords_give_429_with_retry_after_and_the_right_password_works_after_the_wait()
{
    let app = spawn_app().await;
    app.register("victim@example.com").await;
    let mut last = None;
    for _ in 0..10 {
        last = Some(app.login("victim@example.com", "wrong password!").await);
    }
    let last = last.unwrap();
    assert_eq!(last.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = last.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    // Even the right password waits.
    assert_eq!(
        app.login("victim@example.com", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    assert_eq!(
        app.login("victim@example.com", PASSWORD).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("known@example.com").await;
    let unknown = app.login("nobody@example.com", PASSWORD).await;
    let wrong = app.login("known@example.com", "wrong password!").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let unknown: serde_json::Value = unknown.json().await.unwrap();
    let wrong: serde_json::Value = wrong.json().await.unwrap();
    assert_eq!(unknown["type"], wrong["type"]);
    assert_eq!(unknown["detail"], wrong["detail"]);
}
