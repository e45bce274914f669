//! Clip export: the MPEG-TS segments of a time range remuxed into one MP4
//! file through libavformat (ffmpeg-next's safe API), packets copied as
//! they are (no re-encode): the video (H.264 or H.265) and, when the
//! segments carry it, the AAC audio.
//!
//! Follows ISO/IEC 14496-12/-14/-15 as libavformat's `mp4` muxer writes it.
//! Video: the muxer turns the Annex-B stream of MPEG-TS into
//! length-prefixed samples and builds the decoder configuration from the
//! parameter sets the demuxer extracted from the first segment's keyframe
//! (its extradata, copied with the codec parameters): `avc1` + `avcC` for
//! H.264, `hvc1` + `hvcC` (VPS/SPS/PPS) for H.265 — `hvc1` rather than the
//! muxer's default `hev1` because Apple's players take only `hvc1`; the
//! in-band parameter sets stay in the samples too. Audio: ADTS frames go
//! through libavformat's automatic `aac_adtstoasc` bitstream filter (the
//! mp4 muxer inserts it on seeing an ADTS header), which strips the headers
//! and gives the track its AudioSpecificConfig (`esds`): the samples are
//! raw AAC, timed in samples (the muxer's audio timescale is the sample
//! rate). The track's configuration is its first frame's; frames in
//! another one (audio settings changed within the clip) are left out, as
//! is audio other than AAC. A clip never fails over its audio: if the
//! muxer refuses the audio track, the clip is made without it.
//! `movflags=+faststart` moves the `moov` box to the front so a browser can
//! start playing a download at once, which is why the output is a seekable
//! file and not a stream.
//!
//! The audio track is set up from the first segment if it has audio, else
//! from the first later one that has (audio that joined the stream later);
//! those are found by their PMT (a few bytes read from each), not by
//! opening every segment twice.
//!
//! Timestamps: each segment is its own MPEG-TS file, so libavformat unwraps
//! the 33-bit PTS only within a file. The clip's timeline starts at 0; a
//! segment that continues its predecessor keeps its original spacing, and a
//! segment after a discontinuity (flagged by the caller, or detected as a
//! jump backwards or more than [`MAX_GAP`] forwards) is rebased to start one
//! frame after the previous packet, so the MP4 plays straight through. The
//! offset is fixed by the segment's first video packet and applied to its
//! audio too, so audio keeps its place against the video.
//!
//! Audio is cut to the video: an audio frame is kept when it starts within
//! its segment's video presentation span — from the clip's first picture
//! for a segment that continues its predecessor (the live muxer puts audio
//! up to half a second ahead of a segment's first picture, which is the end
//! of the previous segment's), from the segment's own first picture for the
//! first segment and a rebased one — to the end of its last picture. So the
//! audio covers `[first picture, end of the last picture)`, starting less
//! than one AAC frame after the video and ending less than one after it.
//! The live muxer also writes audio after the video it goes with, so the
//! end of a segment's audio is in the segment after it: for the clip's last
//! segment and one followed by a rebased segment, that audio is read from
//! the next segment of the recording (the layout's next sequence number in
//! the same directory, a regular file, not a symlink) when its video
//! continues on the same clock; without it (no such file) the audio ends up
//! to a few hundred milliseconds early. Audio frames that would overlap the
//! previous one are dropped, and a frame that starts within a quarter frame
//! of the previous one's end is placed exactly there, so the track has no
//! gaps or overlaps from rounding or rebasing (audio moves by less than a
//! quarter frame for it).
//!
//! Cuts are at segment boundaries (segments start with a keyframe): a clip
//! is whole segments, from the one containing the requested start to the
//! one containing the requested end.

use std::io::Read;
use std::path::{Path, PathBuf};

