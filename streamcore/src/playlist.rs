//! HLS media playlists (RFC 8216 sections 4.3 and 6.2.2), pure logic: the
//! one model of a playlist in the workspace.
//!
//! A [`MediaPlaylist`] is built either segment by segment (a live or event
//! playlist: [`MediaPlaylist::push`] slides the window) or whole from a
//! recording ([`MediaPlaylist::recording`]: what hlsd renders from catalog
//! rows); it renders text and reads text back, and never touches storage.
//! Rules it keeps (see `docs/hls.md`): TARGETDURATION fixed for the
//! playlist's life and never below a rounded EXTINF; EXTINF written from
//! 90 kHz ticks with six decimals; MEDIA-SEQUENCE rises by one per removed
//! segment; DISCONTINUITY-SEQUENCE (for playlists that slide or resume) is
//! written from the start and rises when a segment carrying a
//! discontinuity slides out; PROGRAM-DATE-TIME on the first segment, after
//! every discontinuity and, for recordings, wherever the catalog's time
//! drifts from what a player extrapolates; ENDLIST when finished.

use std::collections::VecDeque;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::time::{Dur90k, TICKS_PER_SECOND};

/// One segment as a playlist lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSegment {
    pub sequence: u64,
    pub uri: String,
    pub duration: Dur90k,
    /// An `#EXT-X-DISCONTINUITY` precedes this segment (ignored on the first).
    pub discontinuity: bool,
    /// Unix milliseconds of the segment's first presented frame.
    pub pdt_ms: Option<i64>,
}

/// The kind of playlist, which decides sliding and tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    /// Sliding window holding at least this much media.
    Live { window: Dur90k },
    /// Grows until ended (`#EXT-X-PLAYLIST-TYPE:EVENT`).
    Event,
    /// Complete and unchanging (`#EXT-X-PLAYLIST-TYPE:VOD`, ENDLIST).
    Vod,
}

/// How a playlist is written beyond what its segments say: live playlists
/// (written incrementally by ingestd, resumed after a restart) track the
/// discontinuity sequence; recordings (rendered whole by hlsd from the
/// catalog) declare their segments independent and restate the date where
/// the catalog's time drifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Style {
    discontinuity_sequence_tag: bool,
    independent_segments: bool,
    /// Restate PROGRAM-DATE-TIME where a segment's date differs from the one
    /// extrapolated from the previous tag by more than this (milliseconds).
    pdt_drift_ms: Option<i64>,
}

impl Style {
    const LIVE: Style = Style {
        discontinuity_sequence_tag: true,
        independent_segments: false,
        pdt_drift_ms: None,
    };
    const RECORDING: Style = Style {
        discontinuity_sequence_tag: false,
        independent_segments: true,
        pdt_drift_ms: Some(RECORDING_PDT_DRIFT_MS),
    };
}

/// In a recording, players extrapolate PROGRAM-DATE-TIME from the last tag;
/// a segment whose catalog time is further off than this gets its own tag,
/// so the picture-time to GPS mapping stays exact.
pub const RECORDING_PDT_DRIFT_MS: i64 = 500;

/// A media playlist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaPlaylist {
    kind: PlaylistKind,
    target_duration: u32,
    media_sequence: u64,
    discontinuity_sequence: u64,
    segments: VecDeque<PlaylistSegment>,
    ended: bool,
    style: Style,
}

/// `round(duration)` in whole seconds, halves up, exactly on ticks: what
/// RFC 8216 compares with TARGETDURATION.
fn rounded_seconds(d: Dur90k) -> i64 {
    (d.0 + TICKS_PER_SECOND / 2) / TICKS_PER_SECOND
}

impl MediaPlaylist {
    /// An empty playlist that grows with [`push`](Self::push).
    pub fn new(kind: PlaylistKind, target_duration_secs: u32) -> Self {
        MediaPlaylist {
            kind,
            target_duration: target_duration_secs,
            media_sequence: 0,
            discontinuity_sequence: 0,
            segments: VecDeque::new(),
            ended: kind == PlaylistKind::Vod,
            style: Style::LIVE,
        }
    }

