//! API2:2023 Broken Authentication: password guessing floods (in parallel,
//! and behind forged `X-Forwarded-For` values), account enumeration, weak
//! passwords, and sessions that outlive a logout or a password change.
//!
//! Networks are loopback addresses (`support::network`): the gateway sees
//! each client's own address as its TCP peer and forwards it to auth, which
//! believes `X-Forwarded-For` only from the gateway. Token forgeries and
//! refresh-token reuse are in `tokens.rs`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Cases, Env, PASSWORD, client_from, eventually, expect_problem, network};

const CLASS: &str = "API2 broken authentication";
/// auth's `throttle.max_failures_per_email` default.
const MAX_FAILURES: usize = 10;

async fn login(
    client: &reqwest::Client,
    env: &Env,
    email: &str,
    password: &str,
) -> reqwest::Response {
    client
        .post(env.url("/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_floods_enumeration_and_stale_sessions_are_refused() {
    // The gateway's per-address budget for /auth (30 a minute) would answer
    // part of the flood itself, depending on timing; lifted here so that
    // each case meets the account throttle in auth that it is about.
    let env = Env::start(&[("KEEL_RATE_LIMIT__CLASSES__AUTH__LIMIT", "10000".into())]).await;
    let owner = env.register(21, "owner@api2.example").await;
    let second = env.register(23, "second@api2.example").await;
    // Neither flooded nor throttled: the enumeration probe's known account.
    let fresh = env.register(25, "fresh@api2.example").await;
    let mut cases = Cases::new(CLASS);

    cases
        .case(
            "a parallel flood of wrong passwords gets at most 10 401s, then 429 with Retry-After",
            async {
                let attacker = client_from(network(22));
                let attempts =
                    (0..2 * MAX_FAILURES).map(|i| {
                        let attacker = attacker.clone();
                        let (env, email) = (&env, &owner.email);
                        async move {
                            login(&attacker, env, email, &format!("wrong guess number {i}")).await
                        }
                    });
                let answers = futures::future::join_all(attempts).await;
                let (mut refused, mut throttled) = (0, 0);
                for answer in answers {
                    match answer.status().as_u16() {
                        401 => {
                            expect_problem(answer, 401, "invalid-credentials").await;
                            refused += 1;
                        }
                        429 => {
                            assert!(answer.headers().contains_key("retry-after"));
                            expect_problem(answer, 429, "too-many-attempts").await;
                            throttled += 1;
                        }
                        other => panic!("a wrong password answered {other}"),
                    }
                }
                assert!(
                    refused <= MAX_FAILURES,
                    "{refused} wrong passwords were checked (limit {MAX_FAILURES})"
                );
                assert_eq!(refused + throttled, 2 * MAX_FAILURES);
            },
        )
        .await;

    cases
        .case(
            "the right password from the throttled network is still refused with 429",
            async {
                let attacker = client_from(network(22));
                let answer = login(&attacker, &env, &owner.email, PASSWORD).await;
                expect_problem(answer, 429, "too-many-attempts").await;
            },
        )
        .await;

    cases
        .case(
            "the owner signs in from another network while the attacker's is throttled",
            async {
                let answer = login(&owner.http, &env, &owner.email, PASSWORD).await;
                let status = answer.status();
                let body = answer.text().await.unwrap_or_default();
                assert_eq!(
                    status,
                    StatusCode::OK,
                    "a flood from elsewhere locked the owner out: {body}"
                );
            },
        )
        .await;

    cases
        .case(
            "forged X-Forwarded-For values do not spread failures over fake networks",
            async {
                let attacker = client_from(network(24));
                let mut refused = 0;
                let mut throttled = false;
                for i in 0..(MAX_FAILURES + 5) {
                    let answer = attacker
                        .post(env.url("/api/v1/auth/login"))
                        .header(
                            "X-Forwarded-For",
                            format!("10.{}.{}.7", i / 250, i % 250 + 1),
                        )
                        .header("Forwarded", format!("for=192.0.2.{}", i + 1))
                        .header("X-Real-IP", format!("198.51.100.{}", i + 1))
                        .json(&json!({"email": second.email, "password": format!("guess {i}")}))
                        .send()
                        .await
                        .unwrap();
                    match answer.status().as_u16() {
                        401 => refused += 1,
                        429 => {
                            throttled = true;
                            expect_problem(answer, 429, "too-many-attempts").await;
                            break;
                        }
                        other => panic!("answered {other}"),
                    }
                }
                assert!(
                    throttled,
                    "{refused} guesses behind forged addresses were never throttled"
                );
                assert!(refused <= MAX_FAILURES, "{refused} guesses were checked");
            },
        )
        .await;

    cases
        .case(
            "an unknown email and a wrong password answer alike",
            async {
                let probe = client_from(network(25));
                let unknown = login(
                    &probe,
                    &env,
                    "nobody-here@api2.example",
                    "whatever password 1",
                )
                .await;
                let unknown = expect_problem(unknown, 401, "invalid-credentials").await;
                let wrong = login(&probe, &env, &fresh.email, "whatever password 1").await;
                let wrong = expect_problem(wrong, 401, "invalid-credentials").await;
                assert_eq!(unknown["title"], wrong["title"]);
                assert_eq!(unknown["detail"], wrong["detail"]);
                assert_eq!(unknown["errors"], wrong["errors"]);
            },
        )
        .await;

    cases
        .case(
            "common, short and email-equal passwords are refused at registration",
            async {
                let client = client_from(network(26));
                for (email, password) in [
                    ("weak1@api2.example", "password"),
                    ("weak2@api2.example", "12345678"),
                    ("weak3@api2.example", "short"),
                    ("weak4@api2.example", "weak4@api2.example"),
                ] {
                    let answer = client
                        .post(env.url("/api/v1/auth/register"))
                        .json(&json!({"email": email, "password": password}))
                        .send()
                        .await
                        .unwrap();
                    let body = expect_problem(answer, 422, "validation").await;
                    assert_eq!(body["errors"][0]["field"], "password", "{body}");
                }
            },
        )
        .await;

    let user = env.register(27, "sessions@api2.example").await;
    let other_session = env.login_from(27, &user.email, PASSWORD).await;

    cases
        .case("a password change needs the current password", async {
            let answer = user
                .http
                .post(env.url("/api/v1/auth/password"))
                .bearer_auth(&user.access)
                .json(&json!({"current_password": "not my password at all", "new_password": "another long passphrase 99"}))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "invalid-credentials").await;
            // The old password still signs in.
            env.login_from(27, &user.email, PASSWORD).await;
        })
        .await;

    cases
        .case("logout-all ends every session's refresh token", async {
            let answer = user
                .http
                .post(env.url("/api/v1/auth/logout-all"))
                .bearer_auth(&user.access)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            for refresh in [&user.refresh, &other_session.refresh] {
                let answer = user
                    .http
                    .post(env.url("/api/v1/auth/refresh"))
                    .json(&json!({"refresh_token": refresh}))
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "invalid-refresh-token").await;
            }
        })
        .await;

    cases
        .case(
            "a logged-out session's access token is refused by auth",
            async {
                let answer = user
                    .http
                    .get(env.url("/api/v1/auth/me"))
                    .bearer_auth(&other_session.access)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "unauthenticated").await;
            },
        )
        .await;

    cases
        .case(
            "a logged-out session's access token is refused at the gateway within seconds",
            async {
                // Session revocation is on by default (authn.revocation): the
                // gateway's cache of live sessions lasts a few seconds at most.
                let body: Value = eventually(
                    &env,
                    "the revoked token refused",
                    Duration::from_secs(15),
                    || async {
                        let answer = user
                            .http
                            .get(env.url("/api/v1/orders"))
                            .bearer_auth(&other_session.access)
                            .send()
                            .await
                            .unwrap();
                        (answer.status() == StatusCode::UNAUTHORIZED).then_some(answer)
                    },
                )
                .await
                .json()
                .await
                .unwrap();
                assert_eq!(body["type"], "urn:keel:problem:session-revoked", "{body}");
            },
        )
        .await;

    let changer = env.register(28, "changer@api2.example").await;
    let stolen = env.login_from(28, &changer.email, PASSWORD).await;

    cases
        .case("a password change revokes the other sessions' refresh tokens", async {
            let answer = changer
                .http
                .post(env.url("/api/v1/auth/password"))
                .bearer_auth(&changer.access)
                .json(&json!({"current_password": PASSWORD, "new_password": "a brand new passphrase 2024"}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            let answer = changer
                .http
                .post(env.url("/api/v1/auth/refresh"))
                .json(&json!({"refresh_token": stolen.refresh}))
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "invalid-refresh-token").await;
            let answer = login(&changer.http, &env, &changer.email, PASSWORD).await;
            expect_problem(answer, 401, "invalid-credentials").await;
        })
        .await;

    cases.finish(|| env.logs());
}
