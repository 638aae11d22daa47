//! One canonical spelling of every request path, before anything decides
//! on it (ADR 0018).
//!
//! A path has many spellings: `/api/v1/%61dmin` is `/api/v1/admin` to
//! actix's router (which percent-decodes all but `%`, `/` and `+` before
//! matching) but not to a middleware comparing `req.path()`; `..` and
//! `%2e%2e` mean nothing to the router but make a URL library or an
//! upstream server resolve a proxied path outside its prefix. When the
//! router, the rate limiter, the admin gate and the proxy each read the
//! path their own way, a spelling can dodge one of them. So the outermost
//! routing step rewrites the request to one form, or refuses it:
//!
//! - percent-encoded *unreserved* characters (`ALPHA DIGIT - . _ ~`) are
//!   decoded: RFC 3986 §6.2.2.2 makes both spellings the same URI, so this
//!   changes no meaning. Other escapes stay encoded (their hex digits in
//!   upper case, §6.2.2.1): decoding a reserved character could change what
//!   the path means, and no rule keys on one;
//! - refused with a 400 problem (field `path`): a dot segment (`.`, `..`,
//!   spelled with `%2e` or not: §6.2.2.3 would resolve it, and then the
//!   request means another resource than the one routed), an empty segment
//!   (`//`, which some servers merge and others do not), an encoded `/` or
//!   `\` and a raw `\` (one segment to us, two to some upstreams and to the
//!   WHATWG URL parser), an encoded control character (`%00`..`%1F`,
//!   `%7F`), and a `%` not followed by two hex digits.
//!
//! The request's URI and the router's copy of it are both rewritten, so
//! handlers, middleware, the router and a proxy all see the same string.
//! The query is left as it came. Rules that compare paths use
//! [`is_under`], which matches whole segments only.

use std::borrow::Cow;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::uri::{PathAndQuery, Uri};
use actix_web::middleware::Next;

use crate::problem::{FieldError, Problem};

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("must not contain a `.` or `..` segment (also when percent-encoded)")]
    DotSegment,
    #[error("must not contain an empty segment (`//`)")]
    EmptySegment,
    #[error("must not contain an encoded `/` or `\\` (`%2F`, `%5C`)")]
    EncodedSeparator,
    #[error("must not contain a `\\`")]
    Backslash,
    #[error("must not contain a control character (such as `%00`)")]
    ControlCharacter,
    #[error("must percent-encode as `%` followed by two hexadecimal digits")]
    InvalidEncoding,
}

/// `ALPHA / DIGIT / "-" / "." / "_" / "~"` (RFC 3986 §2.3).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The canonical form of `path` (borrowed when it already is), or why it
/// has none. A path that does not start with `/` (`*` of `OPTIONS *`) is
/// returned as it is: no route matches it.
pub fn canonicalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) else {
                    return Err(PathError::InvalidEncoding);
                };
                let decoded = (hi << 4) | lo;
                if is_unreserved(decoded) {
                    out.push(decoded);
                } else if matches!(decoded, b'/' | b'\\') {
                    return Err(PathError::EncodedSeparator);
                } else if decoded.is_ascii_control() {
                    return Err(PathError::ControlCharacter);
                } else {
                    out.extend_from_slice(&[
                        b'%',
                        UPPER_HEX[usize::from(hi)],
                        UPPER_HEX[usize::from(lo)],
                    ]);
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b if b.is_ascii_control() => return Err(PathError::ControlCharacter),
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    // Only ASCII escapes were replaced by ASCII bytes: still UTF-8.
    let out = String::from_utf8(out).map_err(|_| PathError::InvalidEncoding)?;
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (n, segment) in segments.iter().enumerate() {
        if matches!(*segment, "." | "..") {
            return Err(PathError::DotSegment);
        }
        // A trailing slash is an empty last segment, and allowed.
        if segment.is_empty() && n + 1 < segments.len() {
            return Err(PathError::EmptySegment);
        }
    }
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// Whether `path` is `prefix` or below it, by whole segments:
/// `/api/v1/admin` and `/api/v1/admin/x` are under `/api/v1/admin`,
/// `/api/v1/adminx` is not. Meant for canonical paths.
pub fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// `uri` with its path replaced, the query kept.
fn with_path(uri: &Uri, path: &str) -> Option<Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// The 400 for a path without a canonical form. It names the field but
/// does not echo the path: it may be long, and it is the client's anyway.
pub fn problem(error: PathError) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-path",
        "Invalid Request Path",
    )
    .with_detail("The request path is not in canonical form.")
    .with_errors(vec![FieldError::new("path", error.to_string())])
}

