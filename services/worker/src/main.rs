use std::process::ExitCode;

use clap::Parser;
use keel_runtime::CommonCommand;
use worker::startup::Worker;

/// Keel's background worker: drains job queues.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<CommonCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(CommonCommand::Serve);
    keel_runtime::run::<Worker>(command, env!("CARGO_PKG_VERSION")).await
}
