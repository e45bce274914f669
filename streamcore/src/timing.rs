//! Decode and presentation timestamps for access units, sans-IO.
//!
//! DTS comes from device capture times when the transport gives them
//! (tolerating jitter, 40/80 ms steps, frozen clocks and non-Unix origins),
//! else from the SPS VUI frame rate, else from a configured rate. The output
//! timeline is continuous and monotonic: after a break (a backward jump, a
//! gap over the threshold, a format change, or a source reconnect whose
//! clock cannot be followed) the next frame continues where the last one
//! ended and is flagged as the start of a new discontinuity domain.
//!
//! PTS restores display order from the picture order count with the SPS
//! reorder depth R: display slot k gets the DTS of decode slot k + R, which
//! is never earlier than the DTS of any frame that can occupy slot k. A frame
//! therefore leaves this stage R frames after it entered it.

use std::collections::VecDeque;

use crate::access_unit::AccessUnit;
use crate::time::{Dur90k, Ts90k};

/// A capture time within this distance of the wall clock is taken as Unix
/// milliseconds, usable for `#EXT-X-PROGRAM-DATE-TIME` (a year back covers
/// recordings played back from a device). Devices with other origins (one
/// real capture counts from 2^40 ms) get the wall clock instead.
const DEVICE_CLOCK_PLAUSIBLE_MS: i64 = 366 * 24 * 3600 * 1000;

/// Settings of the timing stage.
#[derive(Debug, Clone, Copy)]
pub struct TimingConfig {
    /// Frame duration used when neither capture times nor the SPS say.
    pub fallback_frame: Dur90k,
    /// A capture-time step larger than this starts a new domain.
    pub max_gap: Dur90k,
    /// A capture time further back than this starts a new domain; smaller
    /// backward steps are jitter and are smoothed over.
    pub max_backward: Dur90k,
}

impl Default for TimingConfig {
    fn default() -> Self {
        TimingConfig {
            fallback_frame: Dur90k(3600),
            max_gap: Dur90k::from_secs(3),
            max_backward: Dur90k::from_secs(1),
        }
    }
}

/// An access unit with its place on the output timeline.
#[derive(Debug, Clone)]
pub struct TimedFrame {
    pub au: AccessUnit,
    pub dts: Ts90k,
    pub pts: Ts90k,
    /// Until the next frame's DTS (the last observed step at a flush).
    pub duration: Dur90k,
    /// First frame of a new discontinuity domain.
    pub discontinuity: bool,
    /// Wall-clock time of this frame's presentation, Unix milliseconds.
    pub pdt_ms: i64,
}

/// Counters of the timing stage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TimingStats {
    pub frames: u64,
    pub domains: u64,
    /// Frames whose capture time did not advance (frozen or jittered back).
    pub repaired_timestamps: u64,
    /// Frames that arrived later in display order than the reorder depth allows.
    pub reorder_violations: u64,
}

struct Pending {
    au: AccessUnit,
    dts: Ts90k,
    pts: Option<Ts90k>,
    discontinuity: bool,
    pdt_anchor: PdtAnchor,
}

#[derive(Clone, Copy)]
enum PdtAnchor {
    /// Device clock is Unix time: PDT = capture time of the frame.
    Device(i64),
    /// Wall clock taken at a domain start, with that domain's first DTS.
    Wall { at_ms: i64, dts: Ts90k },
}

/// Assigns DTS/PTS/duration to access units in decode order.
pub struct Timeline {
    cfg: TimingConfig,
    /// Frames in decode order not yet released.
    pending: VecDeque<Pending>,
    /// (epoch, POC, pending index offset) of frames without a display slot.
    undisplayed: Vec<(u64, i64, u64)>,
    /// DTS of decode slots from the next display slot on.
    slot_dts: VecDeque<Ts90k>,
    /// Sequence number of `pending.front()`.
    pending_base: u64,
    next_seq: u64,
    epoch: u64,
    last_poc: i64,
    last_displayed: Option<(u64, i64)>,
    last_pts: Option<Ts90k>,
    reorder: u32,
    last_dts: Option<Ts90k>,
    last_capture_ms: Option<i64>,
    step: Dur90k,
    source_break: bool,
    domain_start_next: bool,
    wall_anchor: Option<(i64, Ts90k)>,
    /// Capture time and DTS of the last frame that carried a capture time.
    capture_anchor: Option<(i64, Ts90k)>,
    stats: TimingStats,
}

