//! Property-based tests of the signature schemes: arbitrary header values,
//! bodies, secrets and clocks never panic the verifier (it answers with a
//! [`Rejection`]), a delivery signed as the sender signs always verifies,
//! and a tampered one never does.
//!
//! The case count is 256 per property unless `PROPTEST_CASES` says
//! otherwise (e.g. `PROPTEST_CASES=10000` for a longer hunt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use keel_webhooks::headers::{REDACTED, stored_headers};
use keel_webhooks::scheme::MAX_DELIVERY_ID_LEN;
use keel_webhooks::{Headers, Rejection, Scheme, Verifier, sign};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const TOLERANCE: Duration = Duration::from_secs(300);

/// 256 cases, unless the environment asks for another number.
/// 256 cases unless `PROPTEST_CASES` says otherwise; failing cases are
/// kept in `tests/properties.proptest-regressions` and replayed first.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::WithSource(
        "proptest-regressions",
    )));
    config
}

/// Headers as a client can send them: any name, any bytes.
#[derive(Debug, Clone)]
struct RawHeaders(Vec<(String, Vec<u8>)>);

impl Headers for RawHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl RawHeaders {
    fn set(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.0.push((name.to_owned(), value.into()));
    }
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![
        Just(Scheme::Shopify),
        Just(Scheme::Github),
        Just(Scheme::Stripe),
        Just(Scheme::Standard),
    ]
}

/// A secret the scheme accepts: any non-empty text, or for Standard
/// Webhooks `whsec_` and the base64 of 1 to 64 bytes.
fn secret(scheme: Scheme) -> BoxedStrategy<String> {
    match scheme {
        Scheme::Standard => proptest::collection::vec(any::<u8>(), 1..64)
            .prop_map(|key| format!("whsec_{}", BASE64.encode(key)))
            .boxed(),
        _ => prop_oneof![
            "[ -~]{1,48}",
            any::<String>().prop_filter("non-empty", |s| !s.is_empty()),
        ]
        .boxed(),
    }
}

/// Every header name some scheme reads, and a few it does not.
const NAMES: &[&str] = &[
    "X-Shopify-Hmac-Sha256",
    "X-Shopify-Event-Id",
    "X-Shopify-Webhook-Id",
    "X-Shopify-Topic",
    "X-Hub-Signature-256",
    "X-GitHub-Delivery",
    "X-GitHub-Event",
    "Stripe-Signature",
    "webhook-signature",
    "webhook-timestamp",
    "webhook-id",
    "Content-Type",
];

/// Values that are near what a scheme expects as often as they are noise,
/// so the parsers' deeper branches are reached, not only the first check.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..96);
    prop_oneof![
        bytes.clone(),
        any::<String>().prop_map(String::into_bytes),
        bytes.clone().prop_map(|b| BASE64.encode(b).into_bytes()),
        bytes
            .clone()
            .prop_map(|b| format!("sha256={}", hex::encode(b)).into_bytes()),
        (any::<i64>(), bytes.clone(), "[ -~]{0,16}").prop_map(|(t, b, extra)| format!(
            "t={t},v1={},{extra}",
            hex::encode(b)
        )
        .into_bytes()),
        (any::<u64>(), "[ ,=tv01a-f]{0,40}")
            .prop_map(|(t, tail)| format!("t={t}{tail}").into_bytes()),
        (bytes.clone(), "[ -~]{0,8}").prop_map(|(b, v)| format!(
            "{v},{} v1a,{} v1,{}",
            BASE64.encode(&b),
            BASE64.encode(&b),
            BASE64.encode(&b)
        )
        .into_bytes()),
        "[0-9+ -]{0,24}".prop_map(String::into_bytes),
        "[ -~]{0,300}".prop_map(String::into_bytes),
    ]
}

fn raw_headers() -> impl Strategy<Value = RawHeaders> {
    let name = prop_oneof![
        4 => proptest::sample::select(NAMES).prop_map(str::to_owned),
        1 => "[A-Za-z-]{1,24}",
    ];
    proptest::collection::vec((name, header_value()), 0..8).prop_map(RawHeaders)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (
            any::<Option<String>>(),
            any::<Option<String>>(),
            any::<i64>()
        )
            .prop_map(|(id, kind, n)| serde_json::to_vec(
                &serde_json::json!({"id": id, "type": kind, "n": n})
            )
            .unwrap()),
    ]
}

