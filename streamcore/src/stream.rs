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
use crate::codec::{self, VideoCodec, VideoParser};
use crate::error::{Error, Result};
use crate::layout::{self, PLAYLIST_FILE};
use crate::mux::{MuxPacket, SegmentMuxer, Track, TsMuxer};
use crate::playlist::{MediaPlaylist, PlaylistKind, PlaylistSegment};
use crate::segmenter::{ClosedSegment, Segmenter, SegmenterConfig};
use crate::storage::{FsStorage, Storage};
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
}

struct OpenSegment {
    sequence: u64,
    file_name: String,
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
    muxer: Box<dyn SegmentMuxer>,
    playlist: MediaPlaylist,
    open: Option<OpenSegment>,
    /// Frames released by the timeline, reused between pushes.
    frames: Vec<TimedFrame>,
    /// The packet being built for the muxer, reused between frames.
    packet: Vec<u8>,
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
            muxer: Box::new(TsMuxer::new(name, &[Track::Video(cfg.codec)])?),
            playlist,
            open: None,
            frames: Vec::new(),
            packet: Vec::with_capacity(64 * 1024),
            pending_deletes: VecDeque::new(),
            delete_after,
            last_pts: Ts90k(0),
            force_discontinuity,
            stats: StreamStats::default(),
            cfg,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
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
        s
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
        for nal in FrameNals::new(annexb) {
            if let Some(au) = self.parser.push(nal, capture_ms) {
                self.process(au, &mut events)?;
            }
        }
        if let Some(au) = self.parser.flush() {
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
        self.drain_timeline(true, &mut events)?;
        if end_list {
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
                self.parser.write_packet(&f.au, &mut self.packet);
                self.muxer.write(&MuxPacket {
                    track: 0,
                    data: &self.packet,
                    pts: f.pts,
                    dts: f.dts,
                    duration: f.duration,
                    keyframe: f.au.keyframe,
                })?;
                self.stats.frames_muxed += 1;
                self.last_pts = self.last_pts.max(f.pts);
            }
            self.parser.recycle(f.au);
        }
        Ok(())
    }

    fn begin_segment(&mut self) {
        let sequence = self.playlist.next_sequence();
        let file_name = layout::segment_file(sequence);
        match self.storage.begin_segment(&file_name) {
            Ok(w) => self.muxer.begin_segment(Some(w)),
            Err(e) => {
                tracing::error!(stream = %self.name, file = %file_name, error = %e, "cannot create segment");
                self.muxer.begin_segment(None);
            }
        }
        self.open = Some(OpenSegment {
            sequence,
            file_name,
        });
    }

    fn publish(&mut self, closed: ClosedSegment, events: &mut Vec<StreamEvent>) -> Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let finished = self.muxer.end_segment();
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
            return Ok(());
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
