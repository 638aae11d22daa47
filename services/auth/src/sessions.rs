//! Sessions and refresh tokens in Redis.
//!
//! A refresh token is `<session id>.<256 random bits>` (base64url). Only its
//! SHA-256 is stored. Keys (all behind the service's prefix):
//! - `auth:session:{sid}`: a hash: `user_id`, `user_agent`, `ip`,
//!   `created_at`, `last_used_at`, `expires_at` (ms), `current` (hash of the
//!   live token), `prev` + `prev_until` (its immediate predecessor and the
//!   end of its grace period) and `grace` (the pair that predecessor was
//!   exchanged for, encrypted, see below).
//! - `auth:session:{sid}:spent`: every spent token hash of the session, so
//!   any older token is recognised as reuse.
//! - `auth:user:{uid}:sessions`: the user's session ids, for listing and
//!   logout-all.
//!
//! Both session keys expire at `min(absolute expiry, last use + idle
//! timeout)`: Redis forgets dead sessions by itself.
//!
//! Rotation is one Lua script, so two concurrent refreshes cannot both
//! rotate. Within the grace period the predecessor gets the *same* pair
//! again. That pair must be stored to be returned, yet a Redis dump must
//! not yield a usable refresh token: it is stored AES-256-GCM encrypted
//! under a key derived from the predecessor's plaintext, which Redis never
//! sees. Only someone presenting that token can decrypt it, and it lives
//! only as long as the grace period matters (overwritten at the next
//! rotation, gone with the session).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use keel_cache::Redis;
use redis::Script;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::settings::SessionSettings;
use crate::throttle::hex;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Redis(#[from] keel_cache::Error),
    #[error("redis command failed: {0}")]
    Command(#[from] redis::RedisError),
    #[error("the system random generator failed")]
    Random,
    #[error("cannot seal the grace-period pair")]
    Seal,
}

/// What the client receives from login and refresh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u64,
}

/// A refresh token as presented: its session and its hash. The plaintext
/// stays in here only to derive the grace key.
pub struct Presented {
    sid: Uuid,
    hash: String,
    plaintext: String,
}

impl std::fmt::Debug for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Presented")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl Presented {
    /// `None` for anything not shaped like one of our tokens.
    pub fn parse(token: &str) -> Option<Self> {
        let (sid, secret) = token.split_once('.')?;
        let sid = Uuid::try_parse(sid).ok()?;
        let bytes = URL_SAFE_NO_PAD.decode(secret).ok()?;
        (bytes.len() == 32).then(|| Self {
            sid,
            hash: token_hash(token),
            plaintext: token.to_owned(),
        })
    }

    pub fn sid(&self) -> Uuid {
        self.sid
    }
}

/// A fresh refresh token for `sid` and its stored hash.
fn new_token(sid: Uuid) -> Result<(String, String), SessionError> {
    let mut secret = [0u8; 32];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| SessionError::Random)?;
    let token = format!("{}.{}", sid.simple(), URL_SAFE_NO_PAD.encode(secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// One row of `GET /sessions`.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// The result of presenting a refresh token.
#[derive(Debug)]
pub enum Rotation {
    /// Rotated: return the new pair.
    Rotated,
    /// The immediate predecessor within the grace period: the same pair again.
    Replayed(TokenPair),
    /// A spent token after its grace, or an older one: the session is gone.
    Reused { user_id: Uuid },
    /// Unknown, expired or revoked.
    Refused,
}

const ROTATE: &str = r"
local now = tonumber(ARGV[3])
local grace_ms = tonumber(ARGV[4])
local idle_ms = tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'current', 'prev', 'prev_until', 'grace', 'last_used_at', 'expires_at', 'user_id')
if not s[1] then return {'missing'} end
local expires_at = tonumber(s[6])
if now >= expires_at or now >= tonumber(s[5]) + idle_ms then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'expired', s[7]}
end
if ARGV[1] == s[1] then
  local prev_until = 0
  if grace_ms > 0 then prev_until = now + grace_ms end
  redis.call('HSET', KEYS[1], 'current', ARGV[2], 'prev', ARGV[1], 'prev_until', prev_until, 'grace', ARGV[6], 'last_used_at', now)
  redis.call('SADD', KEYS[2], ARGV[1])
  local until_ms = math.min(expires_at, now + idle_ms)
  redis.call('PEXPIREAT', KEYS[1], until_ms)
  redis.call('PEXPIREAT', KEYS[2], until_ms)
  return {'rotated', s[7]}
end
if s[2] and ARGV[1] == s[2] and now <= tonumber(s[3]) then
  return {'grace', s[7], s[4]}
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return {'reuse', s[7]}
end
return {'unknown'}
";

