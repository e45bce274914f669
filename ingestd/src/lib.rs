//! ingestd: the device-facing ingest daemon as a library.
//!
//! Protocol codecs are sans-IO ([`jt1078`], [`jt808`]); the tokio listeners,
//! session tracking, media hand-off and HTTP control API are in the other
//! modules, and [`server::run`] starts them all (the binary and the tests use it).

pub mod bcd;
pub mod config;
pub mod http;
pub mod jt1078;
pub mod jt808;
pub mod media;
pub mod metrics;
pub mod server;
pub mod sessions;
