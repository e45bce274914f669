//! The hlsd HTTP service: warp routes for live HLS, VOD playlists from the catalog, the JSON
//! API, watch/stop forwarding to ingestd and the embedded web page; and the accept loop that
//! caps concurrent connections (above the cap a connection gets a 503 and is closed).
//!
//! Routes (GET and HEAD unless noted; every answer carries CORS headers; OPTIONS answers preflight):
//! - `/live/<stream>/index.m3u8`, `/live/<stream>/<n>.ts` and the token-in-path forms
//!   `/live/<stream>/t/<token>/index.m3u8`, `/live/<stream>/t/<token>/<n>.ts`
//! - `/vod/session/<id>/index.m3u8`, `/vod/incident/<id>/index.m3u8[?channel=N]` (+ `/t/<token>/` forms)
//! - `/api/streams[?all=1]`, `/api/devices`, `/api/devices/<sim>/{sessions,incidents,positions}?from&to[&limit]`
//! - POST `/api/devices/<sim>/channels/<ch>/watch` and `/stop`
//! - `/`, `/static/<asset>`

// Handlers return early with a ready response (`Result<_, Response>`); boxing it would only
// add an allocation to every error path.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use warp::http::{Method, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::catalog::{Catalog, CatalogError, SegmentRow, TimeRange};
use crate::config::Config;
use crate::http::{self, Representation, Req, Source};
use crate::token::{now_unix, TokenError, TokenSigner};
use crate::{m3u8, names, web};

const MPEGURL: &str = "application/vnd.apple.mpegurl";
const MP2T: &str = "video/mp2t";
const LIVE_PLAYLIST_CACHE: &str = "public, max-age=1";
const SEGMENT_CACHE: &str = "public, max-age=31536000, immutable";
const VOD_FINISHED_CACHE: &str = "public, max-age=86400";
const VOD_OPEN_CACHE: &str = "public, max-age=2";
const MP4: &str = "video/mp4";
/// Clips are remuxed per request: nothing to cache, and the range is in the URL.
const CLIP_CACHE: &str = "private, no-store";
/// Longest clip export; longer ranges are refused (400) rather than tying up disk and a thread.
pub const MAX_CLIP_MS: i64 = 3_600_000;
/// Clip exports running at once (each one is a blocking thread reading segments and writing a
/// temp file); more get a 503 with Retry-After.
const CLIP_SLOTS: usize = 2;
const DEFAULT_POSITION_LIMIT: usize = 10_000;
const MAX_POSITION_LIMIT: usize = 200_000;

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
}

