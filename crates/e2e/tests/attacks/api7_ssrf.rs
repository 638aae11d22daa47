//! API7:2023 Server Side Request Forgery. No Keel endpoint fetches a URL a
//! client names; what remains is where the services call out on their
//! own: the worker's Shopify Admin API client (carrying the shop's access
//! token) and the gateway's signing-key lookups. A redirect from the
//! third party, or a key URL inside a token, must not send a request (and
//! least of all a credential) anywhere else.
//!
//! The third party is a fake over real HTTP on loopback; the canary is a
//! listener that counts whoever reaches it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keel_token::{KeyAlgorithm, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Cases, Env, SHOPIFY_SECRET, eventually, expect_problem};

const CLASS: &str = "API7 server side request forgery";
const SHOP_TOKEN: &str = "shpat_attack_suite_canary_token";

/// A loopback HTTP server answering every request with `response` and
/// counting requests (and those that carried the shop's token).
#[derive(Debug, Clone)]
struct Fake {
    port: u16,
    hits: Arc<AtomicUsize>,
    tokens_seen: Arc<AtomicUsize>,
}

impl Fake {
    async fn start(response: impl Fn(u16) -> String + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let fake = Fake {
            port,
            hits: Arc::default(),
            tokens_seen: Arc::default(),
        };
        let (hits, tokens) = (fake.hits.clone(), fake.tokens_seen.clone());
        let response = Arc::new(response);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (hits, tokens, response) = (hits.clone(), tokens.clone(), response.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&byte[..n]),
                        }
                    }
                    hits.fetch_add(1, Ordering::SeqCst);
                    if String::from_utf8_lossy(&head).contains(SHOP_TOKEN) {
                        tokens.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = stream.write_all(response(port).as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        fake
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_follow_no_redirect_and_no_url_from_a_token() {
    let canary = Fake::start(|_| reply("200 OK", "", r#"{"fulfillments":[]}"#)).await;
    let canary_port = canary.port;
    // The "shop" answers every API call with a redirect to the canary.
    let shop = Fake::start(move |_| {
        reply(
            "302 Found",
            &format!("Location: http://127.0.0.1:{canary_port}/admin/api/stolen.json\r\n"),
            "{}",
        )
    })
    .await;
    let env = Env::start(&[
        (
            "KEEL_SHOPIFY__API_BASE_URL",
            format!("http://127.0.0.1:{}", shop.port),
        ),
        ("KEEL_SHOPIFY__ACCESS_TOKEN", SHOP_TOKEN.to_owned()),
    ])
    .await;
    let user = env.register(81, "frank@api7.example").await;
    let mut cases = Cases::new(CLASS);

    cases
        .case("the worker's Shopify API client does not follow a redirect with the shop's token", async {
            let body = json!({
                "id": 7_700_001_u64, "email": "buyer@api7.example", "currency": "EUR", "total_price": "10.00",
                "line_items": [{"id": 1_u64, "sku": "SSRF-1", "quantity": 1, "price": "10.00"}],
            })
            .to_string();
            let answer = reqwest::Client::new()
                .post(env.url("/webhooks/shopify"))
                .header("Content-Type", "application/json")
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Event-Id", uuid::Uuid::new_v4().to_string())
                .header("X-Shopify-Hmac-Sha256", keel_webhooks::sign::shopify(SHOPIFY_SECRET, body.as_bytes()))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), StatusCode::OK);
            // The worker called the shop (so a redirect was offered)...
            eventually(&env, "the worker's call to the shop", Duration::from_secs(30), || async {
                (shop.hits() > 0).then_some(())
            })
            .await;
            // ...and, a moment later, nobody reached the redirect's target.
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(
                canary.hits(),
                0,
                "the redirect was followed ({} request(s) carried the shop's token)",
                canary.tokens_seen.load(Ordering::SeqCst)
            );
        })
        .await;

    let key_host = Fake::start(|_| reply("200 OK", "", r#"{"keys":[]}"#)).await;
    let attacker_pem = SigningKey::generate_pem(KeyAlgorithm::Rs256).unwrap();
    let claims: Value = {
        let payload = user.access.split('.').nth(1).unwrap();
        use base64::Engine;
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };

    for (name, with_header) in [
        (
            "a token naming its own key URL (jku) is refused without fetching it",
            "jku",
        ),
        (
            "a token naming its own certificate URL (x5u) is refused without fetching it",
            "x5u",
        ),
        ("a token embedding its own key (jwk) is refused", "jwk"),
    ] {
        let url = format!("http://127.0.0.1:{}/.well-known/jwks.json", key_host.port);
        let token = {
            let mut header = Header::new(Algorithm::RS256);
            header.kid = Some(format!("attacker-{with_header}"));
            let signer =
                SigningKey::from_pem(KeyAlgorithm::Rs256, attacker_pem.as_bytes(), None).unwrap();
            match with_header {
                "jku" => header.jku = Some(url.clone()),
                "x5u" => header.x5u = Some(url.clone()),
                _ => header.jwk = Some(signer.public_jwk().clone()),
            }
            jsonwebtoken::encode(
                &header,
                &claims,
                &EncodingKey::from_rsa_pem(attacker_pem.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        cases
            .case(name, async {
                for path in ["/api/v1/orders", "/api/v1/auth/me"] {
                    let answer = user
                        .http
                        .get(env.url(path))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    let slug = if path.contains("/auth/") {
                        "unauthenticated"
                    } else {
                        "invalid-token"
                    };
                    expect_problem(answer, 401, slug).await;
                }
                assert_eq!(
                    key_host.hits(),
                    0,
                    "the gateway or auth fetched the token's URL"
                );
            })
            .await;
    }

    cases.finish(|| env.logs());
}
