//! Low-Latency HLS (RFC 8216bis, "Low-Latency HLS"): the `ll.m3u8`
//! rendition of a live stream, held in memory by the process that ingests
//! it.
//!
//! - [`LlPlaylist`]: pure state: segments made of partial segments (each a
//!   CMAF fragment, `moof` + `mdat`), the init segments they refer to, and
//!   the text of the playlist with `#EXT-X-PART`, `#EXT-X-PRELOAD-HINT`,
//!   `#EXT-X-SERVER-CONTROL` and delta updates; it answers what a blocking
//!   request may be given ([`LlPlaylist::playlist_ready`],
//!   [`LlPlaylist::part`]).
//! - [`LlStore`]: the playlist shared between the stream's worker and the
//!   HTTP handlers that hold requests; a listener hears every change.
//! - `LlWriter` (crate-internal): what [`crate::LiveStream`] drives; it
//!   muxes the same access units as the MPEG-TS segments into fragmented
//!   MP4 ([`crate::mux::Fmp4Muxer`]) and cuts them into parts.
//!
//! Segments have the same boundaries and media sequence numbers as the
//! MPEG-TS playlist (`ll-<n>.m4s` holds what `<n>.ts` holds). Parts are
//! never stored: a complete segment is its parts concatenated, and the
//! rendition keeps three target durations of them (the shortest live
//! playlist RFC 8216 allows). Why this shape is in `docs/hls.md`.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::mux::{Fmp4Muxer, MuxPacket, Track, VideoSetup};
use crate::playlist::{format_extinf, format_pdt};
use crate::time::{Dur90k, TICKS_PER_SECOND};

/// The low-latency playlist's file name, beside `index.m3u8`.
pub const LL_PLAYLIST: &str = "ll.m3u8";

/// Low-latency settings of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowLatencyConfig {
    /// `PART-TARGET`: no part is longer.
    pub part_target: Dur90k,
    /// `Some(linger)`: parts are made only while someone asks for them
    /// ([`LlStore::mark_wanted`]), starting at the next segment after a
    /// request and stopping once none came for `linger`; an unwatched stream
    /// then costs neither the muxing nor the memory. `None`: always.
    pub on_demand: Option<Duration>,
}

impl Default for LowLatencyConfig {
    fn default() -> Self {
        LowLatencyConfig {
            part_target: Dur90k::from_millis(200),
            on_demand: None,
        }
    }
}

/// A file of the low-latency rendition, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlFile {
    Playlist,
    /// `ll-init-<generation>.mp4`.
    Init(u32),
    /// `ll-<msn>.<part>.m4s`.
    Part {
        msn: u64,
        part: u32,
    },
    /// `ll-<msn>.m4s`: a whole segment.
    Segment(u64),
}

/// Reads a file name of the rendition (what [`LlPlaylist::render`] writes).
pub fn parse_file_name(name: &str) -> Option<LlFile> {
    fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
        // Canonical decimal only: one name per file.
        if s.is_empty() || s.len() > 20 || (s.len() > 1 && s.starts_with('0')) {
            return None;
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
    if name == LL_PLAYLIST {
        return Some(LlFile::Playlist);
    }
    if let Some(g) = name
        .strip_prefix("ll-init-")
        .and_then(|r| r.strip_suffix(".mp4"))
    {
        return number(g).map(LlFile::Init);
    }
    let stem = name.strip_prefix("ll-")?.strip_suffix(".m4s")?;
    match stem.split_once('.') {
        Some((msn, part)) => Some(LlFile::Part {
            msn: number(msn)?,
            part: number(part)?,
        }),
        None => number(stem).map(LlFile::Segment),
    }
}

fn part_name(msn: u64, part: usize) -> String {
    format!("ll-{msn}.{part}.m4s")
}

/// One partial segment.
#[derive(Debug, Clone)]
pub struct LlPart {
    pub duration: Dur90k,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    pub bytes: Bytes,
}

#[derive(Debug)]
struct LlSegment {
    msn: u64,
    pdt_ms: i64,
    discontinuity: bool,
    init: u32,
    parts: Vec<LlPart>,
    /// Set once the segment is complete (its `#EXTINF`).
    duration: Option<Dur90k>,
}

impl LlSegment {
    fn parts_duration(&self) -> Dur90k {
        self.parts.iter().fold(Dur90k::ZERO, |a, p| a + p.duration)
    }
}

/// Whether a blocking playlist request can be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet: hold the request.
    Pending,
    /// Further ahead than the specification lets a client ask (400).
    TooFar,
}

/// What a request for a part finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch<T> {
    Ready(T),
    /// It will exist soon (the preload hint): hold the request.
    Pending,
    /// Gone, or never will be (404).
    Missing,
}