/// Shared state of the handlers.
pub struct AppState {
    /// Canonical data dir: every file served must canonicalize to a path under it.
    pub data_dir: PathBuf,
    pub catalog: Arc<dyn Catalog>,
    pub signer: Option<TokenSigner>,
    pub ingestd_url: String,
    pub client: reqwest::Client,
    pub watch_timeout: Duration,
    pub live_timeout: Duration,
    /// Permits for concurrent clip exports.
    pub clip_slots: Arc<Semaphore>,
}

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
pub fn open_catalog(config: &Config) -> Result<Arc<dyn Catalog>, ServeError> {
    let url = config
        .database_url
        .clone()
        .unwrap_or_else(|| streamcore::catalog::default_database_url(&config.data_dir));
    let catalog = streamcore::catalog::Catalog::open(&url)?;
    tracing::info!(url = %catalog.url(), backend = %catalog.backend(), "catalog open");
    Ok(Arc::new(catalog))
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
pub async fn serve_with_catalog(
    config: Config,
    catalog: Arc<dyn Catalog>,
) -> Result<Running, ServeError> {
    let data_dir = std::fs::canonicalize(&config.data_dir)
        .map_err(|e| ServeError::DataDir(config.data_dir.clone(), e))?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .build()?;
    let state = Arc::new(AppState {
        data_dir,
        catalog,
        signer: config.token_secret.as_deref().map(TokenSigner::new),
        ingestd_url: config.ingestd_url.trim_end_matches('/').to_owned(),
        client,
        watch_timeout: config.watch_timeout,
        live_timeout: config.live_timeout,
        clip_slots: Arc::new(Semaphore::new(CLIP_SLOTS)),
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
        rx,
    ));
    tracing::info!(%addr, data_dir = %config.data_dir.display(), max_connections = config.max_connections, "hlsd listening");
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
                tokio::spawn(async move {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    // Slow senders of headers must not hold a connection slot for long.
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_buf_size(MAX_REQUEST_HEAD);
                    // Clients that stop reading must not hold a slot either.
                    let io = TokioIo::new(crate::stall::WriteStallLimit::new(tcp, send_timeout));
                    if let Err(e) = builder.serve_connection(io, svc).await {
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

fn request() -> impl Filter<Extract = (Req,), Error = Infallible> + Clone {
    warp::method()
        .and(warp::header::headers_cloned())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(|method, headers, raw: String| Req {
            method,
            headers,
            query: http::parse_query(&raw),
        })
}

/// All routes; never rejects (unknown paths get a JSON 404).
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let st = warp::any().map(move || state.clone());
    let get = warp::get().or(warp::head()).unify();

    let live = warp::path!("live" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |stream: String, file: String, st: Arc<AppState>, req: Req| async move {
                serve_live(st, stream, None, file, req).await
            },
        );
    let live_t = warp::path!("live" / String / "t" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |stream: String, tok: String, file: String, st: Arc<AppState>, req: Req| async move {
                serve_live(st, stream, Some(tok), file, req).await
            },
        );
    let vod = warp::path!("vod" / String / String / "index.m3u8")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |kind: String, id: String, st: Arc<AppState>, req: Req| async move {
                serve_vod(st, kind, id, None, req).await
            },
        );
    let vod_t = warp::path!("vod" / String / String / "t" / String / "index.m3u8")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |kind: String, id: String, tok: String, st: Arc<AppState>, req: Req| async move {
                serve_vod(st, kind, id, Some(tok), req).await
            },
        );
    let streams = warp::path!("api" / "streams")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|st: Arc<AppState>, req: Req| async move { api_streams(st, req).await });
    let clip = warp::path!("api" / "streams" / String / "clip.mp4")
        .and(get)
        .and(st.clone())
        .and(request())
        .then(|stream: String, st: Arc<AppState>, req: Req| async move {
            export_clip(st, stream, req).await
        });
    let devices = warp::path!("api" / "devices")
        .and(get)
        .and(st.clone())
        .then(|st: Arc<AppState>| async move { api_devices(st).await });
    let device_q = warp::path!("api" / "devices" / String / String)
        .and(get)
        .and(st.clone())
        .and(request())
        .then(
            |sim: String, what: String, st: Arc<AppState>, req: Req| async move {
                api_device_query(st, sim, what, req).await
            },
        );
    let control = warp::path!("api" / "devices" / String / "channels" / String / String)
        .and(warp::post())
        .and(st.clone())
        .then(
            |sim: String, ch: String, action: String, st: Arc<AppState>| async move {
                control(st, sim, ch, action).await
            },
        );
    let index = warp::path::end()
        .and(get)
        .and(request())
        .map(|req: Req| web::index(&req));
    let assets = warp::path!("static" / String)
        .and(get)
        .and(request())
        .map(|name: String, req: Req| web::asset(&name, &req));
    let options = warp::options()
        .and(request())
        .map(|req: Req| http::preflight(&req));
    let fallback = warp::any().and(warp::path::full()).and(warp::method()).map(
        |path: warp::path::FullPath, method: Method| {
            http::error(
                StatusCode::NOT_FOUND,
                format!("no route for {method} {}", path.as_str()),
            )
        },
    );

    live.or(live_t)
        .unify()
        .or(vod)
        .unify()
        .or(vod_t)
        .unify()
        .or(streams)
        .unify()
        .or(clip)
        .unify()
        .or(devices)
        .unify()
        .or(device_q)
        .unify()
        .or(control)
        .unify()
        .or(index)
        .unify()
        .or(assets)
        .unify()
        .or(options)
        .unify()
        .or(fallback)
        .unify()
        .map(http::add_cors)
}

fn not_found(what: impl std::fmt::Display) -> Response {
    http::error(StatusCode::NOT_FOUND, format!("{what} not found"))
}

fn token_refused(e: TokenError) -> Response {
    http::error(StatusCode::FORBIDDEN, e)
}

/// Checks the token (path form first, then `?token=`) when a secret is configured.
/// Returns the token and its expiry when one was accepted.
fn check_token(
    st: &AppState,
    scope: &str,
    path_token: Option<&str>,
    req: &Req,
) -> Result<Option<(String, u64)>, Response> {
    let Some(signer) = &st.signer else {
        return Ok(None);
    };
    let tok = path_token
        .or(req.query.get("token").map(String::as_str))
        .ok_or(TokenError::Missing)
        .map_err(token_refused)?;
    let expiry = signer
        .verify(scope, tok, now_unix())
        .map_err(token_refused)?;
    Ok(Some((tok.to_owned(), expiry)))
}

/// Opens `DATA/live/<stream>/<file>` for reading after validating both names, and refuses
/// anything whose canonical path leaves the data dir (e.g. a symlink planted in a stream dir).
fn open_live_file(
    data_dir: &Path,
    stream: &str,
    file: &str,
) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    let path = data_dir.join("live").join(stream).join(file);
    let canon = std::fs::canonicalize(&path)?;
    if !canon.starts_with(data_dir) {
        tracing::warn!(path = %path.display(), "refusing a file outside the data dir");
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "outside data dir",
        ));
    }
    let f = std::fs::File::open(&canon)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "not a file",
        ));
    }
    Ok((f, meta))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking task panicked")
}

