//! Header access for the verifier, and the headers stored with an event.
//!
//! Layering: this module knows no scheme. [`crate::scheme`] sits above it:
//! each scheme's file declares its [`HeaderRules`] (its senders' header
//! prefixes and its secret headers), and [`stored_headers`] applies them.

use serde_json::{Map, Value};

/// Read access to a request's headers, by case-insensitive name. The
/// gateway implements it over actix's header map; tests over a slice.
pub trait Headers {
    /// The first value of `name`, as raw bytes (header values need not be
    /// UTF-8; the verifier decides what a malformed one means).
    fn get(&self, name: &str) -> Option<&[u8]>;
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        Headers::get(self.as_slice(), name)
    }
}

/// Which headers a scheme's senders add, and which of them are secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRules {
    /// Lower-case prefixes of the headers the senders add (kept).
    pub sender_prefixes: &'static [&'static str],
    /// The headers carrying a signature (kept, value redacted), any case.
    pub secret: &'static [&'static str],
}

impl HeaderRules {
    /// `name` (lower case) is one of the headers the senders add.
    pub fn is_sender_header(&self, name: &str) -> bool {
        self.sender_prefixes.iter().any(|p| name.starts_with(p))
    }

    /// `name` (any case) carries a signature.
    pub fn is_secret(&self, name: &str) -> bool {
        self.secret.iter().any(|s| name.eq_ignore_ascii_case(s))
    }
}

/// What replaces a signature header's value in storage.
pub const REDACTED: &str = "[redacted]";

/// The headers worth keeping with an event, as a JSON object (lower-case
/// name → value; repeated headers joined with ", "): the content type,
/// the user agent, and everything the scheme's sender adds (`X-Shopify-*`,
/// `X-GitHub-*`, `Stripe-*`, `webhook-*`: `rules`, or a
/// [`crate::Scheme`], which converts). Signature headers are replaced by
/// [`REDACTED`]: they prove this body's authenticity to anyone holding them,
/// and admins read these rows. Others (cookies, `Authorization`, proxies'
/// additions) are not kept at all.
pub fn stored_headers<'a>(
    rules: impl Into<HeaderRules>,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Value {
    let rules = rules.into();
    let mut kept = Map::new();
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        if !(name == "content-type" || name == "user-agent" || rules.is_sender_header(&name)) {
            continue;
        }
        let value = if rules.is_secret(&name) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value).into_owned()
        };
        match kept.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                kept.insert(name, Value::String(value));
            }
        }
    }
    Value::Object(kept)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::scheme::Scheme;

    #[test]
    fn signature_headers_are_redacted_and_unrelated_ones_dropped() {
        let headers: [(&str, &[u8]); 5] = [
            ("X-Shopify-Hmac-Sha256", b"c2lnbmF0dXJl"),
            ("X-Shopify-Topic", b"orders/create"),
            ("Content-Type", b"application/json"),
            ("Authorization", b"Bearer secret"),
            ("Cookie", b"session=1"),
        ];
        let stored = stored_headers(Scheme::Shopify, headers);
        assert_eq!(
            stored,
            serde_json::json!({
                "x-shopify-hmac-sha256": REDACTED,
                "x-shopify-topic": "orders/create",
                "content-type": "application/json",
            })
        );
    }

    #[test]
    fn every_scheme_redacts_its_own_signature_header() {
        for (scheme, name) in [
            (Scheme::Github, "x-hub-signature-256"),
            (Scheme::Github, "x-hub-signature"),
            (Scheme::Stripe, "stripe-signature"),
            (Scheme::Standard, "webhook-signature"),
        ] {
            let stored = stored_headers(scheme, [(name, b"secret-proof".as_slice())]);
            assert_eq!(stored[name], REDACTED, "{scheme:?} {name}");
        }
    }
}