use ffmpeg::{codec, format, media, Dictionary, Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use crate::audio::adts::{self, AdtsConfig};
use crate::error::{Error, Result};
use crate::time::Dur90k;

/// A forward jump between segments larger than this is a break in the
/// source, not a gap in the picture: rebase instead of freezing on a frame.
pub const MAX_GAP: Dur90k = Dur90k(90_000);

const TB_90K: Rational = Rational(1, 90_000);

/// Samples in one AAC raw data block.
const AAC_BLOCK_SAMPLES: i64 = 1024;

/// MPEG-TS stream type of AAC in ADTS (ISO/IEC 13818-1 table 2-34).
const STREAM_TYPE_ADTS: u8 = 0x0f;

/// Bytes read from the head of a segment to find its PAT and PMT (the TS
/// muxer starts every segment with them).
const PMT_PEEK: usize = 188 * 16;

/// One input segment of a clip, in playback order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipSegment {
    /// An MPEG-TS file holding (at least) one video stream (H.264 or
    /// H.265), and possibly AAC audio.
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
    /// AAC frames written (0: the clip has no audio track).
    pub audio_frames: u64,
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

/// The video track of the output.
struct VideoOut {
    index: usize,
    codec: codec::Id,
    tb: Rational,
}

/// The audio track of the output.
struct AudioOut {
    index: usize,
    tb: Rational,
    /// The sample rate the track was set up with (its timescale).
    rate: u32,
    /// The configuration of the first frame written (the one the
    /// AudioSpecificConfig describes).
    config: Option<AdtsConfig>,
}

/// Where a segment's video went on the output timeline (90 kHz).
struct Placed {
    /// Added to the segment's timestamps.
    offset: i64,
    /// Its earliest PTS.
    start: i64,
    /// The end of its presentation span (latest PTS plus duration).
    end: i64,
    /// DTS plus duration of its last packet.
    dts_end: i64,
}

/// The output timeline, carried from segment to segment.
#[derive(Default)]
struct Timeline {
    /// DTS (output, 90 kHz) of the last video packet written.
    last_dts: Option<i64>,
    /// DTS plus duration of the last video packet.
    last_end: i64,
    /// The video frame spacing seen, to place a rebased segment one frame later.
    frame_dur: i64,
    first_dts: Option<i64>,
    /// Earliest video PTS written (output, 90 kHz): where the clip's picture starts.
    video_start: Option<i64>,
    /// Offset (90 kHz, input to output) of the previous segment.
    prev_offset: Option<i64>,
    /// End (audio track time base) of the last audio frame written.
    audio_end: Option<i64>,
}

/// Remuxes the video of `segments` (in order), and their AAC audio if they
/// have any, into the MP4 file `out` (created or truncated). Blocking: file
/// I/O and libavformat; call it from a blocking thread. Other streams in
/// the inputs are ignored.
pub fn remux_to_mp4(segments: &[ClipSegment], out: &Path) -> Result<ClipStats> {
    super::init_ffmpeg();
    if segments.is_empty() {
        return Err(clip_err("no segments to remux"));
    }
    let mut octx = format::output_as(out, "mp4")
        .map_err(|e| clip_err(format!("opening {} for MP4: {e}", out.display())))?;
    let mut stats = ClipStats::default();
    let mut tracks: Option<(VideoOut, Option<AudioOut>)> = None;
    let mut tl = Timeline {
        frame_dur: 3600,
        ..Default::default()
    };
    // The last segment whose video was written, and where.
    let mut placed: Option<(&ClipSegment, Placed)> = None;

    for (i, seg) in segments.iter().enumerate() {
        let mut ictx = format::input(&seg.path)
            .map_err(|e| clip_err(format!("opening {}: {e}", seg.path.display())))?;
        let ist = ictx
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| clip_err(format!("{}: no video stream", seg.path.display())))?;
        let (vin, vin_tb, vin_params) = (ist.index(), ist.time_base(), ist.parameters());
        let ain = ictx
            .streams()
            .find(|s| is_aac(&s.parameters()))
            .map(|s| (s.index(), s.time_base(), s.parameters()));

        if tracks.is_none() {
            // The audio track comes from this segment or, if audio joined
            // the stream later, the first later one with audio.
            let audio_params = match &ain {
                Some((_, _, p)) => Some(p.clone()),
                None => later_audio(&segments[i + 1..]),
            };
            let with_audio = audio_params.is_some();
            tracks = Some(match write_header(&mut octx, &vin_params, audio_params) {
                Ok(t) => t,
                Err(e) if with_audio => {
                    // Never fail a clip over its audio: start over without.
                    tracing::warn!(error = %e, "clip: leaving the audio out");
                    octx = format::output_as(out, "mp4")
                        .map_err(|e| clip_err(format!("opening {} for MP4: {e}", out.display())))?;
                    write_header(&mut octx, &vin_params, None)?
                }
                Err(e) => return Err(e),
            });
        }
        let (video, audio) = tracks.as_mut().expect("set above");
        if vin_params.id() != video.codec {
            // MP4 holds one sample description per track.
            tracing::warn!(segment = %seg.path.display(), codec = ?vin_params.id(), "clip: skipping a segment in another video codec");
            continue;
        }

        // The segment's packets, timestamps in 90 kHz: the video first (it
        // fixes the segment's offset and the span its audio is cut to),
        // whatever order the file interleaves them in.
        let mut vpackets = Vec::new();
        let mut apackets = Vec::new();
        for (stream, mut packet) in ictx.packets() {
            if stream.index() == vin {
                packet.rescale_ts(vin_tb, TB_90K);
                vpackets.push(packet);
            } else if let Some((_, ain_tb, _)) = ain.as_ref().filter(|a| a.0 == stream.index()) {
                packet.rescale_ts(*ain_tb, TB_90K);
                apackets.push(packet);
            }
        }
        drop(ictx);

        let here = write_video_packets(&mut octx, video, seg, vpackets, &mut tl, &mut stats)?;
        stats.segments += 1;
        let Some(here) = here else {
            continue;
        };
        tl.prev_offset = Some(here.offset);
        let continues = placed.as_ref().is_some_and(|p| p.1.offset == here.offset);
        if let Some(a) = audio.as_mut() {
            if let (false, Some((prev_seg, prev))) = (continues, placed.as_ref()) {
                // The previous segment's last audio is not in this one.
                write_audio_tail(&mut octx, a, prev_seg, prev, &mut tl, &mut stats)?;
            }
            // Audio that leads this segment's video plays over the
            // previous segment's pictures only if this one continues it.
            let from = if continues {
                tl.video_start.unwrap_or(here.start)
            } else {
                here.start
            };
            write_audio_packets(
                &mut octx,
                a,
                seg,
                apackets,
                here.offset,
                from,
                here.end,
                &mut tl,
                &mut stats,
            )?;
        }
        placed = Some((seg, here));
    }
    if stats.frames == 0 {
        return Err(clip_err("the segments hold no video frames"));
    }
    if let (Some((last, p)), Some((_, Some(audio)))) = (placed.as_ref(), tracks.as_mut()) {
        write_audio_tail(&mut octx, audio, last, p, &mut tl, &mut stats)?;
    }
    octx.write_trailer()
        .map_err(|e| clip_err(format!("writing the MP4 trailer: {e}")))?;
    drop(octx);
    stats.duration = Dur90k(tl.last_end - tl.first_dts.unwrap_or(0));
    stats.bytes = std::fs::metadata(out).map_err(|e| Error::io(out, e))?.len();
    Ok(stats)
}