impl Timeline {
    pub fn new(cfg: TimingConfig) -> Self {
        Timeline {
            cfg,
            pending: VecDeque::new(),
            undisplayed: Vec::new(),
            slot_dts: VecDeque::new(),
            pending_base: 0,
            next_seq: 0,
            epoch: 0,
            last_poc: 0,
            last_displayed: None,
            last_pts: None,
            reorder: 0,
            last_dts: None,
            last_capture_ms: None,
            step: cfg.fallback_frame,
            source_break: false,
            domain_start_next: true,
            wall_anchor: None,
            capture_anchor: None,
            stats: TimingStats::default(),
        }
    }

    pub fn stats(&self) -> TimingStats {
        self.stats
    }

    /// The end of the timeline so far (last DTS plus its step).
    pub fn end(&self) -> Option<Ts90k> {
        self.last_dts.map(|d| d + self.step)
    }

    /// Where media stamped `capture_ms` by the same device clock (audio)
    /// is presented on the output timeline, by the last frame that carried
    /// a capture time. Display slot k is presented at the DTS of decode
    /// slot k + R (R the reorder depth), so a capture time maps R frames
    /// later than its decode slot.
    pub fn presentation_of_capture(&self, capture_ms: i64) -> Option<Ts90k> {
        let (ms, dts) = self.capture_anchor?;
        // Capture times are whatever the device sent: a wild one maps
        // nowhere rather than overflowing.
        let delta = capture_ms.checked_sub(ms)?.checked_mul(90)?;
        let shift = self.step.0.checked_mul(self.reorder as i64)?;
        Some(Ts90k(dts.0.checked_add(delta)?.checked_add(shift)?))
    }

    /// The source broke (reconnect): the next frame continues the timeline
    /// if its capture time follows on plausibly, else starts a new domain.
    pub fn mark_source_break(&mut self) {
        self.source_break = true;
    }

