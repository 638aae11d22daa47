//! What every service binary does around its own logic.
//!
//! # Layout
//! - [`cli`]: the subcommands every binary shares (`serve`, `migrate`,
//!   `healthcheck <url>`), flattened into each service's own command enum.
//! - [`shutdown`]: turns SIGTERM/SIGINT into a cancelled
//!   [`CancellationToken`](tokio_util::sync::CancellationToken) that the
//!   binary passes down explicitly; nothing reads a global.
//! - [`healthcheck`]: a dependency-free HTTP probe, so container images need
//!   no curl for their `HEALTHCHECK`.

pub mod cli;
pub mod healthcheck;
pub mod shutdown;

pub use cli::CommonCommand;
pub use shutdown::shutdown_on_signals;
