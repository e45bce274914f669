//! Daemon configuration: command-line flags (clap, each also readable from an
//! `INGESTD_*` environment variable), an optional TOML file that rejects
//! unknown keys, and embedded defaults. Resolved once at start-up with the
//! precedence flags > environment > file > defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub const DEFAULT_JT808_LISTEN: &str = "0.0.0.0:6808";
pub const DEFAULT_JT1078_LISTEN: &str = "0.0.0.0:6809";
pub const DEFAULT_RAW_LISTEN: &str = "127.0.0.1:6810";
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:6811";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error(
        "no data directory: pass --data-dir, set INGESTD_DATA_DIR or `data_dir` in the config file"
    )]
    NoDataDir,
    #[error("{what}: invalid socket address {value:?}")]
    BadAddr { what: &'static str, value: String },
    #[error("{0}")]
    Invalid(String),
}

/// When streams make their low-latency rendition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LowLatencyMode {
    /// While someone asks for it.
    On,
    /// All the time.
    Always,
    Off,
}

fn parse_low_latency(s: &str) -> Result<LowLatencyMode, String> {
    match s {
        "on" | "true" | "1" => Ok(LowLatencyMode::On),
        "always" => Ok(LowLatencyMode::Always),
        "off" | "false" | "0" => Ok(LowLatencyMode::Off),
        _ => Err(format!("{s:?}: expected on, always or off")),
    }
}

