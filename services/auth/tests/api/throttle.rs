//! Login throttling (ADR 0019): each attempt is counted before its password
//! is checked, per (account, client network), per client network and per
//! account. Client addresses come from `X-Forwarded-For` (the test is a
//! trusted proxy, as the gateway is); a network is the address's /24 (IPv4)
//! or /64 (IPv6).

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{PASSWORD, TestApp, spawn_app_with};

/// Network A: two addresses of one /24.
const NET_A: &str = "198.51.100.7";
const NET_A_NEIGHBOUR: &str = "198.51.100.200";
/// Network B: the owner, elsewhere.
const NET_B: &str = "203.0.113.9";

/// A window long enough that none ends during a test.
const LONG_WINDOW: Duration = Duration::from_secs(120);

/// How many wrong-password logins answered 401 and how many 429.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    unauthorized: u32,
    throttled: u32,
}

impl Tally {
    fn add(&mut self, response: &reqwest::Response) {
        match response.status() {
            StatusCode::UNAUTHORIZED => self.unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(response.headers().contains_key("retry-after"));
                self.throttled += 1;
            }
            other => panic!("a wrong password answered {other}"),
        }
    }

    fn of(responses: &[reqwest::Response]) -> Self {
        let mut tally = Self::default();
        for response in responses {
            tally.add(response);
        }
        tally
    }
}

async fn wrong_passwords_in_parallel(app: &TestApp, from: &str, email: &str, n: usize) -> Tally {
    let attempts = (0..n).map(|i| async move {
        app.login_from(from, email, &format!("wrong guess {i}"))
            .await
    });
    Tally::of(&futures::future::join_all(attempts).await)
}

async fn wrong_passwords_in_sequence(app: &TestApp, from: &str, email: &str, n: usize) -> Tally {
    let mut tally = Tally::default();
    for i in 0..n {
        tally.add(
            &app.login_from(from, email, &format!("wrong guess {i}"))
                .await,
        );
    }
    tally
}

#[tokio::test]
async fn fifty_parallel_wrong_passwords_get_as_many_401s_as_fifty_sequential_ones() {
    const LIMIT: u32 = 5;
    let app = spawn_app_with(|s| {
        s.throttle.max_failures_per_account_network = LIMIT;
        s.throttle.max_failures_per_network = 1000;
        s.throttle.window = LONG_WINDOW;
    })
    .await;
    app.register("sequential@example.com").await;
    app.register("parallel@example.com").await;

    let sequential = wrong_passwords_in_sequence(&app, NET_A, "sequential@example.com", 50).await;
    let parallel = wrong_passwords_in_parallel(&app, NET_A, "parallel@example.com", 50).await;
    // An unknown email is throttled alike: a 429 must not tell it apart.
    let unknown = wrong_passwords_in_parallel(&app, NET_A, "nobody@example.com", 50).await;

    let expected = Tally {
        unauthorized: LIMIT,
        throttled: 50 - LIMIT,
    };
    assert_eq!(parallel, sequential, "parallel, then sequential");
    assert_eq!(unknown, sequential, "unknown email, then sequential");
    assert_eq!(sequential, expected);
}

