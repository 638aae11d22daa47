//! The verifier the gateway uses, against forged and stale tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use keel_token::{Claims, KeyAlgorithm, Role, Signer, SigningKey, Verifier, VerifyError};
use uuid::Uuid;

const ISS: &str = "keel-auth";
const AUD: &str = "keel";
const LEEWAY: Duration = Duration::from_secs(5);

fn key(algorithm: KeyAlgorithm) -> SigningKey {
    let pem = SigningKey::generate_pem(algorithm).unwrap();
    SigningKey::from_pem(algorithm, pem.as_bytes(), None).unwrap()
}

fn claims() -> Claims {
    Claims::new(
        Uuid::new_v4(),
        vec![Role::Customer],
        Uuid::new_v4(),
        ISS,
        AUD,
        Duration::from_secs(900),
    )
}

fn verifier(signer: &Signer) -> Verifier {
    signer.verifier(ISS, AUD, LEEWAY)
}

fn b64(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

#[test]
fn a_token_signed_with_rs256_verifies_and_keeps_its_claims() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let claims = claims();
    let token = signer.sign(&claims).unwrap();
    assert_eq!(verifier(&signer).verify(&token).unwrap(), claims);
}

#[test]
fn a_token_signed_with_eddsa_verifies() {
    let signer = Signer::new(key(KeyAlgorithm::EdDsa), vec![]).unwrap();
    let claims = claims();
    let token = signer.sign(&claims).unwrap();
    assert_eq!(verifier(&signer).verify(&token).unwrap(), claims);
}

#[test]
fn the_jwks_travels_as_json_and_still_verifies() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![key(KeyAlgorithm::EdDsa)]).unwrap();
    let json = serde_json::to_string(&signer.jwks()).unwrap();
    assert!(!json.contains("\"d\""), "no private parameters: {json}");
    let set: keel_token::JwkSet = serde_json::from_str(&json).unwrap();
    let verifier = Verifier::new(&set, ISS, AUD, LEEWAY);
    assert_eq!(verifier.kids().count(), 2);
    verifier.verify(&signer.sign(&claims()).unwrap()).unwrap();
}

#[test]
fn a_token_with_alg_none_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let header = serde_json::json!({"alg": "none", "typ": "JWT", "kid": signer.active_kid()});
    let payload = serde_json::to_value(claims()).unwrap();
    for token in [
        format!("{}.{}.", b64(&header), b64(&payload)),
        format!("{}.{}", b64(&header), b64(&payload)),
    ] {
        assert!(verifier(&signer).verify(&token).is_err());
    }
}

#[test]
fn a_token_hs256_signed_with_the_public_key_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    // The classic key-confusion attack: use the published key as an HMAC secret.
    let public = serde_json::to_vec(&signer.jwks().keys[0]).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(signer.active_kid().to_owned());
    let token = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::WrongAlgorithm)
    );
}

#[test]
fn a_token_for_another_audience_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let mut claims = claims();
    claims.aud = "someone-else".into();
    let token = signer.sign(&claims).unwrap();
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::WrongAudience)
    );
}

#[test]
fn a_token_from_another_issuer_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let mut claims = claims();
    claims.iss = "evil".into();
    let token = signer.sign(&claims).unwrap();
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::WrongIssuer)
    );
}

#[test]
fn a_token_naming_an_unknown_kid_gets_its_own_error() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let stranger = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let token = stranger.sign(&claims()).unwrap();
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::UnknownKey(stranger.active_kid().to_owned()))
    );
}

#[test]
fn an_expired_token_is_rejected_beyond_the_leeway() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let mut claims = claims();
    claims.iat -= 3600;
    claims.nbf -= 3600;
    claims.exp = keel_token::claims::now() - 60;
    let token = signer.sign(&claims).unwrap();
    assert_eq!(verifier(&signer).verify(&token), Err(VerifyError::Expired));
}

#[test]
fn a_token_not_valid_yet_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let mut claims = claims();
    claims.nbf += 600;
    let token = signer.sign(&claims).unwrap();
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::NotYetValid)
    );
}

#[test]
fn a_tampered_payload_is_rejected() {
    let signer = Signer::new(key(KeyAlgorithm::Rs256), vec![]).unwrap();
    let token = signer.sign(&claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let mut forged = claims();
    forged.roles = vec![Role::Admin];
    let token = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_value(forged).unwrap()),
        parts[2]
    );
    assert_eq!(
        verifier(&signer).verify(&token),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn a_token_of_the_previous_key_verifies_while_its_key_is_published_and_not_after() {
    let old = key(KeyAlgorithm::Rs256);
    let new = key(KeyAlgorithm::Rs256);
    let before = Signer::new(old.clone(), vec![]).unwrap();
    let token = before.sign(&claims()).unwrap();

    let rotated = Signer::new(new.clone(), vec![old]).unwrap();
    verifier(&rotated).verify(&token).unwrap();
    verifier(&rotated)
        .verify(&rotated.sign(&claims()).unwrap())
        .unwrap();

    let retired = Signer::new(new, vec![]).unwrap();
    assert_eq!(
        verifier(&retired).verify(&token),
        Err(VerifyError::UnknownKey(before.active_kid().to_owned()))
    );
}

#[test]
fn two_keys_with_the_same_kid_are_refused() {
    let pem = SigningKey::generate_pem(KeyAlgorithm::EdDsa).unwrap();
    let a = SigningKey::from_pem(KeyAlgorithm::EdDsa, pem.as_bytes(), None).unwrap();
    assert!(Signer::new(a.clone(), vec![a]).is_err());
}
