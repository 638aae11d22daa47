use std::path::PathBuf;
use std::process::ExitCode;

use analytics::settings::{DEFAULTS, Settings};
use analytics::startup::{Analytics, connect};
use chrono::NaiveDate;
use clap::{Parser, Subcommand};
use keel_runtime::CommonCommand;

/// Keel's analytics service: raw events and rollups.
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
    /// Recompute the rollups of whole UTC days from the raw events (after a
    /// definition changed, or data was restored), then exit.
    Rebuild {
        /// First day, e.g. 2026-01-01.
        #[arg(long)]
        from: NaiveDate,
        /// Last day (inclusive).
        #[arg(long)]
        to: NaiveDate,
    },
    /// Write the raw events of whole UTC days as NDJSON into
    /// `<dir>/dt=YYYY-MM-DD/events.ndjson`, then exit.
    ExportRaw {
        #[arg(long)]
        from_date: NaiveDate,
        /// Last day (inclusive).
        #[arg(long)]
        to_date: NaiveDate,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let command = Cli::parse()
        .command
        .unwrap_or(Command::Common(CommonCommand::Serve));
    let (from, to) = match &command {
        Command::Common(common) => {
            return keel_runtime::run::<Analytics>(common.clone(), env!("CARGO_PKG_VERSION")).await;
        }
        Command::Rebuild { from, to } => (*from, *to),
        Command::ExportRaw {
            from_date, to_date, ..
        } => (*from_date, *to_date),
    };
    if from > to {
        return keel_runtime::config_failure(&"--from must not be after --to");
    }
    let settings: Settings = match keel_config::load(DEFAULTS) {
        Ok(settings) => settings,
        Err(e) => return keel_runtime::config_failure(&e),
    };
    let pool = match connect(&settings).await {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("cannot reach the analytics database: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot reach the analytics database: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Common(_) => ExitCode::SUCCESS,
        Command::Rebuild { .. } => {
            match analytics::ingest::store::rebuild(&mut client, from, to).await {
                Ok(rebuilt) => {
                    eprintln!(
                        "rebuilt {from}..={to}: {} events, {} rollup rows",
                        rebuilt.events, rebuilt.rollup_rows
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("rebuild failed: {}", keel_runtime::service::error_chain(&e));
                    ExitCode::FAILURE
                }
            }
        }
        Command::ExportRaw { dir, .. } => {
            match analytics::export::export_raw(&client, from, to, &dir).await {
                Ok(days) => {
                    for day in days {
                        eprintln!("{}: {} events", day.path.display(), day.rows);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "export-raw failed: {}",
                        keel_runtime::service::error_chain(&e)
                    );
                    ExitCode::FAILURE
                }
            }
        }
    }
}
