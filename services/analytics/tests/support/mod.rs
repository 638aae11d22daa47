//! A stand-in for the auth service over real HTTP: it publishes the JWK Set
//! of a real `keel-token` signer, so analytics fetches and verifies keys
//! exactly as it would against auth, and signs tokens for test callers.
//!
//! One signing key per test process ([`signer`]): every fake auth publishes
//! it, so a test can sign a caller's token without holding its stack.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use keel_token::{Claims, KeyAlgorithm, Role, Signer, SigningKey};
use uuid::Uuid;

/// analytics' default `authn.issuer` / `authn.audience` (auth's).
pub const ISSUER: &str = "keel-auth";
pub const AUDIENCE: &str = "keel";

/// A fresh Ed25519 signer (fast to generate, verified like RS256).
pub fn new_signer(kid: &str) -> Signer {
    let pem = SigningKey::generate_pem(KeyAlgorithm::EdDsa).unwrap();
    let key =
        SigningKey::from_pem(KeyAlgorithm::EdDsa, pem.as_bytes(), Some(kid.to_owned())).unwrap();
    Signer::new(key, vec![]).unwrap()
}

/// The key every [`FakeAuth`] of this process publishes.
pub fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| new_signer("test-key"))
}

/// A token as auth would issue it for `user` with `roles`, signed by
/// `signer`.
pub fn token_signed_by(signer: &Signer, user: Uuid, roles: Vec<Role>) -> String {
    let claims = Claims::new(
        user,
        roles,
        Uuid::new_v4(),
        ISSUER,
        AUDIENCE,
        Duration::from_secs(600),
    );
    signer.sign(&claims).unwrap()
}

/// A token of the published key for `user`, an admin or a customer.
pub fn token(user: Uuid, admin: bool) -> String {
    let role = if admin { Role::Admin } else { Role::Customer };
    token_signed_by(signer(), user, vec![role])
}

async fn jwks() -> HttpResponse {
    HttpResponse::Ok().json(signer().jwks())
}

/// Serves `GET /.well-known/jwks.json` on a loopback port until dropped.
pub struct FakeAuth {
    pub jwks_url: String,
    server: actix_web::dev::ServerHandle,
}

impl FakeAuth {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server =
            HttpServer::new(|| App::new().route("/.well-known/jwks.json", web::get().to(jwks)))
                .workers(1)
                .disable_signals()
                .listen(listener)
                .unwrap()
                .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            jwks_url: format!("http://127.0.0.1:{port}/.well-known/jwks.json"),
            server: handle,
        }
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}
