//! A deadline on every request: `http.request_timeout` from the request
//! head to the response head.
//!
//! Each layer below has its own bound (a pool checkout, a statement, an
//! upstream call, the webhook capture deadline), but a request can chain
//! several of them, and a dependency that hangs in a way none of them
//! covers would hold the client, a task and a connection indefinitely.
//! This is the outer bound: past it the handler is dropped (cancelling
//! whatever it was awaiting) and the client gets a 503 problem
//! (`urn:keel:problem:deadline-exceeded`) with `Retry-After`. 503 rather
//! than 504: the gateway did not wait on a gateway of its own but ran out
//! of time under load or behind a stuck dependency, and 503 + `Retry-After`
//! is what the API answers for every "not now" (ADR 0023).
//!
//! **What a 503 here means for writes.** The handler is cancelled where it
//! was: a statement already sent may still commit. Writes that matter are
//! retried safely: orders carry an `Idempotency-Key`, webhook captures are
//! idempotent by delivery id.
//!
//! **Streams are not cut.** The deadline ends when the response head is
//! ready, not when its body has been sent: Server-Sent Events
//! (`/api/v1/events`), export downloads and proxied bodies stream for as
//! long as they need once their handler has answered. Handlers of such
//! routes answer promptly and do their long work in the body, so no route
//! needs an exemption.
//!
//! The answer is returned as an error carrying a finished response, because
//! the request itself went away with the cancelled handler: it already
//! carries what the outer middleware would have added (`X-Request-Id`,
//! the security headers), and the request metrics count it as a 503 on its
//! route.

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};

use crate::conventions::apply_security_headers;
use crate::problem::Problem;
use crate::request_id::{self, RequestId};

/// `Retry-After` of the 503: the request already ran the whole deadline
/// against a saturated or stuck dependency, so an immediate retry would
/// only queue behind it again.
pub const RETRY_AFTER_SECS: u64 = 5;

/// Why the request was answered early (the cause of the error returned).
#[derive(Debug, thiserror::Error)]
#[error("no response within the request deadline of {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// The 503 problem a request past its deadline gets.
pub fn problem(limit: Duration) -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "deadline-exceeded",
        "Request Deadline Exceeded",
    )
    .with_detail(format!(
        "The server could not answer within {} s; retry after the Retry-After delay.",
        limit.as_secs_f64()
    ))
}

fn response(limit: Duration, request_id: Option<&RequestId>) -> HttpResponse {
    let problem = problem(limit);
    let mut response = problem.response_builder();
    response.insert_header((RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
    if let Some(value) = request_id.and_then(|id| HeaderValue::from_str(id.as_str()).ok()) {
        response.insert_header((request_id::HEADER, value));
    }
    let mut response = response.json(&problem);
    apply_security_headers(response.headers_mut());
    response
}

/// Middleware (`from_fn(move |req, next| request_deadline::middleware(limit, req, next))`);
/// wrap it inside the request-id middleware so the answer carries the id.
pub async fn middleware(
    limit: Duration,
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let request_id = req.extensions().get::<RequestId>().cloned();
    let route = req.match_pattern();
    let method = req.method().clone();
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(answered) => answered,
        Err(_) => {
            tracing::warn!(
                %method,
                route = route.as_deref().unwrap_or("-"),
                deadline = ?limit,
                "request deadline passed; answering 503"
            );
            let response = response(limit, request_id.as_ref());
            Err(InternalError::from_response(DeadlineExceeded(limit), response).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpResponse, HttpServer, web};
    use bytes::Bytes;

    use super::*;
    use crate::conventions;

    const LIMIT: Duration = Duration::from_millis(300);

    /// Never answers: a handler stuck on a dependency.
    async fn stuck() -> HttpResponse {
        std::future::pending::<()>().await;
        HttpResponse::Ok().finish()
    }

    /// Answers at once, then streams for well past the deadline.
    async fn slow_stream() -> HttpResponse {
        let chunks = futures::stream::unfold(0u8, |n| async move {
            if n == 5 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((
                Ok::<_, actix_web::Error>(Bytes::from(format!("chunk-{n};"))),
                n + 1,
            ))
        });
        HttpResponse::Ok().streaming(chunks)
    }

    /// A real server with the middleware order of `server::app`.
    fn serve() -> (SocketAddr, actix_web::dev::ServerHandle) {
        let server = HttpServer::new(|| {
            App::new()
                .route("/stuck", web::get().to(stuck))
                .route("/stream", web::get().to(slow_stream))
                .wrap(from_fn(move |req, next| middleware(LIMIT, req, next)))
                .wrap(from_fn(conventions::middleware))
                .wrap(from_fn(request_id::middleware))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        (address, handle)
    }

    /// The whole answer to `GET path` (the connection closes after it).
    async fn get(address: SocketAddr, path: &'static str) -> String {
        tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            // Far past the deadline: reaching it means no answer came.
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nX-Request-Id: deadline-test-1\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        })
        .await
        .unwrap()
    }

    #[actix_web::test]
    async fn a_request_past_the_request_deadline_gets_a_503_problem_with_retry_after() {
        let (address, handle) = serve();
        let answer = get(address, "/stuck").await;
        handle.stop(false).await;

        let lower = answer.to_ascii_lowercase();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            lower.contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(lower.contains("retry-after: 5"), "{answer}");
        assert!(lower.contains("x-request-id: deadline-test-1"), "{answer}");
        assert!(
            lower.contains("x-content-type-options: nosniff"),
            "{answer}"
        );
        assert!(
            answer.contains("urn:keel:problem:deadline-exceeded"),
            "{answer}"
        );
        assert!(
            answer.contains(r#""request_id":"deadline-test-1""#),
            "{answer}"
        );
    }

    #[actix_web::test]
    async fn a_body_that_streams_past_the_deadline_is_not_cut() {
        let (address, handle) = serve();
        let answer = get(address, "/stream").await;
        handle.stop(false).await;

        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        for n in 0..5 {
            assert!(answer.contains(&format!("chunk-{n};")), "{answer}");
        }
    }
}
