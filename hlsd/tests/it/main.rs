//! hlsd's integration tests, one binary (each test binary links libavformat and diesel: one
//! link instead of several). Each module is one suite; `cargo test -p hlsd --test it <module>::`
//! runs one.

mod common;

mod abuse;
mod access;
mod browser;
mod cli;
mod e2e;
mod http;
mod low_latency;
#[path = "../../../streamcore/tests/support/moto.rs"]
mod moto;
mod playback;
