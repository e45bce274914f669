//! The whole daemon as the binary runs it: catalog, event conversion, remux
//! workers and listeners. Tests start it in-process the same way.

use std::sync::Arc;
use std::time::Duration;

use streamcore::catalog::cluster::IngestNode;
use streamcore::catalog::{self, Catalog, CatalogWriter, WriterConfig, WriterStats};
use streamcore::storage::s3::S3Storage;
use streamcore::storage::upload::UploadQueue;
use streamcore::storage::StorageLocation;
use tracing::{info, warn};

use crate::config::Config;
use crate::media::{HandlerFactory, MediaHandler};
use crate::metrics::Metrics;
use crate::remux::{RemuxConfig, RemuxHandler};
use crate::server::{Hooks, Running};
use crate::sessions::IngestEvent;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("catalog: {0}")]
    Catalog(#[from] catalog::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// A running daemon with its catalog.
pub struct App {
    pub running: Running,
    pub catalog: Catalog,
    writer: Arc<CatalogWriter>,
    /// Every stream's segments and playlists (keys are [`streamcore::layout`] paths): what
    /// retention deletes through.
    pub storage: Arc<dyn streamcore::Storage>,
    /// The object store's upload queue, when segments go to one.
    pub uploads: Option<Arc<UploadQueue>>,
    /// This node's entry in the catalog's node registry.
    membership: Option<crate::cluster::Membership>,
    /// This node's id in the registry.
    pub node_id: String,
}

/// This node as the registry shows it, once the listeners are bound (port 0 resolved): its id,
/// the control URL other machines reach, the JT/T 1078 address devices are given.
fn node_identity(config: &Config, host: &str) -> impl FnOnce(&Running) -> IngestNode {
    let (id, control_url, advertise) = (
        config.instance_id.clone(),
        config.control_url.clone(),
        config.advertise_ip,
    );
    let host = host.to_owned();
    move |running| {
        let public = |ip: std::net::IpAddr| match (ip.is_unspecified(), advertise) {
            (false, _) => ip.to_string(),
            (true, Some(a)) => a.to_string(),
            (true, None) => host.clone(),
        };
        let http = running.http_addr;
        let now = catalog::now_ms();
        IngestNode {
            id: id.unwrap_or_else(|| format!("{host}:{}", running.jt808_addr.port())),
            control_url: control_url
                .unwrap_or_else(|| format!("http://{}:{}", public(http.ip()), http.port())),
            media_addr: (!running.jt1078_addr.ip().is_unspecified() || advertise.is_some()).then(
                || {
                    format!(
                        "{}:{}",
                        public(running.jt1078_addr.ip()),
                        running.jt1078_addr.port()
                    )
                },
            ),
            started_ms: now,
            heartbeat_ms: now,
        }
    }
}

/// Host name recorded on catalog sessions, so a restart can close the
/// sessions a crash left open.
pub fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "ingestd".into())
}

/// Writes the settings an operator reads on hlsd's admin view (`ingestd.<name>` in the
/// catalog's settings table; the last ingestd to start wins, with its host in `ingestd.host`).
/// A failure is logged: these rows are for reading, nothing depends on them.
fn record_settings(
    catalog: &Catalog,
    config: &Config,
    stream: &streamcore::StreamConfig,
    host: &str,
) {
    let days = |d: Option<Duration>| {
        d.map_or("forever".to_string(), |d| {
            (d.as_secs() / 86_400).to_string()
        })
    };
    let rows = [
        ("ingestd.host", host.to_string()),
        ("ingestd.storage", config.storage.to_string()),
        (
            "ingestd.segment_target_secs",
            format!("{}", stream.target_segment.as_secs_f64()),
        ),
        ("ingestd.retention_days", days(config.segment_retention)),
        (
            "ingestd.position_retention_days",
            days(config.position_retention),
        ),
        (
            "ingestd.auto_stop_secs",
            config
                .auto_stop
                .map_or("off".to_string(), |d| d.as_secs().to_string()),
        ),
        (
            "ingestd.device_auth",
            if config.device_auth {
                "required"
            } else {
                "off"
            }
            .to_string(),
        ),
        (
            "ingestd.low_latency",
            if config.low_latency.is_some() {
                "on"
            } else {
                "off"
            }
            .to_string(),
        ),
    ];
    for (name, value) in rows {
        if let Err(e) = catalog.set_setting(name, &value) {
            warn!(error = %e, name, "cannot record the setting in the catalog");
            return;
        }
    }
}