/// Complete segments whose parts are still listed, besides the open one.
/// RFC 8216bis lets parts go once they are three target durations from the
/// end; players only fetch them within `PART-HOLD-BACK` of it, so listing
/// them further back only lengthens every reload (one per part per viewer).
const SEGMENTS_WITH_PARTS: usize = 2;

/// The low-latency playlist of one stream.
#[derive(Debug)]
pub struct LlPlaylist {
    part_target: Dur90k,
    target_duration_secs: u32,
    /// Complete segments kept at least this much media.
    window: Dur90k,
    segments: VecDeque<LlSegment>,
    /// Init segments by generation, oldest first, while a listed segment uses them.
    inits: VecDeque<(u32, Bytes)>,
    discontinuity_sequence: u64,
    ended: bool,
    /// Generation numbers never repeat, even across [`LlPlaylist::clear`]
    /// (a player may hold an old init's URI).
    next_init: u32,
}

impl LlPlaylist {
    /// A playlist whose segments never round above `target_duration_secs`.
    pub fn new(cfg: LowLatencyConfig, target_duration_secs: u32) -> Self {
        LlPlaylist {
            part_target: cfg.part_target,
            target_duration_secs,
            window: Dur90k::from_secs(3 * target_duration_secs as i64),
            segments: VecDeque::new(),
            inits: VecDeque::new(),
            discontinuity_sequence: 0,
            ended: false,
            next_init: 0,
        }
    }

    /// Keeps at least `window` of complete segments (never less than three
    /// target durations); longer windows make delta updates skip something.
    pub fn with_window(mut self, window: Dur90k) -> Self {
        self.window = window.max(Dur90k::from_secs(3 * self.target_duration_secs as i64));
        self
    }

    pub fn part_target(&self) -> Dur90k {
        self.part_target
    }

    pub fn target_duration_secs(&self) -> u32 {
        self.target_duration_secs
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// How long a blocking request may be held: three target durations.
    pub fn hold_limit(&self) -> Duration {
        Duration::from_secs(3 * self.target_duration_secs as u64)
    }

    /// `PART-HOLD-BACK`: three part targets, as the specification recommends.
    pub fn part_hold_back(&self) -> Dur90k {
        self.part_target * 3
    }

    /// `CAN-SKIP-UNTIL`: six target durations, the specification's minimum.
    pub fn can_skip_until(&self) -> Dur90k {
        Dur90k::from_secs(6 * self.target_duration_secs as i64)
    }

    /// Bytes held: parts and init segments.
    pub fn bytes_held(&self) -> usize {
        let parts: usize = self
            .segments
            .iter()
            .flat_map(|s| s.parts.iter())
            .map(|p| p.bytes.len())
            .sum();
        parts + self.inits.iter().map(|(_, b)| b.len()).sum::<usize>()
    }

    /// Adds an init segment; the segments begun from now on refer to it.
    pub fn add_init(&mut self, bytes: Bytes) -> u32 {
        let generation = self.inits.back().map_or(self.next_init, |(g, _)| g + 1);
        self.next_init = generation + 1;
        self.inits.push_back((generation, bytes));
        generation
    }

    fn current_init(&self) -> Option<u32> {
        self.inits.back().map(|(g, _)| *g)
    }

    fn open_segment(&mut self) -> Option<&mut LlSegment> {
        self.segments.back_mut().filter(|s| s.duration.is_none())
    }

    /// Opens segment `msn` (closing one left open by its parts' length).
    pub fn begin_segment(&mut self, msn: u64, pdt_ms: i64, discontinuity: bool) {
        if self.open_segment().is_some() {
            self.end_segment(None);
        }
        self.ended = false;
        let init = self.current_init().unwrap_or(0);
        self.segments.push_back(LlSegment {
            msn,
            pdt_ms,
            discontinuity,
            init,
            parts: Vec::new(),
            duration: None,
        });
    }

    /// Appends a part to the open segment (dropped when none is open).
    pub fn push_part(&mut self, part: LlPart) {
        if let Some(s) = self.open_segment() {
            s.parts.push(part);
        }
    }

    /// Completes the open segment with its `#EXTINF` duration (its parts'
    /// sum when `None`) and slides the window. A segment without parts is
    /// dropped: nothing of it could be fetched.
    pub fn end_segment(&mut self, duration: Option<Dur90k>) {
        let Some(s) = self.open_segment() else {
            return;
        };
        if s.parts.is_empty() {
            self.segments.pop_back();
            return;
        }
        s.duration = Some(duration.unwrap_or_else(|| s.parts_duration()));
        self.slide();
    }

    /// Whether any part is listed.
    pub fn has_parts(&self) -> bool {
        self.segments.iter().any(|s| !s.parts.is_empty())
    }

    /// Whether a complete segment is listed: players (hls.js) refuse a playlist with none,
    /// so a first request waits for one.
    pub fn has_segment(&self) -> bool {
        self.segments.iter().any(|s| s.duration.is_some())
    }

    /// Forgets every segment and init segment (nobody watches): the next
    /// segment starts a playlist whose media sequence goes on from there.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.inits.clear();
        self.ended = false;
    }

