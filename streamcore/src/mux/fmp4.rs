//! The fragmented-MP4 (CMAF) muxer of the low-latency rendition:
//! libavformat's `mp4` muxer writing into memory, an init segment (`ftyp` +
//! `moov`) at creation, then one fragment (`moof` + `mdat`) per
//! [`Fmp4Muxer::flush_fragment`] (ISO/IEC 14496-12 8.8, CMAF ISO/IEC
//! 23000-19 7.3; used as HLS parts, RFC 8216bis 4.4.4.9).
//!
//! Video arrives as for the MPEG-TS muxer: Annex-B access units starting
//! with an AUD. The parameter sets go in as Annex-B extradata, from which the
//! muxer writes `avcC`/`hvcC` and converts every sample to length-prefixed
//! NAL units itself. AAC arrives as ADTS frames: the header is stripped here
//! and the AudioSpecificConfig is set before the header is written. Sample
//! times are the caller's timeline, unshifted: every sample is presented at
//! the PTS it was written with, and the first `tfdt` is the first PTS (the
//! first DTS without B-frames); a forward jump between fragments moves
//! `tfdt` with it. What libavformat does that shaped this is in
//! `docs/libavformat.md`.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use ffmpeg::ffi;
use ffmpeg_next as ffmpeg;

use super::{init_ffmpeg, MuxPacket, Track};
use crate::annexb::FrameNals;
use crate::audio::adts;
use crate::audio::AdtsConfig;
use crate::codec::VideoCodec;
use crate::error::{Error, Result};

/// AVIO buffer. The muxer writes a box's size by seeking back over it once
/// the box is complete, which on our output (no seek callback) only works
/// within this buffer: every `moof` must fit. A 200 ms part's is a few
/// hundred bytes; this holds one of ~1,000 samples.
/// [`Fmp4Muxer::flush_fragment`] checks the box sizes all the same.
const AVIO_BUFFER: usize = 16 * 1024;

/// The mov muxer's flags:
/// - `frag_custom`: a fragment ends only when asked (a null packet);
/// - `empty_moov`: the header is the whole init segment, written at once;
/// - `default_base_moof`: sample offsets count from each fragment's own
///   `moof` (no absolute file offsets), so a fragment stands alone;
/// - not `negative_cts_offsets` nor `cmaf`: with them (CMAF's signed
///   B-frame offsets in `trun` version 1, the `cmfc` brand) hls.js 1.7
///   fails on the parts with an internal exception and plays nothing
///   (observed in Chromium); without them, and without an edit list
///   (`use_editlist=0`), a sample is presented at `tfdt` + its positive
///   composition offset: our own PTS;
/// - `skip_trailer`: without it the muxer keeps an index entry per track and
///   fragment for an `mfra` it would write at the end (which a live stream
///   never reaches): ~40 bytes a track and fragment, for the muxer's life;
/// - `frag_discont`: the first samples keep their own timestamps (else the
///   muxer counts each track from 0 at its own first sample, shifting a
///   track that starts later against the others). [`Fmp4Muxer::write`]
///   sets it again at a jump.
const MOVFLAGS: &str = "frag_custom+empty_moov+default_base_moof\
                        +skip_trailer+frag_discont";

/// What the init segment needs to know of the video before the first frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoSetup {
    pub codec: VideoCodec,
    /// The parameter sets in Annex-B (start codes): SPS+PPS (H.264),
    /// VPS+SPS+PPS (H.265).
    pub parameter_sets: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

impl VideoSetup {
    /// Finds the parameter sets in a keyframe packet as
    /// [`VideoParser::write_packet`](crate::codec::VideoParser::write_packet)
    /// makes it (Annex-B, AUD first, parameter sets before the slices) and
    /// reads the picture size from the SPS. `None` without a readable SPS
    /// and a PPS (and, for H.265, a VPS) before the first slice.
    pub fn from_keyframe(codec: VideoCodec, packet: &[u8]) -> Option<VideoSetup> {
        let mut parameter_sets = Vec::new();
        let mut size = None;
        let (mut vps, mut pps) = (codec == VideoCodec::H264, false);
        for nal in FrameNals::new(Bytes::copy_from_slice(packet)) {
            let keep = match codec {
                VideoCodec::H264 => match crate::h264::nal_unit_type(&nal) {
                    crate::h264::nal_type::SPS => {
                        let sps = crate::h264::Sps::parse(&nal).ok()?;
                        size.get_or_insert((sps.width, sps.height));
                        true
                    }
                    crate::h264::nal_type::PPS => {
                        pps = true;
                        true
                    }
                    t if crate::h264::is_vcl(t) => break,
                    _ => false,
                },
                VideoCodec::H265 => match crate::h265::NalHeader::parse(&nal) {
                    // Parameter sets of other layers are not the base
                    // layer's, which is all `hvcC` describes here.
                    Some(h) if h.layer_id != 0 => false,
                    Some(h) => match h.nal_type {
                        crate::h265::nal_type::VPS => {
                            vps = true;
                            true
                        }
                        crate::h265::nal_type::SPS => {
                            let sps = crate::h265::Sps::parse(&nal).ok()?;
                            size.get_or_insert((sps.width, sps.height));
                            true
                        }
                        crate::h265::nal_type::PPS => {
                            pps = true;
                            true
                        }
                        t if crate::h265::is_vcl(t) => break,
                        _ => false,
                    },
                    None => false,
                },
            };
            if keep {
                parameter_sets.extend_from_slice(&[0, 0, 0, 1]);
                parameter_sets.extend_from_slice(&nal);
            }
        }
        let (width, height) = size?;
        (vps && pps).then_some(VideoSetup {
            codec,
            parameter_sets,
            width,
            height,
        })
    }
}

