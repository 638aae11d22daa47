//! Edge conventions every response follows, whatever produced it.
//!
//! - Security headers for a JSON API: no MIME sniffing, no framing, no
//!   referrer, a Content-Security-Policy that allows nothing (a JSON body is
//!   never a document to render), and `Cache-Control: no-store` unless the
//!   handler chose a caching policy itself (an `ETag`-ed read may).
//! - actix answers some errors itself with a plain-text or empty body: 405
//!   (a known path, another method) and 413 (a body over `http.body_limit`).
//!   Those are rewritten into `application/problem+json` here, so clients
//!   see one error shape.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::Next;

use crate::problem::{CONTENT_TYPE as PROBLEM_JSON, Problem};

/// A policy for responses that are data, never pages: nothing may load,
/// nothing may frame them, no form may post from them.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Sets the security headers (without overriding a handler's choice).
pub fn apply_security_headers(headers: &mut HeaderMap) {
    let defaults: [(HeaderName, &'static str); 5] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON))
}

/// The problem actix's own bare error responses become, if any.
fn problem_for(status: StatusCode) -> Option<Problem> {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => Some(
            Problem::method_not_allowed()
                .with_detail("This path exists but does not accept this method; see `Allow`."),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => Some(Problem::payload_too_large()),
        _ => None,
    }
}

/// Middleware (`actix_web::middleware::from_fn(conventions::middleware)`);
/// wrap it inside the request-id middleware so rewritten problems carry the id.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let res = next.call(req).await?;
    let mut res = match problem_for(res.status()) {
        Some(problem) if !is_problem(res.headers()) => {
            let allow = res.headers().get(header::ALLOW).cloned();
            let mut rewritten = res.into_response(problem.to_response());
            if let Some(allow) = allow {
                rewritten.headers_mut().insert(header::ALLOW, allow);
            }
            rewritten.map_into_right_body()
        }
        _ => res.map_into_left_body(),
    };
    apply_security_headers(res.headers_mut());
    Ok(res)
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    async fn echo(body: web::Json<serde_json::Value>) -> HttpResponse {
        HttpResponse::Ok().json(body.into_inner())
    }

    #[actix_rt::test]
    async fn bare_405_and_413_answers_become_problems_with_security_headers() {
        let app = test::init_service(
            App::new()
                .app_data(web::JsonConfig::default().limit(16))
                .service(web::resource("/echo").route(web::post().to(echo)))
                .wrap(from_fn(middleware)),
        )
        .await;

        let res =
            test::call_service(&app, test::TestRequest::get().uri("/echo").to_request()).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        assert_eq!(res.headers().get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["type"], "urn:keel:problem:method-not-allowed");

        let big = serde_json::json!({"text": "far more than sixteen bytes"});
        let req = test::TestRequest::post()
            .uri("/echo")
            .set_json(&big)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            res.headers().get(header::CONTENT_TYPE).unwrap(),
            PROBLEM_JSON
        );
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["type"], "urn:keel:problem:payload-too-large");

        let req = test::TestRequest::post()
            .uri("/echo")
            .set_json(serde_json::json!({"a": 1}))
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        assert_eq!(
            res.headers().get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff"
        );
    }

    #[actix_rt::test]
    async fn a_handlers_own_cache_policy_is_kept() {
        let app = test::init_service(
            App::new()
                .route(
                    "/cached",
                    web::get().to(|| async {
                        HttpResponse::Ok()
                            .insert_header((header::CACHE_CONTROL, "private, max-age=60"))
                            .finish()
                    }),
                )
                .wrap(from_fn(middleware)),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/cached").to_request()).await;
        assert_eq!(
            res.headers().get(header::CACHE_CONTROL).unwrap(),
            "private, max-age=60"
        );
    }
}
