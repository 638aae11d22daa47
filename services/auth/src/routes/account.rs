use actix_web::{HttpResponse, web};
use keel_http::json::Json;
use keel_token::Role;
use serde::Deserialize;

use crate::caller::Caller;
use crate::domain::{DisplayName, Email, NewPassword};
use crate::error::ApiError;
use crate::passwords::Verified;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct Register {
    email: String,
    password: String,
    display_name: Option<String>,
}

#[tracing::instrument(skip_all)]
pub async fn register(
    state: web::Data<AppState>,
    body: Json<Register>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let mut errors = Vec::new();
    let email = Email::parse(&body.email).map_err(|e| errors.push(e)).ok();
    let display_name = body
        .display_name
        .as_deref()
        .map(DisplayName::parse)
        .transpose()
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    let password = email.as_ref().and_then(|email| {
        NewPassword::parse(&body.password, email, "password")
            .map_err(|e| errors.push(e))
            .ok()
    });
    let (Some(email), Some(password), true) = (email, password, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let hash = state.hasher.hash(password.expose()).await?;
    let user = state
        .users
        .register(&email, display_name.as_ref(), &hash, &[Role::Customer])
        .await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok(HttpResponse::Created().json(user))
}

#[tracing::instrument(skip_all, fields(user_id = %caller.0.sub))]
pub async fn me(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    let found = state
        .users
        .by_id(caller.0.sub)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    Ok(HttpResponse::Ok().json(found.user))
}

#[derive(Debug, Deserialize)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// Re-verifies the current password, stores the new one and revokes every
/// other session (a stolen refresh token dies with the change).
#[tracing::instrument(skip_all, fields(user_id = %caller.0.sub))]
pub async fn change_password(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<ChangePassword>,
) -> Result<HttpResponse, ApiError> {
    let found = state
        .users
        .by_id(caller.0.sub)
        .await?
        .ok_or(ApiError::Unauthenticated)?;
    let email = Email::from_stored(found.user.email.clone());
    let new = NewPassword::parse(&body.new_password, &email, "new_password")?;
    if state
        .hasher
        .verify(&body.current_password, Some(&found.password_hash))
        .await?
        == Verified::No
    {
        return Err(ApiError::InvalidCredentials);
    }
    let hash = state.hasher.hash(new.expose()).await?;
    state.users.set_password_hash(found.user.id, &hash).await?;
    let revoked = state
        .sessions
        .revoke_all(found.user.id, Some(caller.0.sid))
        .await?;
    tracing::info!(revoked, "password changed; other sessions revoked");
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Deserialize)]
pub struct SetRoles {
    roles: Vec<Role>,
}

/// Admin only: replaces a user's roles. Tokens already issued keep their
/// roles until they expire; the next refresh carries the new ones.
#[tracing::instrument(skip_all, fields(admin = %caller.0.sub))]
pub async fn set_roles(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<SetRoles>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let id = super::path_id(&path)?;
    let mut roles = body.into_inner().roles;
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        return Err(keel_http::FieldError::new("roles", "must name at least one role").into());
    }
    let user = state
        .users
        .set_roles(id, &roles)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(user_id = %id, roles = ?roles, "roles changed");
    Ok(HttpResponse::Ok().json(user))
}
