//! streamcore's integration tests, one binary (each test binary links
//! libavformat and diesel: one link instead of six). Each module is one
//! suite; `cargo test -p streamcore --test it <module>::` runs one.

mod common;

mod audio;
#[cfg(feature = "catalog")]
mod catalog;
mod chunking_props;
mod clip;
mod fuzz_regressions;
mod h265;
mod low_latency;
#[cfg(feature = "s3")]
#[path = "../support/moto.rs"]
mod moto;
mod object_storage;
mod remux_ffprobe;
mod steady_state_alloc;
mod stream_behaviour;
