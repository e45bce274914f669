//! Muxing through libavformat (ffmpeg-next): the only place in streamcore
//! that touches FFmpeg, and the only module allowed `unsafe` (the crate
//! denies it everywhere else); every `unsafe` block carries a `SAFETY:`
//! note. What shaped it is in `docs/libavformat.md`.
//!
//! - [`SegmentMuxer`]: the seam the stream pipeline writes through: access
//!   units of one or more elementary streams with 90 kHz PTS/DTS in,
//!   segment bytes out to a [`SegmentWriter`]. [`TsMuxer`] (MPEG-TS) is
//!   today's implementation; a fragmented-MP4 muxer for low-latency HLS is
//!   the next.
//! - [`audio`]: G.726 decoding and AAC encoding (libavcodec, libswresample).
//! - [`clip`]: recorded segments remuxed into one downloadable MP4.

pub mod audio;
pub mod clip;
mod ts;

use std::io;
use std::sync::Once;

use ffmpeg_next as ffmpeg;

use crate::audio::AdtsConfig;
use crate::codec::VideoCodec;
use crate::error::Result;
use crate::storage::SegmentWriter;
use crate::time::{Dur90k, Ts90k};

pub use ts::TsMuxer;

/// An elementary stream a muxer carries, in the order given at creation
/// (its index is [`MuxPacket::track`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    Video(VideoCodec),
    /// AAC in ADTS frames (the configuration every frame's header repeats).
    Audio(AdtsConfig),
}

/// One access unit of one track.
#[derive(Debug, Clone, Copy)]
pub struct MuxPacket<'a> {
    /// Index of the track in the muxer's list.
    pub track: usize,
    /// The coded access unit (Annex-B for video, starting with a delimiter;
    /// an ADTS frame for audio).
    pub data: &'a [u8],
    pub pts: Ts90k,
    pub dts: Ts90k,
    pub duration: Dur90k,
    pub keyframe: bool,
}

/// How a segment ended at the muxer.
pub struct FinishedSegment {
    /// Bytes the muxer produced for the segment.
    pub bytes: u64,
    /// The writer, to commit (or abort when `error` is set).
    pub writer: Option<Box<dyn SegmentWriter>>,
    /// The first write error of the segment, if any.
    pub error: Option<io::Error>,
}

/// Writes access units into consecutive segments of one stream. A muxer
/// lives as long as its stream, so per-stream state (continuity counters,
/// clock references) runs on across segments.
pub trait SegmentMuxer: Send {
    /// Routes output to `writer` from now on (`None`: the segment could not
    /// be created; its output is counted and dropped).
    fn begin_segment(&mut self, writer: Option<Box<dyn SegmentWriter>>);
    /// Writes one access unit into the current segment.
    fn write(&mut self, packet: &MuxPacket<'_>) -> Result<()>;
    /// Pushes everything written so far to the current writer and detaches it.
    fn end_segment(&mut self) -> FinishedSegment;
}

/// Initialises libavformat once and hands its logging to us.
pub(crate) fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ffmpeg::init();
        // libavformat logs to stderr by default; our tracing owns logging.
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}