    /// A whole recording: VOD with ENDLIST when `finished`, else EVENT (the
    /// recording still grows, players keep reloading). Segments are listed
    /// in the order given; their `sequence` is only positional (the first
    /// one's becomes MEDIA-SEQUENCE). TARGETDURATION is the longest EXTINF
    /// rounded, at least 1.
    pub fn recording(finished: bool, segments: Vec<PlaylistSegment>) -> Self {
        let target = segments
            .iter()
            .map(|s| rounded_seconds(s.duration))
            .max()
            .unwrap_or(1)
            .clamp(1, u32::MAX as i64) as u32;
        MediaPlaylist {
            kind: if finished {
                PlaylistKind::Vod
            } else {
                PlaylistKind::Event
            },
            target_duration: target,
            media_sequence: segments.first().map_or(0, |s| s.sequence),
            discontinuity_sequence: 0,
            segments: segments.into(),
            ended: finished,
            style: Style::RECORDING,
        }
    }

    /// Raises TARGETDURATION to at least `secs`. A recording still growing
    /// must keep one TARGETDURATION for its whole life (Chromium refuses a
    /// playlist whose target changes), so it takes its stream's (the most
    /// any of its segments may last) rather than its longest segment so far.
    pub fn with_target_at_least(mut self, secs: u32) -> Self {
        self.target_duration = self.target_duration.max(secs);
        self
    }

    pub fn kind(&self) -> PlaylistKind {
        self.kind
    }

    pub fn segments(&self) -> impl ExactSizeIterator<Item = &PlaylistSegment> {
        self.segments.iter()
    }

    pub fn target_duration(&self) -> u32 {
        self.target_duration
    }

    pub fn media_sequence(&self) -> u64 {
        self.media_sequence
    }

    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Total duration of the segments listed.
    pub fn duration(&self) -> Dur90k {
        self.segments
            .iter()
            .fold(Dur90k::ZERO, |a, s| a + s.duration)
    }

    /// Sequence number the next appended segment must carry.
    pub fn next_sequence(&self) -> u64 {
        self.media_sequence + self.segments.len() as u64
    }

    /// Makes the next appended segment's sequence number at least `next`. Numbers are
    /// positional, so a gap cannot be listed: when `next` is ahead, every listed segment slides
    /// out (returned) and the list starts again at `next`. Another writer of the stream may
    /// have used the numbers in between (see `catalog::cluster`'s stream leases).
    pub fn skip_to(&mut self, next: u64) -> Vec<PlaylistSegment> {
        if next <= self.next_sequence() {
            return Vec::new();
        }
        let gone: Vec<PlaylistSegment> = self.segments.drain(..).collect();
        self.discontinuity_sequence += gone.iter().filter(|s| s.discontinuity).count() as u64;
        self.media_sequence = next;
        gone
    }

    /// Appends a segment; returns the segments that slid out of the window.
    pub fn push(&mut self, segment: PlaylistSegment) -> Result<Vec<PlaylistSegment>> {
        if segment.sequence != self.next_sequence() {
            return Err(Error::Config(format!(
                "segment sequence {} appended where {} was due",
                segment.sequence,
                self.next_sequence()
            )));
        }
        if segment.duration < Dur90k::ZERO {
            // `#EXTINF` is a non-negative decimal (RFC 8216 4.3.2.1); a
            // negative one would also not parse back on resume.
            return Err(Error::Config(format!(
                "segment {} has a negative duration {:?}",
                segment.sequence, segment.duration
            )));
        }
        if rounded_seconds(segment.duration) > self.target_duration as i64 {
            return Err(Error::Config(format!(
                "segment {} of {:?} rounds above TARGETDURATION {}",
                segment.sequence, segment.duration, self.target_duration
            )));
        }
        self.ended = false;
        self.segments.push_back(segment);
        let mut removed = Vec::new();
        if let PlaylistKind::Live { window } = self.kind {
            let mut total = self.duration();
            while let Some(front) = self.segments.front() {
                if total - front.duration < window {
                    break;
                }
                total -= front.duration;
                let gone = self.segments.pop_front().expect("front exists");
                self.media_sequence += 1;
                if gone.discontinuity {
                    self.discontinuity_sequence += 1;
                }
                removed.push(gone);
            }
        }
        Ok(removed)
    }

