use clap::Subcommand;

/// Subcommands shared by every service binary.
#[derive(Debug, Clone, Subcommand)]
pub enum CommonCommand {
    /// Run the service (the default).
    Serve,
    /// Apply the service's database migrations and exit (a Kubernetes Job or
    /// an init step runs this before a rollout).
    Migrate,
    /// Probe a URL and exit 0 on a 2xx answer (for container HEALTHCHECKs).
    Healthcheck {
        /// e.g. http://127.0.0.1:8080/healthz
        #[arg(default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
}
