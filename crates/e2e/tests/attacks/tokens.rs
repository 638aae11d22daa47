//! Token attacks (RFC 8725's list, RFC 9700 for refresh tokens): forged
//! access tokens of every kind against both verifiers (the gateway's, on
//! `/api/v1/orders` and `/api/v1/admin/queues`, and auth's own, on
//! `/api/v1/auth/me`), and refresh-token reuse after rotation.
//!
//! The stack signs with a key this test made, so a forgery can differ from
//! a genuine token in exactly one respect (the expiry, the audience, one
//! byte) and still carry a valid signature where that is the point.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keel_token::{KeyAlgorithm, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use std::sync::atomic::{AtomicU8, Ordering};

use crate::support::{Cases, Env, client_from, eventually, expect_problem, network};

const CLASS: &str = "tokens";
const GRACE_SECONDS: u64 = 2;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a genuine token (unverified: the test made the key).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign_rs256(pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

fn hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
}

// Minimal DER, to spell the public key the ways a confused verifier might
// load it as an HMAC secret.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 128 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let mut content = bytes.to_vec();
    if content.first().is_some_and(|b| b & 0x80 != 0) {
        content.insert(0, 0);
    }
    der(0x02, &content)
}

fn pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The public key as the HMAC secrets an algorithm-confused verifier could
/// use: the JWK Set text, the JWK, SPKI PEM, PKCS#1 PEM, the modulus.
fn public_key_spellings(jwks_text: &str) -> Vec<(&'static str, Vec<u8>)> {
    let jwks: Value = serde_json::from_str(jwks_text).unwrap();
    let jwk = &jwks["keys"][0];
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let pkcs1 = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    let algorithm = der(
        0x30,
        &[
            der(
                0x06,
                &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
            ),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let bit_string = der(0x03, &[vec![0], pkcs1.clone()].concat());
    let spki = der(0x30, &[algorithm, bit_string].concat());
    vec![
        ("the JWK Set document", jwks_text.as_bytes().to_vec()),
        ("the JWK", jwk.to_string().into_bytes()),
        ("an SPKI PEM", pem("PUBLIC KEY", &spki).into_bytes()),
        ("a PKCS#1 PEM", pem("RSA PUBLIC KEY", &pkcs1).into_bytes()),
        ("the raw modulus", n),
    ]
}

/// A client from a network not used before in this test: forgeries come
/// from anywhere, and the auth route class's per-address budget (30 a
/// minute) must not be what refuses them.
fn fresh_client() -> reqwest::Client {
    static NEXT: AtomicU8 = AtomicU8::new(150);
    client_from(network(NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// Asserts `token` is refused by both verifiers and cannot reach an admin
/// route; `gateway_slug` is the gateway's problem type for it.
async fn refused_everywhere(env: &Env, token: &str, gateway_slug: &str) {
    let http = fresh_client();
    for path in ["/api/v1/orders", "/api/v1/admin/queues"] {
        let answer = http
            .get(env.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(
            answer.headers().contains_key("www-authenticate"),
            "{path}: no challenge"
        );
        expect_problem(answer, 401, gateway_slug).await;
    }
    let answer = http
        .get(env.url("/api/v1/auth/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    expect_problem(answer, 401, "unauthenticated").await;
}

async fn refresh(env: &Env, token: &str) -> reqwest::Response {
    fresh_client()
        .post(env.url("/api/v1/auth/refresh"))
        .json(&json!({"refresh_token": token}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_tokens_and_reused_refresh_tokens_are_refused() {
    let env = Env::start(&[("KEEL_SESSIONS__GRACE_PERIOD", format!("{GRACE_SECONDS}s"))]).await;
    let user = env.register(31, "mallory@tokens.example").await;
    // The genuine token works: every forgery below differs from it.
    let answer = user
        .http
        .get(env.url("/api/v1/orders"))
        .bearer_auth(&user.access)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let genuine = claims_of(&user.access);
    let admin_claims = {
        let mut c = genuine.clone();
        c["roles"] = json!(["admin"]);
        c["jti"] = json!(uuid::Uuid::new_v4());
        c
    };
    let with = |key: &str, value: Value| {
        let mut c = admin_claims.clone();
        c[key] = value;
        c
    };
    let jwks_text = user
        .http
        .get(env.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let attacker_pem = SigningKey::generate_pem(KeyAlgorithm::Rs256).unwrap();
    let mut cases = Cases::new(CLASS);

    for (name, header, signature) in [
        (
            "alg none without a signature is refused",
            json!({"alg": "none", "typ": "JWT"}),
            "",
        ),
        (
            "alg none with a junk signature is refused",
            json!({"alg": "none", "typ": "JWT"}),
            "AAAA",
        ),
        (
            "alg NoNe with a junk signature is refused",
            json!({"alg": "NoNe"}),
            "c2ln",
        ),
        (
            "an empty alg is refused",
            json!({"alg": "", "kid": env.kid}),
            "c2ln",
        ),
    ] {
        let token = unsigned(&header, &admin_claims, signature);
        cases
            .case(name, async {
                refused_everywhere(&env, &token, "invalid-token").await
            })
            .await;
    }

    for (spelling, key) in public_key_spellings(&jwks_text) {
        let token = hs256(
            &json!({"alg": "HS256", "typ": "JWT", "kid": env.kid}),
            &admin_claims,
            &key,
        );
        cases
            .case(
                &format!("HS256 keyed with the public key ({spelling}) is refused"),
                async {
                    refused_everywhere(&env, &token, "invalid-token").await;
                },
            )
            .await;
    }

    let real = |claims: &Value| sign_rs256(&env.signing_pem, Some(&env.kid), claims);
    for (name, claims, slug) in [
        (
            "an expired token signed by the real key is refused",
            with("exp", json!(now() - 3600)),
            "token-expired",
        ),
        (
            "a token expired just past the leeway is refused",
            with("exp", json!(now() - 45)),
            "token-expired",
        ),
        (
            "a token for another audience is refused",
            with("aud", json!("another-api")),
            "invalid-token",
        ),
        (
            "a token from another issuer is refused",
            with("iss", json!("https://evil.example")),
            "invalid-token",
        ),
        (
            "a token without aud and iss is refused",
            {
                let mut c = admin_claims.clone();
                c.as_object_mut().unwrap().remove("aud");
                c.as_object_mut().unwrap().remove("iss");
                c
            },
            "invalid-token",
        ),
        (
            "a token not valid before an hour from now is refused",
            with("nbf", json!(now() + 3600)),
            "invalid-token",
        ),
        (
            "a token without exp is refused",
            {
                let mut c = admin_claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            },
            "invalid-token",
        ),
    ] {
        let token = real(&claims);
        cases
            .case(name, async { refused_everywhere(&env, &token, slug).await })
            .await;
    }

    for (name, kid) in [
        (
            "a token signed by an unknown key under an unknown kid is refused",
            Some("attacker-key-1"),
        ),
        (
            "a token signed by an unknown key under the real kid is refused",
            Some(env.kid.as_str()),
        ),
        (
            "a token signed by an unknown key without a kid is refused",
            None,
        ),
    ] {
        let token = sign_rs256(&attacker_pem, kid, &admin_claims);
        cases
            .case(name, async {
                refused_everywhere(&env, &token, "invalid-token").await
            })
            .await;
    }

    cases
        .case(
            "an EdDSA token from a key generated by the attacker is refused",
            async {
                let pem = SigningKey::generate_pem(KeyAlgorithm::EdDsa).unwrap();
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some(env.kid.clone());
                let token = jsonwebtoken::encode(
                    &header,
                    &admin_claims,
                    &EncodingKey::from_ed_pem(pem.as_bytes()).unwrap(),
                )
                .unwrap();
                refused_everywhere(&env, &token, "invalid-token").await;
            },
        )
        .await;

    cases
        .case(
            "a used token with one payload byte changed is refused",
            async {
                // The genuine token was verified (and cached) above.
                let mut parts: Vec<String> = user.access.split('.').map(str::to_owned).collect();
                parts[1] = b64(admin_claims.to_string().as_bytes());
                let token = parts.join(".");
                refused_everywhere(&env, &token, "invalid-token").await;
            },
        )
        .await;

    cases
        .case(
            "a fresh token with one payload byte flipped is refused",
            async {
                let fresh = env
                    .login_from(31, &user.email, crate::support::PASSWORD)
                    .await;
                let mut parts: Vec<String> = fresh.access.split('.').map(str::to_owned).collect();
                let mut payload = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
                let at = payload.len() / 2;
                payload[at] ^= 0x01;
                parts[1] = b64(&payload);
                let token = parts.join(".");
                refused_everywhere(&env, &token, "invalid-token").await;
            },
        )
        .await;

    cases
        .case(
            "a token with one signature byte flipped is refused",
            async {
                let mut parts: Vec<String> = user.access.split('.').map(str::to_owned).collect();
                let mut signature = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
                signature[10] ^= 0x80;
                parts[2] = b64(&signature);
                let token = parts.join(".");
                refused_everywhere(&env, &token, "invalid-token").await;
            },
        )
        .await;

    cases
        .case(
            "a token in the query string is not taken as credentials",
            async {
                let answer = user
                    .http
                    .get(env.url(&format!("/api/v1/orders?access_token={}", user.access)))
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "unauthenticated").await;
            },
        )
        .await;

    cases
        .case("a refresh token is not an access token", async {
            let answer = user
                .http
                .get(env.url("/api/v1/orders"))
                .bearer_auth(&user.refresh)
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "invalid-token").await;
            let answer = user
                .http
                .get(env.url("/api/v1/auth/me"))
                .bearer_auth(&user.refresh)
                .send()
                .await
                .unwrap();
            expect_problem(answer, 401, "unauthenticated").await;
        })
        .await;

    cases
        .case("an access token is not a refresh token", async {
            expect_problem(
                refresh(&env, &user.access).await,
                401,
                "invalid-refresh-token",
            )
            .await;
        })
        .await;

    cases
        .case("a guessed refresh token is refused", async {
            let guess = b64(uuid::Uuid::new_v4().as_bytes());
            expect_problem(refresh(&env, &guess).await, 401, "invalid-refresh-token").await;
        })
        .await;

    cases
        .case("the JWK Set publishes no private key material", async {
            let jwks: Value = serde_json::from_str(&jwks_text).unwrap();
            for key in jwks["keys"].as_array().unwrap() {
                for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                    assert!(
                        key.get(private).is_none(),
                        "the JWK Set carries {private}: {key}"
                    );
                }
            }
        })
        .await;

    // Refresh-token reuse (RFC 9700 §4.14.2): rotate, then replay the spent
    // token after the grace period.
    let victim = env.register(32, "victim@tokens.example").await;
    let first: Value = refresh(&env, &victim.refresh).await.json().await.unwrap();
    let rotated_refresh = first["refresh_token"].as_str().unwrap().to_owned();
    let rotated_access = first["access_token"].as_str().unwrap().to_owned();
    // Within the grace period the spent token returns the same new pair.
    let again: Value = refresh(&env, &victim.refresh).await.json().await.unwrap();
    assert_eq!(
        again["refresh_token"], first["refresh_token"],
        "grace-period retry"
    );
    tokio::time::sleep(Duration::from_secs(GRACE_SECONDS + 1)).await;

    cases
        .case(
            "a spent refresh token replayed after the grace period is refused",
            async {
                expect_problem(
                    refresh(&env, &victim.refresh).await,
                    401,
                    "invalid-refresh-token",
                )
                .await;
            },
        )
        .await;

    cases
        .case(
            "after a replay the session's newest refresh token is refused too",
            async {
                expect_problem(
                    refresh(&env, &rotated_refresh).await,
                    401,
                    "invalid-refresh-token",
                )
                .await;
            },
        )
        .await;

    cases
        .case(
            "after a replay the session's access token is refused by auth",
            async {
                let answer = victim
                    .http
                    .get(env.url("/api/v1/auth/me"))
                    .bearer_auth(&rotated_access)
                    .send()
                    .await
                    .unwrap();
                expect_problem(answer, 401, "unauthenticated").await;
            },
        )
        .await;

    cases
        .case(
            "after a replay the session's access token is refused at the gateway within seconds",
            async {
                let answer = eventually(
                    &env,
                    "the revoked session's token refused",
                    Duration::from_secs(15),
                    || async {
                        let answer = victim
                            .http
                            .get(env.url("/api/v1/orders"))
                            .bearer_auth(&rotated_access)
                            .send()
                            .await
                            .unwrap();
                        (answer.status() == StatusCode::UNAUTHORIZED).then_some(answer)
                    },
                )
                .await;
                expect_problem(answer, 401, "session-revoked").await;
            },
        )
        .await;

    cases
        .case("a logged-out session's refresh token is refused", async {
            let other = env
                .login_from(32, &victim.email, crate::support::PASSWORD)
                .await;
            let answer = other
                .http
                .post(env.url("/api/v1/auth/logout"))
                .json(&json!({"refresh_token": other.refresh}))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::NO_CONTENT);
            expect_problem(
                refresh(&env, &other.refresh).await,
                401,
                "invalid-refresh-token",
            )
            .await;
        })
        .await;

    cases.finish(|| env.logs());
}