    /// Adds an access unit in decode order. `nominal` is the frame duration
    /// from the SPS, `reorder` its reorder depth, `now_ms` the wall clock.
    /// Released frames are appended to `out`.
    pub fn push(
        &mut self,
        au: AccessUnit,
        nominal: Option<Dur90k>,
        reorder: u32,
        now_ms: i64,
        out: &mut Vec<TimedFrame>,
    ) {
        let nominal = nominal.unwrap_or(self.cfg.fallback_frame);
        let mut new_domain = au.format_change || self.domain_start_next;
        let step = match (au.capture_ms, self.last_capture_ms) {
            (Some(now), Some(prev)) => {
                // Capture times are whatever the device sent (a u64 on the
                // wire): saturate, so a wild jump is just a large gap.
                let delta = Dur90k(now.saturating_sub(prev).saturating_mul(90));
                if delta > Dur90k::ZERO && delta <= self.cfg.max_gap {
                    // Across a reconnect the clock follows on: keep the
                    // timeline gapless rather than mark a discontinuity.
                    if self.source_break {
                        self.step
                    } else {
                        delta
                    }
                } else if delta <= Dur90k::ZERO && delta >= Dur90k::ZERO - self.cfg.max_backward {
                    if !self.source_break {
                        self.stats.repaired_timestamps += 1;
                    }
                    new_domain |= self.source_break;
                    self.step
                } else {
                    new_domain = true;
                    self.step
                }
            }
            _ => {
                new_domain |= self.source_break;
                if self.last_capture_ms.is_none() {
                    nominal
                } else {
                    self.step
                }
            }
        };
        self.source_break = false;
        if au.capture_ms.is_some() {
            self.last_capture_ms = au.capture_ms;
        }
        if new_domain && self.last_dts.is_some() {
            // Everything of the old domain leaves before the new one starts.
            self.flush_into(out);
        }
        let dts = match self.last_dts {
            Some(last) => last + step,
            None => Ts90k(0),
        };
        self.step = if step > Dur90k::ZERO { step } else { nominal };
        if au.capture_ms.is_none() {
            self.step = nominal;
        }
        self.last_dts = Some(dts);
        if let Some(ms) = au.capture_ms {
            self.capture_anchor = Some((ms, dts));
        }
        if new_domain {
            self.stats.domains += 1;
            self.domain_start_next = false;
            self.wall_anchor = Some((now_ms, dts));
            self.epoch += 1;
        }
        self.reorder = self.reorder.max(reorder);
        if au.keyframe {
            self.epoch += 1;
        }
        let poc = au.poc.unwrap_or(self.last_poc + 2);
        self.last_poc = poc;
        let pdt_anchor = match au.capture_ms {
            Some(ms) if ms.saturating_sub(now_ms).saturating_abs() < DEVICE_CLOCK_PLAUSIBLE_MS => {
                PdtAnchor::Device(ms)
            }
            _ => {
                let (at_ms, dts) = *self.wall_anchor.get_or_insert((now_ms, dts));
                PdtAnchor::Wall { at_ms, dts }
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.frames += 1;
        self.pending.push_back(Pending {
            au,
            dts,
            pts: None,
            discontinuity: new_domain,
            pdt_anchor,
        });
        self.undisplayed.push((self.epoch, poc, seq));
        self.slot_dts.push_back(dts);
        while self.undisplayed.len() > self.reorder as usize {
            self.display_next();
        }
        self.release(out, false);
    }

    /// The next frame to leave, when it is a keyframe waiting only for its
    /// successor (whose DTS gives its duration): its PTS and expected
    /// duration. Knowing a keyframe is next is enough to end a segment
    /// before it, a frame interval sooner than its release.
    pub fn waiting_keyframe(&self) -> Option<(Ts90k, Dur90k)> {
        let front = self.pending.front()?;
        match front.pts {
            Some(pts) if front.au.keyframe && !front.discontinuity && self.pending.len() == 1 => {
                Some((pts, self.step))
            }
            _ => None,
        }
    }

    /// Releases every frame held for reordering (end of stream or break).
    pub fn flush_into(&mut self, out: &mut Vec<TimedFrame>) {
        while !self.undisplayed.is_empty() {
            self.display_next();
        }
        self.release(out, true);
    }

    /// Forces the next frame to start a new domain (e.g. after frames were
    /// dropped downstream).
    pub fn start_new_domain(&mut self) {
        self.domain_start_next = true;
    }

    fn display_next(&mut self) {
        let (i, _) = self
            .undisplayed
            .iter()
            .enumerate()
            .min_by_key(|(_, (epoch, poc, _))| (*epoch, *poc))
            .expect("caller checks non-empty");
        let (epoch, poc, seq) = self.undisplayed.swap_remove(i);
        if let Some(last) = self.last_displayed {
            if (epoch, poc) < last {
                self.stats.reorder_violations += 1;
                if self.reorder < 16 {
                    self.reorder += 1;
                }
                tracing::warn!(
                    reorder = self.reorder,
                    "picture arrived later than the SPS reorder depth allows"
                );
            }
        }
        self.last_displayed = Some((epoch, poc));
        // Display slot k gets the DTS of decode slot k + R (extrapolated
        // with the last step when the stream ended before that slot).
        let r = self.reorder as usize;
        let mut pts = match self.slot_dts.get(r) {
            Some(&t) => t,
            None => {
                let last = *self.slot_dts.back().expect("a slot per undisplayed frame");
                last + self.step * (r as i64 + 1 - self.slot_dts.len() as i64)
            }
        };
        if let Some(prev) = self.last_pts {
            if pts <= prev {
                pts = prev + Dur90k(1);
            }
        }
        self.last_pts = Some(pts);
        self.slot_dts.pop_front();
        let idx = (seq - self.pending_base) as usize;
        self.pending[idx].pts = Some(pts);
    }

    fn release(&mut self, out: &mut Vec<TimedFrame>, all: bool) {
        while let Some(front) = self.pending.front() {
            if front.pts.is_none() {
                break;
            }
            let duration = match self.pending.get(1) {
                Some(next) => next.dts - front.dts,
                None if all => self.step,
                None => break,
            };
            let p = self.pending.pop_front().expect("front exists");
            self.pending_base += 1;
            let pts = p.pts.expect("checked above");
            let pdt_ms = match p.pdt_anchor {
                PdtAnchor::Device(ms) => ms + (pts - p.dts).as_millis(),
                PdtAnchor::Wall { at_ms, dts } => at_ms + (pts - dts).as_millis(),
            };
            out.push(TimedFrame {
                au: p.au,
                dts: p.dts,
                pts,
                duration,
                discontinuity: p.discontinuity,
                pdt_ms,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn au(capture_ms: Option<i64>) -> AccessUnit {
        AccessUnit {
            keyframe: true,
            capture_ms,
            ..AccessUnit::default()
        }
    }

    /// Found by the `live_stream_frames` fuzz target: capture times far
    /// apart (a device sends a u64; we see it as i64) overflowed the
    /// millisecond difference and its conversion to 90 kHz ticks.
    #[test]
    fn fuzz_regression_timing_capture_time_overflow() {
        let mut t = Timeline::new(TimingConfig::default());
        let mut out = Vec::new();
        for ms in [i64::MIN, i64::MAX, -1, i64::MAX / 90 + 1, 0] {
            t.push(au(Some(ms)), None, 0, 1_700_000_000_000, &mut out);
        }
        t.flush_into(&mut out);
        assert_eq!(out.len(), 5);
        // Every jump is beyond max_gap or max_backward: a new domain each
        // time, on a timeline that still advances by the nominal step.
        assert!(out.iter().all(|f| f.discontinuity));
        for w in out.windows(2) {
            assert_eq!(w[1].dts - w[0].dts, Dur90k(3600));
        }
    }
}
