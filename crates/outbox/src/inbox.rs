//! De-duplication for consumers: at-least-once delivery becomes
//! effectively-once application.

use keel_db::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// Records that `consumer` is applying `message_id`; `true` the first time,
/// `false` when it was already applied.
///
/// Call it inside the transaction that applies the message: if that
/// transaction rolls back, so does the claim, and the redelivery is applied.
/// On `false`, commit nothing else and acknowledge the message.
pub async fn claim(client: &impl GenericClient, consumer: &str, message_id: Uuid) -> Result<bool> {
    let inserted = client
        .execute(
            "INSERT INTO inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&consumer, &message_id],
        )
        .await?;
    Ok(inserted == 1)
}
