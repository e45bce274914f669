//! ingestd binary: parses configuration, sets up logging, runs the daemon
//! ([`ingestd::app`]) until SIGTERM/SIGINT, then shuts down in order (stop
//! accepting, close connections, drain media workers, which publish open
//! segments and finalize playlists, flush the catalog) and exits 0.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use ingestd::config::{Cli, Config};
use streamcore::catalog::{self, RetentionPolicy};
use tracing::{info, warn};

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
    let shutdown = shutdown_signal()?;
    let retention = RetentionPolicy {
        segment_max_age: config.segment_retention,
        position_max_age: config.position_retention,
        ..RetentionPolicy::default()
    };
    let stream = streamcore::StreamConfig {
        // Every segment is a catalog row of a recording; retention deletes them.
        keep_segments: true,
        target_segment: streamcore::Dur90k::from_millis(config.segment_target.as_millis() as i64),
        max_nal_bytes: config.max_nal_bytes,
        audio: config.audio,
        durable: config.fsync,
        ..Default::default()
    };
    let app = ingestd::app::start(config, stream)
        .await
        .context("starting ingestd")?;
    let retention_catalog = app.catalog.clone();
    let (segments, node_id) = (app.storage.clone(), app.node_id.clone());
    std::thread::Builder::new()
        .name("retention".into())
        .spawn(move || loop {
            // After the node's registration is in (the registry thread writes it at start).
            std::thread::sleep(Duration::from_secs(10));
            // One node of a cluster runs it at a time (the registry decides); the others
            // check again at the next run.
            match retention_catalog.runs_periodic_jobs(&node_id, catalog::now_ms()) {
                Ok(true) => {
                    match retention_catalog.run_retention(&*segments, &retention, catalog::now_ms())
                    {
                        Ok(r) => info!(?r, "retention run"),
                        Err(e) => warn!(error = %e, "retention run failed"),
                    }
                }
                Ok(false) => info!("retention left to another node of the cluster"),
                Err(e) => warn!(error = %e, "cannot read the node registry; retention skipped"),
            }
            std::thread::sleep(Duration::from_secs(3600 - 10));
        })?;
    shutdown.await;
    let stats = app.shutdown().await;
    info!(
        ?stats,
        "shutdown complete: playlists finalized, catalog flushed"
    );
    Ok(())
}