#[derive(Clone)]
pub struct Sessions {
    redis: Redis,
    settings: SessionSettings,
    rotate: std::sync::Arc<Script>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Sessions {
    pub fn new(redis: Redis, settings: SessionSettings) -> Self {
        Self {
            redis,
            settings,
            rotate: std::sync::Arc::new(Script::new(ROTATE)),
        }
    }

    fn session_key(&self, sid: Uuid) -> String {
        self.redis.key(&format!("auth:session:{sid}"))
    }

    fn spent_key(&self, sid: Uuid) -> String {
        self.redis.key(&format!("auth:session:{sid}:spent"))
    }

    fn user_key(&self, user_id: Uuid) -> String {
        self.redis.key(&format!("auth:user:{user_id}:sessions"))
    }

    /// A new session with its first refresh token.
    pub async fn create(
        &self,
        user_id: Uuid,
        user_agent: Option<&str>,
        ip: Option<IpAddr>,
    ) -> Result<(Uuid, String), SessionError> {
        let sid = Uuid::new_v4();
        let (token, hash) = new_token(sid)?;
        let now = now_ms();
        let expires_at = now.saturating_add(millis(self.settings.refresh_ttl));
        let until = expires_at.min(now.saturating_add(millis(self.settings.idle_timeout)));
        let key = self.session_key(sid);
        let user_key = self.user_key(user_id);
        let mut conn = self.redis.connection().await?;
        let () = redis::pipe()
            .atomic()
            .hset_multiple(
                &key,
                &[
                    ("user_id", user_id.to_string()),
                    (
                        "user_agent",
                        user_agent.unwrap_or_default().chars().take(256).collect(),
                    ),
                    ("ip", ip.map(|ip| ip.to_string()).unwrap_or_default()),
                    ("created_at", now.to_string()),
                    ("last_used_at", now.to_string()),
                    ("expires_at", expires_at.to_string()),
                    ("current", hash),
                ],
            )
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(until)
            .ignore()
            .sadd(&user_key, sid.to_string())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&user_key)
            .arg(millis(self.settings.refresh_ttl))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok((sid, token))
    }

    /// The session's user, if the session exists (first step of a refresh:
    /// the new access token needs the user's current roles).
    pub async fn owner(&self, sid: Uuid) -> Result<Option<Uuid>, SessionError> {
        let mut conn = self.redis.connection().await?;
        let user: Option<String> = redis::cmd("HGET")
            .arg(self.session_key(sid))
            .arg("user_id")
            .query_async(&mut conn)
            .await?;
        Ok(user.and_then(|u| Uuid::try_parse(&u).ok()))
    }

    /// A new refresh token for `presented`'s session, not yet stored.
    pub fn next_token(&self, presented: &Presented) -> Result<String, SessionError> {
        Ok(new_token(presented.sid)?.0)
    }

    /// Atomically exchanges `presented` for `pair` (whose refresh token came
    /// from [`next_token`](Self::next_token)).
    pub async fn rotate(
        &self,
        presented: &Presented,
        pair: &TokenPair,
    ) -> Result<Rotation, SessionError> {
        let grace = !self.settings.grace_period.is_zero();
        let sealed = if grace {
            seal(&presented.plaintext, pair)?
        } else {
            String::new()
        };
        let mut conn = self.redis.connection().await?;
        let reply: Vec<String> = self
            .rotate
            .key(self.session_key(presented.sid))
            .key(self.spent_key(presented.sid))
            .arg(&presented.hash)
            .arg(token_hash(&pair.refresh_token))
            .arg(now_ms())
            .arg(millis(self.settings.grace_period))
            .arg(millis(self.settings.idle_timeout))
            .arg(sealed)
            .invoke_async(&mut conn)
            .await?;
        let user = reply.get(1).and_then(|u| Uuid::try_parse(u).ok());
        Ok(match (reply.first().map(String::as_str), user) {
            (Some("rotated"), _) => Rotation::Rotated,
            (Some("grace"), _) => match reply
                .get(2)
                .and_then(|blob| open(&presented.plaintext, blob))
            {
                Some(pair) => Rotation::Replayed(pair),
                None => Rotation::Refused,
            },
            (Some("reuse"), Some(user_id)) => {
                self.forget(user_id, presented.sid).await?;
                Rotation::Reused { user_id }
            }
            (Some("expired"), Some(user_id)) => {
                self.forget(user_id, presented.sid).await?;
                Rotation::Refused
            }
            _ => Rotation::Refused,
        })
    }

