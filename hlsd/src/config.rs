//! hlsd configuration: command-line flags, `HLSD_*` environment variables and an optional TOML
//! file, merged with precedence flags > environment > file > built-in defaults.
//!
//! Flags and environment are parsed together by clap (a flag wins over its variable); the file
//! is read afterwards and only fills what neither gave. Unknown keys in the file are an error so
//! a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;
use streamcore::storage::StorageLocation;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_INGESTD_URL: &str = "http://127.0.0.1:6811";
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_WATCH_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_LIVE_TIMEOUT_SECS: u64 = 20;
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 15;
pub const DEFAULT_SEND_TIMEOUT_SECS: u64 = 30;
pub const DEFAULT_STORAGE_CACHE_MB: u64 = 256;
pub const DEFAULT_STORAGE_PLAYLIST_TTL_MS: u64 = 500;
pub const DEFAULT_SESSION_HOURS: u64 = 12;
pub const DEFAULT_MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// The PEM files of `--tls-cert` and `--tls-key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the server needs, after merging all sources.
#[derive(Debug, Clone)]
pub struct Config {
    /// Root of the data dir (`live/<stream>/...`, `catalog.sqlite`).
    pub data_dir: PathBuf,
    /// Catalog database URL; `None` = the default SQLite file `DATA/catalog.sqlite`.
    pub database_url: Option<String>,
    pub listen: SocketAddr,
    /// Base URL of ingestd's control API.
    pub ingestd_url: String,
    /// ingestd's `--control-token`, sent as `Authorization: Bearer` on every request to it.
    pub ingestd_token: Option<String>,
    /// Key of player tokens and session cookies; `None`: the catalog's (made once, shared by
    /// every hlsd on the catalog).
    pub token_secret: Option<String>,
    /// Serve viewing and the API without login (as an operator on every device; never admin).
    pub allow_anonymous: bool,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Longest lifetime of a player token minted by `POST /api/tokens`.
    pub max_token_ttl: Duration,
    /// Name of this instance in the viewers table (several hlsd share one catalog).
    pub instance_id: Option<String>,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 through ALPN) with this PEM certificate chain and key.
    pub tls: Option<TlsFiles>,
    /// The page's map base layer: this raster tile URL template (`{z}`, `{x}`, `{y}`), or,
    /// when `None`, the country outlines embedded in the binary (no network needed).
    pub map_tile_url: Option<String>,
    /// Attribution shown on the map when tiles are used (tile licences usually require one).
    pub map_attribution: Option<String>,
    /// Concurrent TCP connections served; more are answered 503 and closed.
    pub max_connections: usize,
    /// How long `watch` waits for the first segment of the requested stream.
    pub watch_timeout: Duration,
    /// A playlist without ENDLIST counts as live while modified within this long.
    pub live_timeout: Duration,
    /// A connection that doesn't complete a request head within this long (idle keep-alive
    /// included) is closed, so slow or idle clients can't hold connection slots.
    pub header_timeout: Duration,
    /// A response write that stays blocked this long (the client stopped reading) ends the
    /// connection, so clients that read extremely slowly can't hold connection slots.
    pub send_timeout: Duration,
    /// Where the live playlists and segments are read: the data dir, or the object store the
    /// ingestd write to.
    pub storage: StorageLocation,
    /// The `AWS_*` settings an S3 store is opened with (read from the environment at start).
    pub storage_vars: Vec<(String, String)>,
    /// Segment bytes kept in memory from the store.
    pub storage_cache_bytes: u64,
    /// How long a playlist read from the store is served before it is read again.
    pub storage_playlist_ttl: Duration,
}

impl Config {
    /// Defaults for everything but the data dir.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            database_url: None,
            listen: DEFAULT_LISTEN.parse().expect("valid default"),
            ingestd_url: DEFAULT_INGESTD_URL.into(),
            ingestd_token: None,
            token_secret: None,
            allow_anonymous: false,
            session_ttl: Duration::from_secs(DEFAULT_SESSION_HOURS * 3600),
            max_token_ttl: Duration::from_secs(DEFAULT_MAX_TOKEN_TTL_SECS),
            instance_id: None,
            tls: None,
            map_tile_url: None,
            map_attribution: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            watch_timeout: Duration::from_secs(DEFAULT_WATCH_TIMEOUT_SECS),
            live_timeout: Duration::from_secs(DEFAULT_LIVE_TIMEOUT_SECS),
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECS),
            send_timeout: Duration::from_secs(DEFAULT_SEND_TIMEOUT_SECS),
            storage: StorageLocation::DataDir,
            storage_vars: Vec::new(),
            storage_cache_bytes: DEFAULT_STORAGE_CACHE_MB << 20,
            storage_playlist_ttl: Duration::from_millis(DEFAULT_STORAGE_PLAYLIST_TTL_MS),
        }
    }
}