fn verifier(scheme: Scheme, secrets: &[String], public_keys: &[String]) -> Verifier {
    Verifier::new(scheme, secrets, public_keys, TOLERANCE).unwrap()
}

/// The one thing a verified delivery always satisfies.
fn check_verified(result: &Result<keel_webhooks::Verified, Rejection>) {
    if let Ok(verified) = result {
        let id = verified.delivery_id.as_str();
        assert!(!id.is_empty() && id.chars().count() <= MAX_DELIVERY_ID_LEN);
        assert_eq!(id, id.trim());
    }
}

/// A signed delivery as its sender would post it.
#[derive(Debug, Clone)]
struct Signed {
    scheme: Scheme,
    secret: String,
    headers: RawHeaders,
    body: Vec<u8>,
    id: String,
    now: i64,
}

/// A delivery id as it arrives: HTTP strips a header value's surrounding
/// whitespace, so none is generated.
fn delivery_id() -> impl Strategy<Value = String> {
    prop_oneof!["[A-Za-z0-9_.:-]{1,64}", "[!-~]([ -~]{0,200}[!-~])?"]
}

fn signed() -> impl Strategy<Value = Signed> {
    signed_by(scheme())
}

fn signed_by(schemes: impl Strategy<Value = Scheme>) -> impl Strategy<Value = Signed> {
    schemes
        .prop_flat_map(|scheme| {
            (
                Just(scheme),
                secret(scheme),
                proptest::collection::vec(any::<u8>(), 0..512),
                delivery_id(),
                proptest::option::of("[ -~]{0,300}"),
                // A clock anywhere from 1970 to 9999, and a signing time
                // within the tolerance of it.
                0i64..253_402_300_799,
                -300i64..=300,
            )
        })
        .prop_map(|(scheme, secret, raw_body, id, topic, now, skew)| {
            let timestamp = (now + skew).max(0);
            let mut headers = RawHeaders(Vec::new());
            let body = match scheme {
                // Stripe's delivery id is the event's id, in the body.
                Scheme::Stripe => serde_json::to_vec(&serde_json::json!({
                    "id": id,
                    "type": topic,
                    "data": BASE64.encode(&raw_body),
                }))
                .unwrap(),
                _ => raw_body,
            };
            match scheme {
                Scheme::Shopify => {
                    headers.set("X-Shopify-Hmac-Sha256", sign::shopify(&secret, &body));
                    headers.set("X-Shopify-Event-Id", id.as_str());
                    if let Some(topic) = &topic {
                        headers.set("X-Shopify-Topic", topic.as_str());
                    }
                }
                Scheme::Github => {
                    headers.set("X-Hub-Signature-256", sign::github(&secret, &body));
                    headers.set("X-GitHub-Delivery", id.as_str());
                    if let Some(topic) = &topic {
                        headers.set("X-GitHub-Event", topic.as_str());
                    }
                }
                Scheme::Stripe => {
                    headers.set("Stripe-Signature", sign::stripe(&secret, timestamp, &body));
                }
                Scheme::Standard => {
                    let signature = sign::standard(&secret, &id, timestamp, &body).unwrap();
                    headers.set("webhook-signature", signature);
                    headers.set("webhook-id", id.as_str());
                    headers.set("webhook-timestamp", timestamp.to_string());
                }
            }
            Signed {
                scheme,
                secret,
                headers,
                body,
                id,
                now,
            }
        })
}

