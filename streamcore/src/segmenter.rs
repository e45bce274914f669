//! Keyframe segmenting, a pure state machine.
//!
//! A segment is cut before an IDR once it holds the target duration. The
//! playlist's `#EXT-X-TARGETDURATION` is the configured maximum and never
//! changes; no segment may round above it (RFC 8216 4.3.3.1). When no
//! keyframe arrives in time, the segment is closed at the limit and the
//! frames up to the next keyframe are dropped and counted: a segment that
//! does not start with a keyframe cannot be decoded on its own, and one
//! longer than the target duration breaks players (Chromium rejects the
//! whole playlist). The segment after such a gap is flagged as a
//! discontinuity. Choose the maximum above the worst keyframe interval you
//! accept (the default, twice the target, allows an 8 s GOP).

use crate::time::{Dur90k, Ts90k};
use crate::timing::TimedFrame;

/// Segment length settings.
#[derive(Debug, Clone, Copy)]
pub struct SegmenterConfig {
    /// Cut at the first keyframe once a segment is this long.
    pub target: Dur90k,
    /// `#EXT-X-TARGETDURATION` in whole seconds; no segment rounds above it.
    pub max_secs: u32,
}

impl SegmenterConfig {
    /// Longest segment that still rounds to `max_secs` or less.
    fn limit(&self) -> Dur90k {
        Dur90k::from_secs(self.max_secs as i64) + Dur90k(45_000 - 1)
    }
}

/// A segment that has been closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClosedSegment {
    pub first_pts: Ts90k,
    pub duration: Dur90k,
    pub frames: u32,
    pub keyframes: u32,
    pub discontinuity: bool,
    pub pdt_ms: i64,
}

/// What the segmenter needs to know of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentUnit {
    pub pts: Ts90k,
    pub duration: Dur90k,
    /// Decoding can start here.
    pub keyframe: bool,
    pub discontinuity: bool,
    pub pdt_ms: i64,
}

/// What to do with one frame, in this order: close the open segment, open
/// a new one, write the frame into the open segment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub close: Option<ClosedSegment>,
    /// Open a new segment; `true` when it starts a discontinuity.
    pub open: Option<bool>,
    pub write: bool,
}

#[derive(Debug, Clone, Copy)]
struct Open {
    first_pts: Ts90k,
    max_end: Ts90k,
    frames: u32,
    keyframes: u32,
    discontinuity: bool,
    pdt_ms: i64,
}

impl Open {
    /// Closes at `end`, but never longer than `limit`: a single frame whose
    /// duration (the step to the next capture time) exceeds the limit is
    /// listed at the limit rather than refused by the playlist.
    fn close(&self, end: Ts90k, limit: Dur90k) -> ClosedSegment {
        ClosedSegment {
            first_pts: self.first_pts,
            duration: (end - self.first_pts).min(limit),
            frames: self.frames,
            keyframes: self.keyframes,
            discontinuity: self.discontinuity,
            pdt_ms: self.pdt_ms,
        }
    }
}

/// Counters of the segmenter.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SegmenterStats {
    /// Frames dropped because no keyframe had started a segment yet
    /// (stream joined mid-GOP, or after a forced cut).
    pub dropped_before_keyframe: u64,
    /// Segments closed at the limit because no keyframe came in time.
    pub forced_cuts: u64,
}

/// Decides segment boundaries for a stream of timed frames.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    open: Option<Open>,
    /// The next segment starts a discontinuity (frames were dropped).
    gap_pending: bool,
    stats: SegmenterStats,
}

impl Segmenter {
    pub fn new(cfg: SegmenterConfig) -> Self {
        Segmenter {
            cfg,
            open: None,
            gap_pending: false,
            stats: SegmenterStats::default(),
        }
    }

