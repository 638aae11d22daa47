use std::io::BufRead;
use std::process::ExitCode;

use auth::startup::AuthService;
use clap::{Parser, Subcommand};
use keel_runtime::CommonCommand;

/// Keel's identity service: accounts, tokens, sessions.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Common(CommonCommand),
    /// Create (or promote to) an admin account and exit. The password is
    /// read from KEEL_ADMIN_PASSWORD, else from the first line of stdin,
    /// never from the command line (it would show in `ps`).
    CreateAdmin {
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse()
        .command
        .unwrap_or(Command::Common(CommonCommand::Serve))
    {
        Command::Common(command) => {
            keel_runtime::run::<AuthService>(command, env!("CARGO_PKG_VERSION")).await
        }
        Command::CreateAdmin { email } => create_admin(&email).await,
    }
}

async fn create_admin(email: &str) -> ExitCode {
    let settings: auth::settings::Settings = match keel_config::load(auth::settings::DEFAULTS) {
        Ok(settings) => settings,
        Err(e) => return keel_runtime::config_failure(&e),
    };
    let password = match std::env::var("KEEL_ADMIN_PASSWORD") {
        Ok(password) => password,
        Err(_) => {
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                return keel_runtime::config_failure(&"cannot read the password from stdin");
            }
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    match auth::startup::create_admin(&settings, email, &password).await {
        Ok(outcome) => {
            eprintln!("{outcome:?}: {email}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("create-admin failed: {e}");
            ExitCode::FAILURE
        }
    }
}
