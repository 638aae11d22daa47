//! Property-based tests of access-token verification: arbitrary strings and
//! near-valid tokens (one segment replaced, a character changed, a header
//! rewritten, a payload re-signed with arbitrary claims) are refused with a
//! [`VerifyError`], never a panic; genuine tokens verify with their claims.
//!
//! The case count is 256 per property unless `PROPTEST_CASES` says
//! otherwise. Keys are generated once per test binary (RSA generation is the
//! slow part) and shared by every case.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{EncodingKey, Header};
use keel_token::{Claims, KeyAlgorithm, Role, Signer, SigningKey, Verifier, VerifyError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use uuid::Uuid;

const ISS: &str = "keel-auth";
const AUD: &str = "keel";
const LEEWAY: Duration = Duration::from_secs(5);

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

/// One key of each algorithm, with the PEM so a test can sign arbitrary
/// payloads with the very key the verifier trusts.
struct Keys {
    rsa_pem: String,
    ed_pem: String,
    signer: Signer,
    verifier: Verifier,
    rsa_kid: String,
    ed_kid: String,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let rsa_pem = SigningKey::generate_pem(KeyAlgorithm::Rs256).unwrap();
    let ed_pem = SigningKey::generate_pem(KeyAlgorithm::EdDsa).unwrap();
    let rsa = SigningKey::from_pem(KeyAlgorithm::Rs256, rsa_pem.as_bytes(), None).unwrap();
    let ed = SigningKey::from_pem(KeyAlgorithm::EdDsa, ed_pem.as_bytes(), None).unwrap();
    let (rsa_kid, ed_kid) = (rsa.kid().to_owned(), ed.kid().to_owned());
    let signer = Signer::new(rsa, vec![ed]).unwrap();
    let verifier = signer.verifier(ISS, AUD, LEEWAY);
    Keys {
        rsa_pem,
        ed_pem,
        signer,
        verifier,
        rsa_kid,
        ed_kid,
    }
});