async fn serve_live(
    st: Arc<AppState>,
    stream: String,
    path_token: Option<String>,
    file: String,
    req: Req,
) -> Response {
    if !names::valid_stream(&stream) {
        return http::error(StatusCode::NOT_FOUND, "invalid stream name");
    }
    let is_playlist = file == "index.m3u8";
    if !is_playlist && names::segment_sequence(&file).is_none() {
        return http::error(StatusCode::NOT_FOUND, "invalid segment name");
    }
    let token = match check_token(&st, &stream, path_token.as_deref(), &req) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let data_dir = st.data_dir.clone();
    let (s2, f2) = (stream.clone(), file.clone());
    let opened = blocking(move || -> std::io::Result<_> {
        let (f, meta) = open_live_file(&data_dir, &s2, &f2)?;
        if is_playlist {
            use std::io::Read as _;
            let mut text = String::with_capacity(meta.len() as usize);
            (&f).read_to_string(&mut text)?;
            Ok((None, Some(text), meta))
        } else {
            Ok((Some(f), None, meta))
        }
    })
    .await;
    let (file_handle, text, meta) = match opened {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return not_found(if is_playlist {
                format!("stream {stream}")
            } else {
                format!("segment {stream}/{file}")
            })
        }
        Err(e) => {
            tracing::warn!(%stream, %file, error = %e, "reading live file");
            return http::error(StatusCode::INTERNAL_SERVER_ERROR, "read error");
        }
    };
    if let Some(text) = text {
        // A query token is copied into segment URIs; the path form needs nothing (relative URIs
        // resolve under /t/<token>/).
        let body = match (&token, &path_token) {
            (Some((tok, _)), None) => m3u8::add_token_to_uris(&text, tok),
            _ => text,
        };
        let rep = Representation::text(
            &req,
            Bytes::from(body),
            MPEGURL,
            LIVE_PLAYLIST_CACHE,
            meta.modified().ok(),
            true,
        );
        return http::respond(&req, rep);
    }
    let file = file_handle.expect("segment opened");
    let rep = Representation {
        etag: http::file_etag(&meta),
        source: Source::File {
            file: Arc::new(file),
            len: meta.len(),
        },
        content_type: MP2T,
        cache_control: SEGMENT_CACHE,
        last_modified: meta.modified().ok(),
        gzip: false,
        vary_encoding: false,
    };
    http::respond(&req, rep)
}

