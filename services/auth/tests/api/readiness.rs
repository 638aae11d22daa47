//! Auth's `/readyz` (ADR 0021): PostgreSQL is required; Redis is reported.
//! Without Redis, login and refresh answer 503 themselves, but the JWK Set
//! every verifier fetches (gateway, analytics) and the account routes still
//! serve, so a Redis outage, shared by every replica, must not unroute auth.

use std::time::Duration;

use keel_testkit::proxy::TcpProxy;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn wait_for(app: &TestApp, accept: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = readiness(app).await;
        if accept(status, &body) || tokio::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn auth_readiness_stays_green_and_its_jwk_set_serves_while_redis_is_down() {
    let mut url = url::Url::parse(&keel_testkit::env::redis_url()).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let proxy = TcpProxy::start(upstream.parse().unwrap()).await;
    url.set_port(Some(proxy.addr().port())).unwrap();
    let app = spawn_app_with(|s| s.redis.url = SecretString::from(url.to_string())).await;
    let (status, body) = wait_for(&app, |s, b| s == 200 && b["status"] == "ok").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");

    proxy.cut();
    let (status, body) = wait_for(&app, |_, b| b["checks"]["redis"]["status"] == "degraded").await;
    assert_eq!(status, 200, "auth stays routable: {body}");
    assert_eq!(body["degraded"], json!(["redis"]), "{body}");

    let jwks = app
        .client
        .get(format!("{}/.well-known/jwks.json", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200, "verifiers still get the keys");
    let login = app
        .client
        .post(format!("{}/api/v1/auth/login", app.address))
        .json(&json!({"email": "nobody@example.com", "password": "irrelevant password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 503, "login needs Redis and says so itself");
    assert!(login.headers().contains_key("retry-after"));

    proxy.restore();
    let (status, body) = wait_for(&app, |s, b| s == 200 && b["status"] == "ok").await;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
    app.stop().await;
}
