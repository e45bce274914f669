//! One live stream end to end: Annex-B bytes in, published MPEG-TS segments
//! and an HLS playlist out. This is the embedding API.
//!
//! [`LiveStream`] wires the sans-IO stages together — framer, access-unit
//! assembler, timeline, segmenter — with the libavformat muxer and a
//! [`Storage`]. It is synchronous and owns no thread: call it from whatever
//! thread feeds the stream (the daemons use one mux worker per core).
//! Order of effects per segment: the segment file is committed, then the
//! playlist naming it is replaced, then [`StreamEvent::SegmentPublished`]
//! is returned; a crash at any point leaves a playlist naming only complete
//! segments.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::access_unit::AccessUnit;
use crate::annexb::{AnnexBFramer, FrameNals};
use crate::audio::{AudioCodec, AudioConfig, AudioPacket, AudioTranscoder};
use crate::codec::{self, VideoCodec, VideoParser};
use crate::error::{Error, Result};
use crate::layout::{self, PLAYLIST_FILE};
use crate::ll::{LlPlaylist, LlStore, LlWriter, LowLatencyConfig};
use crate::mux::{MuxPacket, SegmentMuxer, Track, TsMuxer};
use crate::playlist::{MediaPlaylist, PlaylistKind, PlaylistSegment};
use crate::segmenter::{ClosedSegment, SegmentUnit, Segmenter, SegmenterConfig};
use crate::storage::{FsStorage, SegmentWriter, Storage};
use crate::time::{Dur90k, Ts90k};
use crate::timing::{TimedFrame, Timeline, TimingConfig};

/// Name of the playlist file in a stream's storage.
pub const PLAYLIST_NAME: &str = PLAYLIST_FILE;

/// A source of wall-clock time in Unix milliseconds (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}

/// How a stream is segmented and listed.
#[derive(Clone)]
pub struct StreamConfig {
    /// Cut at the first keyframe once a segment is this long (1-10 s; default 4 s).
    pub target_segment: Dur90k,
    /// `#EXT-X-TARGETDURATION`: no segment rounds above it. Default: twice
    /// the target, so keyframe intervals up to that length lose nothing.
    pub max_segment_secs: u32,
    /// Live window; at least three target durations (the default).
    pub live_window: Option<Dur90k>,
    /// Grow the playlist instead of sliding it (`PLAYLIST-TYPE:EVENT`).
    pub event_playlist: bool,
    /// Keep segments that leave the live window (they belong to a recording).
    pub keep_segments: bool,
    /// How long a segment stays on storage after leaving the window, in
    /// media time; never less than RFC 8216 6.2.2 asks (the window plus two
    /// target durations: the segment and the longest playlist that listed it).
    pub delete_grace: Dur90k,
    pub timing: TimingConfig,
    /// fsync segments and playlists before renaming them into place.
    pub durable: bool,
    /// Longest NAL unit accepted from a byte stream; longer ones are dropped
    /// (counted in [`StreamStats::oversize_nals`]). Access units are bounded
    /// at four times this.
    pub max_nal_bytes: usize,
    /// The video codec of the input.
    pub codec: VideoCodec,
    /// How audio is transcoded (AAC output rate and bit rate, G.726 packing).
    pub audio: AudioConfig,
    /// Also publish the low-latency rendition (`ll.m3u8`, fragmented MP4
    /// parts held in memory: [`LiveStream::low_latency`]).
    pub low_latency: Option<LowLatencyConfig>,
    pub clock: Clock,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            target_segment: Dur90k::from_secs(4),
            max_segment_secs: 8,
            live_window: None,
            event_playlist: false,
            keep_segments: false,
            delete_grace: Dur90k::from_secs(30),
            timing: TimingConfig::default(),
            durable: false,
            max_nal_bytes: crate::annexb::DEFAULT_MAX_NAL,
            codec: VideoCodec::default(),
            audio: AudioConfig::default(),
            low_latency: None,
            clock: system_clock(),
        }
    }
}

impl std::fmt::Debug for StreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConfig")
            .field("target_segment", &self.target_segment)
            .field("max_segment_secs", &self.max_segment_secs)
            .field("live_window", &self.live_window)
            .field("event_playlist", &self.event_playlist)
            .field("keep_segments", &self.keep_segments)
            .field("low_latency", &self.low_latency)
            .finish_non_exhaustive()
    }
}

impl StreamConfig {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<()> {
        let t = self.target_segment;
        if t < Dur90k::from_secs(1) || t > Dur90k::from_secs(10) {
            return Err(Error::Config(format!(
                "target segment {t:?} outside 1-10 s"
            )));
        }
        let min_max = (t.0 + 89_999) / 90_000;
        if (self.max_segment_secs as i64) < min_max || self.max_segment_secs > 30 {
            return Err(Error::Config(format!(
                "max segment {} s must be between the target ({min_max} s) and 30 s",
                self.max_segment_secs
            )));
        }
        if let Some(w) = self.live_window {
            if w < Dur90k::from_secs(3 * self.max_segment_secs as i64) {
                return Err(Error::Config(format!(
                    "live window {w:?} shorter than three target durations ({} s)",
                    3 * self.max_segment_secs
                )));
            }
        }
        Ok(())
    }
}

/// A segment that is on storage and listed by the playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub stream: String,
    pub sequence: u64,
    pub file_name: String,
    pub start_pts: Ts90k,
    pub duration: Dur90k,
    pub bytes: u64,
    pub program_date_time_ms: i64,
    pub discontinuity: bool,
    pub keyframes: u32,
    pub frames: u32,
}

/// What a push produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    SegmentPublished(SegmentInfo),
}

