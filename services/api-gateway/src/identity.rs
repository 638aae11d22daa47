//! Who is calling. The authentication middleware (JWT verification, or the
//! trusted-proxy header) puts a [`Caller`] into the request's extensions;
//! handlers take `Caller` as an extractor and never look at tokens.

use std::future::{Ready, ready};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, WWW_AUTHENTICATE};
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError, dev::Payload};
use keel_http::Problem;
use uuid::Uuid;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    /// The session the access token belongs to (`sid`), when known.
    pub session_id: Option<Uuid>,
    pub is_admin: bool,
}

/// Missing or invalid credentials: 401 with a `WWW-Authenticate` challenge.
#[derive(Debug)]
pub struct Unauthenticated {
    pub detail: &'static str,
}

impl std::fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.detail)
    }
}

impl ResponseError for Unauthenticated {
    fn status_code(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        let problem = Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized")
            .with_detail(self.detail);
        problem
            .response_builder()
            .insert_header((
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keel\""),
            ))
            .json(&problem)
    }
}

impl FromRequest for Caller {
    type Error = Unauthenticated;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or(Unauthenticated {
                    detail: "A valid Bearer access token is required.",
                }),
        )
    }
}

impl Caller {
    /// 403 unless the caller is an admin.
    #[expect(
        clippy::result_large_err,
        reason = "built only for refused requests; a Box would burden every caller's `?`"
    )]
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin {
            Ok(())
        } else {
            Err(
                Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                    .with_detail("This operation requires the admin role."),
            )
        }
    }
}
