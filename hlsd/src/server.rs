//! Serving connections: binds the listener, builds the state the routes share (the routes
//! themselves are in `crate::routes`), and runs the accept loop that bounds each connection:
//! at most `max_connections` at once (above the cap a connection gets a 503 and is closed),
//! a header read timeout, a send timeout and a cap on the request head.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use warp::reply::Response;
use warp::Filter;

use crate::config::Config;
use crate::media::{CacheConfig, MediaSource, StoreReader};
use crate::routes::routes;
use crate::routes::vod::CLIP_SLOTS;
use crate::token::TokenSigner;
use streamcore::catalog::Catalog;
use streamcore::storage::s3::S3Storage;
use streamcore::storage::StorageLocation;

// The clip export owns it; callers already look for it here.
pub use crate::routes::vod::MAX_CLIP_MS;

/// Startup failures.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("catalog: {0}")]
    Catalog(#[from] streamcore::catalog::Error),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--ingestd-token must be printable ASCII")]
    IngestdToken,
    #[error("storage {0}: {1}")]
    Storage(String, std::io::Error),
}

/// The TLS acceptor of `--tls-cert`/`--tls-key`: HTTP/2 and HTTP/1.1 offered by ALPN.
fn tls_acceptor(files: &crate::config::TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ServeError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("reading the certificate", &files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("parsing the certificate", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(bad(
            "reading the certificate",
            &files.cert,
            &"no CERTIFICATE in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad("reading the private key", &files.key, &e))?;
    // ring rather than aws-lc-rs: no cmake and no large C build on every machine. rustls marks
    // it deprecated because ring has no post-quantum key exchange (X25519MLKEM768); browsers
    // offer that and fall back to X25519, which ring has.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("the key does not fit the certificate", &files.key, &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Shared state of the handlers.
pub struct AppState {
    /// Live playlists and segments: the data dir (every file served must canonicalize to a
    /// path under it) or the object store.
    pub media: MediaSource,
    pub catalog: Catalog,
    /// Accounts, cookies, API keys and player tokens.
    pub auth: crate::auth::Auth,
    /// This instance's name in the viewers table.
    pub instance: String,
    /// When each live stream's viewing was last written to the catalog (at most every
    /// [`VIEWER_WRITE_EVERY`] per stream).
    pub viewers_written: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    pub ingestd_url: String,
    /// Which ingestd holds a SIM, as [`AppState::ingestd_for`] last read it.
    pub nodes: moka::future::Cache<String, Option<String>>,
    pub client: reqwest::Client,
    pub watch_timeout: Duration,
    pub live_timeout: Duration,
    /// Permits for concurrent clip exports.
    pub clip_slots: Arc<Semaphore>,
    /// The page's map base layer: a tile URL template, or `None` for the embedded outlines.
    pub map_tile_url: Option<String>,
    pub map_attribution: Option<String>,
}

impl AppState {
    /// Base URL of the control API of the ingestd holding `sim`'s JT/T 808 session (the
    /// catalog's node registry), else `--ingestd-url` (one node, or a device nobody holds:
    /// that ingestd answers it is offline). Cached for [`NODE_CACHE_TTL`]: low-latency
    /// requests ask this several times a second per viewer.
    pub async fn ingestd_for(&self, sim: Option<&str>) -> String {
        let Some(sim) = sim else {
            return self.ingestd_url.clone();
        };
        let (cat, key) = (self.catalog.clone(), sim.to_owned());
        let node = self
            .nodes
            .get_with(key.clone(), async move {
                let alive =
                    streamcore::catalog::now_ms() - streamcore::catalog::cluster::NODE_ALIVE_MS;
                match tokio::task::spawn_blocking(move || cat.device_node(&key, alive)).await {
                    Ok(Ok(node)) => node.map(|n| n.control_url),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "reading the node registry");
                        None
                    }
                    Err(_) => None,
                }
            })
            .await;
        node.unwrap_or_else(|| self.ingestd_url.clone())
    }
}

/// How long [`AppState::ingestd_for`] trusts what it read: a device that moved to another node
/// is reached there at most this much later.
pub const NODE_CACHE_TTL: Duration = Duration::from_secs(2);

/// How often this instance tells the catalog a stream is being watched.
pub const VIEWER_WRITE_EVERY: Duration = Duration::from_secs(5);

/// A running server.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting; open connections finish on their own.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Runs until the accept loop ends (it only ends on shutdown).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// The catalog chosen by the configuration: `--database-url` (SQLite path or `sqlite://`,
/// `postgres://`, `mysql://`), else the SQLite file `DATA/catalog.sqlite`, created (and
/// migrated) when missing, so an hlsd started before ingestd still finds the tables.
/// Blocks while it connects and migrates.
pub fn open_catalog(config: &Config) -> Result<Catalog, ServeError> {
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| streamcore::catalog::default_database_url(&config.data_dir));
    let catalog = Catalog::open(&url)?;
    tracing::info!(url = %catalog.url(), backend = %catalog.backend(), "catalog open");
    Ok(catalog)
}

/// Binds `config.listen` and serves with the configured catalog.
pub async fn serve(config: Config) -> Result<Running, ServeError> {
    if !config.data_dir.is_dir() {
        return Err(ServeError::DataDir(
            config.data_dir.clone(),
            std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        ));
    }
    let cfg = config.clone();
    let catalog = tokio::task::spawn_blocking(move || open_catalog(&cfg))
        .await
        .expect("opening the catalog panicked")?;
    serve_with_catalog(config, catalog).await
}

/// Binds `config.listen` and serves with `catalog`.
pub async fn serve_with_catalog(config: Config, catalog: Catalog) -> Result<Running, ServeError> {
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| ServeError::DataDir(config.data_dir.clone(), e))?;
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &config.ingestd_token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ServeError::IngestdToken)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    // Every request to ingestd carries its control token (when it has one).
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()?;
    let secret = match config.token_secret.clone() {
        Some(s) => s,
        // Shared through the catalog, so a cookie or token made by one hlsd works on all.
        None => {
            let cat = catalog.clone();
            tokio::task::spawn_blocking(move || {
                cat.setting_or_init(crate::auth::SIGNING_KEY_SETTING, || {
                    crate::auth::random_hex(32)
                })
            })
            .await
            .expect("reading the signing key panicked")?
        }
    };
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    let auth = crate::auth::Auth::new(
        catalog.clone(),
        TokenSigner::new(secret),
        config.allow_anonymous,
        tls.is_some(),
        config.session_ttl,
        config.max_token_ttl,
    );
    if config.allow_anonymous {
        tracing::warn!("anonymous access is on: anyone who reaches this server can watch every vehicle and command its video");
    }
    let instance = config.instance_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!(
            "{}:{}",
            if host.is_empty() { "hlsd" } else { &host },
            config.listen.port()
        )
    });
    let media = match &config.storage {
        StorageLocation::DataDir => MediaSource::DataDir(data_dir),
        StorageLocation::S3(url) => {
            let store = S3Storage::from_vars(
                url,
                config.storage_vars.iter().cloned(),
                data_dir.join("s3-staging"),
            )
            .map_err(|e| ServeError::Storage(url.clone(), e))?;
            tracing::info!(%url, cache_mb = config.storage_cache_bytes >> 20, playlist_ttl_ms = config.storage_playlist_ttl.as_millis() as u64, "live media read from the object store");
            MediaSource::Store(Arc::new(StoreReader::new(
                Arc::new(store),
                CacheConfig {
                    segment_bytes: config.storage_cache_bytes,
                    playlist_ttl: config.storage_playlist_ttl,
                },
            )))
        }
    };
    let state = Arc::new(AppState {
        media,
        catalog,
        auth,
        instance,
        viewers_written: Default::default(),
        ingestd_url: config.ingestd_url.trim_end_matches('/').to_owned(),
        nodes: moka::future::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(NODE_CACHE_TTL)
            .build(),
        client,
        watch_timeout: config.watch_timeout,
        live_timeout: config.live_timeout,
        clip_slots: Arc::new(Semaphore::new(CLIP_SLOTS)),
        map_tile_url: config.map_tile_url.clone(),
        map_attribution: config.map_attribution.clone(),
    });
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Bind(config.listen, e))?;
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(accept_loop(
        listener,
        routes(state),
        Limits {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            send_timeout: config.send_timeout,
        },
        tls.clone(),
        rx,
    ));
    tracing::info!(%addr, data_dir = %config.data_dir.display(), max_connections = config.max_connections, tls = tls.is_some(), "hlsd listening");
    Ok(Running {
        addr,
        shutdown: Some(tx),
        task,
    })
}

