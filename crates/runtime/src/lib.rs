//! What every service binary does around its own logic.
//!
//! # Layout
//! - [`cli`]: the subcommands every binary shares (`serve`, `migrate`,
//!   `healthcheck <url>`), flattened into each service's own command enum.
//! - [`service`]: the [`Service`] trait and [`run`], the body of every
//!   service's `main`.
//! - [`shutdown`]: turns SIGTERM/SIGINT into a cancelled
//!   [`CancellationToken`](tokio_util::sync::CancellationToken) that the
//!   binary passes down explicitly; nothing reads a global.
//! - [`checks`]: `/readyz` probes for PostgreSQL, Redis (feature `redis`)
//!   and RabbitMQ.
//! - [`background`]: [`Background`], a service's named background tasks:
//!   one that ends early stops the service; all are waited for, with a
//!   deadline, on shutdown.
//! - [`serving`]: [`serve_until_stopped`], the end of every service's
//!   `run_until_stopped` (serve, stop the background, close the broker).
//! - [`healthcheck`]: a dependency-free HTTP probe, so container images need
//!   no curl for their `HEALTHCHECK`.

pub mod background;
pub mod checks;
pub mod cli;
pub mod healthcheck;
pub mod service;
pub mod serving;
pub mod shutdown;

pub use background::Background;
pub use cli::CommonCommand;
pub use service::{Service, run};
pub use serving::{RunError, serve_until_stopped};
pub use shutdown::shutdown_on_signals;

/// Prints a configuration error as the one line operators need and returns
/// the exit code for "bad configuration" (2, as for a usage error).
pub fn config_failure(error: &dyn std::fmt::Display) -> std::process::ExitCode {
    eprintln!("{error}");
    std::process::ExitCode::from(2)
}
