//! The bootstrap admin (`KEEL_BOOTSTRAP_ADMIN_*`, `auth create-admin`):
//! an existing account is promoted only by its own password.

use auth::admin::{Outcome, ensure_admin};
use auth::passwords::Hasher;
use auth::users::Users;

use crate::helpers::{PASSWORD, TestApp, spawn_app, test_settings};

fn parts(app: &TestApp) -> (Users, Hasher) {
    let hasher = Hasher::new(&test_settings().passwords).unwrap();
    (Users::new(app.pool().clone()), hasher)
}

async fn roles_of(app: &TestApp, email: &str) -> Vec<String> {
    let client = app.pool().get().await.unwrap();
    client
        .query_one("SELECT roles FROM users WHERE email = $1", &[&email])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_bootstrap_admin_does_not_promote_an_existing_account_whose_password_differs() {
    let app = spawn_app().await;
    // Someone registered the admin's address first, with their own password.
    app.register("root@example.com").await;
    let (users, hasher) = parts(&app);

    let refused = ensure_admin(
        &users,
        &hasher,
        "Root@Example.com",
        "the operator's admin passphrase",
    )
    .await
    .unwrap_err();

    assert_eq!(
        refused.to_string(),
        "bootstrap admin root@example.com exists and the given password does not match; \
         not promoting"
    );
    assert_eq!(roles_of(&app, "root@example.com").await, ["customer"]);
}

#[tokio::test]
async fn the_bootstrap_admin_promotes_an_existing_account_by_its_own_password_once() {
    let app = spawn_app().await;
    app.register("owner@example.com").await;
    let (users, hasher) = parts(&app);

    let first = ensure_admin(&users, &hasher, "owner@example.com", PASSWORD).await;
    let second = ensure_admin(&users, &hasher, "owner@example.com", PASSWORD).await;

    assert_eq!(first.unwrap(), Outcome::Promoted);
    assert_eq!(second.unwrap(), Outcome::AlreadyAdmin);
    assert_eq!(
        roles_of(&app, "owner@example.com").await,
        ["customer", "admin"]
    );
}

#[tokio::test]
async fn an_admin_whose_password_changed_since_bootstrap_is_left_alone() {
    let app = spawn_app().await;
    let (users, hasher) = parts(&app);
    let created = ensure_admin(&users, &hasher, "admin@example.com", PASSWORD).await;
    assert_eq!(created.unwrap(), Outcome::Created);

    // Nothing to promote: a restart with the first password must not stop auth.
    let again = ensure_admin(&users, &hasher, "admin@example.com", "an older passphrase").await;

    assert_eq!(again.unwrap(), Outcome::AlreadyAdmin);
}