    async fn forget(&self, user_id: Uuid, sid: Uuid) -> Result<(), SessionError> {
        let mut conn = self.redis.connection().await?;
        let () = redis::cmd("SREM")
            .arg(self.user_key(user_id))
            .arg(sid.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Deletes one session of `user_id` (nothing when it is someone else's).
    /// Returns whether it existed.
    pub async fn revoke(&self, user_id: Uuid, sid: Uuid) -> Result<bool, SessionError> {
        if self.owner(sid).await? != Some(user_id) {
            return Ok(false);
        }
        let mut conn = self.redis.connection().await?;
        let () = redis::pipe()
            .atomic()
            .del(&[self.session_key(sid), self.spent_key(sid)])
            .ignore()
            .srem(self.user_key(user_id), sid.to_string())
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(true)
    }

    /// Logout with a refresh token: revokes its session if the token is
    /// the session's (live, in grace, or spent). Unknown tokens do nothing.
    pub async fn revoke_by_token(&self, presented: &Presented) -> Result<(), SessionError> {
        let mut conn = self.redis.connection().await?;
        let (current, prev, user, spent): (Option<String>, Option<String>, Option<String>, bool) =
            redis::pipe()
                .hget(self.session_key(presented.sid), "current")
                .hget(self.session_key(presented.sid), "prev")
                .hget(self.session_key(presented.sid), "user_id")
                .sismember(self.spent_key(presented.sid), &presented.hash)
                .query_async(&mut conn)
                .await?;
        let belongs = current.as_deref() == Some(presented.hash.as_str())
            || prev.as_deref() == Some(presented.hash.as_str())
            || spent;
        if let (true, Some(user_id)) = (belongs, user.and_then(|u| Uuid::try_parse(&u).ok())) {
            self.revoke(user_id, presented.sid).await?;
        }
        Ok(())
    }

    /// Every live session id of the user (stale ids are dropped on the way).
    async fn session_ids(&self, user_id: Uuid) -> Result<Vec<Uuid>, SessionError> {
        let mut conn = self.redis.connection().await?;
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.user_key(user_id))
            .query_async(&mut conn)
            .await?;
        Ok(ids
            .iter()
            .filter_map(|id| Uuid::try_parse(id).ok())
            .collect())
    }

    /// Revokes every session of the user except `keep`. Returns how many.
    pub async fn revoke_all(
        &self,
        user_id: Uuid,
        keep: Option<Uuid>,
    ) -> Result<usize, SessionError> {
        let mut revoked = 0;
        for sid in self.session_ids(user_id).await? {
            if Some(sid) != keep && self.revoke(user_id, sid).await? {
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    pub async fn list(&self, user_id: Uuid) -> Result<Vec<SessionInfo>, SessionError> {
        let mut conn = self.redis.connection().await?;
        let mut sessions = Vec::new();
        for sid in self.session_ids(user_id).await? {
            let fields: Vec<Option<String>> = redis::cmd("HMGET")
                .arg(self.session_key(sid))
                .arg(&["user_id", "created_at", "last_used_at", "user_agent", "ip"])
                .query_async(&mut conn)
                .await?;
            let [Some(owner), Some(created), Some(used), agent, ip] =
                <[Option<String>; 5]>::try_from(fields).unwrap_or_default()
            else {
                // Expired on its own: drop the dangling id.
                self.forget(user_id, sid).await?;
                continue;
            };
            if owner != user_id.to_string() {
                continue;
            }
            sessions.push(SessionInfo {
                id: sid,
                created_at: to_time(created.parse().unwrap_or_default()),
                last_used_at: to_time(used.parse().unwrap_or_default()),
                user_agent: agent.filter(|a| !a.is_empty()),
                ip: ip.filter(|i| !i.is_empty()),
            });
        }
        sessions.sort_by_key(|s| std::cmp::Reverse(s.last_used_at));
        Ok(sessions)
    }

    /// Whether the session still exists and is the user's: bearer tokens of
    /// revoked sessions are refused by this service at once.
    pub async fn is_live(&self, user_id: Uuid, sid: Uuid) -> Result<bool, SessionError> {
        Ok(self.owner(sid).await? == Some(user_id))
    }
}

fn grace_key(presented: &str) -> Result<LessSafeKey, SessionError> {
    // Domain-separated from the stored hash (plain SHA-256 of the token).
    let mut hasher = Sha256::new();
    hasher.update(b"keel-auth refresh grace v1\0");
    hasher.update(presented.as_bytes());
    let key = UnboundKey::new(&AES_256_GCM, &hasher.finalize()).map_err(|_| SessionError::Seal)?;
    Ok(LessSafeKey::new(key))
}

fn seal(presented: &str, pair: &TokenPair) -> Result<String, SessionError> {
    let key = grace_key(presented)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SessionError::Random)?;
    let mut data = serde_json::to_vec(pair).map_err(|_| SessionError::Seal)?;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| SessionError::Seal)?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&data);
    Ok(URL_SAFE_NO_PAD.encode(blob))
}

fn open(presented: &str, blob: &str) -> Option<TokenPair> {
    let key = grace_key(presented).ok()?;
    let blob = URL_SAFE_NO_PAD.decode(blob).ok()?;
    if blob.len() < NONCE_LEN {
        return None;
    }
    let (nonce, sealed) = blob.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut sealed = sealed.to_vec();
    let plain = key.open_in_place(nonce, Aad::empty(), &mut sealed).ok()?;
    serde_json::from_slice(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_pair_opens_only_with_the_presented_token() {
        let pair = TokenPair {
            access_token: "a".into(),
            refresh_token: "r".into(),
            token_type: "Bearer".into(),
            expires_in: 900,
        };
        let blob = seal("old-token", &pair).unwrap();
        assert_eq!(open("old-token", &blob), Some(pair));
        assert_eq!(open("other-token", &blob), None);
    }

    #[test]
    fn only_well_formed_tokens_parse() {
        let (token, hash) = new_token(Uuid::new_v4()).unwrap();
        assert_eq!(Presented::parse(&token).unwrap().hash, hash);
        assert!(Presented::parse("garbage").is_none());
        assert!(Presented::parse(&format!("{}.short", Uuid::new_v4().simple())).is_none());
    }
}