/// Flips one bit of the byte at `index` (modulo the length).
fn flip(bytes: &mut [u8], index: usize, bit: u8) {
    let at = index % bytes.len();
    bytes[at] ^= 1 << (bit % 8);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_deliveries_never_panic_and_never_verify(
        scheme in scheme(),
        secrets in proptest::collection::vec("[ -~]{1,32}", 1..3),
        headers in raw_headers(),
        body in body(),
        now in any::<i64>(),
    ) {
        let secrets: Vec<String> = match scheme {
            Scheme::Standard => secrets.iter().map(|s| format!("whsec_{}", BASE64.encode(s))).collect(),
            _ => secrets,
        };
        let result = verifier(scheme, &secrets, &[]).verify(&headers, &body, now);
        check_verified(&result);
        // Nobody here holds the secret: a match would be a forgery.
        prop_assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn arbitrary_standard_deliveries_with_public_keys_never_panic_and_never_verify(
        keys in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 1..3),
        headers in raw_headers(),
        body in body(),
        now in any::<i64>(),
    ) {
        let keys: Vec<String> = keys.iter().map(|k| format!("whpk_{}", BASE64.encode(k))).collect();
        let result = verifier(Scheme::Standard, &[], &keys).verify(&headers, &body, now);
        check_verified(&result);
        prop_assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn arbitrary_secrets_and_public_keys_build_a_verifier_or_a_secret_error(
        scheme in scheme(),
        secrets in proptest::collection::vec(any::<String>(), 0..3),
        public_keys in proptest::collection::vec(
            prop_oneof![any::<String>(), proptest::collection::vec(any::<u8>(), 0..40)
                .prop_map(|k| format!("whpk_{}", BASE64.encode(k)))],
            0..3,
        ),
        tolerance in any::<u64>(),
        now in any::<i64>(),
        signed_at in any::<i64>(),
    ) {
        if let Ok(verifier) = Verifier::new(scheme, &secrets, &public_keys, Duration::from_secs(tolerance)) {
            // Extreme tolerances and clocks are compared, not overflowed.
            let mut headers = RawHeaders(Vec::new());
            headers.set("webhook-timestamp", signed_at.to_string());
            headers.set("webhook-id", "id");
            headers.set("webhook-signature", "v1,AAAA");
            headers.set("Stripe-Signature", format!("t={signed_at},v1=00"));
            let result = verifier.verify(&headers, b"[]", now);
            prop_assert!(result.is_err(), "{:?}", result);
        }
    }

    #[test]
    fn a_delivery_signed_as_its_sender_signs_verifies(signed in signed()) {
        let Signed { scheme, secret, headers, body, id, now } = signed;
        let verified = verifier(scheme, &[secret], &[])
            .verify(&headers, &body, now)
            .unwrap_or_else(|rejection| panic!("{scheme:?}: {rejection}"));
        prop_assert_eq!(verified.delivery_id, id);
    }

    #[test]
    fn a_delivery_signed_with_another_secret_never_verifies(
        signed in signed(),
        other in "[ -~]{1,32}",
    ) {
        let other = match signed.scheme {
            Scheme::Standard => format!("whsec_{}", BASE64.encode(format!("{other}!"))),
            _ => format!("{other}!{}", signed.secret),
        };
        let result = verifier(signed.scheme, &[other], &[])
            .verify(&signed.headers, &signed.body, signed.now);
        prop_assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn a_delivery_with_one_body_bit_flipped_never_verifies(
        signed in signed(),
        index in any::<usize>(),
        bit in any::<u8>(),
        extra in any::<u8>(),
    ) {
        let mut body = signed.body.clone();
        if body.is_empty() {
            body.push(extra);
        } else {
            flip(&mut body, index, bit);
        }
        let result = verifier(signed.scheme, &[signed.secret], &[])
            .verify(&signed.headers, &body, signed.now);
        prop_assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn a_delivery_with_one_signature_bit_flipped_never_verifies(
        signed in signed(),
        index in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let name = signed.scheme.signature_header();
        let value = String::from_utf8(signed.headers.get(name).unwrap().to_vec()).unwrap();
        // Flip a bit of the MAC itself, then encode it as the scheme does.
        let tampered = match signed.scheme {
            Scheme::Shopify => {
                let mut mac = BASE64.decode(&value).unwrap();
                flip(&mut mac, index, bit);
                BASE64.encode(mac)
            }
            Scheme::Github => {
                let mut mac = hex::decode(value.strip_prefix("sha256=").unwrap()).unwrap();
                flip(&mut mac, index, bit);
                format!("sha256={}", hex::encode(mac))
            }
            Scheme::Stripe => {
                let (t, v1) = value.split_once(",v1=").unwrap();
                let mut mac = hex::decode(v1).unwrap();
                flip(&mut mac, index, bit);
                format!("{t},v1={}", hex::encode(mac))
            }
            Scheme::Standard => {
                let mut mac = BASE64.decode(value.strip_prefix("v1,").unwrap()).unwrap();
                flip(&mut mac, index, bit);
                format!("v1,{}", BASE64.encode(mac))
            }
        };
        let mut headers = signed.headers.clone();
        headers.set(name, tampered);
        let result = verifier(signed.scheme, &[signed.secret], &[])
            .verify(&headers, &signed.body, signed.now);
        prop_assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn a_signed_timestamp_or_id_changed_after_signing_never_verifies(
        signed in signed_by(prop_oneof![Just(Scheme::Stripe), Just(Scheme::Standard)]),
        shift in 1i64..=300,
        id_suffix in "[A-Za-z0-9]{1,8}",
        change_id in any::<bool>(),
    ) {
        let mut headers = signed.headers.clone();
        let mut body = signed.body.clone();
        match (signed.scheme, change_id) {
            (Scheme::Standard, true) => {
                headers.set("webhook-id", format!("{}{id_suffix}", signed.id.trim()));
            }
            (Scheme::Standard, false) => {
                let t: i64 = std::str::from_utf8(headers.get("webhook-timestamp").unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                headers.set("webhook-timestamp", (t + shift).to_string());
            }
            (_, true) => {
                // Stripe: the id is in the (signed) body.
                let mut event: serde_json::Value = serde_json::from_slice(&body).unwrap();
                event["id"] = format!("{}{id_suffix}", signed.id).into();
                body = serde_json::to_vec(&event).unwrap();
            }
            (_, false) => {
                let value = String::from_utf8(headers.get("Stripe-Signature").unwrap().to_vec()).unwrap();
                let (t, rest) = value.strip_prefix("t=").unwrap().split_once(',').unwrap();
                let t: i64 = t.parse().unwrap();
                headers.set("Stripe-Signature", format!("t={},{rest}", t + shift));
            }
        }
        let result = verifier(signed.scheme, &[signed.secret], &[])
            .verify(&headers, &body, signed.now);
        prop_assert_eq!(result, Err(Rejection::BadSignature));
    }

    #[test]
    fn an_ed25519_signed_standard_delivery_verifies_and_a_tampered_one_does_not(
        seed in proptest::array::uniform32(any::<u8>()),
        id in "[A-Za-z0-9_-]{1,64}",
        body in proptest::collection::vec(any::<u8>(), 0..256),
        now in 0i64..253_402_300_799,
        index in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let public = format!("whpk_{}", BASE64.encode(pair.public_key().as_ref()));
        let content = [id.as_bytes(), b".", now.to_string().as_bytes(), b".", &body].concat();
        let mut signature = pair.sign(&content).as_ref().to_vec();
        let mut headers = RawHeaders(Vec::new());
        headers.set("webhook-id", id.as_str());
        headers.set("webhook-timestamp", now.to_string());
        headers.set("webhook-signature", format!("v1a,{}", BASE64.encode(&signature)));
        let verifier = verifier(Scheme::Standard, &[], &[public]);
        prop_assert_eq!(verifier.verify(&headers, &body, now).unwrap().delivery_id, id);

        flip(&mut signature, index, bit);
        headers.set("webhook-signature", format!("v1a,{}", BASE64.encode(&signature)));
        prop_assert_eq!(verifier.verify(&headers, &body, now), Err(Rejection::BadSignature));
    }

    #[test]
    fn stored_headers_never_keep_a_signature(
        scheme in scheme(),
        headers in raw_headers(),
    ) {
        let stored = stored_headers(
            scheme,
            headers.0.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        );
        let name = scheme.signature_header().to_ascii_lowercase();
        if let Some(value) = stored.get(&name) {
            // Repeated signature headers are each redacted, then joined.
            let value = value.as_str().unwrap();
            prop_assert!(value.split(", ").all(|part| part == REDACTED), "{value}");
        }
    }
}
