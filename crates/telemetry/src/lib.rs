//! Logs, traces and metrics, set up the same way in every service.
//!
//! # Layout
//! - [`settings`]: the `telemetry` configuration section.
//! - [`init`] / [`Guard`]: installs the global `tracing` subscriber (JSON or
//!   pretty logs, `RUST_LOG` wins over the configured filter), the W3C
//!   trace-context propagator and an OpenTelemetry tracer. Spans are always
//!   recorded so trace context flows across HTTP and AMQP hops; they are
//!   exported only when an OTLP endpoint is configured. Dropping the guard
//!   flushes pending spans.
//! - [`metrics`]: the Prometheus registry every component registers into,
//!   and its text encoding for `/metrics`.

pub mod metrics;
pub mod settings;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use settings::{LogFormat, TelemetrySettings};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("telemetry.filter is not a valid tracing filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Who is emitting: becomes the OpenTelemetry resource and a log field.
#[derive(Debug, Clone)]
pub struct ServiceIdentity {
    pub name: &'static str,
    pub version: &'static str,
    /// Unique per process, so two replicas' spans and metrics can be told apart.
    pub instance_id: String,
}

impl ServiceIdentity {
    pub fn new(name: &'static str, version: &'static str) -> Self {
        Self {
            name,
            version,
            instance_id: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// Flushes and shuts down the tracer provider when dropped.
#[derive(Debug)]
#[must_use = "dropping the guard shuts telemetry down"]
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Export what is still buffered; an unreachable collector must not
        // block shutdown for long, and the SDK bounds this by its timeout.
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
    }
}

/// Installs logging and tracing for the whole process. Call once, first thing in `main`.
pub fn init(identity: &ServiceIdentity, settings: &TelemetrySettings) -> Result<Guard, Error> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(identity, settings)?;
    let tracer = provider.tracer(identity.name);

    // RUST_LOG, when set, wins: operators can raise verbosity without a
    // config change.
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::try_new(&settings.filter)?,
    };
    let fmt = match settings.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(true).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init()?;
    tracing::info!(
        service = identity.name,
        version = identity.version,
        instance = %identity.instance_id,
        otlp = settings.otlp_endpoint.as_deref().unwrap_or("off"),
        "telemetry initialised"
    );
    Ok(Guard { provider })
}

/// For tests: the propagator and a tracer (so trace context is real) and,
/// only when `TEST_LOG` is set, pretty logs to the test output. Safe to
/// call from every test; only the first call installs anything.
pub fn init_for_tests() {
    use std::sync::OnceLock;
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("keel-test");
        let otel = tracing_opentelemetry::layer().with_tracer(tracer);
        let registry = tracing_subscriber::registry().with(otel);
        let _ = if std::env::var_os("TEST_LOG").is_some() {
            registry
                .with(EnvFilter::new("debug"))
                .with(tracing_subscriber::fmt::layer().with_test_writer())
                .try_init()
        } else {
            registry.try_init()
        };
    });
}

fn tracer_provider(
    identity: &ServiceIdentity,
    settings: &TelemetrySettings,
) -> Result<SdkTracerProvider, Error> {
    let resource = Resource::builder()
        .with_service_name(identity.name)
        .with_attributes([
            KeyValue::new("service.version", identity.version),
            KeyValue::new("service.instance.id", identity.instance_id.clone()),
        ])
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource)
        // Follow the caller's sampling decision so a trace is either whole or absent.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))));
    if let Some(endpoint) = &settings.otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(traces_url(endpoint))
            .with_timeout(settings.export_timeout)
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Accepts the collector's base URL (`http://collector:4318`) as operators
/// usually write it, or the full traces URL.
fn traces_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/traces") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/v1/traces")
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_collector_base_url_gets_the_traces_path() {
        assert_eq!(traces_url("http://otel:4318"), "http://otel:4318/v1/traces");
        assert_eq!(
            traces_url("http://otel:4318/"),
            "http://otel:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://otel:4318/v1/traces"),
            "http://otel:4318/v1/traces"
        );
    }
}