    /// Drops the open segment and its parts (it will not be completed).
    pub fn discard_open(&mut self) {
        if self.open_segment().is_some() {
            self.segments.pop_back();
        }
    }

    /// The stream is over: `#EXT-X-ENDLIST`.
    pub fn end(&mut self) {
        self.end_segment(None);
        self.ended = true;
    }

    fn complete_duration(&self) -> Dur90k {
        self.segments
            .iter()
            .filter_map(|s| s.duration)
            .fold(Dur90k::ZERO, |a, d| a + d)
    }

    fn slide(&mut self) {
        while self.segments.len() > 1 {
            let first = self.segments[0].duration.unwrap_or(Dur90k::ZERO);
            if self.complete_duration() - first < self.window || self.segments[0].duration.is_none()
            {
                break;
            }
            self.segments.pop_front();
            // The DISCONTINUITY tag before the new first segment is no
            // longer written: its number moves into the sequence.
            if self.segments[0].discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
        let oldest = self.segments.front().map(|s| s.init);
        while self.inits.len() > 1 && oldest.is_some_and(|o| self.inits[0].0 < o) {
            self.inits.pop_front();
        }
    }

    /// The last part: (msn, index).
    fn last_part(&self) -> Option<(u64, u32)> {
        self.segments
            .iter()
            .rev()
            .find(|s| !s.parts.is_empty())
            .map(|s| (s.msn, s.parts.len() as u32 - 1))
    }

    /// Parts a client may ask ahead of the last one (the specification's
    /// Advance Part Limit).
    fn advance_part_limit(&self) -> u32 {
        let target_ms = self.part_target.as_millis().max(1);
        if target_ms < 1000 {
            (3000 / target_ms) as u32
        } else {
            3
        }
    }

    /// The part the playlist hints at: the next of the open segment, or the
    /// first of the next segment.
    fn preload_hint(&self) -> Option<(u64, u32)> {
        if self.ended {
            return None;
        }
        let last = self.segments.back()?;
        Some(match last.duration {
            None => (last.msn, last.parts.len() as u32),
            Some(_) => (last.msn + 1, 0),
        })
    }

    /// May a blocking reload with `_HLS_msn=msn` (`_HLS_part=part`) be
    /// answered now (RFC 8216bis 6.2.5.2)?
    pub fn playlist_ready(&self, msn: u64, part: Option<u32>) -> Readiness {
        if self.ended {
            return Readiness::Ready;
        }
        let Some(last) = self.segments.back() else {
            return Readiness::Pending;
        };
        if msn > last.msn + 2 {
            return Readiness::TooFar;
        }
        match part {
            None => {
                let done = self
                    .segments
                    .iter()
                    .any(|s| s.msn > msn || (s.msn == msn && s.duration.is_some()));
                if done {
                    Readiness::Ready
                } else {
                    Readiness::Pending
                }
            }
            Some(p) => {
                let listed = self.segments.iter().any(|s| {
                    (s.msn == msn && (s.parts.len() as u32 > p))
                        || (s.msn > msn && !s.parts.is_empty())
                });
                if listed {
                    return Readiness::Ready;
                }
                let ahead = match self.last_part() {
                    Some((m, i)) if m == msn => p.saturating_sub(i),
                    _ => p.saturating_add(1),
                };
                if ahead > self.advance_part_limit() {
                    Readiness::TooFar
                } else {
                    Readiness::Pending
                }
            }
        }
    }

    /// Part `part` of segment `msn`.
    pub fn part(&self, msn: u64, part: u32) -> Fetch<Bytes> {
        if let Some(s) = self.segments.iter().find(|s| s.msn == msn) {
            if let Some(p) = s.parts.get(part as usize) {
                return Fetch::Ready(p.bytes.clone());
            }
        }
        match self.preload_hint() {
            // The hinted part, or one of the next few of the same segment:
            // a client that asked for the hint early.
            Some((m, i)) if m == msn && part >= i && part - i <= self.advance_part_limit() => {
                Fetch::Pending
            }
            Some((m, _)) if m + 1 == msn && part == 0 => Fetch::Pending,
            _ => Fetch::Missing,
        }
    }

    /// A complete segment: its parts concatenated.
    pub fn segment(&self, msn: u64) -> Option<Bytes> {
        let s = self
            .segments
            .iter()
            .find(|s| s.msn == msn && s.duration.is_some())?;
        let len = s.parts.iter().map(|p| p.bytes.len()).sum();
        let mut out = Vec::with_capacity(len);
        for p in &s.parts {
            out.extend_from_slice(&p.bytes);
        }
        Some(Bytes::from(out))
    }

    pub fn init(&self, generation: u32) -> Option<Bytes> {
        self.inits
            .iter()
            .find(|(g, _)| *g == generation)
            .map(|(_, b)| b.clone())
    }

    /// The playlist; `skip` answers `_HLS_skip=YES` with a delta update that
    /// leaves out the segments more than `CAN-SKIP-UNTIL` from the end.
    pub fn render(&self, skip: bool) -> String {
        let mut out = String::with_capacity(2048);
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_secs);
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={},PART-HOLD-BACK={}",
            seconds(self.can_skip_until()),
            seconds(self.part_hold_back())
        );
        let _ = writeln!(
            out,
            "#EXT-X-PART-INF:PART-TARGET={}",
            seconds(self.part_target)
        );
        let first_msn = self.segments.front().map_or(0, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_msn}");
        let _ = writeln!(
            out,
            "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
            self.discontinuity_sequence
        );
        let skipped = if skip { self.skippable() } else { 0 };
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let with_parts_from = self
            .segments
            .iter()
            .filter(|s| s.duration.is_some())
            .count()
            .saturating_sub(SEGMENTS_WITH_PARTS);
        let mut map = None;
        for (i, s) in self.segments.iter().enumerate().skip(skipped) {
            if s.discontinuity && i > 0 {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if map != Some(s.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"ll-init-{}.mp4\"", s.init);
                map = Some(s.init);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(s.pdt_ms));
            if i >= with_parts_from || s.duration.is_none() {
                for (k, p) in s.parts.iter().enumerate() {
                    let _ = write!(
                        out,
                        "#EXT-X-PART:DURATION={},URI=\"{}\"",
                        seconds(p.duration),
                        part_name(s.msn, k)
                    );
                    if p.independent {
                        out.push_str(",INDEPENDENT=YES");
                    }
                    out.push('\n');
                }
            }
            if let Some(d) = s.duration {
                let _ = writeln!(out, "#EXTINF:{},", format_extinf(d));
                let _ = writeln!(out, "ll-{}.m4s", s.msn);
            }
        }
        if let Some((m, p)) = self.preload_hint() {
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"",
                part_name(m, p as usize)
            );
        }
        if self.ended {
            let _ = writeln!(out, "#EXT-X-ENDLIST");
        }
        out
    }

    /// Leading complete segments that end more than `CAN-SKIP-UNTIL` before
    /// the end of the playlist.
    fn skippable(&self) -> usize {
        let total = self.segments.iter().fold(Dur90k::ZERO, |a, s| {
            a + s.duration.unwrap_or_else(|| s.parts_duration())
        });
        let horizon = self.can_skip_until();
        let mut end = Dur90k::ZERO;
        let mut n = 0;
        for s in &self.segments {
            let Some(d) = s.duration else { break };
            end += d;
            if total - end < horizon {
                break;
            }
            n += 1;
        }
        n
    }
}