/// Largest request head accepted (hyper's read buffer); above it hyper answers 431 and closes.
/// Browsers send a few KiB; hyper's default (~400 KiB) let every connection make the server
/// buffer that much.
const MAX_REQUEST_HEAD: usize = 32 * 1024;

/// What bounds one connection.
struct Limits {
    max_connections: usize,
    header_timeout: Duration,
    send_timeout: Duration,
}

/// Accepts connections until `shutdown`, serving at most `max_connections` at once.
async fn accept_loop<F>(
    listener: TcpListener,
    filter: F,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: oneshot::Receiver<()>,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    F::Future: Send,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let svc = warp::service(filter);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (header_timeout, send_timeout) = (limits.header_timeout, limits.send_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let svc = TowerToHyperService::new(svc.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // Slow senders of headers must not hold a connection slot for long.
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_buf_size(MAX_REQUEST_HEAD);
                    // Clients that stop reading must not hold a slot either.
                    let tcp = crate::stall::WriteStallLimit::new(tcp, send_timeout);
                    let r = match tls {
                        None => builder.serve_connection(TokioIo::new(tcp), svc).await,
                        Some(acceptor) => {
                            // The handshake is bounded like a request head.
                            let accepted =
                                tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await;
                            match accepted {
                                Ok(Ok(stream)) => {
                                    builder.serve_connection(TokioIo::new(stream), svc).await
                                }
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    Ok(())
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    Ok(())
                                }
                            }
                        }
                    };
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::debug!(%peer, "connection limit reached; answering 503");
                tokio::spawn(reject_busy(tcp));
            }
        }
    }
}

/// Over the limit: read the request head briefly (so closing doesn't reset the connection
/// before the client reads the answer), answer 503 and close.
async fn reject_busy(mut tcp: TcpStream) {
    let body = r#"{"error":"too many connections","status":503}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\naccess-control-allow-origin: *\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while let Ok(n) = tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 16 * 1024 {
                break;
            }
        }
    })
    .await;
    let _ = tcp.write_all(resp.as_bytes()).await;
    let _ = tcp.shutdown().await;
}