fn claims() -> impl Strategy<Value = Claims> {
    (
        any::<u128>(),
        proptest::sample::subsequence(vec![Role::Customer, Role::Admin], 0..=2),
        any::<u128>(),
        60u64..86_400 * 365,
    )
        .prop_map(|(sub, roles, sid, ttl)| {
            Claims::new(
                Uuid::from_u128(sub),
                roles,
                Uuid::from_u128(sid),
                ISS,
                AUD,
                Duration::from_secs(ttl),
            )
        })
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Arbitrary JSON, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                "[a-z]{1,4}|exp|nbf|iat|iss|aud|sub|kid|alg",
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A claims object with each registered claim either right, absent or
/// replaced by arbitrary JSON (wrong types, huge or negative numbers).
fn near_valid_payload() -> impl Strategy<Value = serde_json::Value> {
    let slot = |good: serde_json::Value| {
        prop_oneof![
            // Mostly right, so whole claim sets pass and each check is reached.
            12 => Just(Some(good)),
            1 => Just(None),
            1 => json().prop_map(Some),
            1 => any::<i64>().prop_map(|n| Some(n.into())),
            1 => any::<u64>().prop_map(|n| Some(n.into())),
        ]
    };
    let now = keel_token::claims::now();
    (
        slot(Uuid::new_v4().to_string().into()),
        slot(serde_json::json!(["customer"])),
        slot(Uuid::new_v4().to_string().into()),
        slot(ISS.into()),
        slot(AUD.into()),
        slot(now.into()),
        slot((now + 900).into()),
        slot(now.into()),
        slot(Uuid::new_v4().to_string().into()),
    )
        .prop_map(|(sub, roles, sid, iss, aud, iat, exp, nbf, jti)| {
            let mut object = serde_json::Map::new();
            for (name, value) in [
                ("sub", sub),
                ("roles", roles),
                ("sid", sid),
                ("iss", iss),
                ("aud", aud),
                ("iat", iat),
                ("exp", exp),
                ("nbf", nbf),
                ("jti", jti),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            serde_json::Value::Object(object)
        })
}

/// Replaces one of the token's segments, changes one character, cuts it or
/// adds to it.
#[derive(Debug, Clone)]
enum Mutation {
    ReplaceSegment {
        index: usize,
        with: String,
    },
    ReplaceSegmentWithJson {
        index: usize,
        with: serde_json::Value,
    },
    ChangeChar {
        index: usize,
        to: char,
    },
    Truncate {
        at: usize,
    },
    Append(String),
    DropSegment {
        index: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..3, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(index, bytes)| {
            Mutation::ReplaceSegment {
                index,
                with: b64(&bytes),
            }
        }),
        (0usize..3, any::<String>())
            .prop_map(|(index, with)| Mutation::ReplaceSegment { index, with }),
        (0usize..2, json())
            .prop_map(|(index, with)| Mutation::ReplaceSegmentWithJson { index, with }),
        (
            any::<usize>(),
            prop_oneof![proptest::char::range('-', 'z'), any::<char>()]
        )
            .prop_map(|(index, to)| Mutation::ChangeChar { index, to }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        "[.A-Za-z0-9_=-]{1,16}".prop_map(Mutation::Append),
        (0usize..3).prop_map(|index| Mutation::DropSegment { index }),
    ]
}

fn apply(token: &str, mutation: &Mutation) -> String {
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    match mutation {
        Mutation::ReplaceSegment { index, with } => segments[*index] = with.clone(),
        Mutation::ReplaceSegmentWithJson { index, with } => {
            segments[*index] = b64(&serde_json::to_vec(with).unwrap());
        }
        Mutation::ChangeChar { index, to } => {
            let mut chars: Vec<char> = token.chars().collect();
            let at = index % chars.len();
            chars[at] = *to;
            return chars.into_iter().collect();
        }
        Mutation::Truncate { at } => {
            return token[..at % token.len()].to_owned();
        }
        Mutation::Append(tail) => return format!("{token}{tail}"),
        Mutation::DropSegment { index } => {
            segments.remove(*index);
        }
    }
    segments.join(".")
}

/// A header naming one of our kids, with any algorithm a forger might try.
fn forged_header() -> impl Strategy<Value = serde_json::Value> {
    (
        prop_oneof![
            Just("none"),
            Just("None"),
            Just("HS256"),
            Just("RS256"),
            Just("EdDSA"),
            Just("ES256"),
            Just("PS256"),
            Just(""),
        ],
        prop_oneof![
            Just(KEYS.rsa_kid.clone()),
            Just(KEYS.ed_kid.clone()),
            any::<String>()
        ],
        any::<bool>(),
    )
        .prop_map(|(alg, kid, typ)| {
            let mut header = serde_json::json!({"alg": alg, "kid": kid});
            if typ {
                header["typ"] = "JWT".into();
            }
            header
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_strings_are_refused_with_a_verify_error(token in any::<String>()) {
        prop_assert!(KEYS.verifier.verify(&token).is_err());
    }

    #[test]
    fn arbitrary_dotted_base64_is_refused_with_a_verify_error(
        segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..5),
    ) {
        let token = segments.iter().map(|s| b64(s)).collect::<Vec<_>>().join(".");
        prop_assert!(KEYS.verifier.verify(&token).is_err());
    }

    #[test]
    fn a_signed_token_verifies_with_its_claims(claims in claims(), eddsa in any::<bool>()) {
        let token = if eddsa {
            let key = SigningKey::from_pem(KeyAlgorithm::EdDsa, KEYS.ed_pem.as_bytes(), None).unwrap();
            Signer::new(key, vec![]).unwrap().sign(&claims).unwrap()
        } else {
            KEYS.signer.sign(&claims).unwrap()
        };
        prop_assert_eq!(KEYS.verifier.verify(&token), Ok(claims));
    }

    #[test]
    fn a_signed_token_with_any_mutation_is_refused(claims in claims(), mutation in mutation()) {
        let token = KEYS.signer.sign(&claims).unwrap();
        let mutated = apply(&token, &mutation);
        prop_assume!(mutated != token);
        let result = KEYS.verifier.verify(&mutated);
        prop_assert!(result.is_err(), "{:?} verified as {:?}", mutation, result);
    }

    #[test]
    fn a_forged_header_over_genuine_claims_is_refused(
        claims in claims(),
        header in forged_header(),
        signature in proptest::collection::vec(any::<u8>(), 0..300),
        keep_signature in any::<bool>(),
    ) {
        let token = KEYS.signer.sign(&claims).unwrap();
        let mut segments: Vec<&str> = token.split('.').collect();
        let header = b64(&serde_json::to_vec(&header).unwrap());
        segments[0] = &header;
        let signature = b64(&signature);
        if !keep_signature {
            segments[2] = &signature;
        }
        let forged = segments.join(".");
        prop_assume!(forged != token);
        prop_assert!(KEYS.verifier.verify(&forged).is_err());
    }

    #[test]
    fn arbitrary_claims_signed_with_a_trusted_key_are_refused_or_complete(
        payload in prop_oneof![near_valid_payload(), json()],
        eddsa in any::<bool>(),
    ) {
        // Signed by a key the verifier trusts: only the claims' own checks
        // stand between this payload and a session, and they must not panic.
        let (algorithm, pem, kid) = if eddsa {
            (jsonwebtoken::Algorithm::EdDSA, &KEYS.ed_pem, &KEYS.ed_kid)
        } else {
            (jsonwebtoken::Algorithm::RS256, &KEYS.rsa_pem, &KEYS.rsa_kid)
        };
        let key = if eddsa {
            EncodingKey::from_ed_pem(pem.as_bytes()).unwrap()
        } else {
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap()
        };
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &payload, &key).unwrap();
        match KEYS.verifier.verify(&token) {
            // Accepted only if it is a complete, current claims set for us.
            Ok(claims) => {
                prop_assert_eq!(claims.iss.as_str(), ISS);
                prop_assert_eq!(claims.aud.as_str(), AUD);
                let now = keel_token::claims::now();
                prop_assert!(claims.exp + LEEWAY.as_secs() >= now);
                prop_assert!(claims.nbf <= now + LEEWAY.as_secs());
            }
            Err(error) => {
                prop_assert!(!matches!(
                    error,
                    VerifyError::UnknownKey(_) | VerifyError::MissingKid | VerifyError::BadSignature
                ), "{error}");
            }
        }
    }

    #[test]
    fn arbitrary_pem_text_is_refused_with_a_key_error(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        label in prop_oneof![
            Just("PRIVATE KEY".to_owned()),
            Just("RSA PRIVATE KEY".to_owned()),
            Just("PUBLIC KEY".to_owned()),
            "[A-Z ]{0,12}",
        ],
        raw in any::<bool>(),
        eddsa in any::<bool>(),
    ) {
        let pem = if raw {
            body.clone()
        } else {
            // Wrapped as PEM, so the parser gets past the armour to the DER.
            let base64 = base64::engine::general_purpose::STANDARD.encode(&body);
            format!("-----BEGIN {label}-----\n{base64}\n-----END {label}-----\n").into_bytes()
        };
        let algorithm = if eddsa { KeyAlgorithm::EdDsa } else { KeyAlgorithm::Rs256 };
        // Random bytes are no private key; the answer is an Err, not a panic.
        prop_assert!(SigningKey::from_pem(algorithm, &pem, None).is_err());
    }

    #[test]
    fn key_algorithm_names_parse_or_are_refused(text in any::<String>()) {
        let parsed = KeyAlgorithm::parse(&text);
        prop_assert_eq!(parsed.is_ok(), ["RS256", "rs256", "EdDSA", "eddsa", "EDDSA"].contains(&text.as_str()));
    }
}
