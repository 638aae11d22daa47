//! Login throttling (ADR 0019). Each attempt is counted in Redis *before*
//! its password is checked, in one Lua script that also answers whether it
//! may be checked at all, so parallel guesses cannot slip past the limit
//! while earlier ones are still being verified.
//!
//! Three fixed-window counters, `throttle.window` long:
//! - per (account, client network): the tight limit. A flood from one
//!   network locks that network out of that account, not the owner
//!   signing in from elsewhere;
//! - per client network across accounts: credential stuffing and spraying;
//! - per account across networks: never a lockout; past a threshold (a
//!   flood from many networks) each network's budget for the account
//!   shrinks, so a botnet is slowed while a network that has not guessed
//!   still gets attempts.
//!
//! A client network is the address's /24 (IPv4) or /64 (IPv6): one host
//! has a whole /64, and hopping addresses inside it or a /24 buys nothing.
//! Past a limit, login answers 429 with `Retry-After` (when the refusing
//! counter's window ends) without checking the password.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use keel_cache::Redis;
use redis::Script;
use sha2::{Digest, Sha256};

use crate::domain::Email;
use crate::settings::ThrottleSettings;

/// KEYS: the network's counter, then (unless the email is malformed) the
/// account's counter for that network and the account's own.
/// ARGV: window (ms), network limit, account-network limit, flood
/// threshold, account-network limit during a flood.
/// Returns `{1, 0}` when the attempt was counted and may be checked,
/// `{0, ms}` when refused: `ms` until the refusing counter resets.
const ADMIT: &str = r"
local window = tonumber(ARGV[1])
local function count(key)
  return tonumber(redis.call('GET', key) or '0')
end
local function remaining(key)
  local ms = redis.call('PTTL', key)
  if ms < 0 then return window end
  return ms
end
local wait = -1
if count(KEYS[1]) >= tonumber(ARGV[2]) then
  wait = remaining(KEYS[1])
end
if KEYS[2] then
  local limit = tonumber(ARGV[3])
  local tried = count(KEYS[2])
  if count(KEYS[3]) >= tonumber(ARGV[4]) then
    limit = math.min(limit, tonumber(ARGV[5]))
  end
  if tried >= limit then
    local ms = remaining(KEYS[2])
    -- Refused only by the flood's lower limit: the flood may end first.
    if tried < tonumber(ARGV[3]) then
      ms = math.min(ms, remaining(KEYS[3]))
    end
    wait = math.max(wait, ms)
  end
end
if wait >= 0 then
  return {0, wait}
end
for _, key in ipairs(KEYS) do
  redis.call('INCR', key)
  if redis.call('PTTL', key) < 0 then
    redis.call('PEXPIRE', key, window)
  end
end
return {1, 0}
";

/// KEYS as for [`ADMIT`], all three present. A successful login forgives
/// its network's failures for the account and takes its own count back
/// from the network's and the account's counters (a good login is not a
/// guess), without creating a counter that has already expired.
const SUCCEEDED: &str = r"
redis.call('DEL', KEYS[2])
for _, key in ipairs({KEYS[1], KEYS[3]}) do
  if tonumber(redis.call('GET', key) or '0') > 0 then
    redis.call('DECR', key)
  end
end
return 0
";

#[derive(Debug, Clone)]
pub struct Throttle {
    redis: Redis,
    settings: ThrottleSettings,
    admit: Arc<Script>,
    succeeded: Arc<Script>,
}

/// The counters one login attempt is charged to.
#[derive(Debug, Clone)]
pub struct Attempt {
    network: String,
    /// The (account, network) and account counters; `None` for a
    /// malformed email, which no account can have.
    account: Option<(String, String)>,
}

impl Throttle {
    pub fn new(redis: Redis, settings: ThrottleSettings) -> Self {
        Self {
            redis,
            settings,
            admit: Arc::new(Script::new(ADMIT)),
            succeeded: Arc::new(Script::new(SUCCEEDED)),
        }
    }

    /// The counters for a login as `email` from `ip` (`None`: no peer
    /// address, which only a test transport produces; one shared bucket).
    pub fn attempt(&self, email: Option<&Email>, ip: Option<IpAddr>) -> Attempt {
        let network = ip.map_or_else(|| "unknown".to_owned(), network_of);
        let account = email.map(|email| {
            // Hashed: Redis dumps should not list addresses.
            let digest = Sha256::digest(email.as_str().as_bytes());
            let account = format!("auth:throttle:account:{}", hex(&digest[..16]));
            (
                self.redis.key(&format!("{account}:net:{network}")),
                self.redis.key(&account),
            )
        });
        Attempt {
            network: self.redis.key(&format!("auth:throttle:net:{network}")),
            account,
        }
    }

    /// Counts `attempt` and lets its password be checked, or refuses it
    /// uncounted with the time until the refusing limit resets.
    pub async fn admit(&self, attempt: &Attempt) -> Result<Option<Duration>, keel_cache::Error> {
        let settings = &self.settings;
        let mut invocation = self.admit.key(&attempt.network);
        if let Some((account_network, account)) = &attempt.account {
            invocation.key(account_network).key(account);
        }
        invocation
            .arg(u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX))
            .arg(settings.max_failures_per_network)
            .arg(settings.max_failures_per_account_network)
            .arg(settings.account_flood_threshold)
            .arg(settings.max_failures_per_account_network_in_flood);
        let mut conn = self.redis.connection().await?;
        let (admitted, wait_ms): (i64, i64) = invocation.invoke_async(&mut conn).await?;
        Ok((admitted == 0).then(|| Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))))
    }

    /// The attempt logged in: see [`SUCCEEDED`].
    pub async fn succeeded(&self, attempt: &Attempt) -> Result<(), keel_cache::Error> {
        let Some((account_network, account)) = &attempt.account else {
            return Ok(());
        };
        let mut conn = self.redis.connection().await?;
        let _: i64 = self
            .succeeded
            .key(&attempt.network)
            .key(account_network)
            .key(account)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// The client network `ip` belongs to, as `a.b.c.0/24` or `x:x:x:x::/64`.
pub fn network_of(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let network = Ipv4Addr::from(u32::from(v4) & !0xff);
            format!("{network}/24")
        }
        IpAddr::V6(v6) => {
            let network = Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX));
            format!("{network}/64")
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::network_of;

    fn net(ip: &str) -> String {
        network_of(ip.parse().unwrap())
    }

    #[test]
    fn an_ipv4_address_belongs_to_its_24() {
        assert_eq!(net("198.51.100.7"), "198.51.100.0/24");
        assert_eq!(net("198.51.100.200"), net("198.51.100.7"));
        assert_ne!(net("198.51.101.7"), net("198.51.100.7"));
    }

    #[test]
    fn an_ipv6_address_belongs_to_its_64() {
        assert_eq!(net("2001:db8:1:2::7"), "2001:db8:1:2::/64");
        assert_eq!(
            net("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            net("2001:db8:1:2::7")
        );
        assert_ne!(net("2001:db8:1:3::7"), net("2001:db8:1:2::7"));
    }

    #[test]
    fn an_ipv4_mapped_ipv6_address_is_its_ipv4_network() {
        assert_eq!(net("::ffff:198.51.100.7"), "198.51.100.0/24");
    }
}
