//! The daemon's network side: binds the JT/T 808, JT/T 1078, raw H.264 and
//! HTTP listeners, runs the accept loops under the connection limit, and
//! shuts everything down in order.
//!
//! Each accepted socket goes to its connection task in the `conn` module
//! (which also owns the read timeouts); those tasks only own a socket and a
//! buffer: protocol logic lives in the sans-IO [`crate::jt808`] and
//! [`crate::jt1078`] modules, media goes to [`crate::media`] workers, events
//! to the [`Hooks::events`] channel.
//!
//! Shutdown (mini-redis style): a watch channel tells accept loops and
//! connection tasks to stop; each task holds a clone of a completion sender,
//! so the runner knows when all of them are gone; then the media pool drains
//! its queues and calls [`crate::media::MediaHandler::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{info, info_span, warn, Instrument};

use crate::config::Config;
use crate::conn::{self, stopped};
use crate::media::{CountingHandler, HandlerFactory, MediaPool};
use crate::metrics::Metrics;
use crate::sessions::{IngestEvent, Registry};

/// [`Running::ctx`] hands it out, so embedders keep naming it from here.
pub use crate::context::Ctx;

/// What the embedding code plugs in.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Builds each media worker's handler; `None`: [`CountingHandler`].
    pub media: Option<HandlerFactory>,
    /// Receives positions and session events (try_send: dropped and counted
    /// when full, so a slow catalog never stalls devices).
    pub events: Option<crossbeam_channel::Sender<IngestEvent>>,
    /// Counters to use (shared with the media handlers); `None`: new ones.
    pub metrics: Option<Arc<Metrics>>,
    /// The low-latency renditions the media handlers register (served at
    /// `/ll/`); `None`: an empty registry.
    pub ll: Option<Arc<crate::low_latency::LlRegistry>>,
    /// The catalog the allow-list and the viewers (for the automatic stop
    /// of live video) are read from; `None`: the config's list only, and no
    /// automatic stop.
    pub catalog: Option<streamcore::catalog::Catalog>,
}

/// A running daemon.
pub struct Running {
    pub jt808_addr: SocketAddr,
    pub jt1078_addr: SocketAddr,
    pub raw_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes connections, drains the media workers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Binds all listeners and starts serving; returns the bound addresses.
pub async fn start(mut config: Config, hooks: Hooks) -> std::io::Result<Running> {
    if config.auth_secret.is_none() {
        // `app::start` takes the catalog's; an embedder without a catalog
        // gets one that lasts as long as the process.
        warn!("no device auth secret configured: using a random one (devices must register again after a restart)");
        config.auth_secret = Some(crate::access::random_secret());
    }
    let access = Arc::new(crate::access::DeviceAccess::new(
        config.device_auth,
        &config.allowed_sims,
    ));
    let l808 = TcpListener::bind(config.jt808_listen).await?;
    let l1078 = TcpListener::bind(config.jt1078_listen).await?;
    let lraw = TcpListener::bind(config.raw_listen).await?;
    let lhttp = TcpListener::bind(config.http_listen).await?;
    let metrics = hooks.metrics.unwrap_or_default();
    let factory = hooks
        .media
        .unwrap_or_else(|| CountingHandler::factory(metrics.clone()));
    crate::memory::start_trimming();
    let pool = MediaPool::start(
        config.media_workers,
        config.queue_depth,
        config.media_queue_bytes,
        factory,
    );
    // Alarm reports are few (one per position): a full queue drops them
    // rather than stall a device's connection.
    let (alarm_tx, alarm_rx) = mpsc::channel(4096);
    let ctx = Arc::new(Ctx {
        metrics,
        registry: Arc::new(Registry::default()),
        media: pool.sender(),
        events: hooks.events,
        incidents: Some(alarm_tx),
        ll: hooks.ll.unwrap_or_default(),
        jt1078_addr: l1078.local_addr()?,
        access,
        auto_stop: Default::default(),
        config,
    });
    tokio::spawn(crate::incidents::run(ctx.clone(), alarm_rx));
    let (stop, stop_rx) = watch::channel(false);
    if let Some(catalog) = hooks.catalog {
        tokio::spawn(crate::access::refresh_allow_list(
            ctx.access.clone(),
            catalog.clone(),
            stop_rx.clone(),
        ));
        if let Some(idle) = ctx.config.auto_stop {
            tokio::spawn(crate::access::run_auto_stop(
                ctx.clone(),
                catalog,
                idle,
                stop_rx.clone(),
            ));
        }
    }
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let addrs = (
        l808.local_addr()?,
        ctx.jt1078_addr,
        lraw.local_addr()?,
        lhttp.local_addr()?,
    );
    for (listener, kind) in [
        (l808, Listener::Jt808),
        (l1078, Listener::Jt1078),
        (lraw, Listener::Raw),
    ] {
        tokio::spawn(accept_loop(
            listener,
            kind,
            ctx.clone(),
            limit.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        ));
    }
    let mut http_stop = stop_rx.clone();
    let http_done = done_tx.clone();
    let routes = crate::http::routes(ctx.clone());
    tokio::spawn(async move {
        warp::serve(routes)
            .incoming(lhttp)
            .graceful(async move {
                stopped(&mut http_stop).await;
            })
            .run()
            .await;
        drop(http_done);
    });
    drop(done_tx);
    let done = tokio::spawn(async move {
        // Every task holds a done_tx clone; recv() yields None once all ended.
        let _ = done_rx.recv().await;
        let _ = tokio::task::spawn_blocking(move || pool.join()).await;
    });
    info!(
        jt808 = %addrs.0, jt1078 = %addrs.1, raw = %addrs.2, http = %addrs.3,
        "ingestd listening"
    );
    Ok(Running {
        jt808_addr: addrs.0,
        jt1078_addr: addrs.1,
        raw_addr: addrs.2,
        http_addr: addrs.3,
        ctx,
        stop,
        done,
    })
}

/// Starts, runs until `shutdown` resolves, then shuts down in order.
pub async fn run(
    config: Config,
    hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let running = start(config, hooks).await?;
    shutdown.await;
    info!("shutting down: no new connections, draining");
    running.shutdown().await;
    info!("shutdown complete");
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Listener {
    Jt808,
    Jt1078,
    Raw,
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, ?kind, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.metrics.connections_rejected.fetch_add(1, Relaxed);
            warn!(%peer, ?kind, "connection limit reached, refusing");
            drop(sock);
            continue;
        };
        ctx.metrics.connections_total.fetch_add(1, Relaxed);
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            match kind {
                Listener::Jt808 => {
                    let span = info_span!("jt808", %peer, sim = tracing::field::Empty);
                    conn::jt808::handle(sock, peer, &ctx, stop)
                        .instrument(span)
                        .await
                }
                Listener::Jt1078 => {
                    let span = info_span!("jt1078", %peer);
                    conn::jt1078::handle(sock, peer, &ctx, stop)
                        .instrument(span)
                        .await
                }
                Listener::Raw => {
                    let span = info_span!("raw", %peer);
                    conn::raw::handle(sock, peer, &ctx, stop)
                        .instrument(span)
                        .await
                }
            }
            drop(permit);
            drop(done);
        });
    }
}
