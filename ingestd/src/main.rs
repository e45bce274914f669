//! ingestd binary: parses configuration, sets up logging, runs the daemon
//! until SIGTERM/SIGINT, then shuts down in order (stop accepting, close
//! connections, drain media workers) and exits 0.

use anyhow::Context;
use clap::Parser;
use ingestd::config::{Cli, Config};
use ingestd::server::Hooks;
use ingestd::sessions::IngestEvent;
use tracing::{debug, info};

/// Registers SIGTERM/SIGINT handlers now (before the listeners announce
/// themselves, so a supervisor's early SIGTERM is never lost) and returns a
/// future that resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT"),
            _ = term.recv() => info!("SIGTERM"),
        }
    })
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
    let shutdown = shutdown_signal()?;
    ingestd::server::run(config, hooks, shutdown).await?;
    Ok(())
}
