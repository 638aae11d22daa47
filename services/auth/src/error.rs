//! The one API error type: every handler returns `Result<_, ApiError>`.
//! Each variant has a stable problem `type`; unexpected failures are logged
//! with their cause chain and answered as an opaque 500.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use keel_http::{FieldError, Problem};

/// Storage failures, classified once for every handler.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error(transparent)]
    Outbox(#[from] keel_outbox::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("the email is already registered")]
    EmailTaken,
    #[error("wrong credentials")]
    InvalidCredentials,
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("too many failed logins")]
    Throttled { retry_after: Duration },
    #[error("a dependency is unavailable")]
    Unavailable,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError::Validation(vec![e])
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(db)
                if db.is_unique_violation() && db.constraint() == Some("users_email_key") =>
            {
                ApiError::EmailTaken
            }
            StoreError::Database(db) if db.is_unavailable() => {
                tracing::warn!(error = %keel_runtime::service::error_chain(&db), "database unavailable");
                ApiError::Unavailable
            }
            StoreError::Outbox(keel_outbox::Error::Database(db)) if db.is_unavailable() => {
                ApiError::Unavailable
            }
            other => ApiError::Unexpected(other.into()),
        }
    }
}

impl From<crate::sessions::SessionError> for ApiError {
    fn from(e: crate::sessions::SessionError) -> Self {
        tracing::warn!(error = %keel_runtime::service::error_chain(&e), "session store failed");
        ApiError::Unavailable
    }
}

impl From<keel_cache::Error> for ApiError {
    fn from(e: keel_cache::Error) -> Self {
        tracing::warn!(error = %keel_runtime::service::error_chain(&e), "redis failed");
        ApiError::Unavailable
    }
}

impl From<crate::passwords::HashError> for ApiError {
    fn from(e: crate::passwords::HashError) -> Self {
        ApiError::Unexpected(e.into())
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Validation(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
            )
            .with_detail(
                errors
                    .iter()
                    .map(|e| format!("`{}` {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
            .with_errors(errors.clone()),
            ApiError::EmailTaken => Problem::new(
                StatusCode::CONFLICT,
                "email-taken",
                "Email already registered",
            )
            .with_errors(vec![FieldError::new("email", "is already registered")]),
            ApiError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            )
            .with_detail("The email or the password is wrong."),
            ApiError::InvalidRefreshToken => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-refresh-token",
                "Invalid refresh token",
            )
            .with_detail("The refresh token is unknown, expired or revoked; log in again."),
            ApiError::Unauthenticated => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthorized")
                    .with_detail("A valid bearer access token is required.")
            }
            ApiError::Forbidden => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail("Your roles do not allow this."),
            ApiError::NotFound => Problem::not_found(),
            ApiError::Throttled { .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-attempts",
                "Too Many Requests",
            )
            .with_detail("Too many failed logins; wait before trying again."),
            ApiError::Unavailable => {
                Problem::unavailable("A dependency is unavailable; retry shortly.")
            }
            ApiError::Unexpected(_) => Problem::internal(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.problem().status
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unexpected(e) = self {
            tracing::error!(error = ?e, "unexpected failure");
        }
        let problem = self.problem();
        let mut builder = problem.response_builder();
        match self {
            ApiError::Throttled { retry_after } => {
                builder.insert_header((
                    header::RETRY_AFTER,
                    retry_after.as_millis().div_ceil(1000).max(1).to_string(),
                ));
            }
            ApiError::Unavailable => {
                builder.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
            }
            ApiError::Unauthenticated => {
                builder.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"keel\", error=\"invalid_token\""),
                ));
            }
            _ => {}
        }
        builder.json(&problem)
    }
}
