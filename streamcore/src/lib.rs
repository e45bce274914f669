//! streamcore: the embeddable heart of the video backbone.
//!
//! Annex-B H.264 or H.265 bytes and device audio (G.711, G.726, IMA ADPCM,
//! AAC), each optionally with a device capture time, in; MPEG-TS segments
//! cut at keyframes and HLS playlists out, all in-process through
//! libavformat and libavcodec. The stages are sans-IO and can be used
//! alone: [`annexb`] (framing), [`codec`] (the codec seam: the shared
//! [`access_unit`] assembler, with [`h264`] and [`h265`] for each codec's
//! syntax), [`audio`] (depacketizing, decoding and timing device audio),
//! [`timing`] (DTS/PTS), [`segmenter`] (cuts), [`playlist`] (the one
//! playlist model: live, event and recordings), [`ll`] (the low-latency
//! rendition: parts, blocking reload); [`mux`] is the FFI module
//! (the MPEG-TS segment muxer, G.726 decoding and AAC encoding, MP4 clip
//! export: the only code allowed `unsafe`); [`storage`] is where bytes
//! land; [`layout`] owns stream names and the data-dir layout; [`stream`]
//! wires the stages up; `catalog` (feature `catalog`) keeps devices,
//! sessions and segments in SQL.
#![deny(unsafe_code)]

pub mod access_unit;
pub mod annexb;
pub mod audio;
#[cfg(feature = "catalog")]
pub mod catalog;
pub mod codec;
pub mod error;
pub mod h264;
pub mod h265;
pub mod layout;
pub mod ll;
#[allow(unsafe_code)]
pub mod mux;
pub mod playlist;
pub mod segmenter;
pub mod storage;
pub mod stream;
pub mod time;
pub mod timing;

pub use error::{Error, Result};
pub use layout::{SessionKind, StreamName};
pub use storage::{FsStorage, MemoryStorage, SegmentWriter, Storage, StoredObject};
pub use stream::{LiveStream, SegmentInfo, StreamConfig, StreamEvent, StreamStats};
pub use time::{Dur90k, Ts90k};
