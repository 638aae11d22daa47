//! `Idempotency-Key` records: the first response to a keyed request is
//! stored with the key (scoped to the user) and replayed to retries.
//!
//! A handler makes one call, [`begin`], and is told what to do next
//! ([`NextAction`]): do the work in the transaction it is handed (then
//! [`complete`] and commit), answer with the stored response, or refuse a
//! key reused for another request.
//!
//! Concurrency: [`claim`] inserts the key row inside the caller's
//! transaction, *before* the work it protects. A second request with the
//! same key blocks on the primary key until the first transaction ends:
//! after a commit it sees the stored response and replays it; after a
//! rollback its own insert goes through and it does the work itself. So two
//! concurrent requests create exactly one order, and neither is told to
//! come back later.

use chrono::{DateTime, Utc};
use keel_db::{Client, GenericClient, Transaction};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::Result;

/// SHA-256 over method, path and body bytes, with separators so the parts
/// cannot run into each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(method: &str, path: &str, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update(b"\n");
        hash.update(path.as_bytes());
        hash.update(b"\n");
        hash.update(body);
        Self(hash.finalize().into())
    }
}

/// The response stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

/// What [`claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new (or its predecessor expired): do the work, then
    /// [`complete`] in the same transaction.
    Claimed,
    /// The same request already ran: answer with this.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Mismatch,
}

/// A keyed request: whose, under which key, and what it was.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub user_id: Uuid,
    pub key: &'a str,
    pub fingerprint: Fingerprint,
    /// When a record claimed now stops being replayed.
    pub expires_at: DateTime<Utc>,
}

/// What [`begin`] tells the caller to do.
#[derive(Debug)]
pub enum NextAction<'c> {
    /// Do the work in this transaction; with a key, store its response
    /// with [`complete`] before committing (a rollback frees the key).
    Proceed(Transaction<'c>),
    /// The same request already ran: answer with this (nothing was written).
    Replay(StoredResponse),
    /// The key was used for a different request: refuse (nothing was written).
    Conflict,
}

/// Starts a request that may carry a key. Without one: a transaction for
/// the work. With one: a retry of a committed request is answered from its
/// record without a transaction or a lock; otherwise the key is claimed in
/// the transaction handed back, so it commits or rolls back with the work.
/// A concurrent request with the same key waits here until the first ends,
/// then replays its response (or, after a rollback, proceeds itself).
pub async fn begin<'c>(client: &'c mut Client, key: Option<Key<'_>>) -> Result<NextAction<'c>> {
    if let Some(k) = &key {
        match lookup(&*client, k.user_id, k.key, k.fingerprint).await? {
            Some(Claim::Replay(stored)) => return Ok(NextAction::Replay(stored)),
            Some(Claim::Mismatch) => return Ok(NextAction::Conflict),
            Some(Claim::Claimed) | None => {}
        }
    }
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    let Some(k) = key else {
        return Ok(NextAction::Proceed(tx));
    };
    match claim(&tx, k.user_id, k.key, k.fingerprint, k.expires_at).await? {
        Claim::Claimed => Ok(NextAction::Proceed(tx)),
        Claim::Replay(stored) => {
            // Nothing was written; end the transaction before answering.
            tx.rollback().await.map_err(keel_db::Error::from)?;
            Ok(NextAction::Replay(stored))
        }
        Claim::Mismatch => {
            tx.rollback().await.map_err(keel_db::Error::from)?;
            Ok(NextAction::Conflict)
        }
    }
}

/// Looks for a live, completed record without taking any lock: the fast
/// path for retries. `None` means "claim it" (absent, expired, or — in a
/// race — not yet committed; [`claim`] settles those).
pub async fn lookup(
    client: &impl GenericClient,
    user_id: Uuid,
    key: &str,
    fingerprint: Fingerprint,
) -> Result<Option<Claim>> {
    let statement = client
        .prepare_cached(
            "SELECT fingerprint, response_status, response_body, response_location \
             FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND expires_at > now()",
        )
        .await?;
    let Some(row) = client.query_opt(&statement, &[&user_id, &key]).await? else {
        return Ok(None);
    };
    Ok(Some(settle(&row, fingerprint)))
}

/// Claims `key` for `user_id` inside the caller's transaction (see the
/// module documentation for why it must be the same transaction as the
/// work). An expired record is taken over as if it did not exist.
pub async fn claim(
    tx: &impl GenericClient,
    user_id: Uuid,
    key: &str,
    fingerprint: Fingerprint,
    expires_at: DateTime<Utc>,
) -> Result<Claim> {
    // Prepared once per connection, like every statement on this path:
    // a text query costs a parse round trip each time.
    let insert = tx
        .prepare_cached(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, expires_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, key) DO UPDATE \
                 SET fingerprint = EXCLUDED.fingerprint, expires_at = EXCLUDED.expires_at, \
                     response_status = NULL, response_body = NULL, response_location = NULL, \
                     created_at = now() \
                 WHERE idempotency_keys.expires_at <= now() \
             RETURNING 1",
        )
        .await?;
    let claimed = tx
        .query_opt(
            &insert,
            &[&user_id, &key, &fingerprint.0.as_slice(), &expires_at],
        )
        .await?;
    if claimed.is_some() {
        return Ok(Claim::Claimed);
    }
    // The conflicting row is committed (the insert waited for it) and live.
    let stored = tx
        .prepare_cached(
            "SELECT fingerprint, response_status, response_body, response_location \
             FROM idempotency_keys WHERE user_id = $1 AND key = $2",
        )
        .await?;
    let row = tx.query_one(&stored, &[&user_id, &key]).await?;
    Ok(settle(&row, fingerprint))
}

/// What a committed record means for a request with `fingerprint`.
fn settle(row: &tokio_postgres::Row, fingerprint: Fingerprint) -> Claim {
    let stored: Vec<u8> = row.get(0);
    if stored != fingerprint.0 {
        return Claim::Mismatch;
    }
    let status: Option<i16> = row.get(1);
    let body: Option<Vec<u8>> = row.get(2);
    match (status, body) {
        (Some(status), Some(body)) => Claim::Replay(StoredResponse {
            status: u16::try_from(status).unwrap_or(500),
            body,
            location: row.get(3),
        }),
        // Cannot happen: responses are written before the claim commits.
        // Treat a hand-edited row as a mismatch rather than replaying nothing.
        _ => Claim::Mismatch,
    }
}

/// Stores the response of a [`Claim::Claimed`] key, in the same transaction.
pub async fn complete(
    tx: &impl GenericClient,
    user_id: Uuid,
    key: &str,
    response: &StoredResponse,
) -> Result<()> {
    let update = tx
        .prepare_cached(
            "UPDATE idempotency_keys \
             SET response_status = $3, response_body = $4, response_location = $5 \
             WHERE user_id = $1 AND key = $2",
        )
        .await?;
    tx.execute(
        &update,
        &[
            &user_id,
            &key,
            &i16::try_from(response.status).unwrap_or(i16::MAX),
            &response.body,
            &response.location,
        ],
    )
    .await?;
    Ok(())
}

/// Deletes up to `batch` expired records; returns how many. Callers loop
/// while it returns `batch`, so one pass never holds a long transaction.
pub async fn prune_expired(client: &impl GenericClient, batch: i64) -> Result<u64> {
    Ok(client
        .execute(
            "DELETE FROM idempotency_keys WHERE (user_id, key) IN ( \
                 SELECT user_id, key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1)",
            &[&batch],
        )
        .await?)
}
