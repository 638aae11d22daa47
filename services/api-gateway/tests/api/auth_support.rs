//! A stand-in for the auth and analytics services over real HTTP: it
//! publishes a JWK Set from the real `keel-token` signer (so the gateway
//! verifies tokens exactly as it would against auth) and echoes every other
//! request back as JSON, so proxy tests see what reached the upstream.
//!
//! Like auth, it keeps a live session in Redis for every token it signs
//! (`auth:session:{sid}` under the gateway's key prefix) and deletes it on
//! [`FakeUpstream::logout`]: the gateway checks sessions by default.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use api_gateway::settings::Settings;
use keel_token::{Claims, KeyAlgorithm, Role, Signer, SigningKey};
use uuid::Uuid;

pub const ISSUER: &str = "keel-auth";
pub const AUDIENCE: &str = "keel";

struct State {
    signer: Mutex<Signer>,
    jwks_fetches: AtomicUsize,
    /// `(redis url, key prefix)` of every gateway configured against us.
    sessions: Mutex<Vec<(String, String)>>,
}

pub struct FakeUpstream {
    pub url: String,
    state: Arc<State>,
    server: actix_web::dev::ServerHandle,
}

pub fn new_key(kid: &str) -> SigningKey {
    let pem = SigningKey::generate_pem(KeyAlgorithm::EdDsa).unwrap();
    SigningKey::from_pem(KeyAlgorithm::EdDsa, pem.as_bytes(), Some(kid.to_owned())).unwrap()
}

async fn jwks(state: web::Data<Arc<State>>) -> HttpResponse {
    state.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let set = state.signer.lock().unwrap().jwks();
    HttpResponse::Ok().json(set)
}

async fn slow() -> HttpResponse {
    tokio::time::sleep(Duration::from_secs(30)).await;
    HttpResponse::Ok().finish()
}

/// `{method, path, query, headers: {name: [values]}, body}`.
async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value.to_str().unwrap_or("<binary>").to_owned());
    }
    HttpResponse::Ok()
        .insert_header(("x-upstream", "echo"))
        .json(serde_json::json!({
            "method": req.method().as_str(),
            "path": req.path(),
            "query": req.query_string(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }))
}

impl FakeUpstream {
    pub async fn start() -> Self {
        let state = Arc::new(State {
            signer: Mutex::new(Signer::new(new_key("key-1"), vec![]).unwrap()),
            jwks_fetches: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::new(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
                .route("/.well-known/jwks.json", web::get().to(jwks))
                .route("/api/v1/analytics/slow", web::get().to(slow))
                .default_service(web::to(echo))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://127.0.0.1:{port}"),
            state,
            server: handle,
        }
    }

    /// Points the gateway's auth and analytics upstreams here.
    pub fn configure(&self, settings: &mut Settings) {
        settings.upstreams.auth_url = self.url.parse().unwrap();
        settings.upstreams.analytics_url = self.url.parse().unwrap();
        settings.upstreams.request_timeout = Duration::from_secs(2);
        self.state.sessions.lock().unwrap().push((
            secrecy::ExposeSecret::expose_secret(&settings.redis.url).to_owned(),
            settings.redis.key_prefix.clone(),
        ));
    }

    /// Runs `command` on the session key of `sid` in every configured
    /// gateway's Redis.
    fn on_session(&self, sid: Uuid, command: impl Fn(&str, &mut redis::Connection)) {
        for (url, prefix) in self.state.sessions.lock().unwrap().iter() {
            let mut conn = redis::Client::open(url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            command(&format!("{prefix}auth:session:{sid}"), &mut conn);
        }
    }

    /// Ends the session as auth's logout does: its key is deleted.
    pub fn logout(&self, sid: Uuid) {
        self.on_session(sid, |key, conn| {
            let _: () = redis::cmd("DEL").arg(key).query(conn).unwrap();
        });
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Signs with (and publishes only) a new key from now on.
    pub fn rotate(&self, kid: &str) {
        *self.state.signer.lock().unwrap() = Signer::new(new_key(kid), vec![]).unwrap();
    }

    /// Signs `claims` and opens their session (a hash, as auth keeps it,
    /// living as long as the token).
    pub fn sign(&self, claims: &Claims) -> String {
        let user = claims.sub.to_string();
        self.on_session(claims.sid, |key, conn| {
            let _: () = redis::pipe()
                .cmd("HSET")
                .arg(key)
                .arg("user_id")
                .arg(&user)
                .ignore()
                .cmd("EXPIRE")
                .arg(key)
                .arg(3600)
                .ignore()
                .query(conn)
                .unwrap();
        });
        self.state.signer.lock().unwrap().sign(claims).unwrap()
    }

    pub fn token_for(&self, user: Uuid, roles: Vec<Role>) -> String {
        self.sign(&claims(user, roles))
    }

    pub fn customer_token(&self) -> (Uuid, String) {
        let user = Uuid::new_v4();
        (user, self.token_for(user, vec![Role::Customer]))
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

pub fn claims(user: Uuid, roles: Vec<Role>) -> Claims {
    Claims::new(
        user,
        roles,
        Uuid::new_v4(),
        ISSUER,
        AUDIENCE,
        Duration::from_secs(600),
    )
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
