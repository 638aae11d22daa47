//! A dead message as it comes off `{ns}.dead`: what the consumer runner (or
//! the broker itself) recorded about its death, read into a row.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keel_messaging::consumer::{
    ATTEMPT_HEADER, DEATH_REASON_HEADER, LAST_ERROR_HEADER, ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Namespace of the v5 ids given to dead messages that carry no id of their
/// own (a producer that set no `message_id` and sent no envelope): the id is
/// derived from the routing key and body, so a redelivery maps to one row.
const ANONYMOUS_NAMESPACE: Uuid = Uuid::from_u128(0x6b65_656c_2d64_6561_642d_6c65_7474_6572);

/// Longest text kept of an error or a reason (the runner already truncates
/// its headers to 1 KiB; the broker's own are short).
const MAX_TEXT: usize = 4096;

/// A dead message, ready to archive.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub id: Uuid,
    /// The envelope type (`webhook.process`); empty when unknown.
    pub message_type: String,
    /// The key it was first published with.
    pub routing_key: String,
    /// Exactly as it was on the bus.
    pub body: Vec<u8>,
    /// Every AMQP header, as JSON.
    pub headers: Value,
    /// `retries-exhausted`, `permanent`, `undecodable` (the runner's), or
    /// `broker:<reason>` when RabbitMQ dead-lettered it itself (e.g.
    /// `broker:delivery_limit` after a crash loop), else `unknown`.
    pub death_reason: String,
    pub last_error: Option<String>,
    /// Handler attempts in its last life (0 when unknown).
    pub attempts: i32,
    /// The queue it died in.
    pub queue: Option<String>,
}

impl NewDeadLetter {
    /// Reads a delivery's properties, routing key and body.
    pub fn from_parts(properties: &BasicProperties, routing_key: &str, body: &[u8]) -> Self {
        let headers = properties.headers().clone().unwrap_or_default();
        let envelope = EnvelopeHead::of(body);
        let original_key = text(&headers, ORIGINAL_ROUTING_KEY_HEADER);
        let routing_key = original_key.unwrap_or_else(|| routing_key.to_owned());
        let id = properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .or(envelope.id)
            .unwrap_or_else(|| {
                let mut name = routing_key.as_bytes().to_vec();
                name.push(0);
                name.extend_from_slice(body);
                Uuid::new_v5(&ANONYMOUS_NAMESPACE, &name)
            });
        let message_type = properties
            .kind()
            .as_ref()
            .map(|kind| kind.as_str().to_owned())
            .or(envelope.message_type)
            .unwrap_or_default();
        // The broker's own dead-lettering (delivery limit, a rejected or
        // expired message) records itself in `x-death`, newest first.
        let broker_death = first_death(&headers);
        let death_reason = text(&headers, DEATH_REASON_HEADER)
            .or_else(|| {
                broker_death
                    .and_then(|death| table_text(death, "reason"))
                    .map(|reason| format!("broker:{reason}"))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let queue = text(&headers, QUEUE_HEADER)
            .or_else(|| broker_death.and_then(|death| table_text(death, "queue")));
        let attempts = headers
            .inner()
            .get(ATTEMPT_HEADER)
            .and_then(integer)
            .and_then(|n| i32::try_from(n).ok())
            .unwrap_or(0)
            .max(0);
        Self {
            id,
            message_type: clean(&message_type),
            routing_key: clean(&routing_key),
            body: body.to_vec(),
            headers: table_to_json(&headers),
            death_reason: clean(&death_reason),
            last_error: text(&headers, LAST_ERROR_HEADER).map(|e| clean(&e)),
            attempts,
            queue: queue.map(|q| clean(&q)),
        }
    }
}

/// The envelope fields a body may carry, when it is JSON at all.
#[derive(Debug, Default, serde::Deserialize)]
struct EnvelopeHead {
    id: Option<Uuid>,
    #[serde(rename = "type")]
    message_type: Option<String>,
}

impl EnvelopeHead {
    fn of(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }
}

/// Text PostgreSQL accepts (no NUL: neither `text` nor `jsonb` can hold
/// one), at most [`MAX_TEXT`] bytes.
fn clean(value: &str) -> String {
    let mut cleaned: String = value.chars().filter(|c| *c != '\0').collect();
    if cleaned.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !cleaned.is_char_boundary(end) {
            end -= 1;
        }
        cleaned.truncate(end);
    }
    cleaned
}

fn text(headers: &FieldTable, key: &str) -> Option<String> {
    value_text(headers.inner().get(key)?)
}

fn table_text(table: &FieldTable, key: &str) -> Option<String> {
    value_text(table.inner().get(key)?)
}

fn value_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn first_death(headers: &FieldTable) -> Option<&FieldTable> {
    match headers.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        _ => None,
    }
}

