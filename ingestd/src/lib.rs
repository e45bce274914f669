//! ingestd: the device-facing ingest daemon as a library.
//!
//! Protocol codecs are sans-IO ([`jt1078`], [`jt808`]); the tokio listeners,
//! session tracking, media hand-off and HTTP control API are in the other
//! modules, and [`server::run`] starts them all (the binary and the tests use it).
//!
//! # Wiring (what an embedder plugs in)
//! - Media: [`server::Hooks::media`] is a [`media::HandlerFactory`] building one
//!   [`media::MediaHandler`] per worker thread. Each stream always lands on the
//!   same worker, in order, as [`media::MediaMsg`]: `Frame(MediaFrame)` (one
//!   complete JT/T 1078 frame, Annex-B for video, `capture_ms` = device time),
//!   `Raw(RawChunk)` (raw-port bytes, no frame boundaries) and `SourceEnded`
//!   (disconnect). `MediaHandler::shutdown` runs once at daemon shutdown after
//!   the queue drained. Default: [`media::CountingHandler`] (counters only).
//! - Events: [`server::Hooks::events`] is a crossbeam sender of
//!   [`sessions::IngestEvent`] (positions, device online/offline, media
//!   sessions with their kind live/playback/raw) for the catalog writer.
//! - Stream names: `<SIM>_<channel>` (12-digit SIM), playback
//!   `<SIM>_<channel>_pb`, raw `[A-Za-z0-9_-]{1,64}`.

pub mod access;
pub mod app;
pub mod bcd;
pub mod catalog_events;
pub mod cluster;
pub mod config;
mod conn;
pub mod context;
pub mod http;
pub mod incidents;
pub mod jt1078;
pub mod jt808;
pub mod leases;
pub mod low_latency;
pub mod media;
pub mod memory;
pub mod metrics;
pub mod remux;
pub mod server;
pub mod sessions;