/// Seconds with three decimals, from ticks (attribute values).
fn seconds(d: Dur90k) -> String {
    let ms = (d.0 * 1000 + TICKS_PER_SECOND / 2) / TICKS_PER_SECOND;
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

type Listener = Box<dyn Fn() + Send + Sync>;

/// A stream's [`LlPlaylist`], shared between the worker that writes it and
/// the handlers that serve it.
pub struct LlStore {
    playlist: Mutex<LlPlaylist>,
    listener: Mutex<Option<Listener>>,
    /// When parts were last asked for (for on-demand production).
    wanted_at: Mutex<Option<Instant>>,
}

impl LlStore {
    pub fn new(playlist: LlPlaylist) -> Arc<LlStore> {
        Arc::new(LlStore {
            playlist: Mutex::new(playlist),
            listener: Mutex::new(None),
            wanted_at: Mutex::new(None),
        })
    }

    /// Someone asked for the rendition: an on-demand stream makes parts
    /// from its next segment on, and goes on while asked.
    pub fn mark_wanted(&self) {
        *self.wanted_at.lock().expect("wanted poisoned") = Some(Instant::now());
    }

    fn wanted_within(&self, linger: Duration) -> bool {
        self.wanted_at
            .lock()
            .expect("wanted poisoned")
            .is_some_and(|t| t.elapsed() < linger)
    }

    /// `f` is called after every change (outside the playlist's lock) and
    /// when the store is dropped.
    pub fn set_listener(&self, f: Box<dyn Fn() + Send + Sync>) {
        *self.listener.lock().expect("listener poisoned") = Some(f);
    }

    pub fn read<R>(&self, f: impl FnOnce(&LlPlaylist) -> R) -> R {
        f(&self.playlist.lock().expect("ll playlist poisoned"))
    }

    pub fn update<R>(&self, f: impl FnOnce(&mut LlPlaylist) -> R) -> R {
        let r = f(&mut self.playlist.lock().expect("ll playlist poisoned"));
        self.notify();
        r
    }

    fn notify(&self) {
        if let Some(l) = self.listener.lock().expect("listener poisoned").as_ref() {
            l();
        }
    }
}

impl Drop for LlStore {
    fn drop(&mut self) {
        self.notify();
    }
}

impl std::fmt::Debug for LlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlStore").finish_non_exhaustive()
    }
}