/// AMQP headers as a JSON object: strings as strings (lossy UTF-8, NUL
/// dropped), numbers as numbers, tables and arrays nested, byte arrays as
/// base64.
pub fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (clean(key.as_str()), to_json(value)))
            .collect::<Map<_, _>>(),
    )
}

fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(Value::Null, Value::Number)
        }
        AMQPValue::Double(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => Value::String(format!("{}e-{}", d.value, d.scale)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => {
            Value::String(clean(&value_text(value).unwrap_or_default()))
        }
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(table) => table_to_json(table),
        AMQPValue::ByteArray(bytes) => Value::String(STANDARD.encode(bytes.as_slice())),
        AMQPValue::Void => Value::Null,
        other => integer(other).map_or(Value::Null, Value::from),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    fn long(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    #[test]
    fn the_runners_death_headers_become_columns() {
        let id = Uuid::now_v7();
        let mut headers = FieldTable::default();
        headers.insert(DEATH_REASON_HEADER.into(), long("retries-exhausted"));
        headers.insert(LAST_ERROR_HEADER.into(), long("upstream\0 answered 503"));
        headers.insert(ORIGINAL_ROUTING_KEY_HEADER.into(), long("webhook"));
        headers.insert(QUEUE_HEADER.into(), long("keel.jobs.webhook"));
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(6));
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(id.to_string()))
            .with_type(ShortString::from("webhook.process"))
            .with_headers(headers);
        let letter = NewDeadLetter::from_parts(&properties, "ignored-key", b"{}");
        assert_eq!(letter.id, id);
        assert_eq!(letter.message_type, "webhook.process");
        assert_eq!(letter.routing_key, "webhook");
        assert_eq!(letter.death_reason, "retries-exhausted");
        assert_eq!(letter.last_error.as_deref(), Some("upstream answered 503"));
        assert_eq!(letter.attempts, 6);
        assert_eq!(letter.queue.as_deref(), Some("keel.jobs.webhook"));
        assert_eq!(letter.headers["x-keel-attempt"], 6);
        assert_eq!(letter.body, b"{}");
    }

    #[test]
    fn a_message_the_broker_dead_lettered_is_explained_by_its_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), long("delivery_limit"));
        death.insert("queue".into(), long("keel.jobs.export"));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let properties = BasicProperties::default().with_headers(headers);
        let body = br#"{"id":"0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11","type":"export.run"}"#;
        let letter = NewDeadLetter::from_parts(&properties, "export", body);
        assert_eq!(letter.death_reason, "broker:delivery_limit");
        assert_eq!(letter.queue.as_deref(), Some("keel.jobs.export"));
        assert_eq!(
            letter.id.to_string(),
            "0193b3c8-6c1e-7a52-9b0e-3c2f5a0c4d11"
        );
        assert_eq!(letter.message_type, "export.run");
        assert_eq!(letter.headers["x-death"][0]["reason"], "delivery_limit");
    }

    #[test]
    fn a_message_without_any_id_gets_the_same_derived_id_every_time() {
        let properties = BasicProperties::default();
        let first = NewDeadLetter::from_parts(&properties, "webhook", b"\xff not json");
        let again = NewDeadLetter::from_parts(&properties, "webhook", b"\xff not json");
        let other = NewDeadLetter::from_parts(&properties, "webhook", b"\xff other");
        assert_eq!(first.id, again.id);
        assert_ne!(first.id, other.id);
        assert_eq!(first.death_reason, "unknown");
        assert_eq!(first.attempts, 0);
    }
}