fn catalog_failed(e: CatalogError) -> Response {
    tracing::warn!(error = %e, "catalog query failed");
    match e {
        CatalogError::Unavailable(_) => http::error(StatusCode::SERVICE_UNAVAILABLE, e),
        _ => http::error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn serve_vod(
    st: Arc<AppState>,
    kind: String,
    id: String,
    path_token: Option<String>,
    req: Req,
) -> Response {
    // Session ids are the catalog's strings, incident ids its integers; both are checked
    // before they reach a token scope or a query.
    let incident_id = match kind.as_str() {
        "session" if names::valid_session_id(&id) => None,
        "incident" => match id
            .parse::<i64>()
            .ok()
            .filter(|_| id.len() <= 19 && id.bytes().all(|b| b.is_ascii_digit()))
        {
            Some(n) => Some(n),
            None => return http::error(StatusCode::NOT_FOUND, "invalid id"),
        },
        "session" => return http::error(StatusCode::NOT_FOUND, "invalid id"),
        _ => return not_found(format!("vod kind {kind}")),
    };
    let scope = format!("vod/{kind}/{id}");
    let token = match check_token(&st, &scope, path_token.as_deref(), &req) {
        Ok(t) => t,
        Err(resp) => return resp,
    };
    let channel = req
        .query
        .get("channel")
        .and_then(|c| names::parse_channel(c));
    let cat = st.catalog.clone();
    let found = blocking(
        move || -> Result<Option<(Vec<SegmentRow>, bool)>, CatalogError> {
            let Some(incident_id) = incident_id else {
                let Some(sess) = cat.session(&id)? else {
                    return Ok(None);
                };
                return Ok(Some((cat.session_segments(&id)?, sess.ended_ms.is_some())));
            };
            {
                let Some(inc) = cat.incident(incident_id)? else {
                    return Ok(None);
                };
                let channel = match channel.or(inc.channel) {
                    Some(c) => Some(c),
                    None => cat
                        .devices()?
                        .into_iter()
                        .find(|d| d.sim == inc.sim)
                        .and_then(|d| d.channels.first().copied()),
                };
                let Some(channel) = channel else {
                    return Ok(Some((Vec::new(), inc.ended_ms.is_some())));
                };
                // Segments overlapping the incident: the first is the one containing its start.
                let range = TimeRange {
                    from_ms: Some(inc.started_ms),
                    to_ms: inc.ended_ms,
                };
                Ok(Some((
                    cat.stream_segments(&names::device_stream(&inc.sim, channel), range)?,
                    inc.ended_ms.is_some(),
                )))
            }
        },
    )
    .await;
    let (segments, finished) = match found {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(&scope),
        Err(e) => return catalog_failed(e),
    };
    if segments.is_empty() {
        return not_found(format!("segments of {scope}"));
    }
    let signer = st.signer.clone();
    let seg_uri = |s: &SegmentRow| match (&signer, &token) {
        (Some(signer), Some((_, expiry))) => {
            let t = signer.sign(&s.stream, *expiry);
            if path_token.is_some() {
                format!("/live/{}/t/{t}/{}.ts", s.stream, s.sequence)
            } else {
                format!("/live/{}/{}.ts?token={t}", s.stream, s.sequence)
            }
        }
        _ => format!("/live/{}/{}.ts", s.stream, s.sequence),
    };
    let text = m3u8::render_playlist(&segments, finished, seg_uri);
    let cache = if finished {
        VOD_FINISHED_CACHE
    } else {
        VOD_OPEN_CACHE
    };
    http::respond(
        &req,
        Representation::text(&req, Bytes::from(text), MPEGURL, cache, None, true),
    )
}

/// `GET /api/streams/<stream>/clip.mp4?from=&to=`: the recording of `[from, to)` as an MP4
/// download, remuxed in-process (streamcore::clip). Cuts are at segment boundaries: the clip
/// starts with the segment containing `from` and ends with the one containing `to`
/// (`x-clip-start-ms` / `x-clip-end-ms` say what it covers). Needs a token for the stream
/// (`?token=`) when tokens are on.
async fn export_clip(st: Arc<AppState>, stream: String, req: Req) -> Response {
    if !names::valid_stream(&stream) {
        return http::error(StatusCode::NOT_FOUND, "invalid stream name");
    }
    if let Err(resp) = check_token(&st, &stream, None, &req) {
        return resp;
    }
    let range = match parse_range(&req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let (Some(from), Some(to)) = (range.from_ms, range.to_ms) else {
        return http::error(StatusCode::BAD_REQUEST, "from and to are both required");
    };
    if to <= from || to - from > MAX_CLIP_MS {
        return http::error(
            StatusCode::BAD_REQUEST,
            format!(
                "expected from < to and at most {} s between them",
                MAX_CLIP_MS / 1000
            ),
        );
    }
    let Ok(_permit) = st.clip_slots.clone().try_acquire_owned() else {
        let mut resp = http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many clip exports running; retry shortly",
        );
        resp.headers_mut().insert(
            warp::http::header::RETRY_AFTER,
            "2".parse().expect("header"),
        );
        return resp;
    };
    let (cat, data_dir, s2) = (st.catalog.clone(), st.data_dir.clone(), stream.clone());
    let made = blocking(move || make_clip(&*cat, &data_dir, &s2, range)).await;
    let (file, meta, start_ms, end_ms) = match made {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(format!("recording of {stream} in that range")),
        Err(ClipError::Catalog(e)) => return catalog_failed(e),
        Err(ClipError::Missing(what)) => {
            tracing::warn!(%stream, %what, "clip export: a catalogued segment file is missing");
            return http::error(
                StatusCode::NOT_FOUND,
                format!("segment file {what} is gone"),
            );
        }
        Err(ClipError::Failed(e)) => {
            tracing::warn!(%stream, error = %e, "clip export failed");
            return http::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("clip export: {e}"),
            );
        }
    };
    let rep = Representation {
        etag: http::file_etag(&meta),
        source: Source::File {
            file: Arc::new(file),
            len: meta.len(),
        },
        content_type: MP4,
        cache_control: CLIP_CACHE,
        last_modified: None,
        gzip: false,
        vary_encoding: false,
    };
    let mut resp = http::respond(&req, rep);
    let h = resp.headers_mut();
    let disposition = format!("attachment; filename=\"{stream}_{from}-{to}.mp4\"");
    for (k, v) in [
        ("content-disposition", disposition),
        ("x-clip-start-ms", start_ms.to_string()),
        ("x-clip-end-ms", end_ms.to_string()),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    resp
}

enum ClipError {
    Catalog(CatalogError),
    Missing(String),
    Failed(String),
}

/// Remuxes the segments of `stream` overlapping `range` into an unlinked temp file; returns
/// it open, with the time span it covers. `None` when the catalog has no segments there.
fn make_clip(
    cat: &dyn Catalog,
    data_dir: &Path,
    stream: &str,
    range: TimeRange,
) -> Result<Option<(std::fs::File, std::fs::Metadata, i64, i64)>, ClipError> {
    let rows = cat
        .stream_segments(stream, range)
        .map_err(ClipError::Catalog)?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(None);
    };
    let (start_ms, end_ms) = (
        first.program_date_time_ms,
        last.program_date_time_ms + (last.duration_90k + 45) / 90,
    );
    let mut inputs = Vec::with_capacity(rows.len());
    let mut prev: Option<u64> = None;
    for row in &rows {
        // Rows name `live/<stream>/<n>.ts` (checked by the catalog adapter); still refuse a
        // file whose canonical path leaves the data dir (a planted symlink).
        let path = std::fs::canonicalize(data_dir.join(&row.path))
            .ok()
            .filter(|p| p.starts_with(data_dir))
            .ok_or_else(|| ClipError::Missing(row.path.clone()))?;
        // A gap in sequence numbers is a break in the recording as much as a flagged one.
        let gap = prev.is_some_and(|p| p + 1 != row.sequence);
        inputs.push(streamcore::clip::ClipSegment {
            path,
            discontinuity: row.discontinuity || gap,
        });
        prev = Some(row.sequence);
    }
    let tmp = tempfile::Builder::new()
        .prefix("hlsd-clip-")
        .suffix(".mp4")
        .tempfile()
        .map_err(|e| ClipError::Failed(format!("temp file: {e}")))?;
    let stats = streamcore::clip::remux_to_mp4(&inputs, tmp.path())
        .map_err(|e| ClipError::Failed(e.to_string()))?;
    // Reopen (libavformat wrote through its own handle), then unlink: the open file lives on
    // until the response body has been sent.
    let file = std::fs::File::open(tmp.path())
        .map_err(|e| ClipError::Failed(format!("reopening the clip: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| ClipError::Failed(format!("clip metadata: {e}")))?;
    drop(tmp);
    tracing::info!(%stream, segments = stats.segments, frames = stats.frames, bytes = stats.bytes, "clip exported");
    Ok(Some((file, meta, start_ms, end_ms)))
}

/// Streams with a playlist on disk (what can be served), marked live from the files and joined
/// with the catalog's open sessions so a client can also open the recording.
async fn api_streams(st: Arc<AppState>, req: Req) -> Response {
    let all = matches!(req.query.get("all").map(String::as_str), Some("1" | "true"));
    let (dir, timeout, cat) = (st.data_dir.clone(), st.live_timeout, st.catalog.clone());
    let scanned = blocking(move || -> Result<_, CatalogError> {
        Ok((
            crate::catalog::scan_streams(&dir, timeout)?,
            cat.live_streams()?,
        ))
    })
    .await;
    let (streams, open) = match scanned {
        Ok(v) => v,
        Err(e) => return catalog_failed(e),
    };
    let now = SystemTime::now();
    let list: Vec<_> = streams
        .into_iter()
        .filter(|s| all || s.live)
        .map(|s| {
            let updated_ms = s
                .modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let device = names::split_device_stream(&s.name);
            let session = open.iter().find(|o| o.stream == s.name);
            json!({
                "name": s.name,
                "live": s.live,
                "ended": s.playlist.end_list,
                "url": format!("/live/{}/index.m3u8", s.name),
                "updated": m3u8::format_pdt(updated_ms),
                "updated_ms": updated_ms,
                "age_ms": now.duration_since(s.modified).map(|d| d.as_millis() as u64).unwrap_or(0),
                "target_duration": s.playlist.target_duration,
                "media_sequence": s.playlist.media_sequence,
                "segments": s.playlist.segments.len(),
                "window_seconds": s.playlist.segments.iter().map(|x| x.duration).sum::<f64>(),
                "sim": device.map(|d| d.0),
                "channel": device.map(|d| d.1),
                "session_id": session.map(|o| o.session_id.as_str()),
                "session_started_ms": session.map(|o| o.started_ms),
            })
        })
        .collect();
    http::json(StatusCode::OK, &list)
}

async fn api_devices(st: Arc<AppState>) -> Response {
    let cat = st.catalog.clone();
    match blocking(move || cat.devices()).await {
        Ok(d) => http::json(StatusCode::OK, &d),
        Err(e) => catalog_failed(e),
    }
}

/// `from`/`to`: milliseconds since the epoch or RFC 3339.
fn parse_time(v: &str) -> Option<i64> {
    if let Ok(ms) = v.parse::<i64>() {
        return Some(ms);
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn parse_range(req: &Req) -> Result<TimeRange, Response> {
    let get = |k: &str| -> Result<Option<i64>, Response> {
        match req.query.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time(v).map(Some).ok_or_else(|| {
                http::error(
                    StatusCode::BAD_REQUEST,
                    format!("{k}: expected milliseconds since the epoch or RFC 3339, got {v:?}"),
                )
            }),
        }
    };
    Ok(TimeRange {
        from_ms: get("from")?,
        to_ms: get("to")?,
    })
}

async fn api_device_query(st: Arc<AppState>, sim: String, what: String, req: Req) -> Response {
    if !names::valid_sim(&sim) {
        return http::error(StatusCode::NOT_FOUND, "invalid SIM");
    }
    let range = match parse_range(&req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let cat = st.catalog.clone();
    let result = match what.as_str() {
        "sessions" => {
            blocking(move || {
                cat.sessions(&sim, range)
                    .map(|v| serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        "incidents" => {
            blocking(move || {
                cat.incidents(&sim, range)
                    .map(|v| serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        "positions" => {
            let limit = match req.query.get("limit").map(|l| l.parse::<usize>()) {
                None => DEFAULT_POSITION_LIMIT,
                Some(Ok(l)) if l > 0 => l.min(MAX_POSITION_LIMIT),
                Some(_) => {
                    return http::error(
                        StatusCode::BAD_REQUEST,
                        "limit: expected a positive integer",
                    )
                }
            };
            blocking(move || {
                cat.positions(&sim, range, limit)
                    .map(|v| serde_json::to_value(v).unwrap_or_default())
            })
            .await
        }
        _ => return not_found(format!("device resource {what}")),
    };
    match result {
        Ok(v) => http::json(StatusCode::OK, &v),
        Err(e) => catalog_failed(e),
    }
}

/// True when the stream's playlist is live: has a segment, no ENDLIST, and was written at or
/// after `since` (so a stale playlist from an earlier session doesn't count).
fn playlist_fresh(data_dir: &Path, stream: &str, since: SystemTime) -> bool {
    let Ok((mut f, meta)) = open_live_file(data_dir, stream, "index.m3u8") else {
        return false;
    };
    let Ok(modified) = meta.modified() else {
        return false;
    };
    let mut text = String::new();
    if std::io::Read::read_to_string(&mut f, &mut text).is_err() {
        return false;
    }
    match m3u8::parse_media(&text) {
        Ok(p) => !p.end_list && !p.segments.is_empty() && modified >= since,
        Err(_) => false,
    }
}

async fn control(st: Arc<AppState>, sim: String, ch: String, action: String) -> Response {
    if !names::valid_sim(&sim) {
        return http::error(StatusCode::NOT_FOUND, "invalid SIM");
    }
    let Some(channel) = names::parse_channel(&ch) else {
        return http::error(StatusCode::NOT_FOUND, "invalid channel");
    };
    let ingest_action = match action.as_str() {
        "watch" => "live",
        "stop" => "stop",
        _ => return not_found(format!("action {action}")),
    };
    let stream = names::device_stream(&sim, channel);
    // A playlist already being updated is as good as a new one: a second viewer needn't wait.
    let started = Instant::now();
    let already_live = {
        let (dir, s, since) = (
            st.data_dir.clone(),
            stream.clone(),
            SystemTime::now() - st.live_timeout.min(Duration::from_secs(10)),
        );
        action == "watch" && blocking(move || playlist_fresh(&dir, &s, since)).await
    };
    let since = SystemTime::now();
    let url = format!(
        "{}/api/devices/{sim}/channels/{channel}/{ingest_action}",
        st.ingestd_url
    );
    match st.client.post(&url).send().await {
        Err(e) => {
            return http::error(
                StatusCode::BAD_GATEWAY,
                format!("ingestd unreachable at {}: {e}", st.ingestd_url),
            );
        }
        Ok(r) if !r.status().is_success() => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            let ours = if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_GATEWAY
            };
            return http::json(
                ours,
                &json!({"error": format!("ingestd answered {status} to {ingest_action}"), "status": ours.as_u16(), "ingestd_status": status.as_u16(), "ingestd_body": body, "stream": stream}),
            );
        }
        Ok(_) => {}
    }
    let playlist = format!("/live/{stream}/index.m3u8");
    if action == "stop" {
        return http::json(StatusCode::OK, &json!({"stream": stream, "stopped": true}));
    }
    if !already_live {
        let deadline = started + st.watch_timeout;
        loop {
            let (dir, s) = (st.data_dir.clone(), stream.clone());
            if blocking(move || playlist_fresh(&dir, &s, since)).await {
                break;
            }
            if Instant::now() >= deadline {
                return http::json(
                    StatusCode::GATEWAY_TIMEOUT,
                    &json!({
                        "error": format!("no segment of {stream} within {} s of asking ingestd", st.watch_timeout.as_secs_f64()),
                        "status": 504, "stream": stream, "playlist": playlist,
                    }),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    http::json(
        StatusCode::OK,
        &json!({"stream": stream, "playlist": playlist, "waited_ms": started.elapsed().as_millis() as u64, "already_live": already_live}),
    )
}
