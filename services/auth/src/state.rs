//! What handlers share: built once in `startup`, cloned into each worker.

use std::sync::Arc;
use std::time::Duration;

use keel_token::{Claims, Signer, Verifier};
use uuid::Uuid;

use crate::passwords::Hasher;
use crate::sessions::{Sessions, TokenPair};
use crate::settings::TokenSettings;
use crate::throttle::Throttle;
use crate::users::{User, Users};

#[derive(Debug, Clone)]
pub struct AppState {
    pub users: Users,
    pub hasher: Hasher,
    pub sessions: Sessions,
    pub throttle: Throttle,
    pub signer: Arc<Signer>,
    pub verifier: Arc<Verifier>,
    pub tokens: TokenSettings,
    /// Proxies (the gateway, an ingress) whose `X-Forwarded-For` is believed
    /// when attributing a login to a client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl AppState {
    /// An access token for `user` in session `sid`, paired with `refresh_token`.
    pub fn pair(
        &self,
        user: &User,
        sid: Uuid,
        refresh_token: String,
    ) -> Result<TokenPair, keel_token::Error> {
        let claims = Claims::new(
            user.id,
            user.roles.clone(),
            sid,
            &self.tokens.issuer,
            &self.tokens.audience,
            self.tokens.access_ttl,
        );
        Ok(TokenPair {
            access_token: self.signer.sign(&claims)?,
            refresh_token,
            token_type: "Bearer".to_owned(),
            expires_in: self.tokens.access_ttl.as_secs(),
        })
    }

    pub fn jwks_max_age(&self) -> Duration {
        self.tokens.jwks_max_age
    }
}
