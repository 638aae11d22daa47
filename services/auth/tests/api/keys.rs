use std::time::Duration;

use keel_token::{JwkSet, KeyAlgorithm, SigningKey, Verifier, VerifyError};
use secrecy::SecretString;

use crate::helpers::spawn_on;

async fn jwks(app: &crate::helpers::TestApp) -> (JwkSet, String) {
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.json().await.unwrap(), cache)
}

fn verifier(set: &JwkSet) -> Verifier {
    Verifier::new(set, "keel-auth", "keel", Duration::from_secs(5))
}

#[tokio::test]
async fn a_token_of_the_previous_key_verifies_through_the_jwks_until_that_key_is_removed() {
    let old = SigningKey::generate_pem(KeyAlgorithm::Rs256).unwrap();
    let new = SigningKey::generate_pem(KeyAlgorithm::Rs256).unwrap();
    let db =
        keel_testkit::database::TestDatabase::create(auth::SCHEMA, &auth::startup::migrations())
            .await;

    let app = spawn_on(db, None, |s| {
        s.tokens.signing_key = Some(SecretString::from(old.clone()))
    })
    .await;
    let tokens = app.signed_in("rotate@example.com").await;
    let (set, cache) = jwks(&app).await;
    assert!(cache.contains("max-age="), "{cache}");
    verifier(&set).verify(&tokens.access).unwrap();
    let db = app.stop().await;

    // Rotated: the new key signs, the old one is still published.
    let app = spawn_on(db, None, |s| {
        s.tokens.signing_key = Some(SecretString::from(new.clone()));
        s.tokens.retired_key = Some(SecretString::from(old.clone()));
    })
    .await;
    let (set, _) = jwks(&app).await;
    assert_eq!(set.keys.len(), 2);
    verifier(&set).verify(&tokens.access).unwrap();
    let db = app.stop().await;

    // The old key removed: its tokens no longer verify.
    let app = spawn_on(db, None, |s| {
        s.tokens.signing_key = Some(SecretString::from(new.clone()))
    })
    .await;
    let (set, _) = jwks(&app).await;
    assert!(matches!(
        verifier(&set).verify(&tokens.access),
        Err(VerifyError::UnknownKey(_))
    ));
    assert_eq!(
        app.get_as("/api/v1/auth/me", &tokens.access).await.status(),
        reqwest::StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn eddsa_can_be_selected() {
    let db =
        keel_testkit::database::TestDatabase::create(auth::SCHEMA, &auth::startup::migrations())
            .await;
    let app = spawn_on(db, None, |s| s.tokens.algorithm = "EdDSA".into()).await;
    let tokens = app.signed_in("ed@example.com").await;
    let (set, _) = jwks(&app).await;
    let claims = verifier(&set).verify(&tokens.access).unwrap();
    assert_eq!(claims.roles, vec![keel_token::Role::Customer]);
    let header = jsonwebtoken::decode_header(&tokens.access).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
}