/// How long an on-demand stream goes on making parts after the last request for them.
pub const LOW_LATENCY_LINGER: Duration = Duration::from_secs(30);

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// ingestd: receives JT/T 808 signalling, JT/T 1078 video and raw H.264 from
/// devices over TCP and hands the video to the HLS pipeline.
///
/// Every flag can also be set through the environment variable named in its
/// help, or in the TOML file given by --config (same names with `_` instead of
/// `-`; unknown keys are rejected). Precedence: flags > environment > file >
/// defaults.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "ingestd", version, about, long_about)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "INGESTD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (live playlists and segments under DIR/live/STREAM/).
    #[arg(long, env = "INGESTD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Catalog database URL (sqlite://, postgres://, mysql://); default DIR/catalog.sqlite.
    #[arg(long, env = "INGESTD_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// JT/T 808 signalling listen address [default: 0.0.0.0:6808].
    #[arg(long, env = "INGESTD_JT808_LISTEN", value_name = "ADDR")]
    pub jt808_listen: Option<String>,
    /// JT/T 1078 media listen address [default: 0.0.0.0:6809].
    #[arg(long, env = "INGESTD_JT1078_LISTEN", value_name = "ADDR")]
    pub jt1078_listen: Option<String>,
    /// Raw H.264 listen address (`STREAM <name>\n` then Annex-B) [default: 127.0.0.1:6810].
    #[arg(long, env = "INGESTD_RAW_LISTEN", value_name = "ADDR")]
    pub raw_listen: Option<String>,
    /// HTTP metrics and control API listen address [default: 127.0.0.1:6811].
    #[arg(long, env = "INGESTD_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,
    /// IP address devices are told to send media to (0x9101/0x9201);
    /// default: the local address of the device's JT/T 808 connection.
    #[arg(long, env = "INGESTD_ADVERTISE_IP", value_name = "IP")]
    pub advertise_ip: Option<String>,
    /// Maximum concurrent TCP connections over all listeners [default: 10000].
    #[arg(long, env = "INGESTD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds without a complete JT/T packet (raw port: any byte) before a connection is closed [default: 180].
    #[arg(long, env = "INGESTD_IDLE_TIMEOUT", value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Seconds a new connection has to send its first complete packet (raw port: its first line) [default: 10].
    #[arg(long, env = "INGESTD_HANDSHAKE_TIMEOUT", value_name = "SECS")]
    pub handshake_timeout: Option<u64>,
    /// Largest reassembled JT/T 1078 frame in bytes [default: 2097152].
    #[arg(long, env = "INGESTD_MAX_FRAME_BYTES", value_name = "BYTES")]
    pub max_frame_bytes: Option<usize>,
    /// Media worker threads [default: number of cores].
    #[arg(long, env = "INGESTD_MEDIA_WORKERS", value_name = "N")]
    pub media_workers: Option<usize>,
    /// Queued media messages per worker before readers are paused [default: 1024].
    #[arg(long, env = "INGESTD_QUEUE_DEPTH", value_name = "N")]
    pub queue_depth: Option<usize>,
    /// Queued media bytes per worker before readers are paused; bounds memory under a burst from every device at once [default: 4194304].
    #[arg(long, env = "INGESTD_MEDIA_QUEUE_BYTES", value_name = "BYTES")]
    pub media_queue_bytes: Option<usize>,
    /// fsync each segment and playlist before renaming it into place, so that what is listed survives a power cut; off, a process crash still never lists a partial segment, but a power cut may lose the last seconds the kernel had not written [default: off].
    #[arg(long, env = "INGESTD_FSYNC", value_name = "on|off", value_parser = parse_on_off)]
    pub fsync: Option<bool>,
    /// Longest H.264 NAL unit accepted in bytes; longer ones are dropped and counted [default: 4194304].
    #[arg(long, env = "INGESTD_MAX_NAL_BYTES", value_name = "BYTES")]
    pub max_nal_bytes: Option<usize>,
    /// Catalog records held in memory while the database is unreachable; beyond, dropped and counted [default: 200000].
    #[arg(long, env = "INGESTD_CATALOG_BUFFER", value_name = "N")]
    pub catalog_buffer: Option<usize>,
    /// Mux device audio into the HLS (G.711/G.726/ADPCM transcoded to AAC, AAC passed through); "off" counts and drops it [default: on].
    #[arg(long, env = "INGESTD_AUDIO", value_name = "on|off", value_parser = parse_on_off)]
    pub audio: Option<bool>,
    /// AAC output sample rate in Hz; device audio (8 kHz) is resampled when it differs [default: 8000].
    #[arg(long, env = "INGESTD_AUDIO_SAMPLE_RATE", value_name = "HZ")]
    pub audio_sample_rate: Option<u32>,
    /// AAC output bit rate in bits per second [default: 32000].
    #[arg(long, env = "INGESTD_AUDIO_BITRATE", value_name = "BPS")]
    pub audio_bitrate: Option<u32>,
    /// G.726 bit packing of devices' audio: "le" (libavcodec g726le, what most devices send) or "be" (RFC 3551) [default: le].
    #[arg(long, env = "INGESTD_G726_PACKING", value_name = "le|be")]
    pub g726_packing: Option<String>,
    /// Devices (12-digit SIMs, comma-separated) whose G.726 uses the other packing than --g726-packing.
    #[arg(
        long,
        env = "INGESTD_G726_OTHER_PACKING_SIMS",
        value_name = "SIM,...",
        value_delimiter = ','
    )]
    pub g726_other_packing_sims: Option<Vec<String>>,
    /// Secret from which device auth codes are derived (HMAC-SHA256 of the SIM) [default: generated once and kept in the catalog's settings table, shared by every ingestd on that catalog].
    #[arg(
        long,
        env = "INGESTD_AUTH_SECRET",
        value_name = "STRING",
        hide_env_values = true
    )]
    pub auth_secret: Option<String>,
    /// Bearer token the control API (device commands, recordings, low-latency parts) requires in `Authorization: Bearer <token>`; give hlsd the same with --ingestd-token. /metrics stays open [default: none, the API is open to whoever reaches --http-listen, which is loopback by default].
    #[arg(
        long,
        env = "INGESTD_CONTROL_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub control_token: Option<String>,
    /// Name of this node in the catalog's node registry, unique in the cluster [default: host name and JT/T 808 port].
    #[arg(long, env = "INGESTD_INSTANCE_ID", value_name = "NAME")]
    pub instance_id: Option<String>,
    /// Base URL at which other machines (hlsd) reach this node's control API (--http-listen), recorded in the node registry so any hlsd sends a device's commands to the node the device is connected to [default: http://<--http-listen address>, with --advertise-ip or the host name when that is 0.0.0.0].
    #[arg(long, env = "INGESTD_CONTROL_URL", value_name = "URL")]
    pub control_url: Option<String>,
    /// Where segments and playlists go: s3://bucket[/prefix] for an S3-compatible object store (credentials, region and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL, AWS_ALLOW_HTTP), uploaded in the background with a spill queue in DATA/upload-spill; hlsd needs the same URL [default: the data dir].
    #[arg(long, env = "INGESTD_STORAGE_URL", value_name = "URL")]
    pub storage_url: Option<String>,
    /// Uploads to the object store in flight at once: each waits a round trip to the store, so a distant or busy store needs more [default: 16].
    #[arg(long, env = "INGESTD_STORAGE_UPLOAD_WORKERS", value_name = "N")]
    pub storage_upload_workers: Option<usize>,
    /// Time zone of the devices' clocks (every BCD time in JT/T 808/1078) as a UTC offset [default: +08:00].
    #[arg(long, env = "INGESTD_DEVICE_UTC_OFFSET", value_name = "+HH:MM")]
    pub device_utc_offset: Option<String>,
    /// Seconds to wait for a device's answer to a command (0x1205 list of recordings, 0x0001 reply) [default: 10].
    #[arg(long, env = "INGESTD_DEVICE_ANSWER_TIMEOUT", value_name = "SECS")]
    pub device_answer_timeout: Option<u64>,
    /// Seconds of video before an alarm that its incident covers [default: 15].
    #[arg(long, env = "INGESTD_INCIDENT_BEFORE", value_name = "SECS")]
    pub incident_before: Option<u64>,
    /// Seconds of video after an alarm ends that its incident covers [default: 15].
    #[arg(long, env = "INGESTD_INCIDENT_AFTER", value_name = "SECS")]
    pub incident_after: Option<u64>,
    /// Video channels an alarm's incident covers (comma-separated) [default: 1].
    #[arg(
        long,
        env = "INGESTD_INCIDENT_CHANNELS",
        value_name = "CH,...",
        value_delimiter = ','
    )]
    pub incident_channels: Option<Vec<u8>>,
    /// Fetch an incident's video from the device (0x9201) when the channel was not streaming live: "on" or "off" [default: on].
    #[arg(long, env = "INGESTD_INCIDENT_FETCH", value_name = "on|off", value_parser = parse_on_off)]
    pub incident_fetch: Option<bool>,
    /// Uploads of incident video a device runs at once [default: 1].
    #[arg(long, env = "INGESTD_INCIDENT_UPLOADS_PER_DEVICE", value_name = "N")]
    pub incident_uploads_per_device: Option<usize>,
    /// Low-Latency HLS (ll.m3u8: fragmented-MP4 parts held in memory, served on --http-listen at /ll/<stream>/; hlsd forwards /live/<stream>/ll.m3u8 there). "on": a stream makes parts from its next segment after someone asks for them, and stops 30 s after the last request (an unwatched stream costs nothing); "always": every stream, all the time; "off" [default: on].
    #[arg(long, env = "INGESTD_LOW_LATENCY", value_name = "on|always|off", value_parser = parse_low_latency)]
    pub low_latency: Option<LowLatencyMode>,
    /// Longest low-latency part (PART-TARGET) in milliseconds, 100-1000 [default: 200].
    #[arg(long, env = "INGESTD_PART_TARGET_MS", value_name = "MS")]
    pub part_target_ms: Option<u32>,
    /// JT/T 808 authentication: "required" answers every message of a terminal that has not authenticated (0x0102) with a failure and refuses its JT/T 1078 connections; "off" accepts devices that never authenticate (legacy fleets, load tools) [default: required].
    #[arg(long, env = "INGESTD_DEVICE_AUTH", value_name = "required|off", value_parser = parse_device_auth)]
    pub device_auth: Option<bool>,
    /// SIMs (comma-separated) allowed to register and authenticate, added to the catalog's allowed_sims table; while both are empty every SIM is allowed [default: none].
    #[arg(
        long,
        env = "INGESTD_ALLOWED_SIMS",
        value_name = "SIM,...",
        value_delimiter = ','
    )]
    pub allowed_sims: Option<Vec<String>>,
    /// Segment target duration in seconds, 1-10: a segment is cut at the first keyframe once it is this long [default: 4].
    #[arg(long, env = "INGESTD_SEGMENT_TARGET_SECS", value_name = "SECS")]
    pub segment_target_secs: Option<u32>,
    /// Days recorded segments (and their catalog rows) are kept; 0 keeps them forever [default: 7].
    #[arg(long, env = "INGESTD_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u64>,
    /// Days GPS positions are kept; 0 keeps them forever [default: 90].
    #[arg(long, env = "INGESTD_POSITION_RETENTION_DAYS", value_name = "DAYS")]
    pub position_retention_days: Option<u64>,
    /// Seconds after the last viewer of a live channel (any hlsd on the catalog) left before ingestd stops the device's video (0x9102); only video started through the control API is stopped; 0 never stops [default: 60].
    #[arg(long, env = "INGESTD_AUTO_STOP_SECS", value_name = "SECS")]
    pub auto_stop_secs: Option<u64>,
}

