use std::time::Duration;

use keel_config::{Invalid, Validate};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// The `telemetry` section of a service's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info,keel=debug`; `RUST_LOG` overrides it.
    pub filter: String,
    /// OTLP/HTTP collector, e.g. `http://otel-collector:4318`. Unset: spans
    /// are still created (so `traceparent` propagates) but not exported.
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces to sample, 0.0–1.0.
    pub sample_ratio: f64,
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Validate for TelemetrySettings {
    fn validate(&self) -> Result<(), Invalid> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(
                Invalid::new("sample_ratio", "must be between 0.0 and 1.0").within("telemetry")
            );
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(Invalid::new("otlp_endpoint", "must be an http(s) URL").within("telemetry"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.filter) {
            return Err(Invalid::new("filter", e.to_string()).within("telemetry"));
        }
        Ok(())
    }
}
