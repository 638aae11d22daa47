//! A stored body in JSON: as text when it is UTF-8 (what webhook senders
//! and our own envelopes send), else base64 — and which of the two it is.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Body {
    pub body: String,
    /// `utf-8`: `body` is the bytes as text; `base64`: decode it.
    #[schema(value_type = BodyEncoding)]
    pub body_encoding: &'static str,
}

// The values of `body_encoding` for the API document; a test keeps them
// equal to what `render` writes.
/// How `body` holds the stored bytes.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub enum BodyEncoding {
    /// `body` is the bytes as text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// `body` is base64 (the bytes were not UTF-8).
    #[serde(rename = "base64")]
    Base64,
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

    #[test]
    fn the_documented_body_encodings_are_the_ones_written() {
        let name = |e| serde_json::to_value(e).ok();
        assert_eq!(
            name(BodyEncoding::Utf8),
            Some(render(b"a").body_encoding.into())
        );
        assert_eq!(
            name(BodyEncoding::Base64),
            Some(render(&[0xff]).body_encoding.into())
        );
    }
}