fn parse_device_auth(s: &str) -> Result<bool, String> {
    match s {
        "required" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected required or off")),
    }
}

/// `device_auth` in the config file: "required" or "off".
fn de_device_auth<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let s = String::deserialize(d)?;
    parse_device_auth(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Upload threads per node by default: enough to hide a store's round trip behind others
/// (a PUT is tens of milliseconds on a LAN store), few enough not to matter beside the media
/// workers.
pub const DEFAULT_UPLOAD_WORKERS: usize = 16;

/// The TOML file: the same settings, unknown keys rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub jt808_listen: Option<String>,
    pub jt1078_listen: Option<String>,
    pub raw_listen: Option<String>,
    pub http_listen: Option<String>,
    pub advertise_ip: Option<String>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<u64>,
    pub handshake_timeout: Option<u64>,
    pub max_frame_bytes: Option<usize>,
    pub media_workers: Option<usize>,
    pub queue_depth: Option<usize>,
    pub media_queue_bytes: Option<usize>,
    pub fsync: Option<bool>,
    pub max_nal_bytes: Option<usize>,
    pub catalog_buffer: Option<usize>,
    pub auth_secret: Option<String>,
    pub control_token: Option<String>,
    pub storage_url: Option<String>,
    pub storage_upload_workers: Option<usize>,
    pub instance_id: Option<String>,
    pub control_url: Option<String>,
    pub audio: Option<bool>,
    pub audio_sample_rate: Option<u32>,
    pub audio_bitrate: Option<u32>,
    pub g726_packing: Option<String>,
    pub g726_other_packing_sims: Option<Vec<String>>,
    pub device_utc_offset: Option<String>,
    pub device_answer_timeout: Option<u64>,
    pub incident_before: Option<u64>,
    pub incident_after: Option<u64>,
    pub incident_channels: Option<Vec<u8>>,
    pub incident_fetch: Option<bool>,
    pub incident_uploads_per_device: Option<usize>,
    pub low_latency: Option<LowLatencyMode>,
    pub part_target_ms: Option<u32>,
    #[serde(default, deserialize_with = "de_device_auth")]
    pub device_auth: Option<bool>,
    pub allowed_sims: Option<Vec<String>>,
    pub auto_stop_secs: Option<u64>,
    pub segment_target_secs: Option<u32>,
    pub retention_days: Option<u64>,
    pub position_retention_days: Option<u64>,
    /// Per-alarm overrides, keyed by alarm name or bit number (config file
    /// only): `[incident_rules.collision_warning] before = 30`.
    pub incident_rules: Option<std::collections::BTreeMap<String, crate::incidents::RuleOverride>>,
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: String,
    pub jt808_listen: SocketAddr,
    pub jt1078_listen: SocketAddr,
    pub raw_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub advertise_ip: Option<std::net::IpAddr>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
    pub media_workers: usize,
    pub queue_depth: usize,
    /// Media bytes queued per worker before readers are paused.
    pub media_queue_bytes: usize,
    /// fsync segments and playlists before they are renamed into place.
    pub fsync: bool,
    /// Longest NAL unit accepted (streamcore's `StreamConfig::max_nal_bytes`).
    pub max_nal_bytes: usize,
    /// Catalog writer's outage buffer, in records.
    pub catalog_buffer: usize,
    /// Secret of the device auth codes; `None`: the catalog's (made once).
    pub auth_secret: Option<String>,
    /// Token the control API requires (`Authorization: Bearer`); `None`: open.
    pub control_token: Option<String>,
    /// This node's name in the node registry; `None`: host name and 808 port.
    pub instance_id: Option<String>,
    /// The control API's URL for other machines; `None`: from --http-listen.
    pub control_url: Option<String>,
    /// Where segments and playlists go.
    pub storage: streamcore::storage::StorageLocation,
    /// The `AWS_*` settings an S3 store is opened with (read from the
    /// environment at start).
    pub storage_vars: Vec<(String, String)>,
    /// Upload threads of the object store's queue.
    pub storage_upload_workers: usize,
    /// Refuse devices until they authenticate (0x0102).
    pub device_auth: bool,
    /// SIMs allowed besides the catalog's allow-list (both empty: all).
    pub allowed_sims: Vec<String>,
    /// Stop video started through the control API this long after its
    /// last viewer left (`None`: never).
    pub auto_stop: Option<Duration>,
    /// Segment target duration (1-10 s).
    pub segment_target: Duration,
    /// How long segments are kept (`None`: forever).
    pub segment_retention: Option<Duration>,
    /// How long positions are kept (`None`: forever).
    pub position_retention: Option<Duration>,
    /// Audio transcoding (streamcore's `StreamConfig::audio`).
    pub audio: streamcore::audio::AudioConfig,
    /// SIMs whose G.726 packing is the other one than `audio.g726_packing`.
    pub g726_other_packing_sims: Vec<String>,
    /// The devices' time zone.
    pub device_clock: crate::jt808::DeviceClock,
    /// How long a command waits for the device's answer.
    pub device_answer_timeout: Duration,
    /// Which alarms open incidents on which channels, and their fetching.
    pub incidents: crate::incidents::IncidentConfig,
    /// The low-latency rendition of every stream (`None`: off).
    pub low_latency: Option<streamcore::ll::LowLatencyConfig>,
}