/// Declares [`StreamStats`] once with each counter's name and meaning, so
/// exporters (ingestd's `/metrics`) list every counter without spelling
/// them again.
macro_rules! stream_stats {
    ($($(#[doc = $doc:literal])+ $field:ident,)*) => {
        /// Counters of one stream, for metrics.
        #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
        pub struct StreamStats {
            $($(#[doc = $doc])+ pub $field: u64,)*
        }

        impl StreamStats {
            /// Number of counters.
            pub const COUNT: usize = [$(stringify!($field)),*].len();
            /// Each counter's field name and the first line of its doc.
            pub const FIELDS: [(&'static str, &'static str); Self::COUNT] =
                [$((stringify!($field), first_doc_line(&[$($doc),+]))),*];

            /// The counters in [`FIELDS`](Self::FIELDS) order.
            pub fn values(&self) -> [u64; Self::COUNT] {
                [$(self.$field),*]
            }

            /// The inverse of [`values`](Self::values).
            pub fn from_values(values: [u64; Self::COUNT]) -> StreamStats {
                let [$($field),*] = values;
                StreamStats { $($field),* }
            }

            /// What was counted since `earlier` (a snapshot of the same stream).
            pub fn since(&self, earlier: &StreamStats) -> StreamStats {
                StreamStats {
                    $($field: self.$field.saturating_sub(earlier.$field),)*
                }
            }
        }
    };
}

/// The first line of a doc comment without the space that follows `///`.
const fn first_doc_line(lines: &[&'static str]) -> &'static str {
    match lines[0].as_bytes() {
        [b' ', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(line) => line,
            Err(_) => lines[0],
        },
        _ => lines[0],
    }
}

stream_stats! {
    /// Annex-B bytes pushed into the stream.
    annexb_bytes,
    /// Access units assembled from the input.
    access_units,
    /// Access units written into segments.
    frames_muxed,
    /// Access units muxed as slices of the frame they came in, not copied.
    ///
    /// (The frame began with an access-unit delimiter: see
    /// `VideoParser::packet_in_place`.)
    packets_in_place,
    /// Segments published (complete on storage and listed).
    segments,
    /// Bytes of published segments.
    segment_bytes,
    /// Frames dropped waiting for a keyframe (mid-GOP start, after a gap).
    dropped_before_keyframe,
    /// Segments closed at the limit because no keyframe came in time.
    forced_cuts,
    /// Segments lost to storage or muxer errors.
    failed_segments,
    /// Capture times replaced (zero, frozen, jittery clocks).
    repaired_timestamps,
    /// Discontinuities started (backward jumps, gaps, format changes, breaks).
    discontinuities,
    /// Parameter sets and slice headers that could not be parsed, dropped.
    bad_nals,
    /// NAL units dropped over the size bound (the framer's NAL bound, or
    /// an access unit over its bound).
    oversize_nals,
    /// Playlist replacements that failed (storage full); the next
    /// segment's replacement lists what was missed.
    failed_playlist_writes,
    /// Keyframes dropped because no valid parameter set was ever received
    /// for them (counted in `dropped_before_keyframe` too).
    undecodable_keyframes,
    /// Audio payloads pushed into the stream.
    audio_payloads,
    /// Audio payloads refused (undecodable, truncated, or a codec change
    /// that would change the AAC configuration).
    audio_rejected,
    /// AAC frames written into segments.
    audio_frames_muxed,
    /// AAC frames dropped: before the first segment, too late for their
    /// segment, or queued too long waiting for video.
    audio_frames_dropped,
    /// Audio gaps bridged with silence or overlaps trimmed, in milliseconds.
    audio_repaired_ms,
}

struct OpenSegment {
    sequence: u64,
    file_name: String,
    /// PTS of the segment's first video frame once written: audio follows it.
    first_video_pts: Option<Ts90k>,
}

thread_local! {
    /// The video packet being built for the muxer (an access unit with its
    /// AUD), one per thread rather than one per stream: the muxer copies it
    /// before `write` returns, so a keyframe-sized buffer is needed only
    /// for as long as one frame is muxed, and a worker muxes one at a time.
    static PACKET: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A video packet waiting for the muxer.
struct HeldPacket {
    data: Vec<u8>,
    pdt_ms: i64,
    pts: Ts90k,
    dts: Ts90k,
    duration: Dur90k,
    keyframe: bool,
}

/// How long the first segment's video waits to learn whether the stream
/// has audio (its track must be in the first segment: players set up their
/// buffers from it and cannot add one later). Audio and video of a device
/// are interleaved, so audio that exists shows up well within this.
const TRACK_PROBE: Dur90k = Dur90k(90_000);

/// How much audio a stream holds while it has shown no video; then it is
/// an audio-only stream.
const AUDIO_ONLY_AFTER: Dur90k = Dur90k(2 * 90_000);

/// Audio frames queued waiting for video beyond this are dropped (a video
/// source that stalled while its audio goes on).
const MAX_AUDIO_QUEUE: usize = 512;

/// Audio written into a segment may start this much before the segment's
/// first video frame (late arrivals).
const MAX_AUDIO_LEAD: Dur90k = Dur90k(45_000);

/// Audio a capture time maps this far from the video's timeline is on
/// another clock: it follows on from the audio before it instead.
const MAX_AUDIO_SKEW: Dur90k = Dur90k(3 * 90_000);

#[derive(Default)]
struct AudioState {
    transcoder: Option<AudioTranscoder>,
    /// AAC frames waiting for the video they go with.
    queue: VecDeque<AudioPacket>,
    /// Scratch for the transcoder's output.
    out: Vec<AudioPacket>,
    /// Payloads held while the stream has shown neither video nor enough
    /// audio to call it audio-only: (codec, payload, capture time).
    waiting: Vec<(AudioCodec, Vec<u8>, Option<i64>)>,
    seen_video: bool,
    /// Set once the stream is audio-only: its own clock.
    audio_only: Option<AudioOnlyClock>,
    /// Where written video has reached (decode time plus duration).
    video_end: Option<Ts90k>,
    repaired_samples: u64,
}

/// The timeline of an audio-only stream: capture times mapped to PTS,
/// kept continuous across jumps (no discontinuity to signal).
struct AudioOnlyClock {
    anchor: Option<(i64, Ts90k)>,
    last: Option<(i64, Ts90k)>,
    /// Wall-clock ms of PTS 0 (PROGRAM-DATE-TIME).
    pdt_origin_ms: i64,
}

impl AudioOnlyClock {
    fn map(&mut self, capture_ms: Option<i64>, max_gap: Dur90k) -> Option<Ts90k> {
        let ms = capture_ms?;
        let pts = match (self.anchor, self.last) {
            (Some((ams, apts)), Some((lms, _)))
                if ms >= lms.saturating_sub(1000)
                    && ms.saturating_sub(lms).saturating_mul(90) <= max_gap.0 =>
            {
                Ts90k(
                    apts.0
                        .saturating_add(ms.saturating_sub(ams).saturating_mul(90)),
                )
            }
            (_, Some((_, lpts))) => {
                // A jump: follow on from the last packet (40 ms, a typical
                // packet; the transcoder absorbs the difference).
                let pts = lpts + Dur90k(3600);
                self.anchor = Some((ms, pts));
                pts
            }
            (_, None) => {
                self.anchor = Some((ms, Ts90k(0)));
                Ts90k(0)
            }
        };
        self.last = Some((ms, pts));
        Some(pts)
    }
}

/// One stream from Annex-B input to published HLS.
///
/// ```
/// use streamcore::{LiveStream, MemoryStorage, StreamConfig, StreamEvent};
/// use std::sync::Arc;
///
/// let storage = MemoryStorage::new();
/// let mut stream = LiveStream::with_storage("demo", Arc::new(storage.clone()), StreamConfig::default())?;
/// let h264 = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/baseline.h264"))?;
/// let mut events = stream.push_bytes(&h264)?;
/// events.extend(stream.finish(true)?);
/// assert!(events.iter().any(|e| matches!(e, StreamEvent::SegmentPublished(_))));
/// let playlist = String::from_utf8(storage.get("index.m3u8").unwrap())?;
/// assert!(playlist.contains("#EXTINF:4.000000,\n0.ts") && playlist.ends_with("#EXT-X-ENDLIST\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct LiveStream {
    name: String,
    cfg: StreamConfig,
    storage: Arc<dyn Storage>,
    framer: AnnexBFramer,
    parser: Box<dyn VideoParser>,
    timeline: Timeline,
    segmenter: Segmenter,
    /// Made when the first segment's tracks are known (see [`Probe`]), and
    /// again whenever they change.
    muxer: Option<Box<dyn SegmentMuxer>>,
    tracks: Vec<Track>,
    /// The open segment's writer while no muxer exists yet.
    pending_writer: Option<Option<Box<dyn SegmentWriter>>>,
    /// Video packets written before the muxer existed.
    held: Vec<HeldPacket>,
    audio: AudioState,
    /// The low-latency rendition, when configured.
    ll: Option<LlWriter>,
    playlist: MediaPlaylist,
    open: Option<OpenSegment>,
    /// Frames released by the timeline, reused between pushes.
    frames: Vec<TimedFrame>,
    pending_deletes: VecDeque<(String, Ts90k)>,
    /// How long a segment that left the window stays on storage.
    delete_after: Dur90k,
    last_pts: Ts90k,
    /// The next published segment must carry a discontinuity (the muxer
    /// restarted after a resume, or a segment was lost).
    force_discontinuity: bool,
    stats: StreamStats,
}

impl LiveStream {
    /// Opens a stream writing to `dir` (created if needed), resuming the
    /// playlist found there.
    pub fn open(name: &str, dir: &Path, cfg: StreamConfig) -> Result<Self> {
        let storage = FsStorage::open(dir, cfg.durable).map_err(|e| Error::io(dir, e))?;
        Self::with_storage(name, Arc::new(storage), cfg)
    }

    /// Opens a stream on any storage, resuming the playlist found there.
    pub fn with_storage(name: &str, storage: Arc<dyn Storage>, cfg: StreamConfig) -> Result<Self> {
        cfg.validate()?;
        let window = cfg
            .live_window
            .unwrap_or(Dur90k::from_secs(3 * cfg.max_segment_secs as i64));
        let kind = if cfg.event_playlist {
            PlaylistKind::Event
        } else {
            PlaylistKind::Live { window }
        };
        let mut max_secs = cfg.max_segment_secs;
        let mut force_discontinuity = false;
        let playlist = match storage
            .read(PLAYLIST_NAME)
            .map_err(|e| Error::io(PLAYLIST_NAME, e))?
        {
            Some(text) => match MediaPlaylist::parse(&String::from_utf8_lossy(&text), kind) {
                Ok(p) => {
                    // TARGETDURATION may not change during a playlist's life.
                    max_secs = p.target_duration();
                    force_discontinuity = p.segments().next().is_some();
                    tracing::info!(stream = name, next = p.next_sequence(), "resuming playlist");
                    p
                }
                Err(e) => {
                    tracing::warn!(stream = name, error = %e, "ignoring unreadable playlist");
                    MediaPlaylist::new(kind, max_secs)
                }
            },
            None => MediaPlaylist::new(kind, max_secs),
        };
        let segmenter = Segmenter::new(SegmenterConfig {
            target: cfg.target_segment,
            max_secs,
        });
        let ll = cfg.low_latency.map(|llc| {
            let store = LlStore::new(LlPlaylist::new(llc, max_secs));
            LlWriter::new(name, store, llc)
        });
        let delete_after = cfg
            .delete_grace
            .max(window + Dur90k::from_secs(2 * max_secs as i64));
        Ok(LiveStream {
            name: name.to_string(),
            storage,
            framer: AnnexBFramer::with_max_nal(cfg.max_nal_bytes),
            parser: codec::parser(
                cfg.codec,
                crate::access_unit::DEFAULT_MAX_AU_NALS,
                cfg.max_nal_bytes.saturating_mul(4),
            ),
            timeline: Timeline::new(cfg.timing),
            segmenter,
            muxer: None,
            tracks: Vec::new(),
            pending_writer: None,
            held: Vec::new(),
            audio: AudioState::default(),
            ll,
            playlist,
            open: None,
            frames: Vec::new(),
            pending_deletes: VecDeque::new(),
            delete_after,
            last_pts: Ts90k(0),
            force_discontinuity,
            stats: StreamStats::default(),
            cfg,
        })
    }

    /// Numbers the next segment at least `sequence` (after a discontinuity). A stream that
    /// another node wrote before may find numbers above its playlist's already taken; see
    /// [`MediaPlaylist::skip_to`].
    pub fn start_at_least(&mut self, sequence: u64) {
        if sequence > self.playlist.next_sequence() {
            let gone = self.playlist.skip_to(sequence);
            tracing::info!(stream = %self.name, sequence, dropped = gone.len(), "numbering continues above another writer's segments");
            self.force_discontinuity = true;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The codec the stream's video is parsed as.
    pub fn video_codec(&self) -> VideoCodec {
        self.cfg.codec
    }

    pub fn stats(&self) -> StreamStats {
        let mut s = self.stats;
        let seg = self.segmenter.stats();
        s.dropped_before_keyframe = seg.dropped_before_keyframe + self.stats.undecodable_keyframes;
        s.forced_cuts = seg.forced_cuts;
        s.repaired_timestamps = self.timeline.stats().repaired_timestamps;
        let asm = self.parser.stats();
        s.access_units = asm.access_units;
        s.bad_nals = asm.bad_parameter_sets + asm.bad_slice_headers;
        s.oversize_nals = self.framer.oversize_nals() + asm.oversize_nals;
        let current = self.audio.transcoder.as_ref().map(|a| {
            let st = a.stats();
            st.silence_samples + st.trimmed_samples
        });
        s.audio_repaired_ms = (self.audio.repaired_samples + current.unwrap_or(0)) / 8;
        s
    }

    /// The low-latency rendition's playlist and parts, shared with whoever
    /// serves them (`None` unless [`StreamConfig::low_latency`] is set).
    pub fn low_latency(&self) -> Option<Arc<LlStore>> {
        self.ll.as_ref().map(|w| w.store().clone())
    }

    /// The playlist as it stands.
    pub fn playlist(&self) -> &MediaPlaylist {
        &self.playlist
    }

    /// Feeds chunks of an Annex-B byte stream; access units are found by
    /// parsing, so the last one waits for the next one to begin.
    pub fn push_bytes(&mut self, annexb: &[u8]) -> Result<Vec<StreamEvent>> {
        self.stats.annexb_bytes += annexb.len() as u64;
        self.framer.push(annexb);
        let mut events = Vec::new();
        while let Some(nal) = self.framer.pull() {
            if let Some(au) = self.parser.push(nal, None) {
                self.process(au, &mut events)?;
            }
        }
        Ok(events)
    }

    /// [`push_bytes`](Self::push_bytes) for a chunk already in a `Bytes`
    /// (e.g. read from a socket): the NAL units that lie wholly in it are
    /// slices of it, not copies; an access unit that lies in it as the
    /// muxer wants it (behind a delimiter) reaches the muxer uncopied too.
    pub fn push_bytes_shared(&mut self, annexb: Bytes) -> Result<Vec<StreamEvent>> {
        self.stats.annexb_bytes += annexb.len() as u64;
        self.framer.push_shared(annexb.clone());
        let mut events = Vec::new();
        while let Some(nal) = self.framer.pull() {
            if let Some(mut au) = self.parser.push(nal, None) {
                // If it came from an earlier chunk, `packet_in_place` sees
                // that its NAL units are not in this one.
                au.source = Some(annexb.clone());
                self.process(au, &mut events)?;
            }
        }
        Ok(events)
    }

    /// Feeds one complete access unit (what a JT/T 1078 frame carries),
    /// with the device's capture time when known.
    pub fn push_frame(
        &mut self,
        annexb: &[u8],
        capture_ms: Option<i64>,
    ) -> Result<Vec<StreamEvent>> {
        self.stats.annexb_bytes += annexb.len() as u64;
        self.framer.push(annexb);
        self.framer.finish();
        let mut events = Vec::new();
        while let Some(nal) = self.framer.pull() {
            if let Some(au) = self.parser.push(nal, capture_ms) {
                self.process(au, &mut events)?;
            }
        }
        if let Some(au) = self.parser.flush() {
            self.process(au, &mut events)?;
        }
        Ok(events)
    }

    /// [`push_frame`](Self::push_frame) for a frame already in a `Bytes`
    /// (e.g. reassembled from the network): its NAL units are slices of it,
    /// so the frame is not copied into the framer.
    pub fn push_frame_bytes(
        &mut self,
        annexb: Bytes,
        capture_ms: Option<i64>,
    ) -> Result<Vec<StreamEvent>> {
        if !self.framer.is_empty() {
            // Bytes from push_bytes wait in the framer: keep their order.
            return self.push_frame(&annexb, capture_ms);
        }
        self.stats.annexb_bytes += annexb.len() as u64;
        let mut events = Vec::new();
        for nal in FrameNals::new(annexb.clone()) {
            if let Some(mut au) = self.parser.push(nal, capture_ms) {
                au.source = Some(annexb.clone());
                self.process(au, &mut events)?;
            }
        }
        if let Some(mut au) = self.parser.flush() {
            au.source = Some(annexb);
            self.process(au, &mut events)?;
        }
        Ok(events)
    }

    /// Feeds NAL units already split (without start codes) as one access unit.
    pub fn push_nals(
        &mut self,
        nals: impl IntoIterator<Item = Bytes>,
        capture_ms: Option<i64>,
    ) -> Result<Vec<StreamEvent>> {
        let mut events = Vec::new();
        for nal in nals {
            self.stats.annexb_bytes += nal.len() as u64 + 4;
            if let Some(au) = self.parser.push(nal, capture_ms) {
                self.process(au, &mut events)?;
            }
        }
        if let Some(au) = self.parser.flush() {
            self.process(au, &mut events)?;
        }
        Ok(events)
    }

    /// The source broke (disconnect). The open segment is closed and
    /// published; the next frame continues the timeline if its capture time
    /// follows on plausibly, else starts a discontinuity; either way the
    /// next segment starts at a keyframe.
    pub fn mark_break(&mut self) -> Result<Vec<StreamEvent>> {
        let mut events = Vec::new();
        // Bytes of a frame cut off by the disconnect cannot be completed.
        self.framer.reset();
        if let Some(au) = self.parser.flush() {
            self.parser.recycle(au);
        }
        self.drain_timeline(true, &mut events)?;
        self.timeline.mark_source_break();
        Ok(events)
    }

    /// Publishes everything buffered, closing the open segment; `end_list`
    /// adds `#EXT-X-ENDLIST` (the stream is over).
    pub fn finish(&mut self, end_list: bool) -> Result<Vec<StreamEvent>> {
        let mut events = Vec::new();
        self.framer.finish();
        while let Some(nal) = self.framer.pull() {
            if let Some(au) = self.parser.push(nal, None) {
                self.process(au, &mut events)?;
            }
        }
        if let Some(au) = self.parser.flush() {
            self.process(au, &mut events)?;
        }
        if !self.audio.waiting.is_empty() && !self.audio.seen_video {
            self.start_audio_only(&mut events)?;
        }
        if let Some(a) = self.audio.transcoder.as_mut() {
            let mut out = std::mem::take(&mut self.audio.out);
            if let Err(e) = a.finish(&mut out) {
                tracing::warn!(stream = %self.name, error = %e, "audio encoder flush failed");
            }
            let r = self.take_audio(&mut out, &mut events);
            self.audio.out = out;
            r?;
        }
        self.drain_timeline(true, &mut events)?;
        if end_list {
            if let Some(ll) = self.ll.as_mut() {
                ll.end();
            }
            self.playlist.end();
            self.write_playlist()?;
        }
        Ok(events)
    }

    fn drain_timeline(&mut self, close_segment: bool, events: &mut Vec<StreamEvent>) -> Result<()> {
        let mut frames = std::mem::take(&mut self.frames);
        self.timeline.flush_into(&mut frames);
        let r = self.handle_frames(&mut frames, events);
        self.frames = frames;
        r?;
        if close_segment {
            if let Some(closed) = self.segmenter.finish() {
                self.publish(closed, events)?;
            }
        }
        Ok(())
    }

    fn process(&mut self, au: AccessUnit, events: &mut Vec<StreamEvent>) -> Result<()> {
        if au.keyframe && !self.parser.has_parameter_sets() {
            // No SPS was ever accepted (refused, e.g. a hostile size, or
            // never sent): a segment opened here would start with an IDR
            // that nothing can decode. Dropped and counted like the frames
            // that wait for a keyframe; an error here would also throw
            // away the events of this push and the rest of its input.
            if self.stats.undecodable_keyframes == 0 {
                tracing::warn!(stream = %self.name, "keyframe without any valid SPS: dropped (further ones are counted)");
            }
            self.stats.undecodable_keyframes += 1;
            self.parser.recycle(au);
            return Ok(());
        }
        if !self.audio.seen_video {
            self.audio.seen_video = true;
            if self.audio.audio_only.take().is_some() {
                // Video after an audio-only start: the audio-only segments
                // end here; the next segment carries both tracks on the
                // video's timeline, after a discontinuity.
                tracing::info!(stream = %self.name, "video joined an audio-only stream");
                if let Some(closed) = self.segmenter.finish() {
                    self.publish(closed, events)?;
                }
                self.retire_audio();
            }
        }
        let hints = self.parser.timing_hints();
        let now = (self.cfg.clock)();
        let mut frames = std::mem::take(&mut self.frames);
        self.timeline.push(
            au,
            hints.nominal_frame,
            hints.reorder_depth,
            now,
            &mut frames,
        );
        let r = self.handle_frames(&mut frames, events);
        self.frames = frames;
        r?;
        if !self.audio.waiting.is_empty() {
            // Audio that came before the first video frame, now that its
            // capture times can be placed on the video's timeline.
            for (codec, payload, ms) in std::mem::take(&mut self.audio.waiting) {
                self.audio_payload(codec, &payload, ms, events)?;
            }
        }
        // Publish a segment as soon as the keyframe after it arrives, not
        // when that keyframe leaves the timeline with the next frame.
        if let Some((pts, duration)) = self.timeline.waiting_keyframe() {
            if let Some(closed) = self.segmenter.close_before_keyframe(pts, duration) {
                self.publish(closed, events)?;
                // The keyframe opens the next segment when it leaves the
                // timeline; its file is made now, so the push that
                // publishes pays for the next segment as before.
                self.begin_segment();
            }
        }
        Ok(())
    }

    fn handle_frames(
        &mut self,
        frames: &mut Vec<TimedFrame>,
        events: &mut Vec<StreamEvent>,
    ) -> Result<()> {
        for f in frames.drain(..) {
            if f.discontinuity && self.stats.frames_muxed > 0 {
                self.stats.discontinuities += 1;
            }
            let d = self.segmenter.push(&f);
            if let Some(closed) = d.close {
                self.publish(closed, events)?;
            }
            if d.open.is_some() && self.open.is_none() {
                self.begin_segment();
            }
            if d.write {
                if f.discontinuity {
                    if let Some(ll) = self.ll.as_mut() {
                        ll.mark_discontinuity();
                    }
                }
                match self.parser.packet_in_place(&f.au) {
                    Some(packet) => {
                        self.stats.packets_in_place += 1;
                        self.write_video(&packet, f.pts, f.dts, f.duration, f.au.keyframe, f.pdt_ms)
                    }
                    None => PACKET.with_borrow_mut(|packet| {
                        self.parser.write_packet(&f.au, packet);
                        self.write_video(packet, f.pts, f.dts, f.duration, f.au.keyframe, f.pdt_ms)
                    }),
                }?;
                self.stats.frames_muxed += 1;
                self.last_pts = self.last_pts.max(f.pts);
                if let Some(open) = self.open.as_mut() {
                    open.first_video_pts.get_or_insert(f.pts);
                }
                let end = f.dts + f.duration;
                self.audio.video_end = Some(end);
                self.write_audio_upto(end)?;
            }
            self.parser.recycle(f.au);
        }
        Ok(())
    }

    fn begin_segment(&mut self) {
        let sequence = self.playlist.next_sequence();
        let file_name = layout::segment_file(sequence);
        let writer = match self.storage.begin_segment(&file_name) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(stream = %self.name, file = %file_name, error = %e, "cannot create segment");
                None
            }
        };
        if let Some(ll) = self.ll.as_mut() {
            ll.begin_segment(sequence);
        }
        let wanted = self.wanted_tracks();
        match self.muxer.as_mut() {
            Some(m) if wanted == self.tracks => m.begin_segment(writer),
            _ => {
                // A new set of tracks needs a new muxer (new PMT,
                // continuity counters from zero): a discontinuity.
                if self.muxer.take().is_some() {
                    tracing::info!(stream = %self.name, tracks = ?wanted, "tracks changed");
                    self.force_discontinuity = true;
                }
                self.pending_writer = Some(writer);
            }
        }
        self.open = Some(OpenSegment {
            sequence,
            file_name,
            first_video_pts: None,
        });
    }

    /// The tracks a segment opened now would carry.
    fn wanted_tracks(&self) -> Vec<Track> {
        let mut tracks = Vec::with_capacity(2);
        if self.audio.audio_only.is_none() {
            tracks.push(Track::Video(self.cfg.codec));
        }
        if let Some(c) = self
            .audio
            .transcoder
            .as_ref()
            .and_then(|a| a.output_config())
        {
            tracks.push(Track::Audio(c));
        }
        tracks
    }

    /// Makes the muxer for the open segment's tracks and writes the video
    /// held for it.
    fn make_muxer(&mut self) -> Result<()> {
        let tracks = self.wanted_tracks();
        let mut muxer: Box<dyn SegmentMuxer> = Box::new(TsMuxer::new(&self.name, &tracks)?);
        muxer.begin_segment(self.pending_writer.take().flatten());
        let video = tracks.iter().position(|t| matches!(t, Track::Video(_)));
        if let Some(ll) = self.ll.as_mut() {
            ll.set_tracks(&tracks);
        }
        self.tracks = tracks;
        let held = std::mem::take(&mut self.held);
        let muxer = self.muxer.insert(muxer);
        for h in held {
            let Some(track) = video else {
                break;
            };
            let packet = MuxPacket {
                track,
                data: &h.data,
                pts: h.pts,
                dts: h.dts,
                duration: h.duration,
                keyframe: h.keyframe,
            };
            muxer.write(&packet)?;
            if let Some(ll) = self.ll.as_mut() {
                ll.write(&packet, h.pdt_ms);
            }
        }
        Ok(())
    }

    /// Writes `packet` (one video access unit), holding it while the
    /// first segment waits to learn whether audio comes with the video.
    fn write_video(
        &mut self,
        packet: &[u8],
        pts: Ts90k,
        dts: Ts90k,
        duration: Dur90k,
        keyframe: bool,
        pdt_ms: i64,
    ) -> Result<()> {
        if self.muxer.is_none() {
            let held_span = match (self.held.first(), self.held.last()) {
                (Some(a), Some(b)) => b.dts + b.duration - a.dts,
                _ => Dur90k::ZERO,
            };
            let audio_known = !self.cfg.audio.enabled
                || self
                    .audio
                    .transcoder
                    .as_ref()
                    .is_some_and(|a| a.output_config().is_some());
            if !audio_known && held_span < TRACK_PROBE {
                self.held.push(HeldPacket {
                    data: packet.to_vec(),
                    pdt_ms,
                    pts,
                    dts,
                    duration,
                    keyframe,
                });
                return Ok(());
            }
            self.make_muxer()?;
        }
        let Some(track) = self
            .tracks
            .iter()
            .position(|t| matches!(t, Track::Video(_)))
        else {
            return Ok(());
        };
        let packet = MuxPacket {
            track,
            data: packet,
            pts,
            dts,
            duration,
            keyframe,
        };
        self.muxer.as_mut().expect("made above").write(&packet)?;
        if let Some(ll) = self.ll.as_mut() {
            ll.write(&packet, pdt_ms);
        }
        Ok(())
    }

    /// Writes the queued audio that plays before `limit` into the open
    /// segment, once its first video frame is in (PAT/PMT and the keyframe
    /// open a segment); audio from before that segment's start is dropped.
    fn write_audio_upto(&mut self, limit: Ts90k) -> Result<()> {
        if self.muxer.is_none() {
            return Ok(());
        }
        while let Some(front) = self.audio.queue.front() {
            if front.pts >= limit {
                break;
            }
            let Some(first_video) = self.open.as_ref().and_then(|o| o.first_video_pts) else {
                // The segment's keyframe is not in yet (or no segment is
                // open): the audio waits for it, bounded by the queue.
                break;
            };
            let p = self.audio.queue.pop_front().expect("front exists");
            match Some(first_video) {
                // Never before the timeline's origin: a PTS below zero
                // would wrap in MPEG-TS.
                Some(first) if p.pts + MAX_AUDIO_LEAD >= first && p.pts >= Ts90k(0) => {
                    self.write_audio_packet(&p)?
                }
                _ => self.stats.audio_frames_dropped += 1,
            }
        }
        Ok(())
    }

    fn write_audio_packet(&mut self, p: &AudioPacket) -> Result<()> {
        if self.muxer.is_none() {
            self.make_muxer()?;
        }
        let Some(track) = self
            .tracks
            .iter()
            .position(|t| matches!(t, Track::Audio(_)))
        else {
            // Audio that started after this muxer was made waits for the
            // next segment's.
            self.stats.audio_frames_dropped += 1;
            return Ok(());
        };
        let packet = MuxPacket {
            track,
            data: &p.data,
            pts: p.pts,
            dts: p.pts,
            duration: p.duration,
            keyframe: true,
        };
        self.muxer.as_mut().expect("made above").write(&packet)?;
        if let Some(ll) = self.ll.as_mut() {
            // Dates an audio-only segment's first part; video dates its own.
            let pdt_ms = self
                .audio
                .audio_only
                .as_ref()
                .map_or(0, |c| c.pdt_origin_ms + Dur90k(p.pts.0).as_millis());
            ll.write(&packet, pdt_ms);
        }
        self.stats.audio_frames_muxed += 1;
        Ok(())
    }

    /// Feeds one audio payload as a device sent it (the body of a JT/T 1078
    /// audio packet; a HiSilicon header is recognised and removed), with
    /// the device's capture time when known. G.711, G.726 and IMA ADPCM
    /// are transcoded to AAC-LC ([`AudioConfig`]), AAC passes through; the
    /// audio is muxed into the same segments as the video, which still cut
    /// at keyframes. A stream that shows no video is audio-only HLS.
    /// Refused payloads are counted ([`StreamStats::audio_rejected`]); they
    /// never fail the call.
    ///
    /// ```
    /// use streamcore::audio::AudioCodec;
    /// use streamcore::{LiveStream, MemoryStorage, StreamConfig};
    /// use std::sync::Arc;
    ///
    /// let storage = MemoryStorage::new();
    /// let mut stream = LiveStream::with_storage("cab", Arc::new(storage.clone()), StreamConfig::default())?;
    /// // 6 s of G.711 A-law (a square wave), 40 ms a packet, no video.
    /// let packet: Vec<u8> = (0..320).map(|i| if i % 16 < 8 { 0xaa } else { 0x2a }).collect();
    /// for i in 0..150 {
    ///     stream.push_audio(AudioCodec::G711A, &packet, Some(1_000 + i * 40))?;
    /// }
    /// stream.finish(true)?;
    /// // 1024 samples an AAC frame at 8 kHz: 128 ms.
    /// assert!(stream.stats().audio_frames_muxed >= 46);
    /// let playlist = String::from_utf8(storage.get("index.m3u8").unwrap())?;
    /// assert!(playlist.contains("0.ts") && playlist.ends_with("#EXT-X-ENDLIST\n"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_audio(
        &mut self,
        codec: AudioCodec,
        payload: &[u8],
        capture_ms: Option<i64>,
    ) -> Result<Vec<StreamEvent>> {
        self.stats.audio_payloads += 1;
        let mut events = Vec::new();
        if !self.cfg.audio.enabled {
            self.stats.audio_rejected += 1;
            return Ok(events);
        }
        if !self.audio.seen_video && self.audio.audio_only.is_none() {
            self.audio
                .waiting
                .push((codec, payload.to_vec(), capture_ms));
            if self.waiting_audio_span() >= AUDIO_ONLY_AFTER {
                self.start_audio_only(&mut events)?;
            }
            return Ok(events);
        }
        self.audio_payload(codec, payload, capture_ms, &mut events)?;
        Ok(events)
    }

    /// How much audio waits for the stream to show video: by capture
    /// times, and at least 40 ms a payload (frozen clocks).
    fn waiting_audio_span(&self) -> Dur90k {
        let w = &self.audio.waiting;
        let by_clock = match (w.first().and_then(|x| x.2), w.last().and_then(|x| x.2)) {
            (Some(a), Some(b)) => Dur90k(b.saturating_sub(a).saturating_mul(90)),
            _ => Dur90k::ZERO,
        };
        by_clock.max(Dur90k(3600 * w.len() as i64))
    }

    fn start_audio_only(&mut self, events: &mut Vec<StreamEvent>) -> Result<()> {
        tracing::info!(stream = %self.name, "audio without video: an audio-only stream");
        let now = (self.cfg.clock)();
        let first_ms = self.audio.waiting.first().and_then(|w| w.2);
        let pdt_origin_ms = match first_ms {
            Some(ms) if ms.saturating_sub(now).saturating_abs() < 366 * 24 * 3600 * 1000 => ms,
            _ => now - self.waiting_audio_span().as_millis(),
        };
        self.audio.audio_only = Some(AudioOnlyClock {
            anchor: None,
            last: None,
            pdt_origin_ms,
        });
        for (codec, payload, ms) in std::mem::take(&mut self.audio.waiting) {
            self.audio_payload(codec, &payload, ms, events)?;
        }
        Ok(())
    }

    fn audio_payload(
        &mut self,
        codec: AudioCodec,
        payload: &[u8],
        capture_ms: Option<i64>,
        events: &mut Vec<StreamEvent>,
    ) -> Result<()> {
        let cfg = self.cfg.audio;
        let transcoder = self
            .audio
            .transcoder
            .get_or_insert_with(|| AudioTranscoder::new(cfg));
        let pts = match self.audio.audio_only.as_mut() {
            Some(clock) => clock.map(capture_ms, self.cfg.timing.max_gap),
            None => {
                let mapped = capture_ms.and_then(|ms| self.timeline.presentation_of_capture(ms));
                match (mapped, self.timeline.end()) {
                    (Some(p), Some(end))
                        if p.0.saturating_sub(end.0).unsigned_abs() <= MAX_AUDIO_SKEW.0 as u64 =>
                    {
                        Some(p)
                    }
                    // Another clock than the video's: start at the video,
                    // then follow on.
                    (_, end) if !transcoder.is_running() => end,
                    _ => None,
                }
            }
        };
        let mut out = std::mem::take(&mut self.audio.out);
        if let Err(e) = transcoder.push(codec, payload, pts, &mut out) {
            if self.stats.audio_rejected == 0 {
                tracing::warn!(stream = %self.name, codec = codec.name(), error = %e, "audio refused (further refusals are counted)");
            }
            self.stats.audio_rejected += 1;
        }
        let r = self.take_audio(&mut out, events);
        self.audio.out = out;
        r
    }

    /// Routes transcoded audio: straight through the segmenter for an
    /// audio-only stream, else into the queue that follows the video.
    fn take_audio(
        &mut self,
        out: &mut Vec<AudioPacket>,
        events: &mut Vec<StreamEvent>,
    ) -> Result<()> {
        if let Some(origin) = self.audio.audio_only.as_ref().map(|c| c.pdt_origin_ms) {
            for p in out.drain(..) {
                if p.pts < Ts90k(0) {
                    // The encoder's priming frame, before the timeline's
                    // origin (a PTS below zero would wrap in MPEG-TS).
                    self.stats.audio_frames_dropped += 1;
                    continue;
                }
                let d = self.segmenter.push_unit(SegmentUnit {
                    pts: p.pts,
                    duration: p.duration,
                    keyframe: true,
                    discontinuity: false,
                    pdt_ms: origin + Dur90k(p.pts.0).as_millis(),
                });
                if let Some(closed) = d.close {
                    self.publish(closed, events)?;
                }
                if d.open.is_some() && self.open.is_none() {
                    self.begin_segment();
                }
                if d.write {
                    self.write_audio_packet(&p)?;
                    self.last_pts = self.last_pts.max(p.pts);
                }
            }
            return Ok(());
        }
        self.audio.queue.extend(out.drain(..));
        while self.audio.queue.len() > MAX_AUDIO_QUEUE {
            self.audio.queue.pop_front();
            self.stats.audio_frames_dropped += 1;
        }
        match self.audio.video_end {
            Some(end) => self.write_audio_upto(end),
            None => Ok(()),
        }
    }

    /// Drops the audio transcoder (its timeline is gone); a new one starts
    /// with the next payload.
    fn retire_audio(&mut self) {
        if let Some(a) = self.audio.transcoder.take() {
            let st = a.stats();
            self.audio.repaired_samples += st.silence_samples + st.trimmed_samples;
        }
        self.stats.audio_frames_dropped += self.audio.queue.len() as u64;
        self.audio.queue.clear();
    }

    fn publish(&mut self, closed: ClosedSegment, events: &mut Vec<StreamEvent>) -> Result<()> {
        if self.open.is_none() {
            return Ok(());
        }
        if self.muxer.is_none() {
            self.make_muxer()?;
        }
        // Audio that plays before the cut belongs to this segment.
        self.write_audio_upto(closed.first_pts + closed.duration)?;
        let open = self.open.take().expect("checked above");
        let finished = self.muxer.as_mut().expect("made above").end_segment();
        let committed = match (finished.writer, finished.error) {
            (Some(w), None) => w.commit().map_err(|e| e.to_string()),
            (Some(w), Some(e)) => {
                w.abort();
                Err(e.to_string())
            }
            (None, e) => Err(e.map_or("no writer".to_string(), |e| e.to_string())),
        };
        if let Err(e) = committed {
            tracing::error!(stream = %self.name, file = %open.file_name, error = %e, "segment lost");
            self.stats.failed_segments += 1;
            self.force_discontinuity = true;
            // Its sequence number goes to the next segment: the low-latency
            // rendition drops it too, so both keep one numbering.
            if let Some(ll) = self.ll.as_mut() {
                ll.abandon_segment();
            }
            return Ok(());
        }
        if let Some(ll) = self.ll.as_mut() {
            ll.end_segment(closed.duration);
        }
        let forced = std::mem::take(&mut self.force_discontinuity);
        let discontinuity =
            forced || (closed.discontinuity && self.playlist.segments().next().is_some());
        let removed = self.playlist.push(PlaylistSegment {
            sequence: open.sequence,
            uri: open.file_name.clone(),
            duration: closed.duration,
            discontinuity,
            pdt_ms: Some(closed.pdt_ms),
        })?;
        // The segment is complete on storage and now in the playlist: a
        // failed playlist write (disk full) only delays its listing to the
        // next write that succeeds, which rewrites the whole playlist. An
        // error here used to abort the frame loop with the muxer still
        // between segments, so the next segment was lost uncounted.
        if let Err(e) = self.write_playlist() {
            self.stats.failed_playlist_writes += 1;
            tracing::error!(stream = %self.name, error = %e, "playlist not updated (retried at the next segment)");
        }
        self.stats.segments += 1;
        self.stats.segment_bytes += finished.bytes;
        let now = closed.first_pts + closed.duration;
        if !self.cfg.keep_segments {
            for gone in removed {
                self.pending_deletes
                    .push_back((gone.uri, now + self.delete_after));
            }
            while let Some((name, due)) = self.pending_deletes.front() {
                if *due > now {
                    break;
                }
                if let Err(e) = self.storage.remove(name) {
                    tracing::warn!(stream = %self.name, file = %name, error = %e, "cannot delete old segment");
                }
                self.pending_deletes.pop_front();
            }
        }
        events.push(StreamEvent::SegmentPublished(SegmentInfo {
            stream: self.name.clone(),
            sequence: open.sequence,
            file_name: open.file_name,
            start_pts: closed.first_pts,
            duration: closed.duration,
            bytes: finished.bytes,
            program_date_time_ms: closed.pdt_ms,
            discontinuity,
            keyframes: closed.keyframes,
            frames: closed.frames,
        }));
        Ok(())
    }

    fn write_playlist(&mut self) -> Result<()> {
        let text = self.playlist.render();
        self.storage
            .replace_playlist(PLAYLIST_NAME, text.as_bytes())
            .map_err(|e| Error::io(PLAYLIST_NAME, e))
    }
}