/// Middleware (`actix_web::middleware::from_fn(canonical::middleware)`)
/// wrapping the app's router directly, so it runs before routing; see the
/// module docs.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let rewritten = match canonicalize(req.path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(path)) => Some(with_path(req.uri(), &path).ok_or(PathError::InvalidEncoding)),
        Err(e) => Some(Err(e)),
    };
    match rewritten {
        None => {}
        Some(Ok(uri)) => {
            // The router matches against its own copy of the URI, taken
            // when the request was created: update both.
            req.match_info_mut().get_mut().update(&uri);
            req.head_mut().uri = uri;
        }
        Some(Err(e)) => {
            tracing::debug!(reason = %e, "request path refused");
            let response = problem(e).to_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    // Not `test` itself: actix-web's attribute of that name would shadow `#[test]`.
    use actix_web::test as actix_test;
    use actix_web::{App, HttpRequest, HttpResponse, web};

    use super::*;

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        for (raw, canonical) in [
            ("/api/v1/%61dmin/x", "/api/v1/admin/x"),
            ("/api/v1/%61%64%6d%69%6E", "/api/v1/admin"),
            ("/a/webhook%2Devents%5F%7E%2e", "/a/webhook-events_~."),
            ("/a/b%3a%c3%a9", "/a/b%3A%C3%A9"),
            ("/a/%25%32%66", "/a/%252f"),
            ("/a/b+c;d", "/a/b+c;d"),
        ] {
            assert_eq!(canonicalize(raw).unwrap(), canonical, "{raw}");
        }
    }

    #[test]
    fn a_canonical_path_is_borrowed_unchanged() {
        for path in ["/", "/api/v1/orders/", "/api/v1/orders/1?x", "*", "/a/%20b"] {
            assert!(matches!(canonicalize(path), Ok(Cow::Borrowed(p)) if p == path));
        }
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for raw in [
            "/api/v1/auth/../admin",
            "/api/v1/auth/..",
            "/api/v1/./auth",
            "/.",
            "/api/v1/auth/%2e%2e/orders",
            "/api/v1/auth/%2E%2E/orders",
            "/api/v1/auth/.%2e/orders",
            "/api/v1/auth/%2e./orders",
            "/api/v1/auth/%2E",
        ] {
            assert_eq!(canonicalize(raw), Err(PathError::DotSegment), "{raw}");
        }
        // Dots inside a segment are a name, not a step.
        assert_eq!(canonicalize("/a/...").unwrap(), "/a/...");
        assert_eq!(canonicalize("/a/..b").unwrap(), "/a/..b");
        assert_eq!(canonicalize("/a/.well-known").unwrap(), "/a/.well-known");
    }

    #[test]
    fn separators_controls_and_broken_escapes_are_refused() {
        for (raw, error) in [
            ("/api/v1//admin", PathError::EmptySegment),
            ("//api/v1/admin", PathError::EmptySegment),
            ("/api/v1/auth/..%2fadmin", PathError::EncodedSeparator),
            ("/api/v1/auth%2F..%2Fadmin", PathError::EncodedSeparator),
            ("/api/v1/auth/..%5cadmin", PathError::EncodedSeparator),
            ("/api/v1/admin\\x", PathError::Backslash),
            ("/api/v1/admin%00", PathError::ControlCharacter),
            ("/api/v1/admin%0a", PathError::ControlCharacter),
            ("/api/v1/admin%7F", PathError::ControlCharacter),
            ("/api/v1/admin%", PathError::InvalidEncoding),
            ("/api/v1/admin%4", PathError::InvalidEncoding),
            ("/api/v1/admin%zz", PathError::InvalidEncoding),
            ("/api/v1/admin%%41", PathError::InvalidEncoding),
        ] {
            assert_eq!(canonicalize(raw), Err(error), "{raw}");
        }
    }

    #[test]
    fn is_under_matches_whole_segments_only() {
        assert!(is_under("/api/v1/admin", "/api/v1/admin"));
        assert!(is_under("/api/v1/admin/", "/api/v1/admin"));
        assert!(is_under("/api/v1/admin/x", "/api/v1/admin"));
        assert!(!is_under("/api/v1/adminx", "/api/v1/admin"));
        assert!(!is_under("/api/v1", "/api/v1/admin"));
    }

    async fn echo(req: HttpRequest, name: web::Path<String>) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {} {}", req.path(), req.uri(), name))
    }

    #[actix_rt::test]
    async fn the_router_and_the_handler_see_the_canonical_path() {
        let app = actix_test::init_service(
            App::new()
                .route("/api/v1/admin/{name}", web::get().to(echo))
                .wrap(from_fn(middleware)),
        )
        .await;
        let req = actix_test::TestRequest::get()
            .uri("/api/v1/%61dmin/%6Dy%3a?q=%61")
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = actix_test::read_body(res).await;
        assert_eq!(
            body,
            "/api/v1/admin/my%3A /api/v1/admin/my%3A?q=%61 my:".as_bytes()
        );

        let req = actix_test::TestRequest::get()
            .uri("/api/v1/x/%2e%2e/admin/y")
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let body: serde_json::Value = actix_test::read_body_json(res).await;
        assert_eq!(body["type"], "urn:keel:problem:invalid-path");
        assert_eq!(body["errors"][0]["field"], "path");
        assert!(!body.to_string().contains("admin/y"), "{body}");
    }
}