/// The part being gathered in the muxer.
#[derive(Debug, Default)]
struct OpenPart {
    /// Media time of the part's primary track so far.
    duration: Dur90k,
    primary_samples: u32,
    independent: bool,
}

/// Writes a stream's access units as fragmented-MP4 parts into an
/// [`LlStore`]. Driven by [`crate::LiveStream`]: the same packets as its
/// MPEG-TS muxer, plus where segments begin and end.
pub(crate) struct LlWriter {
    store: Arc<LlStore>,
    part_target: Dur90k,
    on_demand: Option<Duration>,
    /// Making parts (always, or while on demand someone watches).
    active: bool,
    stream: String,
    tracks: Vec<Track>,
    /// The track whose samples measure parts: video, else audio.
    primary: Option<usize>,
    muxer: Option<Fmp4Muxer>,
    /// A segment was begun and waits for its first primary sample to be
    /// listed: its msn.
    pending_segment: Option<u64>,
    /// A segment is listed and receiving parts.
    in_segment: bool,
    /// Decode time of the open segment's first primary sample.
    segment_start: Option<crate::time::Ts90k>,
    part: OpenPart,
    buf: Vec<u8>,
    /// The next listed segment starts a discontinuity (a new muxer or a
    /// muxer error).
    discontinuity: bool,
    failures: u64,
}

impl LlWriter {
    pub(crate) fn new(stream: &str, store: Arc<LlStore>, cfg: LowLatencyConfig) -> Self {
        LlWriter {
            store,
            part_target: cfg.part_target,
            on_demand: cfg.on_demand,
            active: cfg.on_demand.is_none(),
            stream: stream.to_string(),
            tracks: Vec::new(),
            primary: None,
            muxer: None,
            pending_segment: None,
            in_segment: false,
            segment_start: None,
            part: OpenPart::default(),
            // Grown when the rendition is first watched: most streams never are.
            buf: Vec::new(),
            discontinuity: false,
            failures: 0,
        }
    }

    pub(crate) fn store(&self) -> &Arc<LlStore> {
        &self.store
    }

    /// The tracks of the segments from now on; a change makes a new muxer
    /// (a new init segment) at the next segment.
    pub(crate) fn set_tracks(&mut self, tracks: &[Track]) {
        if self.tracks != tracks {
            self.close_segment(None);
            if self.muxer.take().is_some() {
                self.discontinuity = true;
            }
            self.tracks = tracks.to_vec();
            self.primary = tracks
                .iter()
                .position(|t| matches!(t, Track::Video(_)))
                .or_else(|| (!tracks.is_empty()).then_some(0));
        }
    }

    /// Segment `msn` begins with the next packet of the primary track.
    /// On demand, this is where production starts or stops.
    pub(crate) fn begin_segment(&mut self, msn: u64) {
        self.close_segment(None);
        if let Some(linger) = self.on_demand {
            let wanted = self.store.wanted_within(linger);
            if self.active && !wanted {
                self.active = false;
                self.muxer = None;
                self.part = OpenPart::default();
                self.store.update(|p| p.clear());
            } else if !self.active && wanted {
                self.active = true;
                // A fresh muxer (new init) after a pause.
                self.muxer = None;
                self.discontinuity = false;
            }
        }
        self.pending_segment = self.active.then_some(msn);
    }

    /// The next segment starts a discontinuity (the timeline broke).
    pub(crate) fn mark_discontinuity(&mut self) {
        self.discontinuity = true;
    }

    /// The open segment will not be published (the MPEG-TS one was lost):
    /// it leaves the playlist, and the next segment starts a discontinuity.
    pub(crate) fn abandon_segment(&mut self) {
        self.pending_segment = None;
        if self.in_segment {
            self.in_segment = false;
            self.part = OpenPart::default();
            if let Some(m) = self.muxer.as_mut() {
                self.buf.clear();
                // What the muxer holds belongs to the dropped segment.
                let _ = m.flush_fragment(&mut self.buf);
            }
            self.store.update(|p| p.discard_open());
        }
        self.discontinuity = true;
    }

    /// The open segment is complete with this `#EXTINF` duration.
    pub(crate) fn end_segment(&mut self, duration: Dur90k) {
        self.close_segment(Some(duration));
    }

    /// The stream ended: `#EXT-X-ENDLIST`.
    pub(crate) fn end(&mut self) {
        self.close_segment(None);
        self.store.update(|p| p.end());
    }

