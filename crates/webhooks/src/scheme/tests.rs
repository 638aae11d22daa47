//! Unit tests: the official vectors of GitHub's documentation and the
//! Standard Webhooks specification, and independently computed vectors for
//! Shopify, Stripe and Ed25519 (`python3` with `hmac`/`hashlib` and
//! `cryptography`; the commands are next to each constant).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const NO_KEYS: &[&str] = &[];
const TOLERANCE: Duration = Duration::from_secs(300);

fn verifier(scheme: Scheme, secrets: &[&str]) -> Verifier {
    Verifier::new(scheme, secrets, NO_KEYS, TOLERANCE).unwrap()
}

// GitHub, "Validating webhook deliveries": secret, payload and the
// X-Hub-Signature-256 value the documentation publishes.
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &[u8] = b"Hello, World!";
const GITHUB_SIGNATURE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

// Standard Webhooks (standard-webhooks/standard-webhooks, the reference
// library's `test_sign`): secret, message id, timestamp, payload, signature.
const STANDARD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const STANDARD_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
const STANDARD_TIMESTAMP: i64 = 1_649_367_553;
const STANDARD_BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
const STANDARD_SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";
// The reference library's non-matching signatures from its
// multiple-signature tests.
const STANDARD_OTHER_SIGNATURES: [&str; 3] = [
    "v1,tFtCZ5RDCPxzWQRWXWPgrCgE2frDBe9gjpbWQxnVfsQ=",
    "v1,Mm7xgUVICxZfQ3bgf0h0Dof65L/IFx+PnZvnDWPCX6Q=",
    "v1,9DfC1c3eeOrXB6w/5dIDydLNQaEyww5KalE5jLBZucE=",
];

// Ed25519 (`v1a`) over the same content, private key bytes 0..=31:
// Ed25519PrivateKey.from_private_bytes(bytes(range(32))).sign(
//   b"msg_27UH4WbU6Z5A5EzD8u03UvzRbpk.1649367553." + STANDARD_BODY)
const STANDARD_PUBLIC_KEY: &str = "whpk_A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=";
const STANDARD_ED25519_SIGNATURE: &str =
    "v1a,CnkujwXFUOk59gNZFCCzmJ2MkkC0yKa+OmyYFXFtPnxkRhEkUBAd4PGNNNjLh4huOXNuqy+Eyxud5+wHP2ezBA==";

// Shopify: base64(hmac.new(b"hush-shopify-secret", SHOPIFY_BODY, sha256).digest())
const SHOPIFY_SECRET: &str = "hush-shopify-secret";
const SHOPIFY_BODY: &[u8] =
    br#"{"id":820982911946154508,"email":"jon@example.com","topic":"orders/create"}"#;
const SHOPIFY_SIGNATURE: &str = "ikbzk8tQ47habDA0mMfGV1Oa6aoYIOanAKjmFL26c+E=";

// Stripe: hmac.new(b"whsec_test_secret_keel", b"1686089970." + STRIPE_BODY, sha256).hexdigest()
const STRIPE_SECRET: &str = "whsec_test_secret_keel";
const STRIPE_TIMESTAMP: i64 = 1_686_089_970;
const STRIPE_BODY: &[u8] =
    br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}"#;
const STRIPE_V1: &str = "4aa8c80fce85278e67ab4061473290a021f2bfb34e4c35a09039b84e5db4ac5a";

fn github_headers(signature: &str) -> [(&str, &str); 3] {
    [
        ("X-Hub-Signature-256", signature),
        ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("X-GitHub-Event", "push"),
    ]
}

fn standard_headers(signature: &str) -> [(&str, &str); 3] {
    [
        ("webhook-id", STANDARD_ID),
        ("webhook-timestamp", "1649367553"),
        ("webhook-signature", signature),
    ]
}

