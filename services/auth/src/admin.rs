//! Creating the first admin: `auth create-admin`, or at start from
//! `KEEL_BOOTSTRAP_ADMIN_EMAIL` / `KEEL_BOOTSTRAP_ADMIN_PASSWORD`.

use keel_token::Role;

use crate::domain::{Email, NewPassword};
use crate::error::ApiError;
use crate::passwords::{Hasher, Verified};
use crate::users::{Credentials, Users};

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Promoted,
    AlreadyAdmin,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Whoever registered the admin's address first (before the first
    /// start, or in a race with it) must not become admin by it. The
    /// password is not in the message.
    #[error("bootstrap admin {email} exists and the given password does not match; not promoting")]
    PasswordMismatch { email: String },
    #[error("{0:?}")]
    Failed(#[from] ApiError),
}

/// Idempotent: a new account is created with the password; an existing one
/// is made admin only when `password` is its own (an existing admin is left
/// alone whatever its password, so changing it never stops a restart).
pub async fn ensure_admin(
    users: &Users,
    hasher: &Hasher,
    email: &str,
    password: &str,
) -> Result<Outcome, AdminError> {
    let email = Email::parse(email).map_err(ApiError::from)?;
    if let Some(found) = users.by_email(&email).await.map_err(ApiError::from)? {
        return promote(users, hasher, &email, found, password).await;
    }
    let new_password = NewPassword::parse(password, &email, "password").map_err(ApiError::from)?;
    let hash = hasher
        .hash(new_password.expose())
        .await
        .map_err(ApiError::from)?;
    match users
        .register(&email, None, &hash, &[Role::Customer, Role::Admin])
        .await
        .map_err(ApiError::from)
    {
        Ok(_) => Ok(Outcome::Created),
        // Registered at the same moment, by another replica bootstrapping
        // the same admin or by someone else: judge it as any existing one.
        Err(ApiError::EmailTaken) => match users.by_email(&email).await.map_err(ApiError::from)? {
            Some(found) => promote(users, hasher, &email, found, password).await,
            None => Err(ApiError::EmailTaken.into()),
        },
        Err(other) => Err(other.into()),
    }
}

async fn promote(
    users: &Users,
    hasher: &Hasher,
    email: &Email,
    found: Credentials,
    password: &str,
) -> Result<Outcome, AdminError> {
    if found.user.roles.contains(&Role::Admin) {
        return Ok(Outcome::AlreadyAdmin);
    }
    let verified = hasher
        .verify(password, Some(&found.password_hash))
        .await
        .map_err(ApiError::from)?;
    if verified == Verified::No {
        return Err(AdminError::PasswordMismatch {
            email: email.as_str().to_owned(),
        });
    }
    let mut roles = found.user.roles.clone();
    roles.push(Role::Admin);
    users
        .set_roles(found.user.id, &roles)
        .await
        .map_err(ApiError::from)?;
    Ok(Outcome::Promoted)
}
