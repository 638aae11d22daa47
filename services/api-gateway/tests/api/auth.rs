//! Authentication at the edge: bearer tokens verified against the JWK Set
//! of a real HTTP upstream, the trusted-proxy header, 401 problems.

use std::time::{Duration, Instant};

use keel_config::Validate;
use keel_token::Role;
use uuid::Uuid;

use crate::auth_support::{FakeUpstream, bearer, claims};
use crate::helpers::spawn_app_with;

const PROTECTED: &str = "/api/v1/analytics/summary";

async fn assert_unauthorized(response: reqwest::Response, kind: &str) {
    assert_eq!(response.status(), 401);
    let challenge = response
        .headers()
        .get("www-authenticate")
        .expect("a 401 carries a challenge")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("urn:keel:problem:{kind}"));
    assert_eq!(body["status"], 401);
}

#[tokio::test]
async fn a_protected_route_without_a_token_is_a_401_with_a_bearer_challenge() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let response = app.get(PROTECTED).await;
    assert_unauthorized(response, "unauthenticated").await;
    app.stop().await;
}

#[tokio::test]
async fn garbage_and_non_bearer_credentials_are_401s() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    for (header, kind) in [
        ("Bearer not.a.jwt", "invalid-token"),
        ("Bearer abc", "invalid-token"),
        ("Basic dXNlcjpwYXNz", "invalid-credentials"),
    ] {
        let response = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_unauthorized(response, kind).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn expired_wrong_audience_wrong_issuer_and_future_tokens_are_401s() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let user = Uuid::new_v4();
    let now = keel_token::claims::now();

    let mut expired = claims(user, vec![Role::Customer]);
    (expired.iat, expired.nbf, expired.exp) = (now - 1000, now - 1000, now - 120);
    let mut wrong_aud = claims(user, vec![Role::Customer]);
    wrong_aud.aud = "someone-else".into();
    let mut wrong_iss = claims(user, vec![Role::Customer]);
    wrong_iss.iss = "evil".into();
    let mut future = claims(user, vec![Role::Customer]);
    future.nbf = now + 600;

    for (claims, kind) in [
        (expired, "token-expired"),
        (wrong_aud, "invalid-token"),
        (wrong_iss, "invalid-token"),
        (future, "invalid-token"),
    ] {
        let response = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&upstream.sign(&claims)))
            .send()
            .await
            .unwrap();
        assert_unauthorized(response, kind).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_valid_token_reaches_the_route_as_its_user() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let (user, token) = upstream.customer_token();

    for _ in 0..3 {
        let response = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["x-keel-user-id"][0], user.to_string());
        assert_eq!(echo["headers"]["x-keel-role"][0], "customer");
    }
    // Verified once; the JWK Set fetched once, then the token came from the cache.
    assert_eq!(upstream.jwks_fetches(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_verified_tokens_signature_over_altered_claims_is_refused_not_served_from_the_cache() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let (user, token) = upstream.customer_token();
    let get = |token: String| {
        app.client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token))
            .send()
    };
    // The genuine token is verified, and so remembered.
    assert_eq!(get(token.clone()).await.unwrap().status(), 200);

    // The same header and signature over claims naming someone else.
    let parts: Vec<&str> = token.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let altered = payload.replace(&user.to_string(), &Uuid::new_v4().to_string());
    assert_ne!(altered, payload);
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(altered),
        parts[2]
    );
    assert_unauthorized(get(forged).await.unwrap(), "invalid-token").await;
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_kid_triggers_one_refetch_and_no_more_within_the_interval() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.authn.jwks_min_refetch_interval = Duration::from_secs(1);
    })
    .await;
    let (_, first) = upstream.customer_token();
    let ok = |token: String| {
        let request = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(ok(first).await, 200);
    assert_eq!(upstream.jwks_fetches(), 1);

    // A token naming a kid we have never seen: one refetch, then refused.
    let stranger = FakeUpstream::start().await;
    let (_, forged) = stranger.customer_token();
    let stranger_rotated = {
        stranger.rotate("unknown-kid");
        stranger.customer_token().1
    };
    assert_eq!(ok(forged).await, 401);
    assert_eq!(upstream.jwks_fetches(), 1, "key-1 is known: no refetch");
    // The start-up fetch counts towards the interval: let it pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ok(stranger_rotated.clone()).await, 401);
    assert_eq!(upstream.jwks_fetches(), 2, "an unknown kid refetches once");
    for _ in 0..5 {
        assert_eq!(ok(stranger_rotated.clone()).await, 401);
    }
    assert_eq!(upstream.jwks_fetches(), 2, "refetches are rate limited");
    stranger.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_key_rotation_is_picked_up_on_the_first_token_of_the_new_key() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.authn.jwks_min_refetch_interval = Duration::from_millis(1);
    })
    .await;
    let get = |token: String| {
        let request = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token));
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(get(upstream.customer_token().1).await, 200);
    upstream.rotate("key-2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(get(upstream.customer_token().1).await, 200);
    assert_eq!(upstream.jwks_fetches(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_auth_service_being_unreachable_for_keys_is_a_503_not_a_401() {
    let app = spawn_app_with(|s| {
        s.upstreams.auth_url = format!("http://127.0.0.1:{}", closed_port())
            .parse()
            .unwrap();
    })
    .await;
    let upstream = FakeUpstream::start().await;
    let response = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("authorization", bearer(&upstream.customer_token().1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    app.stop().await;
}

#[tokio::test]
async fn the_jwks_is_served_from_the_gateways_cache_so_a_flood_reaches_auth_at_most_once() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let url = format!("{}/.well-known/jwks.json", app.address);
    let answers = futures::future::join_all((0..200).map(|_| app.client.get(&url).send())).await;
    assert!(
        upstream.jwks_fetches() <= 2,
        "{} fetches from auth for 200 requests",
        upstream.jwks_fetches()
    );
    for answer in answers {
        let answer = answer.unwrap();
        assert_eq!(answer.status(), 200);
        let cache_control = answer.headers()["cache-control"]
            .to_str()
            .unwrap()
            .to_owned();
        let max_age: u64 = cache_control
            .strip_prefix("public, max-age=")
            .unwrap_or_else(|| panic!("{cache_control}"))
            .parse()
            .unwrap();
        assert!((1..=300).contains(&max_age), "{cache_control}");
        let set: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(set["keys"][0]["kid"], "key-1");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_served_jwks_follows_a_key_rotation_once_the_gateway_has_refetched() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.authn.jwks_min_refetch_interval = Duration::from_millis(1);
    })
    .await;
    let kids = || async {
        let set: serde_json::Value = app
            .get("/.well-known/jwks.json")
            .await
            .json()
            .await
            .unwrap();
        set["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(kids().await, ["key-1"]);
    // A token of a new key makes the gateway refetch; the document follows.
    upstream.rotate("key-2");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let response = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("authorization", bearer(&upstream.customer_token().1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(kids().await, ["key-2"]);
    app.stop().await;
}

#[tokio::test]
async fn the_jwks_with_auth_unreachable_since_start_is_a_503_problem() {
    let app = spawn_app_with(|s| {
        s.upstreams.auth_url = format!("http://127.0.0.1:{}", closed_port())
            .parse()
            .unwrap();
    })
    .await;
    let response = app.get("/.well-known/jwks.json").await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    app.stop().await;
}

pub fn closed_port() -> u16 {
    // Bound then released: nothing listens there for the test's duration
    // (the OS hands out ports round-robin).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

const PROXY_SECRET: &str = "a-test-secret-the-identity-proxy-adds-0123456789";

/// Identity-header mode: trusts `proxies`, with [`PROXY_SECRET`].
fn trusting(settings: &mut api_gateway::settings::Settings, proxies: &str) {
    settings.authn.trusted_proxy.enabled = true;
    settings.authn.trusted_proxy.proxies = vec![proxies.parse().unwrap()];
    settings.authn.trusted_proxy.secret = Some(PROXY_SECRET.to_owned().into());
}

#[tokio::test]
async fn the_trusted_proxy_header_is_honoured_from_a_trusted_address_with_the_secret() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        trusting(s, "127.0.0.0/8");
    })
    .await;
    let response = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("x-email", "Ada@Example.com")
        .header("x-forwarded-groups", "staff, admin")
        .header("x-keel-proxy-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    let user = echo["headers"]["x-keel-user-id"][0]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(user.parse::<Uuid>().is_ok());
    assert_eq!(echo["headers"]["x-keel-role"][0], "admin");
    // The secret stops at the gateway.
    assert!(
        echo["headers"].get("x-keel-proxy-secret").is_none(),
        "{echo}"
    );

    // The same person (email case aside) is always the same user.
    let again: serde_json::Value = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("x-email", "ada@example.com")
        .header("x-keel-proxy-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["headers"]["x-keel-user-id"][0], user.as_str());
    assert_eq!(again["headers"]["x-keel-role"][0], "customer");
    app.stop().await;
}

#[tokio::test]
async fn the_trusted_proxy_header_without_the_right_secret_is_a_401_even_from_a_trusted_address() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        trusting(s, "127.0.0.0/8");
    })
    .await;
    let wrong = format!("{}x", &PROXY_SECRET[..PROXY_SECRET.len() - 1]);
    for secret in [None, Some(""), Some("guess"), Some(wrong.as_str())] {
        let mut request = app
            .client
            .get(format!("{}{PROTECTED}", app.address))
            .header("x-email", "mallory@example.com")
            .header("x-forwarded-groups", "admin");
        if let Some(secret) = secret {
            request = request.header("x-keel-proxy-secret", secret);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "secret {secret:?}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }

    // Nor do the unproven headers (or the guess) reach an upstream.
    let echo: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/auth/me", app.address))
        .header("x-email", "mallory@example.com")
        .header("x-forwarded-groups", "admin")
        .header("x-keel-proxy-secret", "guess")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for header in ["x-email", "x-forwarded-groups", "x-keel-proxy-secret"] {
        assert!(echo["headers"].get(header).is_none(), "{header}: {echo}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_trusted_proxy_header_from_anyone_else_is_ignored_and_stripped() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        trusting(s, "10.0.0.0/8");
    })
    .await;
    let response = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("x-email", "mallory@example.com")
        .header("x-keel-proxy-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert_unauthorized(response, "unauthenticated").await;

    // Not forwarded to upstreams either.
    let echo: serde_json::Value = app
        .client
        .get(format!("{}/api/v1/auth/me", app.address))
        .header("x-email", "mallory@example.com")
        .header("x-forwarded-groups", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(echo["headers"].get("x-email").is_none(), "{echo}");
    assert!(
        echo["headers"].get("x-forwarded-groups").is_none(),
        "{echo}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_trusted_proxy_is_the_tcp_peer_never_a_forwarded_address() {
    let upstream = FakeUpstream::start().await;
    // The test client connects from loopback, an ingress the gateway
    // believes for X-Forwarded-For; the identity proxy is elsewhere.
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        trusting(s, "10.0.0.0/8");
        s.http.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let response = app
        .client
        .get(format!("{}{PROTECTED}", app.address))
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-email", "mallory@example.com")
        .header("x-keel-proxy-secret", PROXY_SECRET)
        .send()
        .await
        .unwrap();
    assert_unauthorized(response, "unauthenticated").await;
    app.stop().await;
}

#[test]
fn enabling_the_trusted_proxy_without_a_secret_is_a_settings_error_naming_the_key() {
    let mut settings = api_gateway::settings::Settings::defaults().unwrap();
    trusting(&mut settings, "10.0.0.0/8");
    settings.authn.trusted_proxy.secret = None;
    let error = settings.validate().unwrap_err();
    assert_eq!(error.key, "authn.trusted_proxy.secret", "{error}");

    settings.authn.trusted_proxy.secret = Some("short".to_owned().into());
    let error = settings.validate().unwrap_err();
    assert_eq!(error.key, "authn.trusted_proxy.secret", "{error}");

    trusting(&mut settings, "10.0.0.0/8");
    settings.validate().unwrap();
}

#[test]
fn trusted_proxy_networks_overlapping_http_trusted_proxies_are_a_settings_error_naming_the_key() {
    let mut settings = api_gateway::settings::Settings::defaults().unwrap();
    trusting(&mut settings, "10.0.0.0/8");
    for ingress in ["10.20.0.0/16", "0.0.0.0/0", "10.0.0.7/32"] {
        settings.http.trusted_proxies =
            vec!["192.168.0.0/16".parse().unwrap(), ingress.parse().unwrap()];
        let error = settings.validate().unwrap_err();
        assert_eq!(
            error.key, "authn.trusted_proxy.proxies",
            "{ingress}: {error}"
        );
        assert!(error.reason.contains("http.trusted_proxies"), "{error}");
    }
    settings.http.trusted_proxies = vec!["192.168.0.0/16".parse().unwrap()];
    settings.validate().unwrap();
}

#[tokio::test]
async fn with_revocation_checks_a_token_of_a_deleted_session_is_a_401() {
    let upstream = FakeUpstream::start().await;
    let (mut redis_url, mut prefix) = (String::new(), String::new());
    let app = spawn_app_with(|s| {
        upstream.configure(s);
        s.authn.revocation.enabled = true;
        s.authn.revocation.cache_ttl = Duration::from_millis(200);
        redis_url = secrecy::ExposeSecret::expose_secret(&s.redis.url).to_owned();
        prefix = s.redis.key_prefix.clone();
    })
    .await;
    let claims = claims(Uuid::new_v4(), vec![Role::Customer]);
    let token = upstream.sign(&claims);
    let session_key = format!("{prefix}auth:session:{}", claims.sid);
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let get = || {
        app.client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token))
            .send()
    };

    // The auth service keeps live sessions as hashes; this one exists.
    let _: () = redis::cmd("HSET")
        .arg(&session_key)
        .arg("user")
        .arg(claims.sub.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    let response = get().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // Logout deletes it: after the short cache interval the token stops working.
    let _: () = redis::cmd("DEL")
        .arg(&session_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_unauthorized(get().await.unwrap(), "session-revoked").await;
}

#[tokio::test]
async fn by_default_a_logged_out_sessions_access_token_is_refused_within_seconds() {
    let upstream = FakeUpstream::start().await;
    // The built-in defaults: nothing about revocation is configured here.
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let claims = claims(Uuid::new_v4(), vec![Role::Customer]);
    let token = upstream.sign(&claims);
    let get = || {
        app.client
            .get(format!("{}{PROTECTED}", app.address))
            .header("authorization", bearer(&token))
            .send()
    };
    let response = get().await.unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    upstream.logout(claims.sid);
    let logged_out = Instant::now();
    loop {
        let response = get().await.unwrap();
        if response.status() == 401 {
            assert_unauthorized(response, "session-revoked").await;
            break;
        }
        assert_eq!(response.status(), 200);
        assert!(
            logged_out.elapsed() < Duration::from_secs(10),
            "the token still works 10 s after its session ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_are_403_for_customers_and_401_for_strangers() {
    let upstream = FakeUpstream::start().await;
    let app = spawn_app_with(|s| upstream.configure(s)).await;
    let path = format!("{}/api/v1/admin/queues", app.address);

    assert_unauthorized(
        app.client.get(&path).send().await.unwrap(),
        "unauthenticated",
    )
    .await;

    let customer = upstream.token_for(Uuid::new_v4(), vec![Role::Customer]);
    let response = app
        .client
        .get(&path)
        .header("authorization", bearer(&customer))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["type"], "urn:keel:problem:forbidden");

    // An admin gets past the gate (to whatever is mounted there).
    let admin = upstream.token_for(Uuid::new_v4(), vec![Role::Customer, Role::Admin]);
    let response = app
        .client
        .get(&path)
        .header("authorization", bearer(&admin))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 403);
    assert_ne!(response.status(), 401);
    app.stop().await;
}