    pub fn stats(&self) -> SegmenterStats {
        self.stats
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Decides what to do with the next frame (in decode order).
    pub fn push(&mut self, f: &TimedFrame) -> Decision {
        self.push_unit(SegmentUnit {
            pts: f.pts,
            duration: f.duration,
            keyframe: f.au.keyframe,
            discontinuity: f.discontinuity,
            pdt_ms: f.pdt_ms,
        })
    }

    /// [`push`](Self::push) for any unit of media: an audio-only stream
    /// segments its AAC frames (each one a random-access point).
    pub fn push_unit(&mut self, f: SegmentUnit) -> Decision {
        let mut d = Decision::default();
        let limit = self.cfg.limit();
        if let Some(open) = self.open {
            let over_limit = f.pts.max(open.max_end) + f.duration - open.first_pts > limit;
            if f.discontinuity {
                d.close = Some(open.close(open.max_end, limit));
                self.open = None;
                self.gap_pending = true;
            } else if f.keyframe
                && (over_limit || f.pts - open.first_pts >= self.cfg.target - f.duration / 2)
            {
                // Cut before the keyframe, also short of the target when
                // the keyframe would take the segment over the limit. The
                // segment ends where the keyframe starts, unless that is
                // itself past the limit (its PTS jumped ahead): then it
                // ends with its own last frame and the gap is a
                // discontinuity.
                if f.pts - open.first_pts <= limit {
                    d.close = Some(open.close(f.pts, limit));
                } else {
                    d.close = Some(open.close(open.max_end, limit));
                    self.gap_pending = true;
                }
                self.open = None;
            } else if over_limit && !f.keyframe {
                d.close = Some(open.close(open.max_end, limit));
                self.open = None;
                self.gap_pending = true;
                self.stats.forced_cuts += 1;
                tracing::warn!(
                    limit_secs = self.cfg.max_secs,
                    "no keyframe within the target duration: segment closed, frames dropped until the next keyframe"
                );
            }
        }
        if self.open.is_none() {
            if !f.keyframe {
                self.stats.dropped_before_keyframe += 1;
                return d;
            }
            let discontinuity = std::mem::replace(&mut self.gap_pending, false) || f.discontinuity;
            d.open = Some(discontinuity);
            self.open = Some(Open {
                first_pts: f.pts,
                max_end: f.pts,
                frames: 0,
                keyframes: 0,
                discontinuity,
                pdt_ms: f.pdt_ms,
            });
        }
        let open = self.open.as_mut().expect("opened above");
        open.frames += 1;
        open.keyframes += f.keyframe as u32;
        open.max_end = open.max_end.max(f.pts + f.duration);
        d.write = true;
        d
    }

    /// Ends the open segment before a keyframe that has not been pushed yet
    /// (it waits for its successor to know its duration), when `push` of
    /// that keyframe would cut there; `push` of it then opens the next
    /// segment. Returns `None` and changes nothing otherwise, including the
    /// unusual cuts (PTS jumps past the limit) that `push` handles.
    pub fn close_before_keyframe(
        &mut self,
        pts: Ts90k,
        expected_duration: Dur90k,
    ) -> Option<ClosedSegment> {
        let open = self.open?;
        let limit = self.cfg.limit();
        let over_limit = pts.max(open.max_end) + expected_duration - open.first_pts > limit;
        let long_enough = pts - open.first_pts >= self.cfg.target - expected_duration / 2;
        if (over_limit || long_enough) && pts - open.first_pts <= limit && pts >= open.max_end {
            self.open = None;
            return Some(open.close(pts, limit));
        }
        None
    }

    /// Closes the open segment (end of stream or source break).
    pub fn finish(&mut self) -> Option<ClosedSegment> {
        let open = self.open.take()?;
        Some(open.close(open.max_end, self.cfg.limit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_unit::AccessUnit;

    fn frame(pts_ms: i64, dur_ms: i64, keyframe: bool) -> TimedFrame {
        TimedFrame {
            au: AccessUnit {
                keyframe,
                ..AccessUnit::default()
            },
            dts: Ts90k(pts_ms * 90),
            pts: Ts90k(pts_ms * 90),
            duration: Dur90k::from_millis(dur_ms),
            discontinuity: false,
            pdt_ms: 0,
        }
    }

    fn run(frames: &[TimedFrame]) -> Vec<ClosedSegment> {
        let mut s = Segmenter::new(SegmenterConfig {
            target: Dur90k::from_secs(1),
            max_secs: 2,
        });
        let mut out: Vec<_> = frames.iter().filter_map(|f| s.push(f).close).collect();
        out.extend(s.finish());
        out
    }

    /// Found by the `live_stream_bytes` fuzz target: keyframes were exempt
    /// from the limit, so one whose PTS (reordering) or duration reached
    /// past it made a segment that rounds above TARGETDURATION, which the
    /// playlist then refused.
    #[test]
    fn fuzz_regression_segment_over_target_duration() {
        let limit = Dur90k::from_millis(2_500) - Dur90k(1);
        // A keyframe whose PTS jumped past the limit: the segment ends with
        // its last frame, and the next one starts a discontinuity.
        let segs = run(&[
            frame(0, 40, true),
            frame(40, 40, false),
            frame(2_600, 40, true),
        ]);
        assert_eq!(segs[0].duration, Dur90k::from_millis(80));
        assert!(segs[1].discontinuity);
        // A keyframe before the target whose duration reaches past the
        // limit: cut before it, at its start.
        let segs = run(&[frame(0, 40, true), frame(400, 2_500, true)]);
        assert_eq!(segs[0].duration, Dur90k::from_millis(400));
        assert!(!segs[1].discontinuity);
        // One frame longer than the limit on its own is listed at the limit.
        let segs = run(&[frame(0, 3_000, true)]);
        assert_eq!(segs[0].duration, limit);
        for s in [&segs[..]].concat() {
            assert!(s.duration <= limit);
        }
    }

    #[test]
    fn cuts_at_the_first_keyframe_after_the_target() {
        let mut frames: Vec<_> = (0..50).map(|i| frame(i * 40, 40, i % 30 == 0)).collect();
        frames.push(frame(2_000, 40, false));
        let segs = run(&frames);
        assert_eq!(segs[0].duration, Dur90k::from_millis(1_200));
        assert_eq!(segs[1].duration, Dur90k::from_millis(840));
        assert!(segs.iter().all(|s| !s.discontinuity));
    }

    #[test]
    fn closing_before_a_waiting_keyframe_matches_pushing_it() {
        let cfg = SegmenterConfig {
            target: Dur90k::from_secs(1),
            max_secs: 2,
        };
        let (mut early, mut late) = (Segmenter::new(cfg), Segmenter::new(cfg));
        let mut closed_early = Vec::new();
        let mut closed_late = Vec::new();
        for i in 0..100 {
            let f = frame(i * 40, 40, i % 30 == 0);
            if f.au.keyframe {
                // Too short for a cut at 0 and 600 ms: nothing changes.
                closed_early.extend(early.close_before_keyframe(f.pts, f.duration));
            }
            let d = early.push(&f);
            assert!(d.write);
            closed_early.extend(d.close);
            closed_late.extend(late.push(&f).close);
        }
        assert_eq!(closed_early, closed_late);
        assert_eq!(closed_early.len(), 3);
        assert!(closed_early
            .iter()
            .all(|s| s.duration == Dur90k::from_millis(1_200)));
        // Short of the target: no early close.
        let mut s = Segmenter::new(cfg);
        s.push(&frame(0, 40, true));
        assert_eq!(
            s.close_before_keyframe(Ts90k(40 * 90), Dur90k::from_millis(40)),
            None
        );
        assert!(s.is_open());
    }
}
