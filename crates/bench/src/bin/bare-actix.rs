//! `bare-actix`: the smallest useful actix-web server, returning a fixed JSON
//! body on `GET /`. Measured under `keel-loadgen`, it is the framework's ceiling
//! on this machine: a Keel endpoint cannot be faster than this.

use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::{Context as _, Result};
use clap::Parser;

/// Bare actix-web server for baseline benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bare-actix", version)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,

    /// Port to bind.
    #[arg(short = 'p', long, default_value_t = 8090)]
    port: u16,

    /// Actix worker threads.
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
}

/// The fixed body, of the size of a small API answer.
const BODY: &str = r#"{"status":"ok","service":"bare-actix"}"#;

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(BODY)
}

fn main() -> Result<()> {
    let args = Args::parse();
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().route("/", web::get().to(index)))
            .workers(args.workers.max(1))
            .bind((args.host.as_str(), args.port))
            .with_context(|| format!("binding {}:{}", args.host, args.port))?
            .run()
            .await
            .context("running the server")
    })
}
