//! Muxing through libavformat (ffmpeg-next): the only place in streamcore
//! that touches FFmpeg, and the only module allowed `unsafe` (the crate
//! denies it everywhere else); every `unsafe` block carries a `SAFETY:`
//! note. What shaped it is in `docs/libavformat.md`.
//!
//! - [`SegmentMuxer`]: the seam the stream pipeline writes through: access
//!   units of one or more elementary streams with 90 kHz PTS/DTS in,
//!   segment bytes out to a [`SegmentWriter`]. [`TsMuxer`] (MPEG-TS) is
//!   its implementation.
//! - [`Fmp4Muxer`]: fragmented MP4 (CMAF) for the low-latency rendition: an
//!   init segment, then one `moof` + `mdat` fragment per part.
//! - [`audio`]: G.726 decoding and AAC encoding (libavcodec, libswresample).
//! - [`clip`]: recorded segments remuxed into one downloadable MP4.

pub mod audio;
pub mod clip;
mod fmp4;
mod ts;

use std::io;
use std::sync::Once;

use ffmpeg_next as ffmpeg;

use crate::audio::AdtsConfig;
use crate::codec::VideoCodec;
use crate::error::Result;
use crate::storage::SegmentWriter;
use crate::time::{Dur90k, Ts90k};

pub use fmp4::{Fmp4Muxer, VideoSetup};
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

/// Writes one packet whose payload is borrowed (`buf` null: the muxer copies
/// what it keeps) with times already in the stream's time base; returns
/// `av_write_frame`'s result.
///
/// # Safety
/// `octx` must be a live output context whose header has been written,
/// `track` one of its stream indexes, and its muxer one that does not keep
/// a pointer into an unreferenced packet's data after the call.
pub(crate) unsafe fn write_borrowed(
    octx: *mut ffmpeg::ffi::AVFormatContext,
    track: usize,
    data: &[u8],
    (pts, dts, duration): (i64, i64, i64),
    keyframe: bool,
) -> i32 {
    // SAFETY: an all-zero AVPacket is a valid blank packet (no buffer, no
    // side data); `data` outlives the call and the caller vouches for the
    // context, the stream index and the muxer not keeping the data.
    unsafe {
        let mut pkt: ffmpeg::ffi::AVPacket = std::mem::zeroed();
        pkt.data = data.as_ptr() as *mut u8;
        pkt.size = data.len() as i32;
        pkt.pts = pts;
        pkt.dts = dts;
        pkt.duration = duration;
        pkt.pos = -1;
        pkt.stream_index = track as i32;
        pkt.flags = if keyframe {
            ffmpeg::ffi::AV_PKT_FLAG_KEY
        } else {
            0
        };
        ffmpeg::ffi::av_write_frame(octx, &mut pkt)
    }
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