/// How long a shutdown waits for the object store to take what is queued.
const UPLOAD_DRAIN: Duration = Duration::from_secs(20);

/// How long past its end an open incident must be to count as left over.
const STALE_INCIDENT_MS: i64 = 60_000;

/// Opens the catalog (failing fast on a bad URL), then starts everything.
pub async fn start(
    mut config: Config,
    mut stream: streamcore::StreamConfig,
) -> Result<App, StartError> {
    // The daemon's setting decides, whatever the embedder's stream config says.
    stream.low_latency = config.low_latency;
    let io = |what: &str| {
        let what = what.to_string();
        move |source| StartError::Io { what, source }
    };
    std::fs::create_dir_all(config.data_dir.join(streamcore::layout::LIVE_DIR))
        .map_err(io("creating the data dir"))?;
    let catalog = Catalog::open(&config.database_url)?;
    if config.auth_secret.is_none() {
        // Kept in the catalog, so a restart (or another node on the same
        // catalog) derives the same auth codes and no device must register again.
        config.auth_secret = Some(catalog.setting_or_init(
            crate::access::AUTH_SECRET_SETTING,
            crate::access::random_secret,
        )?);
    }
    let host = host_name();
    record_settings(&catalog, &config, &stream, &host);
    match catalog.end_open_sessions(&host, catalog::now_ms()) {
        Ok(0) => {}
        Ok(n) => info!(n, "closed sessions left open by a previous run"),
        Err(e) => warn!(error = %e, "cannot close stale sessions"),
    }
    // An alarm incident whose reports stopped a minute past its end without a close was
    // tracked by a process that died (a lasting alarm moves its end with every report).
    match catalog.close_stale_incidents(catalog::now_ms() - STALE_INCIDENT_MS) {
        Ok(0) => {}
        Ok(n) => info!(n, "closed incidents left open by a previous run"),
        Err(e) => warn!(error = %e, "cannot close stale incidents"),
    }
    let writer = Arc::new(CatalogWriter::spawn(
        &config.database_url,
        WriterConfig {
            buffer_max: config.catalog_buffer,
            ..WriterConfig::default()
        },
    )?);

    let (tx, rx) = crossbeam_channel::bounded::<IngestEvent>(4096);
    let (holdings_tx, holdings) = crossbeam_channel::bounded(4096);
    let events_writer = writer.clone();
    std::thread::Builder::new()
        .name("catalog-events".into())
        .spawn(move || crate::catalog_events::run(rx, &events_writer, &holdings_tx))
        .map_err(io("starting the event thread"))?;

    let metrics = Arc::new(Metrics::default());
    // Several nodes may write one stream into a shared store: leases fence them (a data dir is
    // this node's alone).
    let leases = matches!(config.storage, StorageLocation::S3(_))
        .then(|| Arc::new(crate::leases::Leases::new(catalog.clone())));
    let (storage, uploads) = open_storage(
        &config,
        leases
            .clone()
            .map(|l| l as Arc<dyn streamcore::storage::upload::UploadFence>),
    )?;
    if let Some(queue) = &uploads {
        let _ = metrics.uploads.set(queue.clone());
    }
    let node = node_identity(&config, &host);
    let remux = Arc::new(RemuxConfig {
        data_dir: config.data_dir.clone(),
        object_store: uploads.clone().map(|q| q as Arc<dyn streamcore::Storage>),
        leases: leases.clone().zip(uploads.clone()),
        stream,
        idle_close: Duration::from_secs(60),
        host,
        g726_other_packing_sims: config.g726_other_packing_sims.clone(),
    });
    let ll = Arc::new(crate::low_latency::LlRegistry::default());
    let (handler_writer, handler_metrics, handler_ll) =
        (writer.clone(), metrics.clone(), ll.clone());
    let factory: HandlerFactory = Arc::new(move |_| {
        Box::new(
            RemuxHandler::new(
                remux.clone(),
                handler_metrics.clone(),
                Some(handler_writer.clone()),
            )
            .with_low_latency(handler_ll.clone()),
        ) as Box<dyn MediaHandler>
    });
    let hooks = Hooks {
        media: Some(factory),
        events: Some(tx),
        metrics: Some(metrics),
        ll: Some(ll),
        catalog: Some(catalog.clone()),
    };
    let running = crate::server::start(config, hooks)
        .await
        .map_err(io("binding the listeners"))?;
    let node = node(&running);
    let node_id = node.id.clone();
    if let Some(l) = &leases {
        l.set_node(&node_id);
    }
    let membership = crate::cluster::Membership::join(catalog.clone(), node, holdings)
        .map_err(io("starting the node registry thread"))?;
    Ok(App {
        node_id,
        membership: Some(membership),
        running,
        catalog,
        writer,
        storage,
        uploads,
    })
}

