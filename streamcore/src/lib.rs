//! streamcore: the embeddable heart of the video backbone.
//!
//! Annex-B H.264 bytes (optionally with a device capture time per frame)
//! in; MPEG-TS segments cut at keyframes and HLS playlists out, all
//! in-process through libavformat. The stages are sans-IO and can be used
//! alone: [`annexb`] (framing), [`access_unit`] (pictures), [`timing`]
//! (DTS/PTS), [`segmenter`] (cuts), [`playlist`] (text); [`mux`] and [`clip`] are the
//! FFI modules; [`storage`] is where bytes land; [`stream`] wires them up;
//! `catalog` (feature `catalog`) keeps devices, sessions and segments in SQL;
//! [`clip`] remuxes a range of segments into a downloadable MP4.

pub mod access_unit;
pub mod annexb;
#[cfg(feature = "catalog")]
pub mod catalog;
pub mod clip;
pub mod error;
pub mod h264;
pub mod mux;
pub mod playlist;
pub mod segmenter;
pub mod storage;
pub mod stream;
pub mod time;
pub mod timing;

pub use error::{Error, Result};
pub use storage::{FsStorage, MemoryStorage, SegmentWriter, Storage};
pub use stream::{LiveStream, SegmentInfo, StreamConfig, StreamEvent, StreamStats};
pub use time::{Dur90k, Ts90k};
