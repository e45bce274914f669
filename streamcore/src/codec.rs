//! The codec seam: what the stream pipeline needs to know about a video
//! bitstream, behind one small trait, so a codec is added beside H.264
//! without touching the timeline, the segmenter or the playlist.
//!
//! A [`VideoParser`] turns NAL units into [`AccessUnit`]s (picture
//! boundaries, keyframes, picture order count, format changes), remembers
//! the parameter sets, tells the timeline what they say about timing
//! ([`TimingHints`]), and writes an access unit as the packet the muxer
//! wants. One implementation serves both codecs:
//! [`crate::access_unit::Assembler`], with H.264's syntax
//! ([`crate::access_unit::AccessUnitAssembler`], ITU-T H.264 7.4.1.2.3) or
//! H.265's ([`crate::h265::HevcAssembler`], ITU-T H.265 7.4.2.4.4).

use bytes::Bytes;

use crate::access_unit::{AccessUnit, AccessUnitAssembler, AssemblerStats};
use crate::time::Dur90k;

/// A video codec the pipeline handles. Its name (`h264`, `h265`) is what
/// [`Display`](std::fmt::Display) writes and [`FromStr`](std::str::FromStr)
/// reads, e.g. from a raw port's `STREAM <name> h265` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VideoCodec {
    /// H.264/AVC.
    #[default]
    H264,
    /// H.265/HEVC.
    H265,
}

impl VideoCodec {
    /// The codec's name: `h264` or `h265`.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
        }
    }

    /// An access-unit delimiter behind a 4-byte start code, as this crate
    /// writes it before every access unit for the muxer. A caller that
    /// assembles a frame into a buffer of its own (a JT/T 1078 reassembler)
    /// can begin the buffer with it: the frame then reaches the muxer
    /// without another copy ([`VideoParser::packet_in_place`]).
    pub fn access_unit_delimiter(self) -> &'static [u8] {
        match self {
            VideoCodec::H264 => &crate::h264::H264_AUD,
            VideoCodec::H265 => &crate::h265::HEVC_AUD,
        }
    }

    /// Whether the first NAL unit of `annexb` is an access-unit delimiter;
    /// `None` when `annexb` does not begin with a start code.
    pub fn first_nal_is_delimiter(self, annexb: &[u8]) -> Option<bool> {
        let header = match annexb {
            [0, 0, 1, h, ..] | [0, 0, 0, 1, h, ..] => *h,
            _ => return None,
        };
        Some(match self {
            VideoCodec::H264 => header & 0x1f == crate::h264::nal_type::AUD,
            VideoCodec::H265 => (header >> 1) & 0x3f == crate::h265::nal_type::AUD,
        })
    }
}

impl std::fmt::Display for VideoCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for VideoCodec {
    type Err = crate::error::Error;

    /// Reads a codec name as [`Display`](std::fmt::Display) writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "h264" => Ok(VideoCodec::H264),
            "h265" => Ok(VideoCodec::H265),
            _ => Err(crate::error::Error::Config(format!(
                "unknown video codec {s:?} (h264 or h265)"
            ))),
        }
    }
}

/// What the active parameter sets say about timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimingHints {
    /// Frame duration from the stream's own timing information, if any.
    pub nominal_frame: Option<Dur90k>,
    /// Frames a decoder may hold back to restore display order.
    pub reorder_depth: u32,
}

/// Codec-specific parsing, sans-IO: NAL units in, access units out.
pub trait VideoParser: Send {
    fn codec(&self) -> VideoCodec;
    /// Adds one NAL unit (without its start code); returns the access unit
    /// it completed, if any.
    fn push(&mut self, nal: Bytes, capture_ms: Option<i64>) -> Option<AccessUnit>;
    /// Completes the access unit in progress (the transport marked the end
    /// of a frame, or the stream ended).
    fn flush(&mut self) -> Option<AccessUnit>;
    /// Hands back an access unit that has been used up, for reuse.
    fn recycle(&mut self, au: AccessUnit);
    /// Parameter sets have been received: a keyframe can be decoded.
    fn has_parameter_sets(&self) -> bool;
    fn timing_hints(&self) -> TimingHints;
    /// Writes `au` into `out` (cleared first) as one packet for the muxer:
    /// Annex-B, starting with an access-unit delimiter, with the cached
    /// parameter sets before a keyframe that lacks them (devices often send
    /// them once), so every segment can start decoding on its own.
    fn write_packet(&self, au: &AccessUnit, out: &mut Vec<u8>);
    /// What [`write_packet`](Self::write_packet) would write, as a slice of
    /// the frame `au` came in (`au.source`), when that frame already holds
    /// it: it begins with an access-unit delimiter and needs no parameter
    /// sets inserted. A device frame put behind a delimiter as it was
    /// reassembled (see [`VideoCodec::access_unit_delimiter`]) goes to the
    /// muxer without being copied again.
    fn packet_in_place(&self, au: &AccessUnit) -> Option<Bytes>;
    fn stats(&self) -> AssemblerStats;
}

/// A parser for `codec`, bounding access units at `max_au_nals` NAL units
/// and `max_au_bytes` bytes.
pub fn parser(codec: VideoCodec, max_au_nals: usize, max_au_bytes: usize) -> Box<dyn VideoParser> {
    match codec {
        VideoCodec::H264 => Box::new(AccessUnitAssembler::with_limits(max_au_nals, max_au_bytes)),
        VideoCodec::H265 => Box::new(crate::h265::HevcAssembler::with_limits(
            max_au_nals,
            max_au_bytes,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_round_trip() {
        for codec in [VideoCodec::H264, VideoCodec::H265] {
            assert_eq!(codec.to_string().parse::<VideoCodec>().unwrap(), codec);
        }
        assert_eq!("h265".parse::<VideoCodec>().unwrap(), VideoCodec::H265);
        assert_eq!(VideoCodec::H264.to_string(), "h264");
        for bad in ["", "H265", "hevc", "h266", "h265 "] {
            assert!(bad.parse::<VideoCodec>().is_err(), "{bad:?}");
        }
        assert_eq!(parser(VideoCodec::H265, 8, 1024).codec(), VideoCodec::H265);
        assert_eq!(parser(VideoCodec::H264, 8, 1024).codec(), VideoCodec::H264);
    }
}
