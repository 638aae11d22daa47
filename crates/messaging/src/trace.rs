//! W3C trace context in AMQP headers (`traceparent`, `tracestate`).
//!
//! The global propagator is installed by the telemetry crate; this module
//! only moves its output in and out of lapin's [`FieldTable`].

use std::collections::BTreeMap;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Writes propagation fields into AMQP headers as long strings.
#[derive(Debug)]
pub struct FieldTableInjector<'a>(pub &'a mut FieldTable);

impl Injector for FieldTableInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(
            ShortString::from(key),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
}

/// Reads propagation fields from AMQP headers; only string values count.
#[derive(Debug)]
pub struct FieldTableExtractor<'a>(pub &'a FieldTable);

impl Extractor for FieldTableExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header_str(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

/// The string value of header `key`, whichever AMQP string type carries it.
pub(crate) fn header_str<'a>(headers: &'a FieldTable, key: &str) -> Option<&'a str> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
        AMQPValue::ShortString(value) => Some(value.as_str()),
        _ => None,
    }
}

/// The current `tracing` span's context as propagation headers, e.g.
/// `{"traceparent": "00-…"}`; empty when there is no sampled trace.
///
/// The outbox stores this at enqueue time so the trace continues from the
/// request that wrote the row, not from the relay.
pub fn current_trace_headers() -> BTreeMap<String, String> {
    let context = tracing::Span::current().context();
    let mut headers = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers);
    });
    headers.into_iter().collect()
}

/// Makes the context carried in `headers` the parent of `span`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &FieldTable) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&FieldTableExtractor(headers))
    });
    // Fails only when the span is disabled (no OpenTelemetry layer): then
    // there is no trace to continue.
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_fields_are_read_back() {
        let mut table = FieldTable::default();
        FieldTableInjector(&mut table).set("traceparent", "00-abc-def-01".to_owned());
        let extractor = FieldTableExtractor(&table);
        assert_eq!(extractor.get("traceparent"), Some("00-abc-def-01"));
        assert_eq!(extractor.keys(), vec!["traceparent"]);
        assert_eq!(extractor.get("tracestate"), None);
    }
}