    fn close_segment(&mut self, duration: Option<Dur90k>) {
        if !self.in_segment {
            return;
        }
        self.flush_part();
        self.in_segment = false;
        self.store.update(|p| p.end_segment(duration));
    }

    /// Writes one packet; `pdt_ms` dates a primary packet that opens a segment.
    pub(crate) fn write(&mut self, packet: &MuxPacket<'_>, pdt_ms: i64) {
        let primary = Some(packet.track) == self.primary;
        if primary {
            if let Some(msn) = self.pending_segment {
                if !self.start_segment(packet, msn, pdt_ms) {
                    return;
                }
            } else if self.in_segment
                && self.part.primary_samples > 0
                && self.part.duration + packet.duration > self.part_target
            {
                self.flush_part();
            }
        }
        if !self.in_segment {
            return;
        }
        if !primary && self.segment_start.is_some_and(|start| packet.dts < start) {
            // Audio from before the segment's first frame (the MPEG-TS
            // segment takes up to half a second of it): in a fragment that
            // starts with its video it trips an av_assert0 in libavformat's
            // mov muxer (`next_dts >= 0`, found by the live_stream_frames
            // fuzz target), which aborts the process.
            return;
        }
        let Some(muxer) = self.muxer.as_mut() else {
            return;
        };
        if let Err(e) = muxer.write(packet) {
            self.fail(&e);
            return;
        }
        if primary {
            if self.part.primary_samples == 0 {
                self.part.independent = packet.keyframe;
            }
            self.part.primary_samples += 1;
            self.part.duration += packet.duration;
            // Publish as soon as the next sample would not fit: one frame
            // earlier than waiting for that sample to arrive.
            if self.part.duration + packet.duration > self.part_target {
                self.flush_part();
            }
        }
    }

    /// Lists segment `msn` at its first primary packet, making the muxer
    /// (from the keyframe's parameter sets) if there is none.
    fn start_segment(&mut self, packet: &MuxPacket<'_>, msn: u64, pdt_ms: i64) -> bool {
        if self.muxer.is_none() {
            if !packet.keyframe {
                return false;
            }
            let setup = match self.tracks.get(packet.track) {
                Some(Track::Video(codec)) => match VideoSetup::from_keyframe(*codec, packet.data) {
                    Some(s) => Some(s),
                    None => return false,
                },
                _ => None,
            };
            match Fmp4Muxer::new(&self.stream, &self.tracks, setup.as_ref()) {
                Ok(m) => {
                    let init = Bytes::copy_from_slice(m.init_segment());
                    self.store.update(|p| p.add_init(init));
                    self.muxer = Some(m);
                }
                Err(e) => {
                    self.fail(&e);
                    return false;
                }
            }
        }
        self.pending_segment = None;
        let disc = std::mem::take(&mut self.discontinuity);
        self.store.update(|p| p.begin_segment(msn, pdt_ms, disc));
        self.in_segment = true;
        self.segment_start = Some(packet.dts);
        self.part = OpenPart::default();
        true
    }

    fn flush_part(&mut self) {
        let Some(muxer) = self.muxer.as_mut() else {
            return;
        };
        self.buf.clear();
        match muxer.flush_fragment(&mut self.buf) {
            Ok(0) => {}
            Ok(_) => {
                let part = LlPart {
                    duration: self.part.duration,
                    independent: self.part.independent,
                    bytes: Bytes::copy_from_slice(&self.buf),
                };
                self.store.update(|p| p.push_part(part));
            }
            Err(e) => self.fail(&e),
        }
        self.part = OpenPart::default();
    }

