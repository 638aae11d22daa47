use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use keel_http::json::Json;
use serde::Deserialize;

use crate::caller::Caller;
use crate::domain::Email;
use crate::error::ApiError;
use crate::passwords::Verified;
use crate::sessions::{Presented, Rotation};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct Login {
    email: String,
    password: String,
}

/// Same 401, same cost (a real argon2 verification) for an unknown email, a
/// malformed one, a disabled account and a wrong password; and the same
/// throttling, so a 429 does not tell them apart either.
#[tracing::instrument(skip_all)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: Json<Login>,
) -> Result<HttpResponse, ApiError> {
    // X-Forwarded-For counts only as far as trusted proxies vouch for it: a
    // client-chosen header must not pick its own throttling bucket.
    let ip = keel_http::client_ip::of_request(&req, &state.trusted_proxies);
    let email = Email::parse(&body.email).ok();
    // Counted before the password is checked, in one atomic step: parallel
    // guesses cannot all pass while the first ones are being verified. A
    // failure then needs no further bookkeeping.
    let attempt = state.throttle.attempt(email.as_ref(), ip);
    if let Some(retry_after) = state.throttle.admit(&attempt).await? {
        return Err(ApiError::Throttled { retry_after });
    }
    let found = match &email {
        Some(email) => state.users.by_email(email).await?,
        None => None,
    };
    let verified = state
        .hasher
        .verify(
            &body.password,
            found.as_ref().map(|c| c.password_hash.as_str()),
        )
        .await?;
    let (Some(found), Verified::Yes | Verified::YesNeedsRehash) = (found, verified) else {
        return Err(ApiError::InvalidCredentials);
    };
    if found.user.disabled {
        return Err(ApiError::InvalidCredentials);
    }
    state.throttle.succeeded(&attempt).await?;
    if verified == Verified::YesNeedsRehash {
        let hash = state.hasher.hash(&body.password).await?;
        state.users.set_password_hash(found.user.id, &hash).await?;
        tracing::info!(user_id = %found.user.id, "password re-hashed with argon2id");
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let (sid, refresh_token) = state.sessions.create(found.user.id, user_agent, ip).await?;
    state.users.record_login(found.user.id, sid).await?;
    let pair = state
        .pair(&found.user, sid, refresh_token)
        .map_err(anyhow::Error::from)?;
    tracing::info!(user_id = %found.user.id, session_id = %sid, "logged in");
    Ok(HttpResponse::Ok().insert_header(no_store()).json(pair))
}

fn no_store() -> (header::HeaderName, &'static str) {
    (header::CACHE_CONTROL, "no-store")
}

#[derive(Debug, Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

#[tracing::instrument(skip_all)]
pub async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let presented = Presented::parse(&body.refresh_token).ok_or(ApiError::InvalidRefreshToken)?;
    let sid = presented.sid();
    let user_id = state
        .sessions
        .owner(sid)
        .await?
        .ok_or(ApiError::InvalidRefreshToken)?;
    // Current roles and status: a disabled user or a role change takes
    // effect at the next refresh.
    let Some(found) = state
        .users
        .by_id(user_id)
        .await?
        .filter(|c| !c.user.disabled)
    else {
        state.sessions.revoke_all(user_id, None).await?;
        return Err(ApiError::InvalidRefreshToken);
    };
    let next = state.sessions.next_token(&presented)?;
    let pair = state
        .pair(&found.user, sid, next)
        .map_err(anyhow::Error::from)?;
    match state.sessions.rotate(&presented, &pair).await? {
        Rotation::Rotated => Ok(HttpResponse::Ok().insert_header(no_store()).json(pair)),
        Rotation::Replayed(same) => Ok(HttpResponse::Ok().insert_header(no_store()).json(same)),
        Rotation::Reused { user_id } => {
            tracing::warn!(
                target: "security",
                security_event = "refresh_token_reuse",
                user_id = %user_id,
                session_id = %sid,
                "a spent refresh token was presented again; the session is revoked"
            );
            Err(ApiError::InvalidRefreshToken)
        }
        Rotation::Refused => Err(ApiError::InvalidRefreshToken),
    }
}

/// 204 whatever the token: logging out twice, or with garbage, reveals nothing.
#[tracing::instrument(skip_all)]
pub async fn logout(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    if let Some(presented) = Presented::parse(&body.refresh_token) {
        state.sessions.revoke_by_token(&presented).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

#[tracing::instrument(skip_all, fields(user_id = %caller.0.sub))]
pub async fn logout_all(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let revoked = state.sessions.revoke_all(caller.0.sub, None).await?;
    tracing::info!(revoked, "every session revoked");
    Ok(HttpResponse::NoContent().finish())
}

#[tracing::instrument(skip_all, fields(user_id = %caller.0.sub))]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let items = state.sessions.list(caller.0.sub).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

#[tracing::instrument(skip_all, fields(user_id = %caller.0.sub))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sid = super::path_id(&path)?;
    if state.sessions.revoke(caller.0.sub, sid).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}
