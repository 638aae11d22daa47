use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{Tokens, spawn_app, spawn_app_with};

#[tokio::test]
async fn register_login_me_refresh_then_the_old_token_again_revokes_the_whole_session() {
    let app = spawn_app_with(|s| s.sessions.grace_period = Duration::ZERO).await;
    let user = app.register("Ada@Example.com").await;
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!(user["roles"], serde_json::json!(["customer"]));

    let first = app.login_ok("ada@example.com").await;
    let me = app.get_as("/api/v1/auth/me", &first.access).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(
        me.json::<serde_json::Value>().await.unwrap()["id"],
        user["id"]
    );

    let response = app.refresh(&first.refresh).await;
    assert_eq!(response.status(), StatusCode::OK);
    let second = Tokens::from(response.json::<serde_json::Value>().await.unwrap());
    assert_ne!(second.refresh, first.refresh);

    assert_eq!(
        app.refresh(&first.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Reuse revoked the session: the token from the first refresh is dead too.
    assert_eq!(
        app.refresh(&second.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get_as("/api/v1/auth/me", &second.access).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn two_concurrent_refreshes_with_one_token_both_get_the_same_new_pair() {
    let app = spawn_app().await;
    let tokens = app.signed_in("tabs@example.com").await;
    let (a, b) = tokio::join!(app.refresh(&tokens.refresh), app.refresh(&tokens.refresh));
    assert_eq!(a.status(), StatusCode::OK);
    assert_eq!(b.status(), StatusCode::OK);
    let a = Tokens::from(a.json::<serde_json::Value>().await.unwrap());
    let b = Tokens::from(b.json::<serde_json::Value>().await.unwrap());
    assert_eq!(a, b);
    // And the shared new pair works.
    assert_eq!(app.refresh(&a.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_spent_token_after_the_grace_period_revokes_the_session() {
    let app = spawn_app_with(|s| s.sessions.grace_period = Duration::from_secs(1)).await;
    let tokens = app.signed_in("late@example.com").await;
    let response = app.refresh(&tokens.refresh).await;
    let next = Tokens::from(response.json::<serde_json::Value>().await.unwrap());
    // Within the grace period: the same pair again.
    let again = Tokens::from(
        app.refresh(&tokens.refresh)
            .await
            .json::<serde_json::Value>()
            .await
            .unwrap(),
    );
    assert_eq!(again, next);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.refresh(&tokens.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&next.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn with_the_grace_period_off_exactly_one_of_two_concurrent_refreshes_succeeds() {
    let app = spawn_app_with(|s| s.sessions.grace_period = Duration::ZERO).await;
    let tokens = app.signed_in("strict@example.com").await;
    let (a, b) = tokio::join!(app.refresh(&tokens.refresh), app.refresh(&tokens.refresh));
    let ok = [a.status(), b.status()]
        .iter()
        .filter(|s| **s == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{} {}", a.status(), b.status());
}

#[tokio::test]
async fn an_expired_refresh_token_is_refused() {
    let app = spawn_app_with(|s| s.sessions.refresh_ttl = Duration::from_secs(1)).await;
    let tokens = app.signed_in("brief@example.com").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.refresh(&tokens.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_idle_session_expires() {
    let app = spawn_app_with(|s| s.sessions.idle_timeout = Duration::from_secs(1)).await;
    let tokens = app.signed_in("idle@example.com").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.refresh(&tokens.refresh).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_forged_or_garbage_refresh_token_is_refused_without_revoking_the_session() {
    let app = spawn_app().await;
    let tokens = app.signed_in("forged@example.com").await;
    let sid = tokens.refresh.split('.').next().unwrap();
    let forged = format!("{sid}.{}", "A".repeat(43));
    assert_eq!(
        app.refresh(&forged).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh("garbage").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn sessions_survive_a_redis_restart_with_aof_on() {
    let redis = OwnRedis::start().await;
    let db =
        keel_testkit::database::TestDatabase::create(auth::SCHEMA, &auth::startup::migrations())
            .await;
    let app = crate::helpers::spawn_on(db, Some(redis.url()), |_| {}).await;
    let tokens = app.signed_in("durable@example.com").await;

    let redis = redis.restart().await;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    // The connection manager reconnects on its own; allow it a moment.
    for _ in 0..20 {
        status = app.refresh(&tokens.refresh).await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, StatusCode::OK);
    drop(app);
    redis.stop();
}

/// A private redis-server with AOF on (`appendfsync always`), so it can be
/// restarted without touching the shared test server.
struct OwnRedis {
    port: u16,
    dir: crate::helpers::tempdir::Dir,
    child: std::process::Child,
}

impl OwnRedis {
    async fn start() -> Self {
        let dir = crate::helpers::tempdir::Dir::new();
        let port = keel_testkit::process::free_port();
        Self::spawn(port, dir).await
    }

    async fn spawn(port: u16, dir: crate::helpers::tempdir::Dir) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir.path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs");
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { port, dir, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn restart(mut self) -> Self {
        self.child.kill().expect("redis-server stops");
        self.child.wait().expect("redis-server exits");
        let Self { port, dir, .. } = self;
        Self::spawn(port, dir).await
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
