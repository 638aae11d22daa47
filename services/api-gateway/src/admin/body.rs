//! A stored body in JSON: as text when it is UTF-8 (what webhook senders
//! and our own envelopes send), else base64 — and which of the two it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Body {
    pub body: String,
    /// `utf-8`: `body` is the bytes as text; `base64`: decode it.
    pub body_encoding: &'static str,
}

pub fn render(bytes: &[u8]) -> Body {
    match std::str::from_utf8(bytes) {
        Ok(text) => Body {
            body: text.to_owned(),
            body_encoding: "utf-8",
        },
        Err(_) => Body {
            body: STANDARD.encode(bytes),
            body_encoding: "base64",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_text_and_other_bytes_become_base64() {
        assert_eq!(render(br#"{"a":1}"#).body, r#"{"a":1}"#);
        assert_eq!(render(br#"{"a":1}"#).body_encoding, "utf-8");
        let binary = render(&[0xff, 0x00, 0x61]);
        assert_eq!(binary.body_encoding, "base64");
        assert_eq!(binary.body, "/wBh");
    }
}
