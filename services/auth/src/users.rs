//! Accounts in PostgreSQL. Every state change that announces an event
//! writes the outbox row in the same transaction.

use chrono::{DateTime, Utc};
use keel_contracts::envelope::Envelope;
use keel_contracts::events::{DomainEvent, UserLoggedIn, UserRegistered};
use keel_db::Pool;
use keel_token::Role;
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::domain::{DisplayName, Email};
use crate::error::StoreError;

/// A user as the API shows it (no hash).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: Option<String>,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub disabled: bool,
}

/// A user with the password hash, for login.
#[derive(Debug)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

const COLUMNS: &str = "id, email, display_name, roles, created_at, disabled, password_hash";

fn user(row: &Row) -> User {
    let roles: Vec<String> = row.get("roles");
    User {
        id: row.get("id"),
        email: row.get("email"),
        display_name: row.get("display_name"),
        roles: roles.iter().filter_map(|r| Role::parse(r)).collect(),
        created_at: row.get("created_at"),
        disabled: row.get("disabled"),
    }
}

#[derive(Debug, Clone)]
pub struct Users {
    pool: Pool,
}

impl Users {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Inserts the account and its `user.registered` event atomically.
    /// A taken email is [`StoreError::EmailTaken`].
    pub async fn register(
        &self,
        email: &Email,
        display_name: Option<&DisplayName>,
        password_hash: &str,
        roles: &[Role],
    ) -> Result<User, StoreError> {
        let mut client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let tx = client.transaction().await.map_err(keel_db::Error::from)?;
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO users (id, email, display_name, password_hash, roles)
                     VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
                ),
                &[
                    &Uuid::now_v7(),
                    &email.as_str(),
                    &display_name.map(DisplayName::as_str),
                    &password_hash,
                    &roles,
                ],
            )
            .await
            .map_err(keel_db::Error::from)?;
        let user = user(&row);
        let event = Envelope::new(DomainEvent::UserRegistered(UserRegistered {
            user_id: user.id,
            registered_at: user.created_at,
        }));
        keel_outbox::enqueue_event(&tx, &event).await?;
        tx.commit().await.map_err(keel_db::Error::from)?;
        Ok(user)
    }

    pub async fn by_email(&self, email: &Email) -> Result<Option<Credentials>, StoreError> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM users WHERE lower(email) = lower($1)"),
                &[&email.as_str()],
            )
            .await
            .map_err(keel_db::Error::from)?;
        Ok(row.map(|row| Credentials {
            password_hash: row.get("password_hash"),
            user: user(&row),
        }))
    }

    pub async fn by_id(&self, id: Uuid) -> Result<Option<Credentials>, StoreError> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM users WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(keel_db::Error::from)?;
        Ok(row.map(|row| Credentials {
            password_hash: row.get("password_hash"),
            user: user(&row),
        }))
    }

    pub async fn set_password_hash(&self, id: Uuid, hash: &str) -> Result<(), StoreError> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        client
            .execute(
                "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
                &[&id, &hash],
            )
            .await
            .map_err(keel_db::Error::from)?;
        Ok(())
    }

    /// Records the login and its `user.logged_in` event atomically.
    pub async fn record_login(&self, id: Uuid, session_id: Uuid) -> Result<(), StoreError> {
        let mut client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let tx = client.transaction().await.map_err(keel_db::Error::from)?;
        tx.execute(
            "UPDATE users SET last_login_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(keel_db::Error::from)?;
        let event = Envelope::new(DomainEvent::UserLoggedIn(UserLoggedIn {
            user_id: id,
            session_id,
        }));
        keel_outbox::enqueue_event(&tx, &event).await?;
        tx.commit().await.map_err(keel_db::Error::from)?;
        Ok(())
    }

    pub async fn set_roles(&self, id: Uuid, roles: &[Role]) -> Result<Option<User>, StoreError> {
        let client = self.pool.get().await.map_err(keel_db::Error::from)?;
        let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        let row = client
            .query_opt(
                &format!(
                    "UPDATE users SET roles = $2, updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[&id, &roles],
            )
            .await
            .map_err(keel_db::Error::from)?;
        Ok(row.as_ref().map(user))
    }
}