/// `hlsd` command line. Every flag can also come from the `HLSD_*` variable shown, or the
/// `--config` file (same names with underscores).
#[derive(Debug, Parser, Default)]
#[command(
    name = "hlsd",
    version,
    about = "HTTP delivery of live and recorded HLS, JSON API and the operator web page"
)]
pub struct Cli {
    /// TOML file with any of the settings below (keys: data_dir, database_url, listen, ingestd_url,
    /// ingestd_token, token_secret, allow_anonymous, session_hours, max_token_ttl_secs, instance_id, tls_cert, tls_key,
    /// map_tile_url, map_attribution, max_connections, watch_timeout_secs, live_timeout_secs, header_timeout_secs,
    /// send_timeout_secs, storage_url, storage_cache_mb, storage_playlist_ttl_ms).
    #[arg(long, env = "HLSD_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory written by ingestd (live/<stream>/index.m3u8 and segments). Required.
    #[arg(long, env = "HLSD_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Catalog database URL (SQLite path or sqlite://, postgres://, mysql://). Default: DATA/catalog.sqlite.
    #[arg(long, env = "HLSD_DATABASE_URL", value_name = "URL", global = true)]
    pub database_url: Option<String>,
    /// Address to listen on [default: 0.0.0.0:8080].
    #[arg(long, env = "HLSD_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// ingestd control API, used by watch/stop [default: http://127.0.0.1:6811].
    #[arg(long, env = "HLSD_INGESTD_URL", value_name = "URL")]
    pub ingestd_url: Option<String>,
    /// ingestd's --control-token, sent with every request to ingestd [default: none].
    #[arg(
        long,
        env = "HLSD_INGESTD_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub ingestd_token: Option<String>,
    /// Key of the HMAC-signed player tokens and session cookies [default: generated once and kept in the catalog's settings table, shared by every hlsd on that catalog].
    #[arg(
        long,
        env = "HLSD_TOKEN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub token_secret: Option<String>,
    /// Serve live and recorded video and the API without login, as an operator on every device (admin pages still need a login). For demos and closed networks only. Without it an anonymous client gets nothing but the login page [default: off].
    #[arg(long, env = "HLSD_ALLOW_ANONYMOUS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub allow_anonymous: Option<bool>,
    /// Hours a login (session cookie) lasts [default: 12].
    #[arg(long, env = "HLSD_SESSION_HOURS", value_name = "HOURS")]
    pub session_hours: Option<u64>,
    /// Longest lifetime, in seconds, of a player token minted by POST /api/tokens [default: 86400].
    #[arg(long, env = "HLSD_MAX_TOKEN_TTL_SECS", value_name = "SECS")]
    pub max_token_ttl_secs: Option<u64>,
    /// Name of this instance in the catalog's viewers table, which tells ingestd when nobody watches a live channel [default: host name and listen port].
    #[arg(long, env = "HLSD_INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,
    /// PEM certificate chain: with --tls-key, hlsd serves HTTPS only (HTTP/2 and HTTP/1.1 by ALPN) and the session cookie gets Secure [default: plain HTTP].
    #[arg(long, env = "HLSD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "HLSD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Raster tiles under the page's map, as a URL template with {z}, {x} and {y} (Web Mercator, 256 px; e.g. http://tiles.example/{z}/{x}/{y}.png). The browser fetches them itself [default: none: country outlines embedded in hlsd, which need no network].
    #[arg(long, env = "HLSD_MAP_TILE_URL", value_name = "URL")]
    pub map_tile_url: Option<String>,
    /// Attribution text shown on the map with --map-tile-url (e.g. "© OpenStreetMap contributors").
    #[arg(long, env = "HLSD_MAP_ATTRIBUTION", value_name = "TEXT")]
    pub map_attribution: Option<String>,
    /// Maximum concurrent connections; more are answered 503 [default: 4096].
    #[arg(long, env = "HLSD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a watch request waits for the stream's first segment before answering 504 [default: 15].
    #[arg(long, env = "HLSD_WATCH_TIMEOUT_SECS", value_name = "SECS")]
    pub watch_timeout_secs: Option<u64>,
    /// Seconds since its last update after which a playlist without ENDLIST is no longer live [default: 20].
    #[arg(long, env = "HLSD_LIVE_TIMEOUT_SECS", value_name = "SECS")]
    pub live_timeout_secs: Option<u64>,
    /// Seconds a connection may take to send a request head (and may idle between requests) [default: 15].
    #[arg(long, env = "HLSD_HEADER_TIMEOUT_SECS", value_name = "SECS")]
    pub header_timeout_secs: Option<u64>,
    /// Seconds a response write may stay blocked (a client not reading) before the connection is closed [default: 30].
    #[arg(long, env = "HLSD_SEND_TIMEOUT_SECS", value_name = "SECS")]
    pub send_timeout_secs: Option<u64>,
    /// Where live playlists and segments are read: the same s3://bucket[/prefix] as ingestd's --storage-url, for hlsd on another machine than the ingestd (credentials, region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP) [default: the data dir].
    #[arg(long, env = "HLSD_STORAGE_URL", value_name = "URL")]
    pub storage_url: Option<String>,
    /// Megabytes of segments read from the store kept in memory, so that every viewer of a segment after the first costs the store nothing [default: 256].
    #[arg(long, env = "HLSD_STORAGE_CACHE_MB", value_name = "MB")]
    pub storage_cache_mb: Option<u64>,
    /// Milliseconds a playlist read from the store is served before it is read again: the store sees one GET per stream per this period, whatever the number of viewers; viewers see a new segment up to this much later [default: 500].
    #[arg(long, env = "HLSD_STORAGE_PLAYLIST_TTL_MS", value_name = "MS")]
    pub storage_playlist_ttl_ms: Option<u64>,
    /// Manage accounts and devices in the catalog instead of serving (same --data-dir,
    /// --database-url and --config as the daemon).
    #[command(subcommand)]
    pub command: Option<crate::admin::Command>,
}