/// The muxer's output since it was last taken.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("sink poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1) of an ADTS stream:
/// object type, sampling-frequency index, channel configuration.
fn audio_specific_config(c: AdtsConfig) -> [u8; 2] {
    let object_type = u16::from(c.profile) + 1;
    let v = (object_type << 11)
        | (u16::from(c.sampling_index & 0x0f) << 7)
        | (u16::from(c.channels & 0x0f) << 3);
    v.to_be_bytes()
}

/// Copies `data` into a buffer libavformat owns (padded as it requires).
///
/// # Safety
/// `par` must point to a live AVCodecParameters whose `extradata` is null.
unsafe fn set_extradata(par: *mut ffi::AVCodecParameters, data: &[u8]) -> bool {
    let padded = data.len() + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: av_mallocz returns null or a zeroed buffer of `padded` bytes,
    // which `data` fits; `par` is live per the caller, its extradata null
    // (nothing leaks). The parameters own the buffer from here and free it
    // with the stream.
    unsafe {
        let buf = ffi::av_mallocz(padded) as *mut u8;
        if buf.is_null() {
            return false;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        (*par).extradata = buf;
        (*par).extradata_size = data.len() as i32;
    }
    true
}

/// `moof` then `mdat`, exactly filling `b` (a size left unpatched reads 0).
fn is_fragment(b: &[u8]) -> bool {
    let header = |at: usize| -> Option<(usize, &[u8])> {
        let h = b.get(at..at + 8)?;
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        (size >= 8).then_some((size, &h[4..]))
    };
    match header(0) {
        Some((moof, b"moof")) => {
            matches!(header(moof), Some((mdat, b"mdat")) if moof + mdat == b.len())
        }
        _ => false,
    }
}

/// One track of the muxer.
struct TrackState {
    /// An audio track: the ADTS configuration its frames must carry.
    adts: Option<AdtsConfig>,
    /// The track's time base after the header: 1/timescale (90 kHz for
    /// video, the sample rate for audio).
    time_base: ffi::AVRational,
    /// End (DTS plus duration) of the last sample written, in `time_base`.
    end: Option<i64>,
    /// No sample of the track in the open fragment yet.
    fresh: bool,
    /// DTS of the last sample written, in `time_base`.
    last_dts: Option<i64>,
}

const TB_90K: ffi::AVRational = ffi::AVRational {
    num: 1,
    den: 90_000,
};

/// A libavformat fragmented-MP4 muxer.
pub struct Fmp4Muxer {
    octx: ffmpeg::format::context::Output,
    sink: Sink,
    init: Vec<u8>,
    stream: String,
    tracks: Vec<TrackState>,
    /// Samples written since the last fragment.
    pending: usize,
}

impl Fmp4Muxer {
    /// A muxer for `tracks` (index = [`MuxPacket::track`]); `video`
    /// describes the video track, required when there is one. Writes the
    /// init segment at once ([`Fmp4Muxer::init_segment`]).
    pub fn new(stream: &str, tracks: &[Track], video: Option<&VideoSetup>) -> Result<Self> {
        init_ffmpeg();
        let fail = |detail: String| Error::Mux {
            stream: stream.to_string(),
            detail,
        };
        let err = |e: ffmpeg::Error| fail(e.to_string());
        let sink = Sink::default();
        let io =
            ffmpeg::format::context::StreamIo::from_write_with_capacity(sink.clone(), AVIO_BUFFER)
                .map_err(err)?;
        let mut octx = ffmpeg::format::output_to_stream(io, None, Some("mp4")).map_err(err)?;
        for track in tracks {
            let setup = match *track {
                Track::Video(codec) => {
                    Some(video.filter(|v| v.codec == codec).ok_or_else(|| {
                        fail(format!("no {codec} parameter sets for the init segment"))
                    })?)
                }
                Track::Audio(_) => None,
            };
            let mut st = octx.add_stream(None::<ffmpeg::Codec>).map_err(err)?;
            st.set_time_base((1, 90_000));
            // SAFETY: `st` wraps a stream avformat_new_stream just allocated
            // in `octx`, which owns it and outlives this block; its
            // `codecpar` is allocated with it, never null, its extradata
            // still null. Plain field stores; nothing else holds it yet.
            // av_channel_layout_default only writes the layout it is given.
            let stored = unsafe {
                let par = (*st.as_mut_ptr()).codecpar;
                match (*track, setup) {
                    (Track::Video(codec), Some(v)) => {
                        (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
                        (*par).codec_id = match codec {
                            VideoCodec::H264 => ffi::AVCodecID::AV_CODEC_ID_H264,
                            VideoCodec::H265 => {
                                // Apple's players take HEVC as `hvc1` only;
                                // the muxer's default is `hev1`.
                                (*par).codec_tag = u32::from_le_bytes(*b"hvc1");
                                ffi::AVCodecID::AV_CODEC_ID_HEVC
                            }
                        };
                        (*par).width = v.width as i32;
                        (*par).height = v.height as i32;
                        set_extradata(par, &v.parameter_sets)
                    }
                    (Track::Audio(config), _) => {
                        (*par).codec_type = ffi::AVMediaType::AVMEDIA_TYPE_AUDIO;
                        (*par).codec_id = ffi::AVCodecID::AV_CODEC_ID_AAC;
                        (*par).sample_rate = config.sample_rate() as i32;
                        (*par).frame_size = 1024;
                        ffi::av_channel_layout_default(
                            &mut (*par).ch_layout,
                            config.channels as i32,
                        );
                        set_extradata(par, &audio_specific_config(config))
                    }
                    (Track::Video(_), None) => unreachable!("checked above"),
                }
            };
            if !stored {
                return Err(fail("out of memory for the extradata".into()));
            }
        }
        // SAFETY: `octx` is a live output context whose header is not
        // written yet; a plain field store. No flush per packet: samples
        // wait in the muxer until their fragment ends anyway. (Not
        // `pb->direct`: it would send the muxer's seeks back to patch box
        // sizes to the seek callback we do not have.)
        unsafe {
            (*octx.as_mut_ptr()).flush_packets = 0;
        }
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("movflags", MOVFLAGS);
        // No edit list: `tfdt` is our own decode time (with one, the muxer
        // starts every track at 0 and absorbs jumps into the list).
        opts.set("use_editlist", "0");
        octx.write_header_with(opts).map_err(err)?;
        let states = tracks
            .iter()
            .enumerate()
            .map(|(i, track)| {
                let tb = octx.stream(i).expect("added above").time_base();
                TrackState {
                    adts: match *track {
                        Track::Audio(c) => Some(c),
                        Track::Video(_) => None,
                    },
                    time_base: ffi::AVRational {
                        num: tb.numerator(),
                        den: tb.denominator(),
                    },
                    end: None,
                    fresh: true,
                    last_dts: None,
                }
            })
            .collect();
        // SAFETY: `pb` is the custom AVIO context output_to_stream
        // installed, kept alive by `octx`; avio_flush only calls our write
        // callback, which does not re-enter libav.
        unsafe {
            let pb = (*octx.as_mut_ptr()).pb;
            if !pb.is_null() {
                ffi::avio_flush(pb);
            }
        }
        let init = std::mem::take(&mut *sink.0.lock().expect("sink poisoned"));
        if init.is_empty() {
            return Err(fail("the mp4 muxer wrote no init segment".into()));
        }
        Ok(Fmp4Muxer {
            octx,
            sink,
            init,
            stream: stream.to_string(),
            tracks: states,
            pending: 0,
        })
    }

    /// `ftyp` + `moov`.
    pub fn init_segment(&self) -> &[u8] {
        &self.init
    }

    fn error(&self, detail: String) -> Error {
        Error::Mux {
            stream: self.stream.clone(),
            detail,
        }
    }

    /// Writes one access unit into the open fragment: video as Annex-B
    /// starting with an AUD, audio as one ADTS frame (of the configuration
    /// given at creation, one raw data block); 90 kHz times.
    pub fn write(&mut self, packet: &MuxPacket<'_>) -> Result<()> {
        let Some(track) = self.tracks.get(packet.track) else {
            return Err(self.error(format!(
                "packet for track {} of a muxer with {}",
                packet.track,
                self.tracks.len()
            )));
        };
        let data = match track.adts {
            None => packet.data,
            Some(config) => match adts::parse_frame(packet.data) {
                Ok(f) if f.config == config && f.blocks == 1 => {
                    // protection_absent set: a 7-byte header, else 9 (CRC).
                    let header = if packet.data[1] & 1 != 0 { 7 } else { 9 };
                    &packet.data[header..f.len]
                }
                Ok(f) => {
                    return Err(self.error(format!(
                        "ADTS frame at {:?} is {:?} with {} raw data blocks; the track is {config:?} with one",
                        packet.pts, f.config, f.blocks
                    )))
                }
                Err(e) => {
                    return Err(self.error(format!(
                        "audio packet at {:?} is not an ADTS frame: {e:?}",
                        packet.pts
                    )))
                }
            },
        };
        let tb = track.time_base;
        // SAFETY: av_rescale_q is a pure function.
        let (pts, dts, duration) = unsafe {
            (
                ffi::av_rescale_q(packet.pts.0, TB_90K, tb),
                ffi::av_rescale_q(packet.dts.0, TB_90K, tb),
                ffi::av_rescale_q(packet.duration.0, TB_90K, tb),
            )
        };
        // A track's first sample of a fragment is placed at the end of its
        // previous one, whatever its DTS, unless the fragment is flagged
        // discontinuous: a forward jump would otherwise pull that sample
        // back over the gap. (A jump within a fragment lengthens the sample
        // before it: `trun` has no gaps.) One tick of slack for rounding to
        // the track's timescale.
        //
        // Only at a fragment's first sample: the flag applies to every
        // track's next packet, and a track that already has samples in the
        // fragment would have its decode timeline restarted under them,
        // which trips an av_assert0 in libavformat (`next_dts >= 0`,
        // movenc.c) and aborts the process (found by the live_stream_frames
        // fuzz target).
        let gap = self.pending == 0 && track.end.is_some_and(|end| dts > end + 1);
        if track.last_dts.is_some_and(|last| dts < last) {
            return Err(self.error(format!(
                "decode time {:?} goes back before the track's last sample",
                packet.dts
            )));
        }
        if duration < 0 {
            return Err(self.error(format!(
                "negative duration {:?} at {:?}",
                packet.duration, packet.pts
            )));
        }
        if gap {
            // SAFETY: `octx` is a live mp4 output context; its `priv_data`
            // is the muxer's option-carrying private context and
            // "movflags" one of its flag options ("+" adds to the current
            // flags). The muxer consumes the flag at its next packet.
            // av_opt_set copies nothing it keeps.
            let ret = unsafe {
                ffi::av_opt_set(
                    (*self.octx.as_mut_ptr()).priv_data,
                    c"movflags".as_ptr(),
                    c"+frag_discont".as_ptr(),
                    0,
                )
            };
            if ret < 0 {
                return Err(self.error(format!(
                    "marking the jump at {:?}: {}",
                    packet.dts,
                    ffmpeg::Error::from(ret)
                )));
            }
        }
        // SAFETY: `octx` is live with its header written and `track` names
        // one of its streams (checked above); the mp4 muxer copies the
        // payload into its fragment buffer (converting video to
        // length-prefixed NAL units as it goes) and keeps no pointer to it.
        let ret = unsafe {
            super::write_borrowed(
                self.octx.as_mut_ptr(),
                packet.track,
                data,
                (pts, dts, duration),
                packet.keyframe,
            )
        };
        if ret < 0 {
            return Err(self.error(format!(
                "writing the frame at {:?}: {}",
                packet.pts,
                ffmpeg::Error::from(ret)
            )));
        }
        let track = &mut self.tracks[packet.track];
        track.end = Some(dts + duration);
        track.fresh = false;
        track.last_dts = Some(dts);
        self.pending += 1;
        Ok(())
    }

    /// Closes the open fragment and appends it (`moof` + `mdat`) to `out`;
    /// returns its length, 0 (appending nothing) when no sample was written
    /// since the last fragment. Into an empty `out` the bytes move without
    /// a copy.
    pub fn flush_fragment(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        if self.pending == 0 {
            return Ok(0);
        }
        self.pending = 0;
        for t in &mut self.tracks {
            t.fresh = true;
        }
        // SAFETY: `octx` is live with its header written; a null packet
        // asks the mp4 muxer (AVFMT_ALLOW_FLUSH) to write out the fragment
        // it holds (frag_custom). `pb` is the custom AVIO context kept alive
        // by `octx`; avio_flush only calls our write callback, which does
        // not re-enter libav.
        let ret = unsafe {
            let ret = ffi::av_write_frame(self.octx.as_mut_ptr(), std::ptr::null_mut());
            let pb = (*self.octx.as_mut_ptr()).pb;
            if !pb.is_null() {
                ffi::avio_flush(pb);
            }
            ret
        };
        let mut sink = self.sink.0.lock().expect("sink poisoned");
        if ret < 0 {
            sink.clear();
            return Err(self.error(format!("ending a fragment: {}", ffmpeg::Error::from(ret))));
        }
        let n = sink.len();
        if !is_fragment(&sink) {
            sink.clear();
            return Err(self.error(format!(
                "the mp4 muxer wrote a malformed fragment of {n} bytes"
            )));
        }
        if out.is_empty() {
            // The buffers trade places: both keep their capacity, so a
            // caller that empties `out` each time never allocates.
            std::mem::swap(out, &mut *sink);
        } else {
            out.extend_from_slice(&sink);
        }
        sink.clear();
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{Dur90k, Ts90k};

    /// An access unit as the stream pipeline hands it to a muxer.
    #[derive(Clone)]
    struct Packet {
        track: usize,
        data: Vec<u8>,
        pts: Ts90k,
        dts: Ts90k,
        duration: Dur90k,
        keyframe: bool,
    }

    impl Packet {
        fn mux(&self) -> MuxPacket<'_> {
            MuxPacket {
                track: self.track,
                data: &self.data,
                pts: self.pts,
                dts: self.dts,
                duration: self.duration,
                keyframe: self.keyframe,
            }
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// A fixture's video from its first keyframe, as `LiveStream` makes the
    /// packets: parser, timeline, `write_packet` (track 0).
    fn video(codec: VideoCodec, name: &str) -> Vec<Packet> {
        let mut parser = crate::codec::parser(codec, 1024, 4 << 20);
        let mut timeline = crate::timing::Timeline::new(Default::default());
        let mut timed = Vec::new();
        let mut aus: Vec<_> = crate::annexb::split_nals(&fixture(name))
            .into_iter()
            .filter_map(|n| parser.push(n, None))
            .collect();
        aus.extend(parser.flush());
        for au in aus {
            let hints = parser.timing_hints();
            timeline.push(au, hints.nominal_frame, hints.reorder_depth, 0, &mut timed);
        }
        timeline.flush_into(&mut timed);
        timed
            .iter()
            .skip_while(|f| !f.au.keyframe)
            .map(|f| {
                let mut data = Vec::new();
                parser.write_packet(&f.au, &mut data);
                Packet {
                    track: 0,
                    data,
                    pts: f.pts,
                    dts: f.dts,
                    duration: f.duration,
                    keyframe: f.au.keyframe,
                }
            })
            .collect()
    }

    /// `fixtures/audio/tone1k_aac.adts`: AAC-LC 16 kHz mono, one ADTS frame
    /// (1024 samples, 5760 ticks) a packet (track 1).
    fn aac() -> (AdtsConfig, Vec<Packet>) {
        let bytes = fixture("audio/tone1k_aac.adts");
        let (mut rest, mut packets, mut config) = (&bytes[..], Vec::new(), None);
        while !rest.is_empty() {
            let f = adts::parse_frame(rest).unwrap();
            config = Some(f.config);
            let t = Ts90k(packets.len() as i64 * 5760);
            packets.push(Packet {
                track: 1,
                data: rest[..f.len].to_vec(),
                pts: t,
                dts: t,
                duration: Dur90k(5760),
                keyframe: true,
            });
            rest = &rest[f.len..];
        }
        (config.unwrap(), packets)
    }

    /// Packets cut into fragments of `per` video frames, each with the
    /// audio before the next fragment's first frame, in DTS order.
    fn fragments(video: &[Packet], audio: &[Packet], per: usize) -> Vec<Vec<Packet>> {
        let mut audio = audio.iter().peekable();
        let mut out = Vec::new();
        for (k, chunk) in video.chunks(per).enumerate() {
            let until = video.get((k + 1) * per).map(|p| p.dts);
            let mut group: Vec<Packet> = chunk.to_vec();
            while let Some(a) = audio.next_if(|a| until.is_none_or(|u| a.dts < u)) {
                group.push(a.clone());
            }
            // Stable: audio after the frame of the same DTS, as it was pushed.
            group.sort_by_key(|p| p.dts);
            out.push(group);
        }
        out
    }

    /// Moves everything from `from_fragment` on `by` later (a gap).
    fn jump(fragments: &mut [Vec<Packet>], from_fragment: usize, by: Dur90k) {
        for p in fragments[from_fragment..].iter_mut().flatten() {
            p.pts += by;
            p.dts += by;
        }
    }

    /// Muxes each group as one fragment; returns the fragments. Alternates
    /// between an empty `out` (moved in) and appending to a longer one.
    fn mux(m: &mut Fmp4Muxer, groups: &[Vec<Packet>]) -> Vec<Vec<u8>> {
        let mut all = b"prefix".to_vec();
        let mut fragments = Vec::new();
        for (k, group) in groups.iter().enumerate() {
            for p in group {
                m.write(&p.mux()).unwrap();
            }
            let mut out = Vec::new();
            let target = if k % 2 == 0 { &mut out } else { &mut all };
            let before = target.len();
            let n = m.flush_fragment(target).unwrap();
            assert_eq!(target.len(), before + n);
            fragments.push(target[before..].to_vec());
        }
        fragments
    }

    /// Type and body of each box in `b`, which they must fill exactly.
    fn boxes(mut b: &[u8]) -> Vec<([u8; 4], &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            assert!(
                (8..=b.len()).contains(&size),
                "box of {size} in {}",
                b.len()
            );
            out.push((b[4..8].try_into().unwrap(), &b[8..size]));
            b = &b[size..];
        }
        out
    }

    fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Vec<&'a [u8]> {
        boxes(b)
            .into_iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, body)| body)
            .collect()
    }

    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Track id -> timescale, from the init segment's `trak`s.
    fn timescales(init: &[u8]) -> Vec<(u32, u32)> {
        let moov = child(init, b"moov")[0];
        child(moov, b"trak")
            .into_iter()
            .map(|trak| {
                let tkhd = child(trak, b"tkhd")[0];
                let mdhd = child(child(trak, b"mdia")[0], b"mdhd")[0];
                let (id_at, ts_at) = if tkhd[0] == 1 { (20, 20) } else { (12, 12) };
                (be32(tkhd, id_at), be32(mdhd, ts_at))
            })
            .collect()
    }

    /// One `traf` of a fragment.
    #[derive(Debug)]
    struct Run {
        track_id: u32,
        tfdt: u64,
        durations: Vec<u32>,
        /// Composition offsets (signed in `trun` version 1).
        cts: Vec<i64>,
        sync: Vec<bool>,
    }

    fn runs(fragment: &[u8]) -> Vec<Run> {
        let top = boxes(fragment);
        let kinds: Vec<_> = top.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [b"moof", b"mdat"]);
        child(top[0].1, b"traf")
            .into_iter()
            .map(|traf| {
                let tfhd = child(traf, b"tfhd")[0];
                let flags = be32(tfhd, 0) & 0xff_ffff;
                let mut at = 8;
                let mut field = |bit: u32, len: usize| {
                    let v = (flags & bit != 0).then(|| be32(tfhd, at + len - 4));
                    if flags & bit != 0 {
                        at += len;
                    }
                    v
                };
                let (_base, _desc) = (field(0x1, 8), field(0x2, 4));
                let (ddur, _dsize, dflags) = (field(0x8, 4), field(0x10, 4), field(0x20, 4));
                let tfdt = child(traf, b"tfdt")[0];
                let tfdt = if tfdt[0] == 1 {
                    u64::from_be_bytes(tfdt[4..12].try_into().unwrap())
                } else {
                    u64::from(be32(tfdt, 4))
                };
                let trun = child(traf, b"trun")[0];
                let (version, flags) = (trun[0], be32(trun, 0) & 0xff_ffff);
                let n = be32(trun, 4) as usize;
                let mut at = 8 + 4 * usize::from(flags & 0x1 != 0);
                let first_flags = (flags & 0x4 != 0).then(|| be32(trun, at));
                at += 4 * usize::from(flags & 0x4 != 0);
                let mut run = Run {
                    track_id: be32(tfhd, 4),
                    tfdt,
                    durations: Vec::new(),
                    cts: Vec::new(),
                    sync: Vec::new(),
                };
                for i in 0..n {
                    let mut next = |bit: u32| {
                        (flags & bit != 0).then(|| {
                            at += 4;
                            be32(trun, at - 4)
                        })
                    };
                    let duration = next(0x100).or(ddur).expect("a sample duration");
                    let _size = next(0x200);
                    let sample_flags = next(0x400);
                    let cts = next(0x800).map_or(0, |c| {
                        if version == 1 {
                            i64::from(c as i32)
                        } else {
                            i64::from(c)
                        }
                    });
                    let sample_flags = sample_flags
                        .or(if i == 0 { first_flags } else { None })
                        .or(dflags)
                        .expect("sample flags");
                    run.durations.push(duration);
                    run.cts.push(cts);
                    // sample_is_non_sync_sample
                    run.sync.push(sample_flags & 0x1_0000 == 0);
                }
                run
            })
            .collect()
    }

    /// 90 kHz to `timescale`, rounding to nearest as av_rescale_q does.
    fn rescale(t: i64, timescale: u32) -> i64 {
        (t * i64::from(timescale) + 45_000).div_euclid(90_000)
    }

    /// Every sample of every fragment is where and what it was written:
    /// count, sync flag, composition time (`tfdt` + durations + offset),
    /// the last sample's own duration, one DTS shift per track; and the
    /// durations sum to those given.
    fn check_timing(init: &[u8], groups: &[Vec<Packet>], fragments: &[Vec<u8>]) {
        assert_eq!(groups.len(), fragments.len());
        let scales = timescales(init);
        let mut shift = vec![None; scales.len()];
        let mut origin = vec![None; scales.len()];
        let mut totals = vec![(0i64, 0i64); scales.len()];
        for (group, fragment) in groups.iter().zip(fragments) {
            let runs = runs(fragment);
            for (track, &(id, scale)) in scales.iter().enumerate() {
                let packets: Vec<_> = group.iter().filter(|p| p.track == track).collect();
                let run = runs.iter().find(|r| r.track_id == id);
                let Some(run) = run else {
                    assert!(packets.is_empty(), "no traf for track {id}");
                    continue;
                };
                assert_eq!(run.durations.len(), packets.len(), "track {id}");
                let mut dts = run.tfdt as i64;
                for (i, p) in packets.iter().enumerate() {
                    // Presentation times are ours up to one constant per track (the
                    // muxer starts its decode timeline at the first sample); a jump
                    // must move them as much as it moved ours.
                    let o =
                        *origin[track].get_or_insert(rescale(p.pts.0, scale) - (dts + run.cts[i]));
                    // One tick of rounding to an audio track's timescale.
                    let off = dts + run.cts[i] + o - rescale(p.pts.0, scale);
                    assert!(off.abs() <= 1, "{id}: {off} ticks off: {run:?}");
                    let s = *shift[track].get_or_insert(dts - rescale(p.dts.0, scale));
                    let drift = dts - rescale(p.dts.0, scale) - s;
                    assert!(drift.abs() <= 1, "track {id} decode time {drift} ticks off");
                    assert_eq!(run.sync[i], p.keyframe, "track {id} sample {i}");
                    dts += i64::from(run.durations[i]);
                    totals[track].0 += i64::from(run.durations[i]);
                    totals[track].1 += rescale(p.duration.0, scale);
                }
                assert_eq!(
                    i64::from(*run.durations.last().unwrap()),
                    rescale(packets.last().unwrap().duration.0, scale),
                    "the last sample's duration is its own"
                );
            }
        }
        for (track, (got, given)) in totals.into_iter().enumerate() {
            // At most a tick of rounding per fragment (audio timescales).
            assert!(
                (got - given).abs() <= fragments.len() as i64,
                "track {track}: trun durations {got} against {given} written"
            );
        }
    }

    /// `ffprobe -show_streams -count_frames` of `bytes`, which it must read
    /// without an error.
    fn ffprobe(bytes: &[u8]) -> Vec<serde_json::Value> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.mp4");
        std::fs::write(&path, bytes).unwrap();
        let out = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_streams",
                "-count_frames",
                "-of",
                "json",
            ])
            .arg(&path)
            .output()
            .expect("ffprobe runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && stderr.is_empty(), "{stderr}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["streams"].as_array().unwrap().clone()
    }

    fn field(stream: &serde_json::Value, key: &str) -> String {
        match &stream[key] {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }

    /// Muxes a fixture (with the AAC track when `with_audio`) in fragments
    /// of 5 frames and checks the whole file and each keyframe fragment
    /// alone with ffprobe, and every sample's timing.
    fn round_trip(codec: VideoCodec, name: &str, with_audio: bool, start: Dur90k) {
        let frames = video(codec, name);
        let setup = VideoSetup::from_keyframe(codec, &frames[0].data).expect("parameter sets");
        let (config, audio) = aac();
        let mut tracks = vec![Track::Video(codec)];
        if with_audio {
            tracks.push(Track::Audio(config));
        }
        let audio = if with_audio { &audio[..] } else { &[] };
        let mut groups = fragments(&frames, audio, 5);
        jump(&mut groups, 0, start);
        let mut m = Fmp4Muxer::new("t", &tracks, Some(&setup)).unwrap();
        let init = m.init_segment().to_vec();
        let kinds: Vec<_> = boxes(&init).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [*b"ftyp", *b"moov"]);
        let fragments = mux(&mut m, &groups);
        check_timing(&init, &groups, &fragments);

        let mut file = init.clone();
        fragments.iter().for_each(|f| file.extend_from_slice(f));
        let moofs = boxes(&file).iter().filter(|(k, _)| k == b"moof").count();
        assert_eq!(moofs, groups.len(), "one moof per flush");
        let streams = ffprobe(&file);
        assert_eq!(streams.len(), tracks.len());
        let (codec_name, tag) = match codec {
            VideoCodec::H264 => ("h264", "avc1"),
            VideoCodec::H265 => ("hevc", "hvc1"),
        };
        let v = &streams[0];
        assert_eq!(field(v, "codec_name"), codec_name);
        assert_eq!(field(v, "codec_tag_string"), tag);
        assert_eq!(field(v, "width"), setup.width.to_string());
        assert_eq!(field(v, "height"), setup.height.to_string());
        assert_eq!(field(v, "nb_read_frames"), frames.len().to_string());
        if with_audio {
            let a = &streams[1];
            assert_eq!(field(a, "codec_name"), "aac");
            assert_eq!(field(a, "sample_rate"), config.sample_rate().to_string());
            assert_eq!(field(a, "channels"), config.channels.to_string());
            assert_eq!(field(a, "nb_read_frames"), audio.len().to_string());
        }

        // Every fragment that starts with a keyframe decodes alone after
        // the init segment (as a player joining there sees it).
        let mut alone = 0;
        for (group, fragment) in groups.iter().zip(&fragments) {
            let video: Vec<_> = group.iter().filter(|p| p.track == 0).collect();
            if !video[0].keyframe {
                continue;
            }
            let mut part = init.clone();
            part.extend_from_slice(fragment);
            let streams = ffprobe(&part);
            assert_eq!(
                field(&streams[0], "nb_read_frames"),
                video.len().to_string()
            );
            alone += 1;
        }
        assert!(alone >= 3, "{alone} keyframe fragments");
    }

    #[test]
    fn h264_and_aac_read_back_as_written() {
        round_trip(VideoCodec::H264, "baseline.h264", true, Dur90k::ZERO);
    }

    #[test]
    fn h265_reads_back_as_written() {
        round_trip(VideoCodec::H265, "hevc_nob.h265", false, Dur90k::ZERO);
    }

    /// B-frames: every sample is presented at its PTS (positive composition
    /// offsets from the decode times); times past 2^32 ticks (13 h) stay
    /// exact.
    #[test]
    fn b_frames_present_at_their_pts_from_any_start() {
        round_trip(
            VideoCodec::H264,
            "high_b2.h264",
            true,
            Dur90k::from_secs(15 * 3600),
        );
        let frames = video(VideoCodec::H265, "hevc_b.h265");
        let setup = VideoSetup::from_keyframe(VideoCodec::H265, &frames[0].data).unwrap();
        let mut m = Fmp4Muxer::new("t", &[Track::Video(VideoCodec::H265)], Some(&setup)).unwrap();
        let groups = fragments(&frames[..50], &[], 5);
        let fragments = mux(&mut m, &groups);
        check_timing(m.init_segment(), &groups, &fragments);
        let first = &runs(&fragments[0])[0];
        assert!(first.cts.iter().all(|&c| c >= 0), "{first:?}");
        assert!(first.cts.iter().any(|&c| c > 0), "reordered: {first:?}");
    }

    /// A forward jump between fragments moves `tfdt` by as much (the muxer
    /// is told: `frag_discont`); the sample before it keeps its own
    /// duration.
    #[test]
    fn a_jump_between_fragments_moves_tfdt() {
        let frames = video(VideoCodec::H264, "baseline.h264");
        let setup = VideoSetup::from_keyframe(VideoCodec::H264, &frames[0].data).unwrap();
        let (config, audio) = aac();
        let tracks = [Track::Video(VideoCodec::H264), Track::Audio(config)];
        let mut groups = fragments(&frames[..60], &audio, 5);
        jump(&mut groups, 0, Dur90k(123_456));
        jump(&mut groups, 4, Dur90k::from_secs(2));
        jump(&mut groups, 7, Dur90k(100));
        let mut m = Fmp4Muxer::new("t", &tracks, Some(&setup)).unwrap();
        let fragments = mux(&mut m, &groups);
        check_timing(m.init_segment(), &groups, &fragments);
        let before = runs(&fragments[3]);
        let after = runs(&fragments[4]);
        assert_eq!(*before[0].durations.last().unwrap(), 3600);
        // Decode times count from the first sample (no edit list, no shift).
        let first = runs(&fragments[0]);
        assert_eq!(
            after[0].tfdt as i64 - first[0].tfdt as i64,
            groups[4][0].dts.0 - groups[0][0].dts.0
        );
        let audio_moved = after[1].tfdt as i64 - first[1].tfdt as i64;
        let want = rescale(groups[4][1].dts.0, 16_000) - rescale(groups[0][1].dts.0, 16_000);
        assert!(
            (audio_moved - want).abs() <= 1,
            "{audio_moved} against {want}"
        );
    }

    #[test]
    fn flush_without_samples_appends_nothing() {
        let (config, audio) = aac();
        let mut m = Fmp4Muxer::new("t", &[Track::Audio(config)], None).unwrap();
        let mut out = b"kept".to_vec();
        assert_eq!(m.flush_fragment(&mut out).unwrap(), 0);
        assert_eq!(out, b"kept");
        let mut a = audio[0].clone();
        a.track = 0;
        m.write(&a.mux()).unwrap();
        let n = m.flush_fragment(&mut out).unwrap();
        assert!(n > 0 && out.len() == 4 + n);
        assert_eq!(m.flush_fragment(&mut out).unwrap(), 0);
        assert_eq!(out.len(), 4 + n);
    }

    #[test]
    fn rejects_what_it_cannot_carry() {
        let frames = video(VideoCodec::H264, "baseline.h264");
        let setup = VideoSetup::from_keyframe(VideoCodec::H264, &frames[0].data).unwrap();
        let (config, audio) = aac();
        let h265 = [Track::Video(VideoCodec::H265)];
        assert!(
            Fmp4Muxer::new("t", &h265, None).is_err(),
            "no parameter sets"
        );
        assert!(
            Fmp4Muxer::new("t", &h265, Some(&setup)).is_err(),
            "H.264 ones"
        );
        let tracks = [Track::Video(VideoCodec::H264), Track::Audio(config)];
        let mut m = Fmp4Muxer::new("t", &tracks, Some(&setup)).unwrap();
        let mut p = frames[0].clone();
        p.track = 2;
        assert!(m.write(&p.mux()).is_err(), "no third track");
        let mut a = audio[0].clone();
        a.data[0] = 0;
        assert!(m.write(&a.mux()).is_err(), "not ADTS");
        let mut a = audio[0].clone();
        a.data[2] ^= 0b0000_0100; // another sampling-frequency index
        assert!(m.write(&a.mux()).is_err(), "not the track's configuration");
        m.write(&frames[0].mux()).unwrap();
        m.write(&audio[0].mux()).unwrap();
        let mut out = Vec::new();
        assert!(m.flush_fragment(&mut out).unwrap() > 0);
    }

    #[test]
    fn video_setup_comes_from_the_keyframe_parameter_sets() {
        let nal_types = |s: &VideoSetup, shift: u32| -> Vec<u8> {
            FrameNals::new(Bytes::copy_from_slice(&s.parameter_sets))
                .map(|n| n[0] >> shift & if shift == 1 { 0x3f } else { 0x1f })
                .collect()
        };
        let h264 = video(VideoCodec::H264, "baseline.h264");
        let s = VideoSetup::from_keyframe(VideoCodec::H264, &h264[0].data).unwrap();
        assert_eq!((s.codec, s.width, s.height), (VideoCodec::H264, 320, 240));
        assert_eq!(nal_types(&s, 0), [7, 8]);
        assert!(s.parameter_sets.starts_with(&[0, 0, 0, 1]));
        assert_eq!(
            VideoSetup::from_keyframe(VideoCodec::H264, &h264[1].data),
            None
        );
        let h265 = video(VideoCodec::H265, "hevc_nob.h265");
        let s = VideoSetup::from_keyframe(VideoCodec::H265, &h265[0].data).unwrap();
        assert_eq!((s.width, s.height), (320, 240));
        assert_eq!(nal_types(&s, 1), [32, 33, 34]);
        // Without the PPS there is no init segment to make.
        let no_pps: Vec<u8> = FrameNals::new(Bytes::copy_from_slice(&h265[0].data))
            .filter(|n| n[0] >> 1 & 0x3f != 34)
            .flat_map(|n| [&[0, 0, 0, 1][..], &n].concat())
            .collect();
        assert_eq!(VideoSetup::from_keyframe(VideoCodec::H265, &no_pps), None);
    }
}