/// The node-wide storage and the upload queue in it, if any.
type NodeStorage = (Arc<dyn streamcore::Storage>, Option<Arc<UploadQueue>>);

/// Where segments go: the data dir, or an object store behind an [`UploadQueue`] spilling to
/// `DATA/upload-spill`. Returns the node-wide storage (keys are [`streamcore::layout`] paths;
/// retention deletes through it) and the queue, if any.
fn open_storage(
    config: &Config,
    fence: Option<Arc<dyn streamcore::storage::upload::UploadFence>>,
) -> Result<NodeStorage, StartError> {
    let io = |what: String| move |source| StartError::Io { what, source };
    match &config.storage {
        StorageLocation::DataDir => {
            let fs = streamcore::FsStorage::open(&config.data_dir, false)
                .map_err(io(format!("opening {}", config.data_dir.display())))?;
            Ok((Arc::new(fs), None))
        }
        StorageLocation::S3(url) => {
            let s3 = S3Storage::from_vars(
                url,
                config.storage_vars.iter().cloned(),
                config.data_dir.join("s3-staging"),
            )
            .map_err(io(format!("opening {url}")))?;
            let queue = UploadQueue::open_fenced(
                Arc::new(s3),
                config.data_dir.join(SPILL_DIR),
                config.storage_upload_workers,
                fence,
            )
            .map_err(io("opening the upload spill directory".to_string()))?;
            info!(%url, spill = %config.data_dir.join(SPILL_DIR).display(), "segments go to the object store");
            let queue = Arc::new(queue);
            Ok((queue.clone(), Some(queue)))
        }
    }
}

/// Segments waiting for the object store, under the data dir.
pub const SPILL_DIR: &str = "upload-spill";

impl App {
    /// Waits until every catalog record sent so far is written.
    pub fn flush_catalog(&self, timeout: Duration) -> bool {
        self.writer.flush(timeout)
    }

    pub fn catalog_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    /// Stops accepting, closes connections, drains the media workers (which
    /// publish open segments and end playlists), then flushes the catalog.
    pub async fn shutdown(self) -> WriterStats {
        self.running.shutdown().await;
        let (writer, uploads, membership) = (self.writer, self.uploads, self.membership);
        tokio::task::spawn_blocking(move || {
            if let Some(m) = membership {
                m.leave();
            }
            if let Some(queue) = uploads {
                // What is not uploaded by then stays spilled; the next start uploads it first.
                if !queue.flush(UPLOAD_DRAIN) {
                    let left = queue.backlog();
                    warn!(
                        operations = left.operations,
                        bytes = left.bytes,
                        "uploads left in the spill directory for the next start"
                    );
                }
            }
            writer.flush(Duration::from_secs(10));
            writer.stats()
        })
        .await
        .unwrap_or_default()
    }
}
