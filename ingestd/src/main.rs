//! ingestd binary: parses configuration, sets up logging, runs the daemon
//! until SIGTERM/SIGINT, then shuts down in order (stop accepting, close
//! connections, drain media workers) and exits 0.

use anyhow::Context;
use clap::Parser;
use ingestd::config::{Cli, Config};
use ingestd::server::Hooks;
use ingestd::sessions::IngestEvent;
use tracing::{debug, info};

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
        _ = term => info!("SIGTERM"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::resolve(Cli::parse())?;
    std::fs::create_dir_all(config.data_dir.join("live"))
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    // Until the catalog is wired, events are only logged.
    let (tx, rx) = crossbeam_channel::bounded::<IngestEvent>(4096);
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            for ev in rx {
                debug!(?ev, "ingest event");
            }
        })?;
    let hooks = Hooks {
        media: None,
        events: Some(tx),
    };
    ingestd::server::run(config, hooks, shutdown_signal()).await?;
    Ok(())
}