/// The `--config` file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<SocketAddr>,
    pub ingestd_url: Option<String>,
    pub ingestd_token: Option<String>,
    pub token_secret: Option<String>,
    pub allow_anonymous: Option<bool>,
    pub session_hours: Option<u64>,
    pub max_token_ttl_secs: Option<u64>,
    pub instance_id: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub map_tile_url: Option<String>,
    pub map_attribution: Option<String>,
    pub max_connections: Option<usize>,
    pub watch_timeout_secs: Option<u64>,
    pub live_timeout_secs: Option<u64>,
    pub header_timeout_secs: Option<u64>,
    pub send_timeout_secs: Option<u64>,
    pub storage_url: Option<String>,
    pub storage_cache_mb: Option<u64>,
    pub storage_playlist_ttl_ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("config file {0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("--data-dir (or HLSD_DATA_DIR, or data_dir in the config file) is required")]
    NoDataDir,
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("--tls-cert and --tls-key go together (both or neither)")]
    TlsPair,
    #[error("--storage-url: {0}")]
    StorageUrl(std::io::Error),
    #[error("--map-tile-url {0:?}: {1}")]
    TileUrl(String, &'static str),
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.into(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e))
    }
}

impl Cli {
    /// Merges flags/environment (already in `self`) over the config file over defaults.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .ok_or(ConfigError::NoDataDir)?;
        let d = Config::new(data_dir);
        let cfg = Config {
            database_url: self.database_url.or(file.database_url),
            listen: self.listen.or(file.listen).unwrap_or(d.listen),
            ingestd_url: self
                .ingestd_url
                .or(file.ingestd_url)
                .unwrap_or(d.ingestd_url),
            ingestd_token: self
                .ingestd_token
                .or(file.ingestd_token)
                .filter(|s| !s.is_empty()),
            token_secret: self
                .token_secret
                .or(file.token_secret)
                .filter(|s| !s.is_empty()),
            allow_anonymous: self
                .allow_anonymous
                .or(file.allow_anonymous)
                .unwrap_or(false),
            session_ttl: self
                .session_hours
                .or(file.session_hours)
                .map_or(d.session_ttl, |h| Duration::from_secs(h * 3600)),
            max_token_ttl: self
                .max_token_ttl_secs
                .or(file.max_token_ttl_secs)
                .map_or(d.max_token_ttl, Duration::from_secs),
            instance_id: self.instance_id.or(file.instance_id),
            tls: match (
                self.tls_cert.or(file.tls_cert),
                self.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => return Err(ConfigError::TlsPair),
            },
            map_tile_url: self
                .map_tile_url
                .or(file.map_tile_url)
                .filter(|s| !s.is_empty()),
            map_attribution: self
                .map_attribution
                .or(file.map_attribution)
                .filter(|s| !s.is_empty()),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            watch_timeout: self
                .watch_timeout_secs
                .or(file.watch_timeout_secs)
                .map_or(d.watch_timeout, Duration::from_secs),
            live_timeout: self
                .live_timeout_secs
                .or(file.live_timeout_secs)
                .map_or(d.live_timeout, Duration::from_secs),
            header_timeout: self
                .header_timeout_secs
                .or(file.header_timeout_secs)
                .map_or(d.header_timeout, Duration::from_secs),
            send_timeout: self
                .send_timeout_secs
                .or(file.send_timeout_secs)
                .map_or(d.send_timeout, Duration::from_secs),
            storage: StorageLocation::parse(
                self.storage_url
                    .or(file.storage_url)
                    .as_deref()
                    .unwrap_or_default(),
            )
            .map_err(ConfigError::StorageUrl)?,
            storage_vars: streamcore::storage::s3::aws_env(),
            storage_cache_bytes: self
                .storage_cache_mb
                .or(file.storage_cache_mb)
                .map_or(d.storage_cache_bytes, |mb| mb << 20),
            storage_playlist_ttl: self
                .storage_playlist_ttl_ms
                .or(file.storage_playlist_ttl_ms)
                .map_or(d.storage_playlist_ttl, Duration::from_millis),
            data_dir: d.data_dir,
        };
        if cfg.storage_playlist_ttl.is_zero() {
            return Err(ConfigError::Zero("storage_playlist_ttl_ms"));
        }
        if cfg.max_connections == 0 {
            return Err(ConfigError::Zero("max_connections"));
        }
        if cfg.header_timeout.is_zero() {
            return Err(ConfigError::Zero("header_timeout_secs"));
        }
        if cfg.send_timeout.is_zero() {
            return Err(ConfigError::Zero("send_timeout_secs"));
        }
        if cfg.session_ttl.is_zero() {
            return Err(ConfigError::Zero("session_hours"));
        }
        if cfg.max_token_ttl.is_zero() {
            return Err(ConfigError::Zero("max_token_ttl_secs"));
        }
        if let Some(url) = &cfg.map_tile_url {
            check_tile_url(url).map_err(|why| ConfigError::TileUrl(url.clone(), why))?;
        }
        Ok(cfg)
    }
}

