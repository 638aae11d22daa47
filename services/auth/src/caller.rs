//! The authenticated caller of a Bearer-protected route.

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;
use keel_token::{Claims, Role};

use crate::error::ApiError;
use crate::state::AppState;

/// Verified claims of a live session. Unlike the gateway (which only
/// verifies the signature unless configured to check `sid`), the auth
/// service also checks that the session still exists: its own routes
/// (password change, session management) must not outlive a logout.
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.has_role(role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| t.trim().to_owned());
        Box::pin(async move {
            let state = state.ok_or_else(|| {
                ApiError::Unexpected(anyhow::anyhow!("AppState is not registered"))
            })?;
            let token = token.ok_or(ApiError::Unauthenticated)?;
            let claims = state
                .verifier
                .verify(&token)
                .map_err(|_| ApiError::Unauthenticated)?;
            if !state.sessions.is_live(claims.sub, claims.sid).await? {
                return Err(ApiError::Unauthenticated);
            }
            Ok(Caller(claims))
        })
    }
}
