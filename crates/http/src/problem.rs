//! `application/problem+json` (RFC 9457) error bodies.
//!
//! Services map their own error enums onto [`Problem`]; the body never
//! carries a stack trace, SQL text or secret, only what the client can act on.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;

use crate::request_id::RequestId;

pub const CONTENT_TYPE: &str = "application/problem+json";

/// One offending input field, e.g. `{"field": "items[0].quantity", "message": "must be at least 1"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// A stable URI-ish identifier per error kind, e.g. `urn:keel:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    #[serde(serialize_with = "serialize_status")]
    pub status: StatusCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

fn serialize_status<S: serde::Serializer>(status: &StatusCode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u16(status.as_u16())
}

impl Problem {
    /// `slug` becomes `urn:keel:problem:<slug>`.
    pub fn new(status: StatusCode, slug: &str, title: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:keel:problem:{slug}"),
            title: title.into(),
            status,
            detail: None,
            request_id: RequestId::current().map(|id| id.to_string()),
            errors: Vec::new(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not Found")
            .with_detail("No resource exists at this path.")
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method Not Allowed",
        )
    }

    /// A request body over the configured limit.
    pub fn payload_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload Too Large",
        )
        .with_detail("The request body is larger than this server accepts.")
    }

    /// An unexpected failure: the cause is logged by the caller, the client
    /// only learns that it happened and which request it was.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal Server Error",
        )
        .with_detail("The server failed to handle this request; it has been logged.")
    }

    /// A dependency is down; clients may retry after `retry_after_secs`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service Unavailable",
        )
        .with_detail(detail)
    }

    /// A response builder with the status and content type set, for callers
    /// that add headers (`Retry-After`, `WWW-Authenticate`).
    pub fn response_builder(&self) -> HttpResponseBuilder {
        let mut builder = HttpResponse::build(self.status);
        builder.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE)));
        builder
    }

    pub fn to_response(&self) -> HttpResponse {
        self.response_builder().json(self)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.title)
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        self.to_response()
    }
}

/// Default service for unknown paths: a 404 problem instead of an empty body.
pub async fn not_found() -> HttpResponse {
    Problem::not_found().to_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_serialises_with_the_documented_fields() {
        let problem = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid input",
        )
        .with_errors(vec![FieldError::new("email", "is not an email address")]);
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "type": "urn:keel:problem:validation",
                "title": "Invalid input",
                "status": 422,
                "request_id": null,
                "errors": [{"field": "email", "message": "is not an email address"}]
            })
        );
    }
}
