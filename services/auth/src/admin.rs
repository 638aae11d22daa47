//! Creating the first admin: `auth create-admin`, or at start from
//! `KEEL_BOOTSTRAP_ADMIN_EMAIL` / `KEEL_BOOTSTRAP_ADMIN_PASSWORD`.

use keel_token::Role;

use crate::domain::{Email, NewPassword};
use crate::error::ApiError;
use crate::passwords::Hasher;
use crate::users::Users;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Promoted,
    AlreadyAdmin,
}

/// Idempotent: an existing account with that email is made admin (its
/// password is left alone); a new one is created with the password.
pub async fn ensure_admin(
    users: &Users,
    hasher: &Hasher,
    email: &str,
    password: &str,
) -> Result<Outcome, ApiError> {
    let email = Email::parse(email)?;
    if let Some(found) = users.by_email(&email).await? {
        if found.user.roles.contains(&Role::Admin) {
            return Ok(Outcome::AlreadyAdmin);
        }
        let mut roles = found.user.roles.clone();
        roles.push(Role::Admin);
        users.set_roles(found.user.id, &roles).await?;
        return Ok(Outcome::Promoted);
    }
    let password = NewPassword::parse(password, &email, "password")?;
    let hash = hasher.hash(password.expose()).await?;
    match users
        .register(&email, None, &hash, &[Role::Customer, Role::Admin])
        .await
    {
        Ok(_) => Ok(Outcome::Created),
        // Another replica bootstrapped it at the same moment.
        Err(e) => match ApiError::from(e) {
            ApiError::EmailTaken => Ok(Outcome::AlreadyAdmin),
            other => Err(other),
        },
    }
}
