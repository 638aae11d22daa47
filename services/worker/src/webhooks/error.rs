//! Why processing an event failed, and whether trying again can help.

use keel_webhooks::process::ProcessError;
use uuid::Uuid;

use crate::webhooks::shopify::{ApiError, InvalidPayload};

#[derive(Debug, thiserror::Error)]
pub enum ProcessingError {
    /// The job names no stored event (deleted, or never committed).
    #[error("webhook event {0} does not exist")]
    UnknownEvent(Uuid),
    /// The event's source is not in `[webhooks.sources]`.
    #[error("source {0:?} is not configured in [webhooks.sources]")]
    UnknownSource(String),
    #[error("the payload cannot apply: {0}")]
    Payload(#[from] InvalidPayload),
    #[error(transparent)]
    ShopifyApi(#[from] ApiError),
    /// A payment for an order Keel does not have, cannot take (cancelled),
    /// or of another amount or currency than the order's.
    #[error("payment for order {order_id}: {source}")]
    Payment {
        order_id: Uuid,
        #[source]
        source: keel_commerce::orders::Error,
    },
    #[error(transparent)]
    Store(#[from] keel_commerce::orders::Error),
    #[error(transparent)]
    Event(#[from] ProcessError),
    #[error(transparent)]
    Database(#[from] keel_db::Error),
}

impl ProcessingError {
    pub fn paying(order_id: Uuid, source: keel_commerce::orders::Error) -> Self {
        ProcessingError::Payment { order_id, source }
    }

    /// Whether a later attempt may succeed: the database or the third
    /// party was unavailable, a lock was held too long, a concurrent write
    /// got in the way. Everything about the event's own content is
    /// permanent: retrying cannot change its bytes.
    pub fn is_transient(&self) -> bool {
        match self {
            ProcessingError::UnknownEvent(_)
            | ProcessingError::UnknownSource(_)
            | ProcessingError::Payload(_) => false,
            ProcessingError::ShopifyApi(e) => matches!(e, ApiError::Unavailable(_)),
            // An unknown order or an illegal transition will not fix itself;
            // the database being away will.
            ProcessingError::Payment { source, .. } => store_is_transient(source),
            ProcessingError::Store(e) => store_is_transient(e),
            ProcessingError::Event(ProcessError::Database(e)) => database_is_transient(e),
            ProcessingError::Event(ProcessError::UnknownStatus(_)) => false,
            ProcessingError::Database(e) => database_is_transient(e),
        }
    }
}

impl ProcessingError {
    /// True when PostgreSQL could not be reached: the consumer holds the
    /// job until it is back instead of spending one of its attempts
    /// (ADR 0022).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ProcessingError::Payment { source, .. } | ProcessingError::Store(source) => {
                source.is_unavailable()
            }
            ProcessingError::Event(ProcessError::Database(e)) | ProcessingError::Database(e) => {
                e.is_unavailable()
            }
            _ => false,
        }
    }
}

fn store_is_transient(error: &keel_commerce::orders::Error) -> bool {
    match error {
        keel_commerce::orders::Error::Database(e) => database_is_transient(e),
        keel_commerce::orders::Error::Outbox(keel_outbox::Error::Database(e)) => {
            database_is_transient(e)
        }
        // Another event about the same order inserted it first; the next
        // attempt updates it.
        keel_commerce::orders::Error::DuplicateExternalId => true,
        _ => false,
    }
}

/// Data that breaks a constraint (SQLSTATE classes 22 and 23) breaks it on
/// every attempt; anything else (connection loss, lock timeout, deadlock,
/// statement timeout, pool exhaustion) may pass later.
fn database_is_transient(error: &keel_db::Error) -> bool {
    !error.is_bad_input()
}