/// A tile URL template the page can fill: absolute http(s) or a path on this host, with the
/// three placeholders (a template missing one would fetch the same tile everywhere).
fn check_tile_url(url: &str) -> Result<(), &'static str> {
    if !(url.starts_with("http://") || url.starts_with("https://") || url.starts_with('/')) {
        return Err("must start with http://, https:// or /");
    }
    if !["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p)) {
        return Err("must contain {z}, {x} and {y}");
    }
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '<' || c == '>')
    {
        return Err("must not contain spaces, quotes or angle brackets");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("hlsd").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hlsd.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nlisten = \"127.0.0.1:9000\"\nmax_connections = 7\n",
        )
        .unwrap();
        let cfg = parse(&[
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9001",
        ])
        .resolve()
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from("/from/file"));
        assert_eq!(cfg.max_connections, 7);
        assert_eq!(cfg.ingestd_url, DEFAULT_INGESTD_URL);
        assert_eq!(cfg.watch_timeout, Duration::from_secs(15));
    }

    #[test]
    fn map_tile_url_needs_its_placeholders() {
        let ok = parse(&[
            "--data-dir",
            "/d",
            "--map-tile-url",
            "https://t.example/{z}/{x}/{y}.png",
        ])
        .resolve()
        .unwrap();
        assert_eq!(
            ok.map_tile_url.as_deref(),
            Some("https://t.example/{z}/{x}/{y}.png")
        );
        for bad in [
            "https://t.example/{z}/{x}.png",
            "ftp://t/{z}/{x}/{y}",
            "t/{z}/{x}/{y}",
        ] {
            let err = parse(&["--data-dir", "/d", "--map-tile-url", bad])
                .resolve()
                .unwrap_err();
            assert!(matches!(err, ConfigError::TileUrl(..)), "{bad}: {err}");
        }
        assert!(parse(&["--data-dir", "/d"])
            .resolve()
            .unwrap()
            .map_tile_url
            .is_none());
    }

    #[test]
    fn file_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hlsd.toml");
        std::fs::write(&file, "data_dir = \"/x\"\nlisten_addr = \"127.0.0.1:1\"\n").unwrap();
        let err = parse(&["--config", file.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("listen_addr"), "{err}");
    }

    #[test]
    fn data_dir_required() {
        assert!(matches!(
            Cli::default().resolve(),
            Err(ConfigError::NoDataDir)
        ));
    }
}
