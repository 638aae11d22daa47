//! JSON Schema of every message on the bus, as committed under `proto/schemas/`.

use schemars::{JsonSchema, schema_for};

use crate::{DomainEvent, Envelope, Job};

/// `(file name, pretty-printed schema)` for each exchange's message type.
pub fn all() -> Vec<(&'static str, String)> {
    vec![
        ("job.schema.json", render::<Envelope<Job>>()),
        ("event.schema.json", render::<Envelope<DomainEvent>>()),
    ]
}

fn render<T: JsonSchema>() -> String {
    let schema = schema_for!(T);
    // A schema built by schemars is always serialisable; fall back to an
    // empty document rather than panicking in library code.
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