fn shopify_headers(signature: &str) -> [(&str, &str); 3] {
    [
        ("X-Shopify-Hmac-Sha256", signature),
        ("X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
        ("X-Shopify-Topic", "orders/create"),
    ]
}

fn stripe_header(v1: &str) -> String {
    format!("t={STRIPE_TIMESTAMP},v1={v1}")
}

#[test]
fn githubs_documented_example_verifies() {
    let verified = verifier(Scheme::Github, &[GITHUB_SECRET])
        .verify(&github_headers(GITHUB_SIGNATURE), GITHUB_BODY, 0)
        .unwrap();
    assert_eq!(verified.delivery_id, "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(verified.topic.as_deref(), Some("push"));
}

#[test]
fn githubs_example_with_one_changed_byte_is_a_bad_signature() {
    let rejection = verifier(Scheme::Github, &[GITHUB_SECRET])
        .verify(&github_headers(GITHUB_SIGNATURE), b"Hello, World?", 0)
        .unwrap_err();
    assert_eq!(rejection, Rejection::BadSignature);
}

#[test]
fn a_github_signature_without_its_prefix_is_malformed() {
    let bare = GITHUB_SIGNATURE.trim_start_matches("sha256=");
    let rejection = verifier(Scheme::Github, &[GITHUB_SECRET])
        .verify(&github_headers(bare), GITHUB_BODY, 0)
        .unwrap_err();
    assert_eq!(rejection.reason(), "malformed_header");
    assert!(rejection.is_authentication_failure());
}

#[test]
fn a_github_delivery_without_its_delivery_header_is_refused_after_the_signature() {
    let headers = [("X-Hub-Signature-256", GITHUB_SIGNATURE)];
    let rejection = verifier(Scheme::Github, &[GITHUB_SECRET])
        .verify(&headers, GITHUB_BODY, 0)
        .unwrap_err();
    assert_eq!(rejection, Rejection::MissingDeliveryId("X-GitHub-Delivery"));
    assert!(!rejection.is_authentication_failure());
}

#[test]
fn the_standard_webhooks_reference_vector_verifies() {
    let verified = verifier(Scheme::Standard, &[STANDARD_SECRET])
        .verify(
            &standard_headers(STANDARD_SIGNATURE),
            STANDARD_BODY,
            STANDARD_TIMESTAMP,
        )
        .unwrap();
    assert_eq!(verified.delivery_id, STANDARD_ID);
    // The body has no `type`.
    assert_eq!(verified.topic, None);
}

#[test]
fn the_standard_reference_signature_verifies_among_several_in_one_header() {
    let [a, b, c] = STANDARD_OTHER_SIGNATURES;
    let header = format!("{a} {b} {STANDARD_SIGNATURE} {c}");
    verifier(Scheme::Standard, &[STANDARD_SECRET])
        .verify(
            &standard_headers(&header),
            STANDARD_BODY,
            STANDARD_TIMESTAMP,
        )
        .unwrap();
}

#[test]
fn the_standard_reference_header_without_the_matching_signature_is_refused() {
    let header = STANDARD_OTHER_SIGNATURES.join(" ");
    let rejection = verifier(Scheme::Standard, &[STANDARD_SECRET])
        .verify(
            &standard_headers(&header),
            STANDARD_BODY,
            STANDARD_TIMESTAMP,
        )
        .unwrap_err();
    assert_eq!(rejection, Rejection::BadSignature);
}

#[test]
fn standard_timestamps_outside_the_tolerance_are_stale_or_future() {
    let verifier = verifier(Scheme::Standard, &[STANDARD_SECRET]);
    let headers = standard_headers(STANDARD_SIGNATURE);
    let at = |now| verifier.verify(&headers, STANDARD_BODY, now);
    assert!(at(STANDARD_TIMESTAMP + 300).is_ok());
    assert!(at(STANDARD_TIMESTAMP - 300).is_ok());
    assert_eq!(at(STANDARD_TIMESTAMP + 301), Err(Rejection::StaleTimestamp));
    assert_eq!(
        at(STANDARD_TIMESTAMP - 301),
        Err(Rejection::FutureTimestamp)
    );
}

#[test]
fn a_standard_delivery_missing_any_of_its_headers_says_which() {
    let verifier = verifier(Scheme::Standard, &[STANDARD_SECRET]);
    let all = standard_headers(STANDARD_SIGNATURE);
    for (removed, expected) in [
        (
            "webhook-signature",
            Rejection::MissingHeader("webhook-signature"),
        ),
        (
            "webhook-timestamp",
            Rejection::MissingHeader("webhook-timestamp"),
        ),
        ("webhook-id", Rejection::MissingDeliveryId("webhook-id")),
    ] {
        let headers: Vec<(&str, &str)> =
            all.iter().copied().filter(|(n, _)| *n != removed).collect();
        let rejection = verifier
            .verify(headers.as_slice(), STANDARD_BODY, STANDARD_TIMESTAMP)
            .unwrap_err();
        assert_eq!(rejection, expected, "without {removed}");
    }
}

#[test]
fn the_standard_secret_is_base64_decoded_and_the_stripe_secret_used_as_given() {
    let standard = verifier(Scheme::Standard, &[STANDARD_SECRET]);
    assert_eq!(
        standard.keys,
        vec![BASE64.decode("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap()]
    );
    let stripe = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    assert_eq!(stripe.keys, vec![STRIPE_SECRET.as_bytes().to_vec()]);
}

#[test]
fn an_ed25519_v1a_signature_verifies_with_the_configured_public_key() {
    let verifier =
        Verifier::new(Scheme::Standard, NO_KEYS, &[STANDARD_PUBLIC_KEY], TOLERANCE).unwrap();
    verifier
        .verify(
            &standard_headers(STANDARD_ED25519_SIGNATURE),
            STANDARD_BODY,
            STANDARD_TIMESTAMP,
        )
        .unwrap();
    let rejection = verifier
        .verify(
            &standard_headers(STANDARD_ED25519_SIGNATURE),
            br#"{"email":"other@example.com","username":"test_user"}"#,
            STANDARD_TIMESTAMP,
        )
        .unwrap_err();
    assert_eq!(rejection, Rejection::BadSignature);
}

#[test]
fn a_v1a_signature_is_ignored_without_a_public_key() {
    let rejection = verifier(Scheme::Standard, &[STANDARD_SECRET])
        .verify(
            &standard_headers(STANDARD_ED25519_SIGNATURE),
            STANDARD_BODY,
            STANDARD_TIMESTAMP,
        )
        .unwrap_err();
    assert_eq!(rejection, Rejection::BadSignature);
}

#[test]
fn shopify_verifies_the_base64_hmac_of_the_raw_body() {
    let verified = verifier(Scheme::Shopify, &[SHOPIFY_SECRET])
        .verify(&shopify_headers(SHOPIFY_SIGNATURE), SHOPIFY_BODY, 0)
        .unwrap();
    assert_eq!(verified.delivery_id, "98880550-7158-44d4-b7cd-2c97c8a091b5");
    assert_eq!(verified.topic.as_deref(), Some("orders/create"));
}

#[test]
fn a_reserialised_shopify_body_does_not_verify() {
    let reserialised = serde_json::to_vec_pretty(
        &serde_json::from_slice::<serde_json::Value>(SHOPIFY_BODY).unwrap(),
    )
    .unwrap();
    let rejection = verifier(Scheme::Shopify, &[SHOPIFY_SECRET])
        .verify(&shopify_headers(SHOPIFY_SIGNATURE), &reserialised, 0)
        .unwrap_err();
    assert_eq!(rejection, Rejection::BadSignature);
}

#[test]
fn shopify_falls_back_to_the_webhook_id_without_an_event_id() {
    let headers = [
        ("X-Shopify-Hmac-Sha256", SHOPIFY_SIGNATURE),
        (
            "X-Shopify-Webhook-Id",
            "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
        ),
    ];
    let verified = verifier(Scheme::Shopify, &[SHOPIFY_SECRET])
        .verify(&headers, SHOPIFY_BODY, 0)
        .unwrap();
    assert_eq!(verified.delivery_id, "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043");
    assert_eq!(verified.topic, None);
}

#[test]
fn any_active_secret_verifies_and_a_removed_one_does_not() {
    let rotating = verifier(Scheme::Shopify, &["the-new-secret", SHOPIFY_SECRET]);
    assert!(
        rotating
            .verify(&shopify_headers(SHOPIFY_SIGNATURE), SHOPIFY_BODY, 0)
            .is_ok()
    );
    let rotated = verifier(Scheme::Shopify, &["the-new-secret"]);
    assert_eq!(
        rotated.verify(&shopify_headers(SHOPIFY_SIGNATURE), SHOPIFY_BODY, 0),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn stripe_keys_with_the_whsec_string_as_given_and_reads_the_event_id_from_the_body() {
    let header = stripe_header(STRIPE_V1);
    let headers = [("Stripe-Signature", header.as_str())];
    let verified = verifier(Scheme::Stripe, &[STRIPE_SECRET])
        .verify(&headers, STRIPE_BODY, STRIPE_TIMESTAMP + 10)
        .unwrap();
    assert_eq!(verified.delivery_id, "evt_1NG8Du2eZvKYlo2CUI79vXWy");
    assert_eq!(verified.topic.as_deref(), Some("payment_intent.succeeded"));
}

#[test]
fn stripe_accepts_any_of_several_v1_signatures_and_ignores_v0() {
    let header = format!(
        "t={STRIPE_TIMESTAMP},v1={},v0=deadbeef,v1={STRIPE_V1}",
        "00".repeat(32)
    );
    let headers = [("Stripe-Signature", header.as_str())];
    verifier(Scheme::Stripe, &[STRIPE_SECRET])
        .verify(&headers, STRIPE_BODY, STRIPE_TIMESTAMP)
        .unwrap();
}

#[test]
fn stripe_timestamps_outside_the_tolerance_are_refused_only_once_signed() {
    let header = stripe_header(STRIPE_V1);
    let headers = [("Stripe-Signature", header.as_str())];
    let verifier = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    assert_eq!(
        verifier.verify(&headers, STRIPE_BODY, STRIPE_TIMESTAMP + 301),
        Err(Rejection::StaleTimestamp)
    );
    assert_eq!(
        verifier.verify(&headers, STRIPE_BODY, STRIPE_TIMESTAMP - 301),
        Err(Rejection::FutureTimestamp)
    );
    // A forged signature on an old timestamp learns nothing about the time.
    let forged = stripe_header(&"00".repeat(32));
    assert_eq!(
        verifier.verify(&[("Stripe-Signature", forged.as_str())], STRIPE_BODY, 0),
        Err(Rejection::BadSignature)
    );
}

#[test]
fn a_stripe_header_without_timestamp_or_signature_is_malformed() {
    let verifier = verifier(Scheme::Stripe, &[STRIPE_SECRET]);
    for header in [
        format!("v1={STRIPE_V1}"),
        format!("t={STRIPE_TIMESTAMP}"),
        "garbage".into(),
    ] {
        let rejection = verifier
            .verify(
                &[("Stripe-Signature", header.as_str())],
                STRIPE_BODY,
                STRIPE_TIMESTAMP,
            )
            .unwrap_err();
        assert_eq!(rejection.reason(), "malformed_header", "{header}");
    }
    assert_eq!(
        verifier.verify(&[("Other", "x")], STRIPE_BODY, STRIPE_TIMESTAMP),
        Err(Rejection::MissingHeader("Stripe-Signature"))
    );
}

#[test]
fn secrets_that_cannot_be_used_are_refused_when_the_verifier_is_built() {
    let build = |scheme, secrets: &[&str], keys: &[&str]| {
        Verifier::new(scheme, secrets, keys, TOLERANCE).map(|_| ())
    };
    assert_eq!(build(Scheme::Github, &[], &[]), Err(SecretError::NoSecrets));
    assert_eq!(
        build(Scheme::Github, &["a", ""], &[]),
        Err(SecretError::Empty(1))
    );
    assert_eq!(
        build(Scheme::Standard, &["whsec_not base64!"], &[]),
        Err(SecretError::NotBase64(0))
    );
    assert_eq!(
        build(Scheme::Standard, &[STANDARD_SECRET], &["whpk_AAAA"]),
        Err(SecretError::PublicKey(0))
    );
    assert_eq!(
        build(Scheme::Shopify, &["a"], &[STANDARD_PUBLIC_KEY]),
        Err(SecretError::PublicKeyOutsideStandard)
    );
}

#[test]
fn a_delivery_id_longer_than_the_column_allows_is_refused() {
    let long = "x".repeat(MAX_DELIVERY_ID_LEN + 1);
    let headers = [
        ("X-Hub-Signature-256", GITHUB_SIGNATURE),
        ("X-GitHub-Delivery", long.as_str()),
    ];
    let rejection = verifier(Scheme::Github, &[GITHUB_SECRET])
        .verify(&headers, GITHUB_BODY, 0)
        .unwrap_err();
    assert_eq!(rejection.reason(), "invalid_delivery_id");
}