#[tokio::test]
async fn past_ten_wrong_passwords_login_answers_429_with_retry_after_and_the_right_password_works_after_the_wait()
 {
    let app = spawn_app_with(|_| {}).await;
    app.register("victim@example.com").await;
    let ten = wrong_passwords_in_sequence(&app, NET_A, "victim@example.com", 10).await;
    assert_eq!(
        ten,
        Tally {
            unauthorized: 10,
            throttled: 0
        }
    );
    let eleventh = app
        .login_from(NET_A, "victim@example.com", "wrong password!")
        .await;
    assert_eq!(eleventh.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = eleventh.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The test window is 3 s.
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    // Even the right password waits.
    assert_eq!(
        app.login_from(NET_A, "victim@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    tokio::time::sleep(Duration::from_secs(retry_after) + Duration::from_millis(200)).await;
    assert_eq!(
        app.login_from(NET_A, "victim@example.com", PASSWORD)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_flood_from_one_network_throttles_that_network_while_the_owner_signs_in_from_another() {
    let app = spawn_app_with(|s| s.throttle.window = LONG_WINDOW).await;
    app.register("owner@example.com").await;

    let flood = wrong_passwords_in_parallel(&app, NET_A, "owner@example.com", 30).await;
    assert_eq!(flood.unauthorized, 10, "{flood:?}");

    // Every address of the flooding /24 is throttled for this account...
    for from in [NET_A, NET_A_NEIGHBOUR] {
        let answer = app.login_from(from, "owner@example.com", PASSWORD).await;
        assert_eq!(
            answer.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "from {from}"
        );
    }
    // ...and the owner, from her own network, signs in.
    let answer = app.login_from(NET_B, "owner@example.com", PASSWORD).await;
    assert_eq!(answer.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_ipv6_flood_throttles_its_64_and_not_the_next_one() {
    let app = spawn_app_with(|s| s.throttle.window = LONG_WINDOW).await;
    app.register("six@example.com").await;

    wrong_passwords_in_sequence(&app, "2001:db8:1:2::7", "six@example.com", 11).await;

    let same_64 = app
        .login_from("2001:db8:1:2:ffff::1", "six@example.com", PASSWORD)
        .await;
    assert_eq!(same_64.status(), StatusCode::TOO_MANY_REQUESTS);
    let next_64 = app
        .login_from("2001:db8:1:3::7", "six@example.com", PASSWORD)
        .await;
    assert_eq!(next_64.status(), StatusCode::OK);
}

#[tokio::test]
async fn guessing_across_accounts_from_the_addresses_of_one_network_is_throttled_per_network() {
    let app = spawn_app_with(|s| {
        s.throttle.max_failures_per_network = 6;
        s.throttle.window = LONG_WINDOW;
    })
    .await;
    app.register("sprayed@example.com").await;

    // Credential stuffing: a new account and a new address of the /24 each time.
    let mut tally = Tally::default();
    for i in 0..6 {
        let from = format!("198.51.100.{}", i + 1);
        let email = format!("stuffed{i}@example.com");
        tally.add(&app.login_from(&from, &email, "a leaked password").await);
    }
    assert_eq!(
        tally,
        Tally {
            unauthorized: 6,
            throttled: 0
        }
    );
    let seventh = app
        .login_from("198.51.100.99", "sprayed@example.com", PASSWORD)
        .await;
    assert_eq!(seventh.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other networks are not affected.
    let elsewhere = app.login_from(NET_B, "sprayed@example.com", PASSWORD).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_flood_from_many_networks_shrinks_each_networks_budget_but_the_owner_still_signs_in() {
    let app = spawn_app_with(|s| {
        s.throttle.max_failures_per_account_network = 5;
        s.throttle.account_flood_threshold = 10;
        s.throttle.max_failures_per_account_network_in_flood = 2;
        s.throttle.window = LONG_WINDOW;
    })
    .await;
    app.register("target@example.com").await;

    // Two networks spend their whole budget: ten failures, a flood.
    for from in ["198.51.1.7", "198.51.2.7"] {
        let spent = wrong_passwords_in_sequence(&app, from, "target@example.com", 5).await;
        assert_eq!(spent.unauthorized, 5, "from {from}: {spent:?}");
    }
    // A third network now gets two guesses, not five.
    let third = wrong_passwords_in_sequence(&app, "198.51.3.7", "target@example.com", 5).await;
    assert_eq!(
        third,
        Tally {
            unauthorized: 2,
            throttled: 3
        }
    );
    // The owner's network has not guessed: she signs in.
    let owner = app.login_from(NET_B, "target@example.com", PASSWORD).await;
    assert_eq!(owner.status(), StatusCode::OK);
}

#[tokio::test]
async fn successful_logins_spend_no_budget_and_clear_their_networks_failures_for_the_account() {
    let app = spawn_app_with(|s| {
        s.throttle.max_failures_per_account_network = 3;
        s.throttle.max_failures_per_network = 3;
        s.throttle.window = LONG_WINDOW;
    })
    .await;
    app.register("regular@example.com").await;

    for _ in 0..5 {
        let answer = app.login_from(NET_A, "regular@example.com", PASSWORD).await;
        assert_eq!(answer.status(), StatusCode::OK);
    }
    let typos = wrong_passwords_in_sequence(&app, NET_A, "regular@example.com", 2).await;
    assert_eq!(typos.unauthorized, 2);
    let answer = app.login_from(NET_A, "regular@example.com", PASSWORD).await;
    assert_eq!(answer.status(), StatusCode::OK);
    // The account's bucket is empty again; the network's holds two failures.
    let more = wrong_passwords_in_sequence(&app, NET_A, "regular@example.com", 2).await;
    assert_eq!(
        more,
        Tally {
            unauthorized: 1,
            throttled: 1
        }
    );
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_answer() {
    let app = spawn_app_with(|_| {}).await;
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

#[tokio::test]
async fn the_right_password_sent_during_a_parallel_flood_is_refused_once_the_flood_spent_the_budget()
 {
    const LIMIT: u32 = 5;
    let app = spawn_app_with(|s| {
        s.throttle.max_failures_per_account_network = LIMIT;
        s.throttle.max_failures_per_network = 1000;
        s.throttle.window = LONG_WINDOW;
        // Production-cost checks, one at a time: a wide window for guesses to slip
        // between "allowed" and "counted" if the two were separate steps.
        s.passwords.memory_kib = 19456;
        s.passwords.iterations = 2;
        s.passwords.max_concurrent_hashes = 1;
    })
    .await;
    app.register("busy@example.com").await;

    let flood = wrong_passwords_in_parallel(&app, NET_A, "busy@example.com", 49);
    let right = async {
        // The flood's requests are all in by now; few of its passwords
        // have been checked yet.
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.login_from(NET_A, "busy@example.com", PASSWORD).await
    };
    let (flood, right) = tokio::join!(flood, right);

    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(flood.unauthorized, LIMIT, "{flood:?}");
}