    /// Marks the playlist complete (`#EXT-X-ENDLIST`).
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Renders the playlist text. Tag order: version, playlist type,
    /// independence, target duration, media sequence, discontinuity
    /// sequence, then the segments.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(160 + self.segments.len() * 80);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n");
        match self.kind {
            PlaylistKind::Event => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            PlaylistKind::Vod => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
            PlaylistKind::Live { .. } => {}
        }
        if self.style.independent_segments {
            out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
        }
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", self.media_sequence);
        if self.style.discontinuity_sequence_tag {
            let _ = writeln!(
                out,
                "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
                self.discontinuity_sequence
            );
        }
        // The date a player extrapolates from the last PROGRAM-DATE-TIME.
        let mut player_clock_ms: Option<i64> = None;
        for (i, s) in self.segments.iter().enumerate() {
            // RFC 8216 6.2.2: a segment's discontinuity sequence number is
            // DISCONTINUITY-SEQUENCE plus the tags before it, and must not
            // change between reloads. The tag of a segment that reached the
            // head of a sliding window therefore stays until it slides out
            // (which raises DISCONTINUITY-SEQUENCE). A recording has nothing
            // before its first segment to be discontinuous with.
            let discontinuity = s.discontinuity && (i > 0 || self.style.discontinuity_sequence_tag);
            if discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(ms) = s.pdt_ms {
                let drifted = match (self.style.pdt_drift_ms, player_clock_ms) {
                    (Some(limit), Some(clock)) => (ms - clock).abs() > limit,
                    _ => false,
                };
                if i == 0 || discontinuity || drifted {
                    let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_pdt(ms));
                    player_clock_ms = Some(ms);
                }
            }
            player_clock_ms = player_clock_ms.map(|c| c + (s.duration.0 + 45) / 90);
            let _ = writeln!(out, "#EXTINF:{},\n{}", format_extinf(s.duration), s.uri);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        }
        out
    }

    /// Reads back a playlist of `kind` (to resume after a restart). Unknown
    /// tags are ignored, as RFC 8216 asks of clients; a malformed one is an
    /// error.
    pub fn parse(text: &str, kind: PlaylistKind) -> Result<Self> {
        Self::read(text, Some(kind))
    }

    /// Reads any media playlist; its kind comes from
    /// `#EXT-X-PLAYLIST-TYPE` (without one: a live window as long as what
    /// it lists).
    pub fn parse_any(text: &str) -> Result<Self> {
        Self::read(text, None)
    }

    fn read(text: &str, kind: Option<PlaylistKind>) -> Result<Self> {
        let bad = |line: &str| Error::Config(format!("unreadable playlist line {line:?}"));
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("#EXTM3U") {
            return Err(Error::Config(
                "not a playlist: it does not start with #EXTM3U".into(),
            ));
        }
        let mut p = MediaPlaylist::new(kind.unwrap_or(PlaylistKind::Event), 0);
        p.ended = false;
        let mut declared_kind = None;
        let mut saw_discontinuity_sequence = false;
        let mut saw_target_duration = false;
        let mut disc = false;
        let mut pdt = None;
        let mut dur = None;
        for line in lines {
            if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
                p.target_duration = v.parse().map_err(|_| bad(line))?;
                saw_target_duration = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                p.media_sequence = v.parse().map_err(|_| bad(line))?;
            } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
                p.discontinuity_sequence = v.parse().map_err(|_| bad(line))?;
                saw_discontinuity_sequence = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PLAYLIST-TYPE:") {
                declared_kind = Some(match v {
                    "VOD" => PlaylistKind::Vod,
                    "EVENT" => PlaylistKind::Event,
                    _ => return Err(bad(line)),
                });
            } else if line == "#EXT-X-INDEPENDENT-SEGMENTS" {
                p.style.independent_segments = true;
            } else if line == "#EXT-X-DISCONTINUITY" {
                disc = true;
            } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                pdt = Some(parse_pdt(v).ok_or_else(|| bad(line))?);
            } else if let Some(v) = line.strip_prefix("#EXTINF:") {
                let secs = v.split(',').next().unwrap_or_default();
                dur = Some(parse_extinf(secs).ok_or_else(|| bad(line))?);
            } else if line == "#EXT-X-ENDLIST" {
                p.ended = true;
            } else if !line.starts_with('#') {
                let duration = dur.take().ok_or_else(|| bad(line))?;
                let sequence = p.next_sequence();
                let discontinuity = std::mem::take(&mut disc);
                // Only some segments carry a date; the others follow on.
                let follows = p.segments.back().filter(|_| !discontinuity);
                let pdt_ms = pdt.take().or_else(|| {
                    follows.and_then(|prev| Some(prev.pdt_ms? + prev.duration.as_millis()))
                });
                p.segments.push_back(PlaylistSegment {
                    sequence,
                    uri: line.to_string(),
                    duration,
                    discontinuity,
                    pdt_ms,
                });
            }
        }
        if !saw_target_duration {
            return Err(Error::Config(
                "playlist without #EXT-X-TARGETDURATION".into(),
            ));
        }
        if kind.is_some() && p.target_duration == 0 {
            // Resuming one with no room for any segment would lose them all.
            return Err(Error::Config(
                "playlist with #EXT-X-TARGETDURATION:0".into(),
            ));
        }
        // Written the way it was read: a recording (independent segments,
        // no discontinuity sequence) or a live playlist.
        p.style = if p.style.independent_segments && !saw_discontinuity_sequence {
            Style::RECORDING
        } else {
            Style {
                discontinuity_sequence_tag: saw_discontinuity_sequence,
                ..p.style
            }
        };
        p.kind = match (kind, declared_kind) {
            (Some(k), _) => k,
            (None, Some(k)) => k,
            (None, None) => PlaylistKind::Live {
                window: p.duration(),
            },
        };
        Ok(p)
    }
}

