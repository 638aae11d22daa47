//! A JSON body extractor whose errors are problem+json naming the field.
//!
//! actix's own `web::Json` answers with plain text and a serde message that
//! does not say where in the document the problem is. [`Json`] reads the
//! body within the app's `PayloadConfig` limit, then:
//! - too large → 413 `payload-too-large`;
//! - not UTF-8 or not JSON at all → 400 `malformed-body` (with line/column);
//! - well-formed but the wrong shape (missing field, wrong type, unknown
//!   variant) → 422 `validation` with `errors: [{field, message}]`, the field
//!   given as a path such as `items[0].quantity`.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::{FieldError, Problem};

/// `Json<T>` as an extractor: `async fn handler(body: Json<Register>)`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Problem;
    type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let body = bytes.await.map_err(|e| payload_problem(&e))?;
            parse(&body).map(Json).map_err(|boxed| *boxed)
        })
    }
}

/// Deserialises `body`, reporting failures as the extractor does (also
/// usable on bodies read some other way). Boxed: a `Problem` is large.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Problem>> {
    if std::str::from_utf8(body).is_err() {
        return Err(Box::new(malformed("The request body is not valid UTF-8.")));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        Box::new(if inner.is_data() {
            shape_problem(&path, &inner)
        } else if inner.is_eof() && body.iter().all(u8::is_ascii_whitespace) {
            malformed("The request body is empty; a JSON document is required.")
        } else {
            malformed(format!(
                "The request body is not valid JSON (line {}, column {}).",
                inner.line(),
                inner.column()
            ))
        })
    })?;
    // Trailing garbage after the document is malformed too.
    deserializer.end().map_err(|_| {
        Box::new(malformed(
            "The request body has data after the JSON document.",
        ))
    })?;
    Ok(value)
}

fn malformed(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "malformed-body",
        "Malformed request body",
    )
    .with_detail(detail)
}

/// 422 naming the field. serde reports a missing field at its parent's
/// path with the name in the message, so the name is appended here.
fn shape_problem(path: &str, error: &serde_json::Error) -> Problem {
    let message = error.to_string();
    // serde_json appends " at line X column Y"; the field path says more.
    let message = message
        .split(" at line ")
        .next()
        .unwrap_or(&message)
        .to_owned();
    let field = match missing_field_name(&message) {
        Some(name) if path == "." => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None if path == "." => "body".to_owned(),
        None => path.to_owned(),
    };
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        "Invalid request body",
    )
    .with_detail(format!("`{field}`: {message}"))
    .with_errors(vec![FieldError::new(field, message)])
}

fn missing_field_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

fn payload_problem(error: &actix_web::Error) -> Problem {
    match error.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload Too Large",
        )
        .with_detail("The request body exceeds the configured limit."),
        _ => malformed("The request body could not be read."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        email: String,
        items: Vec<Item>,
    }

    fn field(problem: &Problem) -> &str {
        &problem.errors[0].field
    }

    #[test]
    fn a_wrong_type_deep_in_the_document_names_its_path() {
        let problem =
            parse::<Order>(br#"{"email":"a@b.c","items":[{"sku":"x","quantity":"two"}]}"#)
                .unwrap_err();
        assert_eq!(problem.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(field(&problem), "items[0].quantity");
    }

    #[test]
    fn a_missing_field_is_named() {
        let problem = parse::<Order>(br#"{"items":[]}"#).unwrap_err();
        assert_eq!(field(&problem), "email");
        let problem = parse::<Order>(br#"{"email":"e","items":[{"sku":"x"}]}"#).unwrap_err();
        assert_eq!(field(&problem), "items[0].quantity");
    }

    #[test]
    fn malformed_json_empty_bodies_and_non_utf8_are_400() {
        for body in [
            &b"{\"email\":"[..],
            b"",
            b"\xff\xfe",
            br#"{"email":"e","items":[]} x"#,
        ] {
            let problem = parse::<Order>(body).unwrap_err();
            assert_eq!(problem.status, StatusCode::BAD_REQUEST, "{body:?}");
        }
    }
}
