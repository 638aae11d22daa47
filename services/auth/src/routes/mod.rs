//! HTTP routes: thin handlers over `users`, `sessions`, `passwords`,
//! `throttle` and the token signer.

use actix_web::web;

pub mod account;
pub mod jwks;
pub mod session;

/// Mounts every auth route under the paths of API.md's auth section.
pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.route("/.well-known/jwks.json", web::get().to(jwks::jwks))
        .service(
            web::scope("/api/v1/auth")
                .route("/register", web::post().to(account::register))
                .route("/login", web::post().to(session::login))
                .route("/refresh", web::post().to(session::refresh))
                .route("/logout", web::post().to(session::logout))
                .route("/logout-all", web::post().to(session::logout_all))
                .route("/me", web::get().to(account::me))
                .route("/password", web::post().to(account::change_password))
                .route("/sessions", web::get().to(session::list))
                .route("/sessions/{id}", web::delete().to(session::revoke))
                .route("/users/{id}/roles", web::put().to(account::set_roles)),
        );
}

/// Path ids that are not UUIDs name nothing: 404, like an unknown id.
fn path_id(raw: &str) -> Result<uuid::Uuid, crate::error::ApiError> {
    uuid::Uuid::try_parse(raw).map_err(|_| crate::error::ApiError::NotFound)
}
