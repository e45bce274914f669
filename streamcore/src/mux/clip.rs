//! Clip export: the MPEG-TS segments of a time range remuxed into one MP4
//! file through libavformat (ffmpeg-next's safe API), H.264 packets copied
//! as they are (no re-encode).
//!
//! Follows ISO/IEC 14496-12/-15 as libavformat's `mp4` muxer writes it (it
//! turns the Annex-B stream of MPEG-TS into length-prefixed samples and an
//! `avcC` from the in-band SPS/PPS); `movflags=+faststart` moves the `moov`
//! box to the front so a browser can start playing a download at once,
//! which is why the output is a seekable file and not a stream.
//!
//! Timestamps: each segment is its own MPEG-TS file, so libavformat unwraps
//! the 33-bit PTS only within a file. The clip's timeline starts at 0; a
//! segment that continues its predecessor keeps its original spacing, and a
//! segment after a discontinuity (flagged by the caller, or detected as a
//! jump backwards or more than [`MAX_GAP`] forwards) is rebased to start one
//! frame after the previous packet, so the MP4 plays straight through.
//!
//! Cuts are at segment boundaries (segments start with a keyframe): a clip
//! is whole segments, from the one containing the requested start to the
//! one containing the requested end.

use std::path::{Path, PathBuf};

use ffmpeg::{format, media, Dictionary, Packet, Rational};
use ffmpeg_next as ffmpeg;

use crate::error::{Error, Result};
use crate::time::Dur90k;

/// A forward jump between segments larger than this is a break in the
/// source, not a gap in the picture: rebase instead of freezing on a frame.
pub const MAX_GAP: Dur90k = Dur90k(90_000);

const TB_90K: Rational = Rational(1, 90_000);

/// One input segment of a clip, in playback order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipSegment {
    /// An MPEG-TS file holding (at least) one H.264 stream.
    pub path: PathBuf,
    /// Its timestamps do not continue the previous segment's.
    pub discontinuity: bool,
}

/// What [`remux_to_mp4`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClipStats {
    pub segments: usize,
    /// Video packets (frames) written.
    pub frames: u64,
    pub keyframes: u64,
    /// From the first frame's DTS to the end of the last frame.
    pub duration: Dur90k,
    /// Size of the MP4 file.
    pub bytes: u64,
}

fn clip_err(detail: impl Into<String>) -> Error {
    Error::Mux {
        stream: "clip".into(),
        detail: detail.into(),
    }
}

