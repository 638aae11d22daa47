//! The shape every service binary shares: parse the command, load and
//! validate configuration, start telemetry, then migrate or serve until a
//! signal. Each service implements [`Service`]; its `main` is three lines.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use keel_config::Validate;
use keel_telemetry::{ServiceIdentity, TelemetrySettings};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::CommonCommand;

pub trait Service {
    /// Name in logs, traces, metrics and broker connection names.
    const NAME: &'static str;
    /// The service's commented defaults file, compiled in.
    const DEFAULTS: &'static str;

    type Settings: DeserializeOwned + Validate;
    type Error: std::error::Error + 'static;

    fn telemetry(settings: &Self::Settings) -> &TelemetrySettings;

    /// Applies the service's migrations (the `migrate` subcommand).
    fn migrate(settings: &Self::Settings) -> impl Future<Output = Result<(), Self::Error>>;

    /// Runs until `shutdown` is cancelled and in-flight work has drained.
    fn serve(
        settings: Self::Settings,
        identity: ServiceIdentity,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<(), Self::Error>>;
}

/// Runs `command` for service `S`. Exit codes: 0 success, 1 runtime
/// failure, 2 bad configuration.
pub async fn run<S: Service>(command: CommonCommand, version: &'static str) -> ExitCode {
    if let CommonCommand::Healthcheck { url } = &command {
        return crate::healthcheck::report(url, Duration::from_secs(3)).await;
    }
    let settings: S::Settings = match keel_config::load(S::DEFAULTS) {
        Ok(settings) => settings,
        Err(e) => return crate::config_failure(&e),
    };
    let identity = ServiceIdentity::new(S::NAME, version);
    let _telemetry = match keel_telemetry::init(&identity, S::telemetry(&settings)) {
        Ok(guard) => guard,
        Err(e) => return crate::config_failure(&e),
    };
    let outcome = match command {
        CommonCommand::Migrate => S::migrate(&settings).await,
        CommonCommand::Serve => {
            let shutdown = crate::shutdown_on_signals();
            S::serve(settings, identity, shutdown).await
        }
        CommonCommand::Healthcheck { .. } => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "{} failed", S::NAME);
            ExitCode::FAILURE
        }
    }
}

/// `outer: inner: root` — the whole cause chain on one line for the log.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // `#[error(transparent)]` and `{0}`-style messages repeat their
        // source; skip what is already said.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn the_error_chain_names_every_cause_once() {
        let error = Outer(std::io::Error::other("port in use"));
        assert_eq!(error_chain(&error), "cannot start: port in use");
    }
}
