use std::process::ExitCode;

use auth::startup::AuthService;
use clap::Parser;
use keel_runtime::CommonCommand;

/// Keel's identity service: accounts, tokens, sessions.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<CommonCommand>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse().command.unwrap_or(CommonCommand::Serve);
    keel_runtime::run::<AuthService>(command, env!("CARGO_PKG_VERSION")).await
}
