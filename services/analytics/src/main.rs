use std::process::ExitCode;

use analytics::startup::Analytics;
use clap::Parser;
use keel_runtime::CommonCommand;

/// Keel's analytics service: raw events and rollups.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<CommonCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(CommonCommand::Serve);
    keel_runtime::run::<Analytics>(command, env!("CARGO_PKG_VERSION")).await
}