/// Whether `params` are of AAC audio that the demuxer has seen frames of
/// (an AAC stream in a PMT with no frames in the file has no sample rate,
/// which the MP4 muxer refuses).
fn is_aac(params: &codec::Parameters) -> bool {
    params.medium() == media::Type::Audio
        && params.id() == codec::Id::AAC
        && sample_rate(params) > 0
}

fn sample_rate(params: &codec::Parameters) -> i32 {
    // SAFETY: `params` wraps a live AVCodecParameters (its own, or a
    // stream's kept alive by the `owner` handle it holds); this reads one
    // plain integer field, and nothing writes to it meanwhile (the handle
    // is borrowed shared and libavformat only writes codecpar inside calls
    // on the context, none of which run during this read).
    unsafe { (*params.as_ptr()).sample_rate }
}

/// Adds the tracks (the video, and audio when `audio` is given) and writes
/// the MP4 header.
fn write_header(
    octx: &mut format::context::Output,
    video: &codec::Parameters,
    audio: Option<codec::Parameters>,
) -> Result<(VideoOut, Option<AudioOut>)> {
    let codec = video.id();
    // HEVC as `hvc1` (parameter sets in the sample entry), which Apple's
    // players require; H.264 gets `avc1` from the muxer.
    let tag = if codec == codec::Id::HEVC {
        u32::from_le_bytes(*b"hvc1")
    } else {
        0
    };
    let vindex = add_stream(octx, video, tag)?;
    let audio = audio
        .map(|a| Ok::<_, Error>((add_stream(octx, &a, 0)?, sample_rate(&a).unsigned_abs())))
        .transpose()?;
    let mut opts = Dictionary::new();
    opts.set("movflags", "+faststart");
    octx.write_header_with(opts)
        .map_err(|e| clip_err(format!("writing the MP4 header: {e}")))?;
    // The muxer picks the time bases (for audio: the sample rate).
    let tb = |i: usize| octx.stream(i).map(|s| s.time_base()).unwrap_or(TB_90K);
    Ok((
        VideoOut {
            index: vindex,
            codec,
            tb: tb(vindex),
        },
        audio.map(|(index, rate)| AudioOut {
            index,
            tb: tb(index),
            rate,
            config: None,
        }),
    ))
}