/// `#EXTINF` value: seconds with six decimals, computed from integer ticks.
pub fn format_extinf(d: Dur90k) -> String {
    let micros =
        (d.0 as i128 * 1_000_000 + TICKS_PER_SECOND as i128 / 2) / TICKS_PER_SECOND as i128;
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn parse_extinf(s: &str) -> Option<Dur90k> {
    let secs: f64 = s.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0)
        .then(|| Dur90k((secs * TICKS_PER_SECOND as f64).round() as i64))
}

/// Reads a PROGRAM-DATE-TIME: RFC 3339, or the ISO 8601 basic offset
/// (`+0000`) that ffmpeg's HLS muxer writes.
fn parse_pdt(v: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v)
        .or_else(|_| chrono::DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.timestamp_millis())
}

/// ISO 8601 with milliseconds and a zone, as `#EXT-X-PROGRAM-DATE-TIME` wants.
pub fn format_pdt(unix_ms: i64) -> String {
    use chrono::Datelike;
    // RFC 3339 has four-digit years: a date outside 0000-9999 would be
    // written with a sign and not parse back, so it falls back to the
    // epoch like a date chrono cannot represent at all.
    chrono::DateTime::from_timestamp_millis(unix_ms)
        .filter(|t| (0..=9999).contains(&t.year()))
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(sequence: u64, secs_x10: i64, discontinuity: bool) -> PlaylistSegment {
        PlaylistSegment {
            sequence,
            uri: format!("{sequence}.ts"),
            duration: Dur90k(secs_x10 * 9_000),
            discontinuity,
            pdt_ms: Some(1_700_000_000_000 + sequence as i64 * 4_000),
        }
    }

    #[test]
    fn skipping_ahead_drops_the_list_and_keeps_both_sequences_increasing() {
        let live = PlaylistKind::Live {
            window: Dur90k::from_secs(40),
        };
        let mut p = MediaPlaylist::new(live, 8);
        for (i, d) in [(0, false), (1, true), (2, false)] {
            p.push(seg(i, 40, d)).unwrap();
        }
        assert!(p.skip_to(2).is_empty(), "behind: nothing changes");
        assert!(p.skip_to(3).is_empty(), "already due: nothing changes");
        assert_eq!(p.next_sequence(), 3);
        let gone = p.skip_to(7);
        assert_eq!(
            gone.iter().map(|s| s.sequence).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!((p.media_sequence(), p.next_sequence()), (7, 7));
        // The dropped segment with a discontinuity is counted, as if it had slid out.
        assert_eq!(p.discontinuity_sequence(), 1);
        p.push(seg(7, 40, true)).unwrap();
        let text = p.render();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:7\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"), "{text}");
        let back = MediaPlaylist::parse(&text, live).unwrap();
        assert_eq!(back.next_sequence(), 8);
    }

    #[test]
    fn live_window_slides_and_counts_discontinuities() {
        let mut p = MediaPlaylist::new(
            PlaylistKind::Live {
                window: Dur90k::from_secs(12),
            },
            8,
        );
        for i in 0..3 {
            assert!(p.push(seg(i, 40, false)).unwrap().is_empty());
        }
        assert!(p.push(seg(3, 40, true)).unwrap().len() == 1);
        assert!(p.push(seg(4, 40, false)).unwrap().len() == 1);
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:8\n#EXT-X-MEDIA-SEQUENCE:2\n\
             #EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n#EXTINF:4.000000,\n2.ts\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:32.000Z\n#EXTINF:4.000000,\n3.ts\n\
             #EXTINF:4.000000,\n4.ts\n"
        );
        // Sliding the discontinuity out raises DISCONTINUITY-SEQUENCE.
        p.push(seg(5, 40, false)).unwrap();
        let text = p.render();
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:3\n#EXT-X-DISCONTINUITY-SEQUENCE:0"),
            "{text}"
        );
        p.push(seg(6, 40, false)).unwrap();
        let text = p.render();
        assert!(
            text.contains("#EXT-X-MEDIA-SEQUENCE:4\n#EXT-X-DISCONTINUITY-SEQUENCE:1"),
            "{text}"
        );
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    }

    #[test]
    fn vod_ends_and_refuses_overlong_segments() {
        let mut p = MediaPlaylist::new(PlaylistKind::Event, 4);
        p.push(seg(0, 44, false)).unwrap();
        assert!(p.push(seg(1, 45, false)).is_err(), "4.5 s rounds to 5 > 4");
        p.push(PlaylistSegment {
            duration: Dur90k(3003 * 60),
            ..seg(1, 0, false)
        })
        .unwrap();
        p.end();
        assert_eq!(
            p.render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-TARGETDURATION:4\n\
             #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:4.400000,\n0.ts\n\
             #EXTINF:2.002000,\n1.ts\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn parse_round_trips_render() {
        let mut p = MediaPlaylist::new(
            PlaylistKind::Live {
                window: Dur90k::from_secs(100),
            },
            8,
        );
        p.push(seg(0, 40, false)).unwrap();
        p.push(seg(1, 33, true)).unwrap();
        let back = MediaPlaylist::parse(
            &p.render(),
            PlaylistKind::Live {
                window: Dur90k::from_secs(100),
            },
        )
        .unwrap();
        assert_eq!(back.render(), p.render());
        assert_eq!(back.next_sequence(), 2);
    }

    /// Found by the `playlist` fuzz target: a negative duration was
    /// accepted and rendered as `#EXTINF:0.-721600,`, which `parse` (the
    /// resume path) then refused.
    #[test]
    fn fuzz_regression_playlist_negative_duration() {
        let mut p = MediaPlaylist::new(PlaylistKind::Event, 4);
        let before = p.clone();
        let err = p
            .push(PlaylistSegment {
                duration: Dur90k(-64_944),
                ..seg(0, 0, false)
            })
            .unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        assert_eq!(p, before);
        p.push(seg(0, 0, false)).unwrap();
        assert!(p.render().contains("#EXTINF:0.000000,\n0.ts\n"));
        MediaPlaylist::parse(&p.render(), PlaylistKind::Event).unwrap();
    }

    /// Found by the `playlist` fuzz target: a date after 9999-12-31 was
    /// written as `+48508-03-16T...`, which `parse` (the resume path)
    /// refused, so a restart would have discarded the playlist.
    #[test]
    fn fuzz_regression_playlist_pdt_beyond_year_9999() {
        let far = 1_468_580_000_000_000_i64; // year 48508
        assert_eq!(format_pdt(far), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_pdt(-62_198_755_200_000), "1970-01-01T00:00:00.000Z"); // year -1
        assert_eq!(format_pdt(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        let mut p = MediaPlaylist::new(PlaylistKind::Event, 4);
        p.push(PlaylistSegment {
            pdt_ms: Some(far),
            ..seg(0, 40, false)
        })
        .unwrap();
        let back = MediaPlaylist::parse(&p.render(), PlaylistKind::Event).unwrap();
        assert_eq!(back.render(), p.render());
    }

    #[test]
    fn extinf_is_exact_for_ntsc() {
        assert_eq!(format_extinf(Dur90k(540_540)), "6.006000");
        assert_eq!(format_extinf(Dur90k(3003)), "0.033367");
    }

    fn recorded(sequence: u64, ticks: i64, pdt_ms: i64, discontinuity: bool) -> PlaylistSegment {
        PlaylistSegment {
            sequence,
            uri: format!("/live/s/{sequence}.ts"),
            duration: Dur90k(ticks),
            discontinuity,
            pdt_ms: Some(pdt_ms),
        }
    }

    /// The text hlsd serves for a finished recording (exact, as before the
    /// playlist models were merged).
    #[test]
    fn recording_exact_text() {
        let p = MediaPlaylist::recording(
            true,
            vec![
                recorded(7, 180_000, 1_700_000_000_000, false),
                recorded(8, 449_999, 1_700_000_002_000, false),
                recorded(9, 90_000, 1_700_000_100_000, true),
            ],
        );
        let text = p.render();
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:2.000000,\n/live/s/7.ts\n\
             #EXTINF:4.999989,\n/live/s/8.ts\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:15:00.000Z\n#EXTINF:1.000000,\n/live/s/9.ts\n#EXT-X-ENDLIST\n"
        );
        let back = MediaPlaylist::parse_any(&text).unwrap();
        assert_eq!(back.kind(), PlaylistKind::Vod);
        assert!(back.is_ended());
        let segs: Vec<_> = back.segments().collect();
        assert_eq!(segs.len(), 3);
        assert!(segs[2].discontinuity);
        assert_eq!(segs[2].pdt_ms, Some(1_700_000_100_000));
        assert_eq!(back.render(), text);
        // Still growing: an EVENT playlist without ENDLIST.
        let open = MediaPlaylist::recording(false, vec![recorded(0, 90_000, 0, false)]);
        let text = open.render();
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n") && !text.contains("ENDLIST"));
    }

    #[test]
    fn recording_target_duration_rounds_half_up() {
        assert_eq!(rounded_seconds(Dur90k(10 * 90_000 + 44_999)), 10);
        assert_eq!(rounded_seconds(Dur90k(10 * 90_000 + 45_000)), 11);
        let p = MediaPlaylist::recording(true, vec![recorded(1, 10 * 90_000 + 45_000, 0, false)]);
        assert!(p.render().contains("#EXT-X-TARGETDURATION:11\n"));
        assert_eq!(
            MediaPlaylist::recording(true, Vec::new()).target_duration(),
            1
        );
    }

    #[test]
    fn recording_restates_the_date_only_where_it_drifted() {
        let p = MediaPlaylist::recording(
            true,
            vec![
                recorded(1, 180_000, 10_000, false),
                recorded(2, 180_000, 12_400, false),
                recorded(3, 180_000, 15_400, false),
            ],
        );
        let text = p.render();
        assert_eq!(
            text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
            2,
            "{text}"
        );
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:15.400Z\n#EXTINF:2.000000,\n/live/s/3.ts"
        ));
        // Live playlists never restate: the device clock is their truth.
        let mut live = MediaPlaylist::new(PlaylistKind::Event, 4);
        for s in p.segments() {
            live.push(PlaylistSegment {
                sequence: live.next_sequence(),
                ..s.clone()
            })
            .unwrap();
        }
        assert_eq!(
            live.render().matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
            1
        );
    }

    #[test]
    fn reads_ffmpeg_dates_and_refuses_garbage() {
        let p = MediaPlaylist::parse_any(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:35:23.836+0000\n0.ts\n",
        )
        .unwrap();
        let seg = p.segments().next().unwrap();
        assert_eq!(seg.pdt_ms, Some(1_795_599_323_836));
        assert!(matches!(p.kind(), PlaylistKind::Live { .. }) && !p.is_ended());
        assert!(MediaPlaylist::parse_any("hello").is_err());
        assert!(
            MediaPlaylist::parse_any("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:x,\n1.ts\n")
                .is_err()
        );
        assert!(MediaPlaylist::parse_any("#EXTM3U\n#EXTINF:1,\n1.ts\n").is_err());
    }

    /// The discontinuity sequence number of every segment (RFC 8216 6.2.2:
    /// DISCONTINUITY-SEQUENCE plus the tags before it) never changes while
    /// the window slides, including while a discontinuity is at its head.
    #[test]
    fn discontinuity_numbers_are_stable_across_reloads() {
        let mut p = MediaPlaylist::new(
            PlaylistKind::Live {
                window: Dur90k::from_secs(12),
            },
            8,
        );
        let mut numbers: std::collections::HashMap<String, u64> = Default::default();
        for i in 0..12 {
            p.push(seg(i, 40, i % 4 == 3)).unwrap();
            let text = p.render();
            let mut n: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:"))
                .unwrap()
                .parse()
                .unwrap();
            for line in text.lines() {
                if line == "#EXT-X-DISCONTINUITY" {
                    n += 1;
                } else if !line.starts_with('#') {
                    let first = *numbers.entry(line.to_string()).or_insert(n);
                    assert_eq!(first, n, "{line} renumbered:\n{text}");
                }
            }
            let back = MediaPlaylist::parse(&text, p.kind()).unwrap();
            assert_eq!(back.render(), text);
        }
        assert_eq!(numbers["11.ts"], 3);
    }
}