    /// A muxer error: the rendition restarts with a new muxer at the next
    /// segment, after a discontinuity; the MPEG-TS output is unaffected.
    fn fail(&mut self, e: &crate::Error) {
        if self.failures == 0 {
            tracing::warn!(stream = %self.stream, error = %e, "low-latency muxer failed: restarting at the next segment (further failures are not logged)");
        }
        self.failures += 1;
        self.muxer = None;
        self.discontinuity = true;
        if self.in_segment {
            self.in_segment = false;
            self.store.update(|p| p.end_segment(None));
        }
        self.part = OpenPart::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LowLatencyConfig {
        LowLatencyConfig {
            part_target: Dur90k::from_millis(200),
            on_demand: None,
        }
    }

    fn part(ms: i64, independent: bool, tag: u8) -> LlPart {
        LlPart {
            duration: Dur90k::from_millis(ms),
            independent,
            bytes: Bytes::from(vec![tag; 3]),
        }
    }

    const T0: i64 = 1_700_000_000_000;

    /// Segment `msn` of 4 s as 20 parts of 200 ms.
    fn full_segment(p: &mut LlPlaylist, msn: u64) {
        p.begin_segment(msn, T0 + msn as i64 * 4000, false);
        for k in 0..20 {
            p.push_part(part(200, k == 0, msn as u8));
        }
        p.end_segment(Some(Dur90k::from_secs(4)));
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name("ll.m3u8"), Some(LlFile::Playlist));
        assert_eq!(parse_file_name("ll-init-3.mp4"), Some(LlFile::Init(3)));
        assert_eq!(
            parse_file_name("ll-12.0.m4s"),
            Some(LlFile::Part { msn: 12, part: 0 })
        );
        assert_eq!(parse_file_name("ll-12.m4s"), Some(LlFile::Segment(12)));
        for bad in [
            "ll-012.m4s",
            "ll-1.01.m4s",
            "ll-.m4s",
            "ll-1..m4s",
            "ll-1.2.3.m4s",
            "ll-a.m4s",
            "ll-init-.mp4",
            "ll-init-1.m4s",
            "1.ts",
            "index.m3u8",
            "ll-1.m4s/",
            "ll--1.m4s",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
        assert_eq!(part_name(7, 3), "ll-7.3.m4s");
        assert_eq!(
            parse_file_name(&part_name(7, 3)),
            Some(LlFile::Part { msn: 7, part: 3 })
        );
    }

    #[test]
    fn playlist_lists_parts_hint_and_server_control() {
        let mut p = LlPlaylist::new(cfg(), 8);
        p.add_init(Bytes::from_static(b"init"));
        p.begin_segment(5, T0, false);
        p.push_part(part(200, true, 1));
        p.push_part(part(160, false, 2));
        p.end_segment(Some(Dur90k::from_millis(360)));
        p.begin_segment(6, T0 + 360, false);
        p.push_part(part(200, true, 3));
        assert_eq!(
            p.render(false),
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:8\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=48.000,PART-HOLD-BACK=0.600\n\
             #EXT-X-PART-INF:PART-TARGET=0.200\n\
             #EXT-X-MEDIA-SEQUENCE:5\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-MAP:URI=\"ll-init-0.mp4\"\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n\
             #EXT-X-PART:DURATION=0.200,URI=\"ll-5.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.160,URI=\"ll-5.1.m4s\"\n\
             #EXTINF:0.360000,\nll-5.m4s\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.360Z\n\
             #EXT-X-PART:DURATION=0.200,URI=\"ll-6.0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"ll-6.1.m4s\"\n"
        );
        assert_eq!(p.segment(5).as_deref(), Some(&[1, 1, 1, 2, 2, 2][..]));
        assert_eq!(p.segment(6), None, "open segments are not served whole");
        assert_eq!(p.init(0).as_deref(), Some(&b"init"[..]));
        assert_eq!(p.init(1), None);
        assert_eq!(p.bytes_held(), 9 + 4);
        p.end();
        let text = p.render(false);
        assert!(
            text.ends_with("#EXTINF:0.200000,\nll-6.m4s\n#EXT-X-ENDLIST\n"),
            "{text}"
        );
        assert!(!text.contains("PRELOAD-HINT"));
    }

    #[test]
    fn window_slides_parts_go_and_discontinuities_count() {
        let mut p = LlPlaylist::new(cfg(), 4);
        p.add_init(Bytes::from_static(b"i0"));
        for msn in 0..3 {
            full_segment(&mut p, msn);
        }
        // A new init (tracks changed) and a discontinuity at segment 3.
        p.add_init(Bytes::from_static(b"i1"));
        p.begin_segment(3, T0 + 20_000, true);
        p.push_part(part(200, true, 3));
        p.end_segment(None);
        for msn in 4..6 {
            full_segment(&mut p, msn);
        }
        // 12 s of window (3 x 4 s): 3, 4, 5 are 8.2 s, so 2 (4 s) stays.
        let text = p.render(false);
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:2\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n"),
            "{text}"
        );
        assert!(text.contains("#EXT-X-MAP:URI=\"ll-init-0.mp4\"\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n#EXTINF:4.000000,\nll-2.m4s\n"), "{text}");
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"ll-init-1.mp4\"\n"),
            "{text}"
        );
        // Parts are listed for the last two complete segments only.
        assert!(
            !text.contains("ll-2.0.m4s") && !text.contains("ll-3.0.m4s"),
            "{text}"
        );
        assert!(
            text.contains("ll-4.19.m4s") && text.contains("ll-5.0.m4s"),
            "{text}"
        );
        assert_eq!(p.init(0).as_deref(), Some(&b"i0"[..]));
        full_segment(&mut p, 6);
        // Segments 2 and 3 left (12 s remain): the discontinuity before 3
        // moved into the sequence number.
        let text = p.render(false);
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:1\n"),
            "{text}"
        );
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert_eq!(p.init(0), None, "an init nobody lists is dropped");
        assert_eq!(p.part(2, 0), Fetch::Missing);
        assert_eq!(p.segment(2), None);
    }

    #[test]
    fn blocking_reload_answers() {
        let mut p = LlPlaylist::new(cfg(), 4);
        assert_eq!(
            p.playlist_ready(0, Some(0)),
            Readiness::Pending,
            "nothing yet"
        );
        p.add_init(Bytes::from_static(b"i"));
        full_segment(&mut p, 10);
        p.begin_segment(11, T0, false);
        p.push_part(part(200, true, 1));
        p.push_part(part(200, false, 2));
        // Listed now.
        assert_eq!(p.playlist_ready(11, Some(1)), Readiness::Ready);
        assert_eq!(p.playlist_ready(10, None), Readiness::Ready);
        assert_eq!(
            p.playlist_ready(9, Some(30)),
            Readiness::Ready,
            "a later part exists"
        );
        // The next part (the hint) and the segment's completion wait.
        assert_eq!(p.playlist_ready(11, Some(2)), Readiness::Pending);
        assert_eq!(p.playlist_ready(11, None), Readiness::Pending);
        assert_eq!(p.playlist_ready(12, Some(0)), Readiness::Pending);
        assert_eq!(p.playlist_ready(13, None), Readiness::Pending);
        // More than two segments or the Advance Part Limit (3 s / 0.2 s) ahead.
        assert_eq!(p.playlist_ready(14, None), Readiness::TooFar);
        assert_eq!(p.playlist_ready(11, Some(17)), Readiness::TooFar);
        assert_eq!(p.playlist_ready(11, Some(16)), Readiness::Pending);
        // Parts: present, hinted (held), beyond reach, gone.
        assert_eq!(p.part(11, 1), Fetch::Ready(Bytes::from(vec![2u8; 3])));
        assert_eq!(p.part(11, 2), Fetch::Pending);
        assert_eq!(p.part(12, 0), Fetch::Pending);
        assert_eq!(p.part(12, 1), Fetch::Missing);
        assert_eq!(p.part(11, 40), Fetch::Missing);
        assert_eq!(
            p.part(10, 20),
            Fetch::Missing,
            "past the end of a complete segment"
        );
        assert_eq!(p.part(3, 0), Fetch::Missing);
        // The segment completes with fewer parts than a client guessed:
        // its request for part 2 of 11 is answered by part 0 of 12.
        p.end_segment(None);
        assert_eq!(p.playlist_ready(11, Some(2)), Readiness::Pending);
        assert_eq!(p.playlist_ready(11, None), Readiness::Ready);
        assert_eq!(
            p.part(12, 0),
            Fetch::Pending,
            "the hint moved to the next segment"
        );
        p.begin_segment(12, T0, false);
        p.push_part(part(200, true, 3));
        assert_eq!(p.playlist_ready(11, Some(2)), Readiness::Ready);
        // An ended stream answers everything at once.
        p.end();
        assert_eq!(p.playlist_ready(13, Some(5)), Readiness::Ready);
        assert_eq!(p.part(12, 1), Fetch::Missing);
    }

    #[test]
    fn delta_updates_skip_only_beyond_can_skip_until() {
        let mut p = LlPlaylist::new(cfg(), 4).with_window(Dur90k::from_secs(40));
        p.add_init(Bytes::from_static(b"i"));
        for msn in 0..10 {
            full_segment(&mut p, msn);
        }
        // 40 s listed; CAN-SKIP-UNTIL is 24 s: segments ending 24 s or more
        // before the end (0..=3, ending at 4..16 s of 40) are skipped.
        let delta = p.render(true);
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n#EXT-X-MAP:URI=\"ll-init-0.mp4\"\n"), "{delta}");
        assert!(
            !delta.contains("ll-3.m4s") && delta.contains("ll-4.m4s"),
            "{delta}"
        );
        let full = p.render(false);
        assert!(!full.contains("EXT-X-SKIP") && full.contains("ll-0.m4s"));
        // A short window has nothing to skip.
        let mut short = LlPlaylist::new(cfg(), 4);
        short.add_init(Bytes::from_static(b"i"));
        for msn in 0..10 {
            full_segment(&mut short, msn);
        }
        assert!(!short.render(true).contains("EXT-X-SKIP"));
    }

    #[test]
    fn store_tells_its_listener() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let heard = Arc::new(AtomicUsize::new(0));
        let store = LlStore::new(LlPlaylist::new(cfg(), 4));
        let h = heard.clone();
        store.set_listener(Box::new(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        store.update(|p| p.begin_segment(0, T0, false));
        assert_eq!(heard.load(Ordering::SeqCst), 1);
        assert!(store.read(|p| !p.is_ended()));
        drop(store);
        assert_eq!(
            heard.load(Ordering::SeqCst),
            2,
            "dropping the store wakes waiters"
        );
    }
}