/// Remuxes the H.264 stream of `segments` (in order) into the MP4 file
/// `out` (created or truncated). Blocking: file I/O and libavformat; call
/// it from a blocking thread. Other streams in the inputs are ignored.
pub fn remux_to_mp4(segments: &[ClipSegment], out: &Path) -> Result<ClipStats> {
    super::init_ffmpeg();
    if segments.is_empty() {
        return Err(clip_err("no segments to remux"));
    }
    let mut octx = format::output_as(out, "mp4")
        .map_err(|e| clip_err(format!("opening {} for MP4: {e}", out.display())))?;
    let mut stats = ClipStats::default();
    let mut out_tb = TB_90K;
    let mut header_written = false;
    // DTS (output timeline, 90 kHz) of the last packet written and the
    // frame spacing seen, to place a rebased segment one frame later.
    let mut last_dts: Option<i64> = None;
    let mut last_end: i64 = 0;
    let mut frame_dur: i64 = 3600;
    let mut first_dts: Option<i64> = None;
    // Offset (90 kHz, input to output) of the previous segment.
    let mut prev_offset: Option<i64> = None;

    for seg in segments {
        let mut ictx = format::input(&seg.path)
            .map_err(|e| clip_err(format!("opening {}: {e}", seg.path.display())))?;
        let ist = ictx
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| clip_err(format!("{}: no video stream", seg.path.display())))?;
        let (ist_index, in_tb) = (ist.index(), ist.time_base());
        if !header_written {
            // A deep copy (avcodec_parameters_copy): `Stream::parameters`
            // wraps the input stream's own AVCodecParameters.
            let mut params = ist.parameters().clone();
            // SAFETY: `params` owns a live AVCodecParameters allocated by the
            // clone above and shared with nothing (no owner, no other
            // handle), so writing one plain integer field through its
            // pointer cannot race or alias. The MPEG-TS codec tag means
            // nothing to MP4: cleared, the muxer picks `avc1` itself.
            unsafe {
                (*params.as_mut_ptr()).codec_tag = 0;
            }
            let mut ost = octx
                .add_stream(None::<ffmpeg::Codec>)
                .map_err(|e| clip_err(format!("adding the MP4 stream: {e}")))?;
            ost.set_parameters(params);
            ost.set_time_base(TB_90K);
            let mut opts = Dictionary::new();
            opts.set("movflags", "+faststart");
            octx.write_header_with(opts)
                .map_err(|e| clip_err(format!("writing the MP4 header: {e}")))?;
            out_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(TB_90K);
            header_written = true;
        }

        // Offset (90 kHz) added to this segment's timestamps; fixed by its first packet.
        let mut offset: Option<i64> = None;
        for (stream, mut packet) in ictx.packets() {
            if stream.index() != ist_index {
                continue;
            }
            packet.rescale_ts(in_tb, TB_90K);
            let Some(dts) = packet.dts().or(packet.pts()) else {
                // A packet with no time at all can't be placed in an MP4.
                tracing::debug!(segment = %seg.path.display(), "clip: skipping a packet without timestamps");
                continue;
            };
            let off = *offset.get_or_insert_with(|| match (last_dts, prev_offset) {
                (Some(prev), Some(prev_off)) => {
                    // Where this segment lands if its clock continues the previous one's.
                    let landing = dts + prev_off;
                    if seg.discontinuity || landing <= prev || landing - last_end > MAX_GAP.0 {
                        last_end - dts
                    } else {
                        prev_off
                    }
                }
                _ => -dts,
            });
            let out_dts = dts + off;
            if last_dts.is_some_and(|p| out_dts <= p) {
                // Non-monotonic DTS inside a segment (a damaged file): MP4 can't hold it.
                tracing::debug!(segment = %seg.path.display(), dts = out_dts, "clip: dropping a packet with non-increasing DTS");
                continue;
            }
            let out_pts = packet.pts().map(|p| p + off);
            if let Some(prev) = last_dts {
                frame_dur = (out_dts - prev).clamp(1, 90_000);
            }
            let dur = if packet.duration() > 0 {
                packet.duration()
            } else {
                frame_dur
            };
            last_dts = Some(out_dts);
            last_end = out_dts + dur;
            first_dts.get_or_insert(out_dts);

            stats.frames += 1;
            stats.keyframes += u64::from(packet.is_key());
            write_packet(&mut octx, packet, out_dts, out_pts, dur, out_tb)?;
        }
        prev_offset = offset.or(prev_offset);
        stats.segments += 1;
    }
    if stats.frames == 0 {
        return Err(clip_err("the segments hold no video frames"));
    }
    octx.write_trailer()
        .map_err(|e| clip_err(format!("writing the MP4 trailer: {e}")))?;
    drop(octx);
    stats.duration = Dur90k(last_end - first_dts.unwrap_or(0));
    stats.bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(stats)
}

fn write_packet(
    octx: &mut format::context::Output,
    mut packet: Packet,
    dts: i64,
    pts: Option<i64>,
    dur: i64,
    out_tb: Rational,
) -> Result<()> {
    packet.set_dts(Some(dts));
    packet.set_pts(Some(pts.unwrap_or(dts).max(dts)));
    packet.set_duration(dur);
    packet.set_stream(0);
    packet.set_position(-1);
    packet.rescale_ts(TB_90K, out_tb);
    packet
        .write_interleaved(octx)
        .map_err(|e| clip_err(format!("writing a packet: {e}")))
}
