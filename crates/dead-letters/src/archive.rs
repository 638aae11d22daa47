//! Storing one dead message: once per message id, and a requeued message
//! that dies again brings its original row back to `dead`.

use keel_db::GenericClient;

use crate::error::Result;
use crate::letter::NewDeadLetter;

/// What [`archive`] did with a dead message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archived {
    /// A new row.
    Stored,
    /// The message was requeued earlier (its row's `requeued_as`) and died
    /// again: that row is `dead` again with the new reason and error.
    DiedAgain,
    /// Already archived (the broker delivered the dead letter twice): nothing
    /// changed.
    Duplicate,
}

impl Archived {
    /// The `outcome` label of the archiver's metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Archived::Stored => "stored",
            Archived::DiedAgain => "died_again",
            Archived::Duplicate => "duplicate",
        }
    }
}

/// Archives `letter`. Each statement commits on its own and each is
/// idempotent, so a crash between them (or before the ack) only leads to a
/// redelivery that finds the row.
pub async fn archive(client: &impl GenericClient, letter: &NewDeadLetter) -> Result<Archived> {
    // The message a requeue enqueued has died too: revive that row. Only a
    // row still `requeued` qualifies, so a second copy of this death finds
    // it `dead` and falls through to the duplicate case.
    let revive = client
        .prepare_cached(
            "UPDATE dead_letters SET status = 'dead', \
                 death_reason = $2, last_error = $3, attempts = $4, queue = $5, headers = $6, \
                 dead_at = now(), deaths = deaths + 1 \
             WHERE requeued_as = $1 AND status = 'requeued'",
        )
        .await?;
    let revived = client
        .execute(
            &revive,
            &[
                &letter.id,
                &letter.death_reason,
                &letter.last_error,
                &letter.attempts,
                &letter.queue,
                &letter.headers,
            ],
        )
        .await?;
    if revived > 0 {
        return Ok(Archived::DiedAgain);
    }

    // A first death. `ON CONFLICT` makes a concurrent copy wait and then do
    // nothing; a death of a message some row was requeued as is already
    // recorded on that row.
    let insert = client
        .prepare_cached(
            "INSERT INTO dead_letters \
                 (id, message_type, routing_key, body, headers, death_reason, last_error, attempts, queue) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
             WHERE NOT EXISTS (SELECT 1 FROM dead_letters WHERE requeued_as = $1) \
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    let inserted = client
        .execute(
            &insert,
            &[
                &letter.id,
                &letter.message_type,
                &letter.routing_key,
                &letter.body,
                &letter.headers,
                &letter.death_reason,
                &letter.last_error,
                &letter.attempts,
                &letter.queue,
            ],
        )
        .await?;
    Ok(if inserted > 0 {
        Archived::Stored
    } else {
        Archived::Duplicate
    })
}