/// Adds an output stream with a copy of `params`, codec tag `tag` (0: the
/// muxer's choice); returns its index.
fn add_stream(
    octx: &mut format::context::Output,
    params: &codec::Parameters,
    tag: u32,
) -> Result<usize> {
    // A deep copy (avcodec_parameters_copy): `Stream::parameters` wraps the
    // input stream's own AVCodecParameters.
    let mut params = params.clone();
    // SAFETY: `params` owns a live AVCodecParameters allocated by the clone
    // above and shared with nothing (no owner, no other handle), so writing
    // one plain integer field through its pointer cannot race or alias.
    // The MPEG-TS codec tag means nothing to MP4: replaced by ours, or
    // cleared so the muxer picks one (`avc1`, `mp4a`).
    unsafe {
        (*params.as_mut_ptr()).codec_tag = tag;
    }
    let mut ost = octx
        .add_stream(None::<ffmpeg::Codec>)
        .map_err(|e| clip_err(format!("adding an MP4 stream: {e}")))?;
    ost.set_parameters(params);
    ost.set_time_base(TB_90K);
    Ok(ost.index())
}

/// The codec parameters of the AAC stream of the first of `segments` whose
/// PMT declares one (read from its first bytes; only that one is opened).
fn later_audio(segments: &[ClipSegment]) -> Option<codec::Parameters> {
    segments
        .iter()
        .filter(|s| declares_adts(&s.path))
        .find_map(|s| {
            let ictx = format::input(&s.path).ok()?;
            let p = ictx.streams().map(|st| st.parameters()).find(is_aac)?;
            // A deep copy, so the input is closed here.
            Some(p.clone())
        })
}

/// Whether the first PMT of the MPEG-TS file at `path` lists an ADTS AAC
/// stream (a PAT and PMT each in one packet, as every muxer writes them).
fn declares_adts(path: &Path) -> bool {
    let mut head = Vec::with_capacity(PMT_PEEK);
    let read =
        std::fs::File::open(path).and_then(|f| f.take(PMT_PEEK as u64).read_to_end(&mut head));
    if read.is_err() {
        return false;
    }
    let mut pmt_pid = None;
    for pkt in head.chunks_exact(188) {
        let Some((pid, section)) = psi_section(pkt) else {
            continue;
        };
        match (pid, pmt_pid) {
            (0, None) if section.first() == Some(&0x00) => {
                pmt_pid = section_body(section).and_then(|body| {
                    body.chunks_exact(4)
                        .find(|p| p[0] != 0 || p[1] != 0) // not the network PID
                        .map(|p| (u16::from(p[2] & 0x1f) << 8) | u16::from(p[3]))
                });
            }
            (pid, Some(pmt)) if pid == pmt && section.first() == Some(&0x02) => {
                let Some(body) = section_body(section) else {
                    return false;
                };
                let Some(&[hi, lo]) = body.get(2..4).and_then(|b| b.first_chunk()) else {
                    return false;
                };
                let mut es = body
                    .get(4 + ((usize::from(hi & 0x0f) << 8) | usize::from(lo))..)
                    .unwrap_or_default();
                while let Some(&[stream_type, _, _, info_hi, info_lo]) = es.first_chunk() {
                    if stream_type == STREAM_TYPE_ADTS {
                        return true;
                    }
                    let len = (usize::from(info_hi & 0x0f) << 8) | usize::from(info_lo);
                    es = es.get(5 + len..).unwrap_or_default();
                }
                return false;
            }
            _ => {}
        }
    }
    false
}

/// The PID and section (from its table id) of a TS packet that starts a
/// PSI section.
fn psi_section(pkt: &[u8]) -> Option<(u16, &[u8])> {
    if pkt[0] != 0x47 || pkt[1] & 0x40 == 0 {
        return None;
    }
    let pid = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
    let mut at = 4;
    if pkt[3] & 0x20 != 0 {
        at += 1 + usize::from(*pkt.get(4)?);
    }
    if pkt[3] & 0x10 == 0 {
        return None;
    }
    let pointer = usize::from(*pkt.get(at)?);
    pkt.get(at + 1 + pointer..).map(|s| (pid, s))
}

