//! A deadline on reading every request body.
//!
//! actix's `client_request_timeout` bounds only the request head: a client
//! that sends its headers and then trickles the body (or stops) holds a
//! connection, a task and up to `http.body_limit` bytes for as long as it
//! likes, and enough of them exhaust the server. Every request's payload is
//! therefore wrapped here: the whole body must arrive within
//! `http.body_read_timeout` of the request head. Past it the payload ends
//! with an error, whatever is reading it (an extractor, the proxy streaming
//! it upstream) fails, and the answer becomes a 408 problem with
//! `Connection: close`, so the slow client loses its connection too.
//!
//! The clock starts when the head has been read, not at the first read of
//! the body, and only a body that is read can expire: a request whose
//! handler never reads its payload is not affected.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::HttpMessage;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use bytes::Bytes;
use futures::Stream;
use tokio::time::{Instant, Sleep};

use crate::problem::Problem;

/// Set when a request's body deadline passed while it was being read.
#[derive(Debug, Clone, Default)]
struct Expired(Arc<AtomicBool>);

/// The request's payload, ending in an error once `sleep` fires.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<Sleep>>,
    expired: Expired,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = Pin::new(&mut self.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            self.expired.0.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive within http.body_read_timeout",
            )))));
        }
        Poll::Pending
    }
}

/// The 408 every expired body gets, whatever its reader made of the error.
pub fn problem() -> Problem {
    Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        "Request body too slow",
    )
    .with_detail("The request body did not arrive in time; send it again, promptly.")
}

/// Middleware (`from_fn(move |req, next| body_deadline::middleware(limit, req, next))`).
pub async fn middleware(
    limit: Duration,
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let expired = Expired::default();
    let inner = req.take_payload();
    let wrapped = Deadline {
        inner,
        sleep: Box::pin(tokio::time::sleep_until(Instant::now() + limit)),
        expired: expired.clone(),
        done: false,
    };
    req.set_payload(Payload::Stream {
        payload: Box::pin(wrapped),
    });
    req.extensions_mut().insert(expired.clone());
    let res = next.call(req).await?;
    if !expired.0.load(Ordering::Relaxed) {
        return Ok(res.map_into_left_body());
    }
    let mut res = if res.status() == StatusCode::REQUEST_TIMEOUT {
        // The handler answered the deadline itself (the webhook endpoint).
        res.map_into_left_body()
    } else {
        res.into_response(problem().to_response())
            .map_into_right_body()
    };
    res.response_mut()
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    Ok(res)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant as StdInstant;

    use actix_web::{App, HttpResponse, test, web};

    use super::*;

    async fn echo_len(body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(body.len().to_string())
    }

    #[actix_web::test]
    async fn a_body_that_arrives_in_time_reaches_the_handler() {
        let app = test::init_service(
            App::new()
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    middleware(Duration::from_secs(5), req, next)
                }))
                .route("/", web::post().to(echo_len)),
        )
        .await;
        let req = test::TestRequest::post()
            .uri("/")
            .set_payload("hello")
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(test::read_body(res).await, "5");
    }

    /// A real server and a raw client that sends half a body, then stalls.
    #[actix_web::test]
    async fn a_body_that_stops_arriving_is_a_408_problem_and_the_connection_closes() {
        let server = actix_web::HttpServer::new(|| {
            App::new()
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    middleware(Duration::from_millis(500), req, next)
                }))
                .route("/", web::post().to(echo_len))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let address = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);

        let answer = tokio::task::spawn_blocking(move || {
            let mut stream = TcpStream::connect(address).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            stream
                .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
                .unwrap();
            let started = StdInstant::now();
            let mut answer = String::new();
            // Read to EOF: the server must close the connection.
            stream.read_to_string(&mut answer).unwrap();
            (answer, started.elapsed())
        })
        .await
        .unwrap();
        handle.stop(false).await;

        let (answer, waited) = answer;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("application/problem+json"), "{answer}");
        assert!(
            answer.contains("urn:keel:problem:request-timeout"),
            "{answer}"
        );
        assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    }
}
