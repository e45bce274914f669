//! ingestd's integration tests that share one binary (each test binary links libavformat and
//! diesel: one link instead of six). Each module is one suite; `cargo test -p ingestd --test it
//! <module>::` runs one. The crash, fault and hostile-input suites keep binaries of their own:
//! they measure the test process's memory and load the machine, which would disturb (and be
//! disturbed by) the suites running beside them.

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod daemon_808;
mod daemon_media;
mod device_auth;
mod incidents;
mod jt1078_captures;
mod low_latency;
mod parsers_fuzzish;
mod recordings;
mod remux_e2e;