/// The bytes of a long-form section between its 8-byte header and its
/// CRC (the program loop of a PAT, `PCR_PID` onwards of a PMT).
fn section_body(section: &[u8]) -> Option<&[u8]> {
    let len = (usize::from(*section.get(1)? & 0x0f) << 8) | usize::from(*section.get(2)?);
    section.get(8..(3 + len).checked_sub(4)?)
}

/// Writes the video packets of one segment; returns where they went
/// (`None`: it wrote none).
fn write_video_packets(
    octx: &mut format::context::Output,
    video: &VideoOut,
    seg: &ClipSegment,
    packets: Vec<Packet>,
    tl: &mut Timeline,
    stats: &mut ClipStats,
) -> Result<Option<Placed>> {
    // Offset (90 kHz) added to this segment's timestamps; fixed by its first packet.
    let mut offset: Option<i64> = None;
    let mut span: Option<(i64, i64)> = None;
    for packet in packets {
        let Some(dts) = packet.dts().or(packet.pts()) else {
            // A packet with no time at all can't be placed in an MP4.
            tracing::debug!(segment = %seg.path.display(), "clip: skipping a packet without timestamps");
            continue;
        };
        let off = *offset.get_or_insert_with(|| match (tl.last_dts, tl.prev_offset) {
            (Some(prev), Some(prev_off)) => {
                // Where this segment lands if its clock continues the previous one's.
                let landing = dts + prev_off;
                if seg.discontinuity || landing <= prev || landing - tl.last_end > MAX_GAP.0 {
                    tl.last_end - dts
                } else {
                    prev_off
                }
            }
            _ => -dts,
        });
        let out_dts = dts + off;
        if tl.last_dts.is_some_and(|p| out_dts <= p) {
            // Non-monotonic DTS inside a segment (a damaged file): MP4 can't hold it.
            tracing::debug!(segment = %seg.path.display(), dts = out_dts, "clip: dropping a packet with non-increasing DTS");
            continue;
        }
        let out_pts = packet.pts().map_or(out_dts, |p| p + off).max(out_dts);
        if let Some(prev) = tl.last_dts {
            tl.frame_dur = (out_dts - prev).clamp(1, 90_000);
        }
        let dur = if packet.duration() > 0 {
            packet.duration()
        } else {
            tl.frame_dur
        };
        tl.last_dts = Some(out_dts);
        tl.last_end = out_dts + dur;
        tl.first_dts.get_or_insert(out_dts);
        tl.video_start = Some(tl.video_start.map_or(out_pts, |s| s.min(out_pts)));
        span = Some(span.map_or((out_pts, out_pts + dur), |(s, e)| {
            (s.min(out_pts), e.max(out_pts + dur))
        }));

        stats.frames += 1;
        stats.keyframes += u64::from(packet.is_key());
        let (dts, pts, dur) = (
            out_dts.rescale(TB_90K, video.tb),
            out_pts.rescale(TB_90K, video.tb),
            dur.rescale(TB_90K, video.tb),
        );
        write_packet(octx, packet, video.index, dts, pts, dur)?;
    }
    Ok(offset.zip(span).map(|(offset, (start, end))| Placed {
        offset,
        start,
        end,
        dts_end: tl.last_end,
    }))
}

/// Writes the audio packets (ADTS frames, 90 kHz) of a segment placed with
/// `offset` that start in `[from, to)` (output, 90 kHz); see the module doc
/// for what else is left out.
#[allow(clippy::too_many_arguments)]
fn write_audio_packets(
    octx: &mut format::context::Output,
    audio: &mut AudioOut,
    seg: &ClipSegment,
    packets: Vec<Packet>,
    offset: i64,
    from: i64,
    to: i64,
    tl: &mut Timeline,
    stats: &mut ClipStats,
) -> Result<()> {
    for packet in packets {
        let Some(pts) = packet.pts().or(packet.dts()).map(|p| p + offset) else {
            continue;
        };
        if pts < from || pts >= to {
            continue;
        }
        let Some(frame) = packet.data().and_then(|d| adts::parse_frame(d).ok()) else {
            tracing::debug!(segment = %seg.path.display(), "clip: dropping an audio packet that is not one ADTS frame");
            continue;
        };
        if frame.config.sample_rate() != audio.rate
            || *audio.config.get_or_insert(frame.config) != frame.config
        {
            tracing::debug!(segment = %seg.path.display(), "clip: dropping audio in another configuration than the track's");
            continue;
        }
        let rate = Rational(1, frame.config.sample_rate() as i32);
        let dur = (i64::from(frame.blocks) * AAC_BLOCK_SAMPLES).rescale(rate, audio.tb);
        let mut at = pts.rescale(TB_90K, audio.tb);
        if let Some(end) = tl.audio_end {
            if (at - end).abs() <= dur / 4 {
                // Continues the previous frame: exactly, whatever the rounding.
                at = end;
            } else if at < end {
                // Overlaps it (audio across a rebased boundary).
                continue;
            }
        }
        tl.audio_end = Some(at + dur);
        stats.audio_frames += 1;
        write_packet(octx, packet, audio.index, at, at, dur)?;
    }
    Ok(())
}

