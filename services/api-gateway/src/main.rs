use std::process::ExitCode;

use api_gateway::startup::Gateway;
use clap::Parser;
use keel_runtime::CommonCommand;

/// Keel's public HTTP edge.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<CommonCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(CommonCommand::Serve);
    keel_runtime::run::<Gateway>(command, env!("CARGO_PKG_VERSION")).await
}
