//! Jobs: requests for work, routed by [`Job::queue`] on the `jobs` exchange.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::MessageBody;

/// Every job the worker knows how to run.
///
/// A job carries only the id of the row that describes the work: the row is
/// the source of truth, so a redelivered or replayed job always sees current
/// state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data")]
pub enum Job {
    /// Apply a captured inbound webhook (`webhook_events` row).
    #[serde(rename = "webhook.process")]
    WebhookProcess(WebhookProcess),
    /// Build an export file (`exports` row).
    #[serde(rename = "export.run")]
    ExportRun(ExportRun),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookProcess {
    pub event_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ExportRun {
    pub export_id: Uuid,
}

/// The work queues, one per kind of job, so each can be scaled and
/// monitored on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobQueue {
    Webhook,
    Export,
}

impl JobQueue {
    pub const ALL: [JobQueue; 2] = [JobQueue::Webhook, JobQueue::Export];

    /// Routing key on the `jobs` exchange and suffix of the queue name.
    pub fn routing_key(self) -> &'static str {
        match self {
            JobQueue::Webhook => "webhook",
            JobQueue::Export => "export",
        }
    }
}

impl Job {
    pub fn queue(&self) -> JobQueue {
        match self {
            Job::WebhookProcess(_) => JobQueue::Webhook,
            Job::ExportRun(_) => JobQueue::Export,
        }
    }
}

impl MessageBody for Job {
    fn message_type(&self) -> &'static str {
        match self {
            Job::WebhookProcess(_) => "webhook.process",
            Job::ExportRun(_) => "export.run",
        }
    }

    fn version(&self) -> u16 {
        1
    }
}