/// The audio of a segment's span that the live muxer put into the segment
/// after it (audio reaches the muxer later than the video it goes with),
/// for a segment the clip does not continue with that one: read from the
/// layout's next sequence number in the same directory (a regular file)
/// when its video continues the segment's, and cut like the rest.
fn write_audio_tail(
    octx: &mut format::context::Output,
    audio: &mut AudioOut,
    last: &ClipSegment,
    placed: &Placed,
    tl: &mut Timeline,
    stats: &mut ClipStats,
) -> Result<()> {
    let (offset, seg_end) = (placed.offset, placed.end);
    if let (Some(end), Some(config)) = (tl.audio_end, audio.config) {
        let frame = AAC_BLOCK_SAMPLES.rescale(Rational(1, config.sample_rate() as i32), audio.tb);
        if end + frame / 4 >= seg_end.rescale(TB_90K, audio.tb) {
            // The audio already reaches the end of the video.
            return Ok(());
        }
    }
    let Some(next) = next_segment(&last.path) else {
        return Ok(());
    };
    let Ok(mut ictx) = format::input(&next) else {
        return Ok(());
    };
    let Some(vin) = ictx.streams().best(media::Type::Video).map(|s| s.index()) else {
        return Ok(());
    };
    let Some(ain) = ictx
        .streams()
        .find(|s| is_aac(&s.parameters()))
        .map(|s| s.index())
    else {
        return Ok(());
    };
    let mut continues = false;
    let mut tail = Vec::new();
    for (stream, mut packet) in ictx.packets() {
        let index = stream.index();
        packet.rescale_ts(stream.time_base(), TB_90K);
        let Some(at) = packet.dts().or(packet.pts()).map(|t| t + offset) else {
            continue;
        };
        if index == vin {
            if !continues {
                // Its first frame follows the last one on the same clock.
                if (at - placed.dts_end).abs() > tl.frame_dur / 2 {
                    return Ok(());
                }
                continues = true;
            }
            if at > seg_end + MAX_GAP.0 {
                break;
            }
        } else if index == ain {
            if at >= seg_end {
                break;
            }
            tail.push(packet);
        }
    }
    if !continues || tail.is_empty() {
        return Ok(());
    }
    let before = stats.audio_frames;
    write_audio_packets(
        octx,
        audio,
        last,
        tail,
        offset,
        placed.start,
        seg_end,
        tl,
        stats,
    )?;
    tracing::debug!(segment = %next.display(), frames = stats.audio_frames - before, "clip: audio of the last segment's span taken from the next one");
    Ok(())
}

/// The segment after the one at `path` in its directory, by the layout's
/// sequence numbers; `None` unless it is a regular file (not a symlink).
fn next_segment(path: &Path) -> Option<PathBuf> {
    let sequence = crate::layout::segment_sequence(path.file_name()?.to_str()?)?;
    let next = path.with_file_name(crate::layout::segment_file(sequence.checked_add(1)?));
    let meta = std::fs::symlink_metadata(&next).ok()?;
    meta.file_type().is_file().then_some(next)
}

/// Writes `packet` to output stream `index` with timestamps already in
/// that stream's time base.
fn write_packet(
    octx: &mut format::context::Output,
    mut packet: Packet,
    index: usize,
    dts: i64,
    pts: i64,
    dur: i64,
) -> Result<()> {
    packet.set_dts(Some(dts));
    packet.set_pts(Some(pts.max(dts)));
    packet.set_duration(dur);
    packet.set_stream(index);
    packet.set_position(-1);
    packet
        .write_interleaved(octx)
        .map_err(|e| clip_err(format!("writing a packet: {e}")))
}
