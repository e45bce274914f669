//! hlsd daemon: parses flags/env/config file, serves until SIGINT or SIGTERM.

use anyhow::Context as _;
use clap::Parser as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut cli = hlsd::Cli::parse();
    let command = cli.command.take();
    let config = cli.resolve()?;
    if let Some(command) = command {
        let catalog = hlsd::open_catalog(&config).context("opening the catalog")?;
        return hlsd::admin::run(&catalog, command);
    }
    let running = hlsd::serve(config).await.context("starting hlsd")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
