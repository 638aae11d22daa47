//! Trace context crosses the bus: what a producer injects, a consumer's
//! span continues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use keel_messaging::trace::{FieldTableInjector, current_trace_headers, set_parent_from_headers};
use lapin::types::FieldTable;
use opentelemetry::propagation::Injector;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn a_consumer_span_continues_the_trace_of_the_span_that_published() {
    // What the telemetry crate installs at start.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));

    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("http.request");
        let (headers, trace_id) = request.in_scope(|| {
            let trace_id = tracing::Span::current()
                .context()
                .span()
                .span_context()
                .trace_id();
            (current_trace_headers(), trace_id)
        });
        let traceparent = headers.get("traceparent").expect("traceparent injected");
        assert!(traceparent.contains(&trace_id.to_string()), "{traceparent}");

        // On the wire: string headers in the AMQP field table.
        let mut table = FieldTable::default();
        for (key, value) in headers {
            FieldTableInjector(&mut table).set(&key, value);
        }

        let handler = tracing::info_span!("amqp.consume");
        set_parent_from_headers(&handler, &table);
        let continued = handler.context().span().span_context().trace_id();
        assert_eq!(continued, trace_id);
    });
}