fn addr(what: &'static str, v: Option<String>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = v.unwrap_or_else(|| default.to_string());
    s.parse()
        .map_err(|_| ConfigError::BadAddr { what, value: s })
}

/// Catalog records buffered during a database outage (the catalog writer's
/// default).
pub const DEFAULT_CATALOG_BUFFER: usize = 200_000;

/// Media bytes queued per worker: about 300 frames of 720p at 2.7 Mbit/s,
/// some milliseconds of a worker's work. Enough to keep it busy while the
/// connections refill its queue; small enough that a frame never waits long
/// behind the others, and that a burst from every device at once stays in
/// the kernel's socket buffers instead of this process's memory.
pub const DEFAULT_MEDIA_QUEUE_BYTES: usize = 4 << 20;

impl Config {
    /// Resolves flags (already merged with the environment by clap) over the
    /// config file over defaults.
    pub fn resolve(cli: Cli) -> Result<Config, ConfigError> {
        let f = match &cli.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let data_dir = cli.data_dir.or(f.data_dir).ok_or(ConfigError::NoDataDir)?;
        let database_url = cli
            .database_url
            .or(f.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("catalog.sqlite").display()));
        let advertise_ip = match cli.advertise_ip.or(f.advertise_ip) {
            Some(s) => Some(s.parse().map_err(|_| ConfigError::BadAddr {
                what: "advertise-ip",
                value: s,
            })?),
            None => None,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let defaults = streamcore::audio::AudioConfig::default();
        let audio = streamcore::audio::AudioConfig {
            enabled: cli.audio.or(f.audio).unwrap_or(defaults.enabled),
            sample_rate: cli
                .audio_sample_rate
                .or(f.audio_sample_rate)
                .unwrap_or(defaults.sample_rate),
            bitrate: cli
                .audio_bitrate
                .or(f.audio_bitrate)
                .unwrap_or(defaults.bitrate),
            g726_packing: match cli.g726_packing.or(f.g726_packing) {
                Some(p) => p.parse().map_err(|e: streamcore::Error| {
                    ConfigError::Invalid(format!("g726-packing: {e}"))
                })?,
                None => defaults.g726_packing,
            },
        };
        if streamcore::audio::adts::sampling_index(audio.sample_rate).is_none()
            || audio.sample_rate < 8000
        {
            return Err(ConfigError::Invalid(format!(
                "audio-sample-rate {} Hz: use an AAC rate from 8000 to 96000 (e.g. 32000, 44100, 48000)",
                audio.sample_rate
            )));
        }
        if !(8_000..=320_000).contains(&audio.bitrate) {
            return Err(ConfigError::Invalid(format!(
                "audio-bitrate {}: expected 8000-320000 bits per second",
                audio.bitrate
            )));
        }
        let g726_other_packing_sims = cli
            .g726_other_packing_sims
            .or(f.g726_other_packing_sims)
            .unwrap_or_default();
        if let Some(bad) = g726_other_packing_sims
            .iter()
            .find(|s| s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ConfigError::Invalid(format!(
                "g726-other-packing-sims: {bad:?} is not a 12-digit SIM"
            )));
        }
        let device_clock = match cli.device_utc_offset.or(f.device_utc_offset) {
            Some(s) => s
                .parse()
                .map_err(|e| ConfigError::Invalid(format!("device-utc-offset: {e}")))?,
            None => crate::jt808::DeviceClock::UTC8,
        };
        let incident_defaults = crate::incidents::IncidentConfig::default();
        let incidents = crate::incidents::IncidentConfig::new(
            cli.incident_before
                .or(f.incident_before)
                .map_or(incident_defaults.before, Duration::from_secs),
            cli.incident_after
                .or(f.incident_after)
                .map_or(incident_defaults.after, Duration::from_secs),
            cli.incident_channels
                .or(f.incident_channels)
                .unwrap_or(incident_defaults.channels.clone()),
            cli.incident_fetch
                .or(f.incident_fetch)
                .unwrap_or(incident_defaults.fetch),
            cli.incident_uploads_per_device
                .or(f.incident_uploads_per_device)
                .unwrap_or(incident_defaults.uploads_per_device),
            f.incident_rules.unwrap_or_default(),
        )
        .map_err(ConfigError::Invalid)?;
        let mut allowed_sims = Vec::new();
        for sim in cli.allowed_sims.or(f.allowed_sims).unwrap_or_default() {
            let sim = sim.trim();
            if sim.is_empty() {
                continue;
            }
            if sim.len() > 20 || !sim.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::Invalid(format!(
                    "allowed-sims: {sim:?} is not a SIM (up to 20 digits)"
                )));
            }
            allowed_sims.push(crate::bcd::normalize_sim(&format!("{sim:0>12}")));
        }
        let storage = streamcore::storage::StorageLocation::parse(
            cli.storage_url
                .or(f.storage_url)
                .as_deref()
                .unwrap_or_default(),
        )
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let segment_target_secs = cli
            .segment_target_secs
            .or(f.segment_target_secs)
            .unwrap_or(4);
        if !(1..=10).contains(&segment_target_secs) {
            return Err(ConfigError::Invalid(format!(
                "segment-target-secs {segment_target_secs}: expected 1-10 seconds"
            )));
        }
        let segment_target = Duration::from_secs(segment_target_secs.into());
        let days = |d: u64| (d > 0).then(|| Duration::from_secs(d * 86_400));
        let part_target_ms = cli.part_target_ms.or(f.part_target_ms).unwrap_or(200);
        if !(100..=1000).contains(&part_target_ms) {
            return Err(ConfigError::Invalid(format!(
                "part-target-ms {part_target_ms}: expected 100-1000 milliseconds"
            )));
        }
        let part_target = streamcore::Dur90k::from_millis(part_target_ms as i64);
        let low_latency = match cli
            .low_latency
            .or(f.low_latency)
            .unwrap_or(LowLatencyMode::On)
        {
            LowLatencyMode::Off => None,
            LowLatencyMode::On => Some(streamcore::ll::LowLatencyConfig {
                part_target,
                on_demand: Some(LOW_LATENCY_LINGER),
            }),
            LowLatencyMode::Always => Some(streamcore::ll::LowLatencyConfig {
                part_target,
                on_demand: None,
            }),
        };
        Ok(Config {
            low_latency,
            audio,
            g726_other_packing_sims,
            device_clock,
            device_answer_timeout: Duration::from_secs(
                cli.device_answer_timeout
                    .or(f.device_answer_timeout)
                    .unwrap_or(10)
                    .max(1),
            ),
            incidents,
            jt808_listen: addr(
                "jt808-listen",
                cli.jt808_listen.or(f.jt808_listen),
                DEFAULT_JT808_LISTEN,
            )?,
            jt1078_listen: addr(
                "jt1078-listen",
                cli.jt1078_listen.or(f.jt1078_listen),
                DEFAULT_JT1078_LISTEN,
            )?,
            raw_listen: addr(
                "raw-listen",
                cli.raw_listen.or(f.raw_listen),
                DEFAULT_RAW_LISTEN,
            )?,
            http_listen: addr(
                "http-listen",
                cli.http_listen.or(f.http_listen),
                DEFAULT_HTTP_LISTEN,
            )?,
            advertise_ip,
            max_connections: cli.max_connections.or(f.max_connections).unwrap_or(10_000),
            idle_timeout: Duration::from_secs(cli.idle_timeout.or(f.idle_timeout).unwrap_or(180)),
            handshake_timeout: Duration::from_secs(
                cli.handshake_timeout.or(f.handshake_timeout).unwrap_or(10),
            ),
            max_frame_bytes: cli
                .max_frame_bytes
                .or(f.max_frame_bytes)
                .unwrap_or(crate::jt1078::DEFAULT_MAX_FRAME),
            media_workers: cli
                .media_workers
                .or(f.media_workers)
                .unwrap_or(cores)
                .max(1),
            queue_depth: cli.queue_depth.or(f.queue_depth).unwrap_or(1024).max(1),
            media_queue_bytes: cli
                .media_queue_bytes
                .or(f.media_queue_bytes)
                .unwrap_or(DEFAULT_MEDIA_QUEUE_BYTES)
                .max(1),
            fsync: cli.fsync.or(f.fsync).unwrap_or(false),
            max_nal_bytes: cli
                .max_nal_bytes
                .or(f.max_nal_bytes)
                .unwrap_or(streamcore::annexb::DEFAULT_MAX_NAL)
                .max(1024),
            catalog_buffer: cli
                .catalog_buffer
                .or(f.catalog_buffer)
                .unwrap_or(DEFAULT_CATALOG_BUFFER),
            auth_secret: cli.auth_secret.or(f.auth_secret).filter(|s| !s.is_empty()),
            control_token: cli
                .control_token
                .or(f.control_token)
                .filter(|s| !s.is_empty()),
            storage,
            storage_vars: streamcore::storage::s3::aws_env(),
            storage_upload_workers: cli
                .storage_upload_workers
                .or(f.storage_upload_workers)
                .unwrap_or(DEFAULT_UPLOAD_WORKERS)
                .clamp(1, 256),
            instance_id: cli
                .instance_id
                .or(f.instance_id)
                .filter(|s| !s.trim().is_empty()),
            control_url: cli
                .control_url
                .or(f.control_url)
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            device_auth: cli.device_auth.or(f.device_auth).unwrap_or(true),
            allowed_sims,
            auto_stop: match cli.auto_stop_secs.or(f.auto_stop_secs).unwrap_or(60) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            segment_target,
            segment_retention: days(cli.retention_days.or(f.retention_days).unwrap_or(7)),
            position_retention: days(
                cli.position_retention_days
                    .or(f.position_retention_days)
                    .unwrap_or(90),
            ),
            data_dir,
            database_url,
        })
    }

    /// Settings for tests: everything on 127.0.0.1 port 0.
    pub fn for_tests(data_dir: &Path) -> Config {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        Config {
            data_dir: data_dir.to_owned(),
            database_url: format!("sqlite://{}", data_dir.join("catalog.sqlite").display()),
            jt808_listen: any,
            jt1078_listen: any,
            raw_listen: any,
            http_listen: any,
            advertise_ip: None,
            max_connections: 64,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(5),
            max_frame_bytes: crate::jt1078::DEFAULT_MAX_FRAME,
            media_workers: 2,
            queue_depth: 64,
            media_queue_bytes: DEFAULT_MEDIA_QUEUE_BYTES,
            fsync: false,
            max_nal_bytes: streamcore::annexb::DEFAULT_MAX_NAL,
            catalog_buffer: DEFAULT_CATALOG_BUFFER,
            auth_secret: Some("test-secret".into()),
            control_token: None,
            storage: Default::default(),
            storage_vars: Vec::new(),
            storage_upload_workers: DEFAULT_UPLOAD_WORKERS,
            instance_id: None,
            control_url: None,
            // Most tests drive media without a 808 login; the ones about
            // authentication turn it on.
            device_auth: false,
            allowed_sims: Vec::new(),
            auto_stop: None,
            segment_target: Duration::from_secs(4),
            segment_retention: Some(Duration::from_secs(7 * 86_400)),
            position_retention: Some(Duration::from_secs(90 * 86_400)),
            audio: Default::default(),
            g726_other_packing_sims: Vec::new(),
            device_clock: crate::jt808::DeviceClock::UTC8,
            // Test devices that never answer should not hold a test for long.
            device_answer_timeout: Duration::from_secs(2),
            incidents: Default::default(),
            low_latency: Some(streamcore::ll::LowLatencyConfig {
                on_demand: Some(LOW_LATENCY_LINGER),
                ..Default::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\njt808_listen = \"127.0.0.1:7000\"\nqueue_depth = 5\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "ingestd",
            "--config",
            file.to_str().unwrap(),
            "--jt808-listen",
            "127.0.0.1:7001",
        ])
        .unwrap();
        let c = Config::resolve(cli).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.jt808_listen.port(), 7001);
        assert_eq!(c.queue_depth, 5);
        assert_eq!(c.jt1078_listen, DEFAULT_JT1078_LISTEN.parse().unwrap());
        assert_eq!(c.http_listen, DEFAULT_HTTP_LISTEN.parse().unwrap());

        std::fs::write(&file, "data_dir = \"/x\"\nbogus = 1\n").unwrap();
        let cli = Cli::try_parse_from(["ingestd", "--config", file.to_str().unwrap()]).unwrap();
        let err = Config::resolve(cli).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");

        let cli = Cli::try_parse_from(["ingestd"]).unwrap();
        assert!(matches!(Config::resolve(cli), Err(ConfigError::NoDataDir)));
    }

    #[test]
    fn low_latency_and_part_target() {
        use streamcore::ll::LowLatencyConfig;
        use streamcore::Dur90k;
        let resolve = |args: &[&str]| {
            let cli = Cli::try_parse_from(["ingestd", "--data-dir", "/d"].iter().chain(args))
                .map_err(|e| e.to_string())?;
            Config::resolve(cli).map_err(|e| e.to_string())
        };
        let ll = |args: &[&str]| resolve(args).unwrap().low_latency;
        assert_eq!(
            ll(&[]),
            Some(LowLatencyConfig {
                part_target: Dur90k::from_millis(200),
                on_demand: Some(LOW_LATENCY_LINGER),
            })
        );
        assert_eq!(ll(&["--low-latency", "off"]), None);
        assert_eq!(
            ll(&["--low-latency", "always", "--part-target-ms", "1000"]),
            Some(LowLatencyConfig {
                part_target: Dur90k::from_millis(1000),
                on_demand: None,
            })
        );
        assert_eq!(
            ll(&["--low-latency=on", "--part-target-ms=100"]).map(|c| c.part_target),
            Some(Dur90k::from_millis(100))
        );
        for bad in ["99", "1001", "0"] {
            let err = resolve(&["--part-target-ms", bad]).unwrap_err();
            assert!(
                err.contains("expected 100-1000 milliseconds"),
                "{bad}: {err}"
            );
        }
        let err = resolve(&["--low-latency", "maybe"]).unwrap_err();
        assert!(err.contains("expected on, always or off"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "low_latency = \"off\"\npart_target_ms = 300\n").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(ll(&["--config", f]), None);
        assert_eq!(
            ll(&["--config", f, "--low-latency", "always"]).map(|c| c.part_target),
            Some(Dur90k::from_millis(300))
        );
        std::fs::write(&file, "part_target_ms = 2000\n").unwrap();
        assert!(resolve(&["--config", f]).is_err());
    }
}
