//! The simulated dashcam's SD card, for `devsim`: the deterministic list of
//! recordings it answers a 0x9205 query with ([`SdCard`], [`ResourceQuery`]),
//! the looped "tape" a 0x9201 playback reads its frames from ([`Tape`]), the
//! state of one playback under 0x9202 controls ([`Playback`]), and when
//! position reports carry alarm bits ([`AlarmPlan`]).
//!
//! Sans-IO like the codecs: times go in, frames and decisions come out;
//! devsim owns the sockets and the clock, so all of this is tested without
//! either. Field meanings follow JT/T 1078-2016 section 5.5 (tables 24-29)
//! as `ingestd::jt808` encodes them; times are Unix ms UTC.

use std::sync::Arc;
use std::time::Duration;

use ingestd::jt808::{
    playback_control, playback_mode, speed_multiplier, PlatformCommand, Resource,
};

/// Bit 1 of the 0x0200 alarm word: overspeed (JT/T 808 table 24).
pub const ALARM_OVERSPEED: u64 = 1 << 1;
/// High word, bit 5 of the video alarms (JT/T 1078-2016 table 13):
/// abnormal driving behaviour.
pub const VIDEO_ALARM_ABNORMAL_DRIVING: u64 = 1 << (32 + 5);

/// What the card holds: one recording of `clip_ms` per channel every
/// `every_ms` (starts aligned to multiples of `every_ms` in Unix time, so
/// two queries see the same recordings), for the last `history_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdCard {
    pub channels: Vec<u8>,
    pub clip_ms: i64,
    pub every_ms: i64,
    pub history_ms: i64,
    /// AV type of every recording: 0 audio and video, 1 audio, 2 video.
    pub av_type: u8,
    /// Bit rate of the recordings, for plausible file sizes.
    pub bytes_per_sec: u64,
}

/// An alarm the device reported, so the recordings it falls in carry its
/// bits (as a dashcam flags the files it was recording at the time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlarmSpan {
    pub start_ms: i64,
    pub end_ms: i64,
    pub bits: u32,
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// The synthetic alarm flags of the recording in period `k`: every 7th an
/// overspeed, every 13th a video alarm (some both), the same on every
/// channel since an alarm concerns the vehicle.
pub fn synthetic_alarm(k: i64) -> u64 {
    let mut a = 0;
    if k.rem_euclid(7) == 0 {
        a |= ALARM_OVERSPEED;
    }
    if k.rem_euclid(13) == 0 {
        a |= VIDEO_ALARM_ABNORMAL_DRIVING;
    }
    a
}

impl SdCard {
    /// Every finished recording at `now_ms` (second precision, as BCD times
    /// carry), by start time and then by channel.
    pub fn recordings(&self, now_ms: i64, alarms: &[AlarmSpan]) -> Vec<Resource> {
        let every = self.every_ms.max(1000);
        let clip = self.clip_ms.clamp(1000, every);
        let now = now_ms.div_euclid(1000) * 1000;
        let first = ceil_div(now - self.history_ms.max(0), every);
        let last = (now - clip).div_euclid(every);
        let mut out = Vec::new();
        for k in first..=last {
            let start_ms = k * every;
            let end_ms = start_ms + clip;
            let reported = alarms
                .iter()
                .filter(|a| a.start_ms < end_ms && a.end_ms > start_ms)
                .fold(0u64, |acc, a| acc | u64::from(a.bits));
            for &channel in &self.channels {
                let bytes = self.bytes_per_sec.saturating_mul(clip as u64) / 1000;
                // A little variation, as encoders give: never two equal sizes in a row.
                let size = bytes + (k.rem_euclid(10) as u64) * 1024 + u64::from(channel) * 64;
                out.push(Resource {
                    channel,
                    start_ms,
                    end_ms,
                    alarm: synthetic_alarm(k) | reported,
                    av_type: self.av_type,
                    stream_type: 1,
                    storage_type: 1,
                    size: size.min(u64::from(u32::MAX)) as u32,
                });
            }
        }
        out
    }

    /// The recordings a 0x9205 query asks for.
    pub fn query(&self, now_ms: i64, q: &ResourceQuery, alarms: &[AlarmSpan]) -> Vec<Resource> {
        let mut r = self.recordings(now_ms, alarms);
        r.retain(|r| q.matches(r));
        r
    }
}

/// The filter of a 0x9205 query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceQuery {
    /// 0 = every channel.
    pub channel: u8,
    /// `None` = unbounded.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// 0 = any; else a recording matches if it has one of these bits.
    pub alarm_mask: u64,
    /// 1 recordings with audio, 2 recordings with video, else any.
    pub av_type: u8,
    /// 0 = any.
    pub stream_type: u8,
    /// 0 = any.
    pub storage_type: u8,
}

impl ResourceQuery {
    /// The filter of a decoded 0x9205 (`None` for other commands).
    pub fn from_command(c: &PlatformCommand) -> Option<Self> {
        match *c {
            PlatformCommand::QueryResources {
                channel,
                start_ms,
                end_ms,
                alarm_mask,
                av_type,
                stream_type,
                storage_type,
            } => Some(ResourceQuery {
                channel,
                start_ms,
                end_ms,
                alarm_mask,
                av_type,
                stream_type,
                storage_type,
            }),
            _ => None,
        }
    }

    /// Whether `r` is on the channel, overlaps the time range, has one of
    /// the alarm bits and the asked types.
    pub fn matches(&self, r: &Resource) -> bool {
        let channel = self.channel == 0 || r.channel == self.channel;
        let after = !matches!(self.start_ms, Some(s) if r.end_ms <= s);
        let before = !matches!(self.end_ms, Some(e) if r.start_ms >= e);
        let alarm = self.alarm_mask == 0 || r.alarm & self.alarm_mask != 0;
        let av = match self.av_type {
            1 => matches!(r.av_type, 0 | 1),
            2 => matches!(r.av_type, 0 | 2),
            _ => true,
        };
        let stream = self.stream_type == 0 || r.stream_type == self.stream_type;
        let storage = self.storage_type == 0 || r.storage_type == self.storage_type;
        channel && after && before && alarm && av && stream && storage
    }
}

/// One frame of the input, as the tape knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapeFrame {
    /// Index of the frame in the list given to [`Tape::new`].
    pub unit: usize,
    /// Time within one pass of the tape.
    pub offset_ms: u64,
    pub key: bool,
    pub audio: bool,
}

/// The input looped without end from the start of a playback: what the
/// card "recorded" at any instant. Starts at the input's first keyframe, so
/// every pass (and so every playback) opens with one.
#[derive(Debug, Clone)]
pub struct Tape {
    frames: Vec<TapeFrame>,
    period_ms: u64,
}

/// A frame on the tape: pass `lap`, frame `idx` of the pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    lap: u64,
    idx: usize,
}

impl Tape {
    /// `frames` are (time ms, keyframe, audio) of the input in time order.
    /// The pass lasts from the first keyframe to one video frame after the
    /// last frame. `None` if nothing is left.
    pub fn new(frames: impl IntoIterator<Item = (u64, bool, bool)>) -> Option<Tape> {
        let all: Vec<TapeFrame> = frames
            .into_iter()
            .enumerate()
            .map(|(unit, (offset_ms, key, audio))| TapeFrame {
                unit,
                offset_ms,
                key: key && !audio,
                audio,
            })
            .collect();
        let cut = all.iter().position(|f| f.key).unwrap_or(0);
        let mut frames = all[cut..].to_vec();
        let base = frames.iter().map(|f| f.offset_ms).min()?;
        for f in &mut frames {
            f.offset_ms -= base;
        }
        frames.sort_by_key(|f| f.offset_ms);
        let video: Vec<u64> = frames
            .iter()
            .filter(|f| !f.audio)
            .map(|f| f.offset_ms)
            .collect();
        let step = match video.as_slice() {
            [first, .., last] => ((last - first) as f64 / (video.len() - 1) as f64)
                .round()
                .max(1.0) as u64,
            _ => 40,
        };
        let period_ms = frames.last()?.offset_ms + step;
        Some(Tape { frames, period_ms })
    }

    pub fn frames(&self) -> &[TapeFrame] {
        &self.frames
    }

    /// Length of one pass.
    pub fn period_ms(&self) -> u64 {
        self.period_ms
    }

    fn offset(&self, p: Pos) -> u64 {
        p.lap * self.period_ms + self.frames[p.idx].offset_ms
    }

    /// The keyframe at or before `rel_ms` from the start of the tape (a
    /// decoder needs one after a jump); with no keyframes at all, the first
    /// frame at or after it.
    fn locate(&self, rel_ms: u64) -> Pos {
        let lap = rel_ms / self.period_ms;
        let off = rel_ms % self.period_ms;
        let n = self.frames.partition_point(|f| f.offset_ms <= off);
        if let Some(idx) = self.frames[..n].iter().rposition(|f| f.key) {
            return Pos { lap, idx };
        }
        if n < self.frames.len() {
            Pos { lap, idx: n }
        } else {
            Pos {
                lap: lap + 1,
                idx: 0,
            }
        }
    }

    fn step(&self, p: Pos, forward: bool) -> Option<Pos> {
        if forward {
            Some(if p.idx + 1 < self.frames.len() {
                Pos {
                    idx: p.idx + 1,
                    ..p
                }
            } else {
                Pos {
                    lap: p.lap + 1,
                    idx: 0,
                }
            })
        } else if p.idx > 0 {
            Some(Pos {
                idx: p.idx - 1,
                ..p
            })
        } else if p.lap > 0 {
            Some(Pos {
                lap: p.lap - 1,
                idx: self.frames.len() - 1,
            })
        } else {
            None
        }
    }
}

/// The next frame a playback sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub pos: Pos,
    /// Index of the frame in the list given to [`Tape::new`].
    pub unit: usize,
    /// Recording time (Unix ms): the packet timestamp.
    pub time_ms: i64,
}

/// What a 0x9202 control did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOutcome {
    Applied,
    /// Close the media connection now.
    Stop,
    /// Unknown control, or a seek without a time.
    Refused,
}

/// One playback of `[start_ms, end_ms)` of the tape: which frame comes
/// next, in which direction, at what speed, paused or not.
#[derive(Debug, Clone)]
pub struct Playback {
    tape: Arc<Tape>,
    start_ms: i64,
    end_ms: i64,
    forward: bool,
    keyframes_only: bool,
    speed: u32,
    paused: bool,
    single: bool,
    finished: bool,
    audio: bool,
    video: bool,
    cursor: Pos,
    /// Whether the frame at `cursor` went out already (after a seek it has
    /// not).
    cursor_sent: bool,
}

impl Playback {
    /// A playback as 0x9201 asks for it: `mode` per [`playback_mode`],
    /// `speed_code` per `speed_code` (used by fast forward, rewind and
    /// keyframes only; normal plays at 1x), `av_type` 1 audio only, 2 video
    /// only, else both. Rewind starts at the end and goes backwards.
    pub fn new(
        tape: Arc<Tape>,
        start_ms: i64,
        end_ms: i64,
        mode: u8,
        speed_code: u8,
        av_type: u8,
    ) -> Self {
        let fast = speed_multiplier(speed_code);
        let (forward, keyframes_only, speed, single) = match mode {
            playback_mode::FAST_FORWARD => (true, false, fast, false),
            playback_mode::KEYFRAME_REWIND => (false, true, fast, false),
            playback_mode::KEYFRAMES_ONLY => (true, true, fast, false),
            playback_mode::SINGLE_FRAME => (true, true, 1, true),
            _ => (true, false, 1, false),
        };
        let (audio, video) = match av_type {
            1 => (true, false),
            2 => (false, true),
            _ => (true, true),
        };
        let mut p = Playback {
            tape,
            start_ms,
            end_ms,
            forward,
            keyframes_only,
            speed,
            paused: false,
            single,
            finished: end_ms <= start_ms,
            audio,
            video,
            cursor: Pos { lap: 0, idx: 0 },
            cursor_sent: false,
        };
        let from = if forward { start_ms } else { end_ms - 1 };
        p.seek(from);
        p
    }

    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }
    pub fn speed(&self) -> u32 {
        self.speed
    }
    pub fn is_paused(&self) -> bool {
        self.paused
    }
    pub fn is_forward(&self) -> bool {
        self.forward
    }
    pub fn keyframes_only(&self) -> bool {
        self.keyframes_only
    }

    fn time(&self, p: Pos) -> i64 {
        self.start_ms + self.tape.offset(p) as i64
    }

    fn wanted(&self, p: Pos) -> bool {
        let f = &self.tape.frames[p.idx];
        if f.audio {
            self.audio && !self.keyframes_only
        } else {
            self.video && (f.key || !self.keyframes_only)
        }
    }

    fn seek(&mut self, t: i64) {
        let t = t.clamp(self.start_ms, (self.end_ms - 1).max(self.start_ms));
        self.cursor = self.tape.locate((t - self.start_ms) as u64);
        self.cursor_sent = false;
    }

    /// The frame to send next; `None` once the span is done (or stopped).
    pub fn next_frame(&self) -> Option<Frame> {
        if self.finished {
            return None;
        }
        let mut q = if self.cursor_sent {
            self.tape.step(self.cursor, self.forward)?
        } else {
            self.cursor
        };
        // One pass holds every kind of frame there is: if none is wanted
        // within it, none ever will be.
        for _ in 0..=self.tape.frames.len() {
            let t = self.time(q);
            if t < self.start_ms || t >= self.end_ms {
                return None;
            }
            if self.wanted(q) {
                return Some(Frame {
                    pos: q,
                    unit: self.tape.frames[q.idx].unit,
                    time_ms: t,
                });
            }
            q = self.tape.step(q, self.forward)?;
        }
        None
    }

    /// Records that `f` (from [`Playback::next_frame`]) went out.
    pub fn sent(&mut self, f: &Frame) {
        self.cursor = f.pos;
        self.cursor_sent = true;
        if self.single {
            self.finished = true;
        }
    }

    /// Wall time between two frames at this speed.
    pub fn wall_between(&self, from_ms: i64, to_ms: i64) -> Duration {
        Duration::from_millis(from_ms.abs_diff(to_ms) / u64::from(self.speed.max(1)))
    }

    /// Whether [`Playback::control`] would take this control: a known one,
    /// and a seek with a time (so a device can answer before applying it).
    pub fn accepts(control: u8, seek_ms: Option<i64>) -> bool {
        control <= playback_control::KEYFRAMES_ONLY
            && (control != playback_control::SEEK || seek_ms.is_some())
    }

    /// Applies a 0x9202 control (`control` per [`playback_control`]).
    pub fn control(&mut self, control: u8, speed_code: u8, seek_ms: Option<i64>) -> ControlOutcome {
        if !Self::accepts(control, seek_ms) {
            return ControlOutcome::Refused;
        }
        match control {
            playback_control::RESUME => self.paused = false,
            playback_control::PAUSE => self.paused = true,
            playback_control::STOP => {
                self.finished = true;
                return ControlOutcome::Stop;
            }
            playback_control::FAST_FORWARD => {
                self.forward = true;
                self.keyframes_only = false;
                self.speed = speed_multiplier(speed_code);
            }
            playback_control::KEYFRAME_REWIND => {
                self.forward = false;
                self.keyframes_only = true;
                self.speed = speed_multiplier(speed_code);
            }
            playback_control::SEEK => self.seek(seek_ms.unwrap_or(self.start_ms)),
            playback_control::KEYFRAMES_ONLY => {
                self.forward = true;
                self.keyframes_only = true;
                if speed_code != 0 {
                    self.speed = speed_multiplier(speed_code);
                }
            }
            _ => return ControlOutcome::Refused,
        }
        ControlOutcome::Applied
    }
}

/// When position reports carry alarm bits: alarms start at the given
/// offsets from login and last a while; while one lasts the device reports
/// every second (as dashcams do during an alarm), and it reports at once
/// when an alarm starts and when it clears.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlarmPlan {
    windows: Vec<(Duration, Duration)>,
    bits: u32,
}

impl AlarmPlan {
    pub fn new(at: &[Duration], lasts: Duration, bits: u32) -> Self {
        let mut windows: Vec<_> = at.iter().map(|&s| (s, s + lasts)).collect();
        windows.sort();
        AlarmPlan { windows, bits }
    }

    /// The alarm word of a report `t` after login.
    pub fn bits_at(&self, t: Duration) -> u32 {
        if self.windows.iter().any(|&(s, e)| s <= t && t < e) {
            self.bits
        } else {
            0
        }
    }

    /// When the report after the one at `last` is due (`every` apart
    /// without an alarm).
    pub fn next_report(&self, last: Duration, every: Duration) -> Duration {
        let step = if self.bits_at(last) != 0 {
            every.min(Duration::from_secs(1))
        } else {
            every
        };
        self.windows
            .iter()
            .flat_map(|&(s, e)| [s, e])
            .filter(|&edge| edge > last)
            .fold(last + step, Duration::min)
    }

    /// The alarms in Unix ms for a device that logged in at `login_ms`.
    pub fn spans(&self, login_ms: i64) -> Vec<AlarmSpan> {
        self.windows
            .iter()
            .map(|&(s, e)| AlarmSpan {
                start_ms: login_ms + s.as_millis() as i64,
                end_ms: login_ms + e.as_millis() as i64,
                bits: self.bits,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;
    // 2024-02-29 00:00:00 UTC, a multiple of 300 s.
    const T0: i64 = 1_709_164_800_000;

    fn card() -> SdCard {
        SdCard {
            channels: vec![1, 2],
            clip_ms: 60_000,
            every_ms: 300_000,
            history_ms: 24 * HOUR,
            av_type: 2,
            bytes_per_sec: 37_500,
        }
    }

    #[test]
    fn a_day_of_recordings_aligned_and_flagged() {
        // Just after a period starts: its clip is not done.
        let now = T0 + 500;
        let r = card().recordings(now, &[]);
        // 288 periods in 24 h; the one starting at T0 is still recording,
        // the one at T0 - 24 h is exactly 24 h old (BCD times have whole
        // seconds), so in.
        assert_eq!(r.len(), 2 * 288);
        assert_eq!(r[0].start_ms, T0 - 24 * HOUR);
        assert_eq!(r.last().unwrap().start_ms, T0 - 300_000);
        assert!(r
            .iter()
            .all(|e| e.end_ms - e.start_ms == 60_000 && e.start_ms % 300_000 == 0));
        assert_eq!((r[0].channel, r[1].channel), (1, 2));
        assert!(r.windows(2).all(|w| w[0].start_ms <= w[1].start_ms));
        let k = |e: &Resource| e.start_ms / 300_000;
        for e in &r {
            assert_eq!(e.alarm & ALARM_OVERSPEED != 0, k(e) % 7 == 0, "{e:?}");
            assert_eq!(
                e.alarm & VIDEO_ALARM_ABNORMAL_DRIVING != 0,
                k(e) % 13 == 0,
                "{e:?}"
            );
            // About 60 s at 300 kbit/s.
            assert!((2_250_000..2_300_000).contains(&e.size), "{e:?}");
        }
        // Deterministic: a query within the same second sees the same list;
        // a second later the oldest clip is more than 24 h old.
        assert_eq!(card().recordings(now + 400, &[]), r);
        assert_eq!(card().recordings(now + 1_000, &[]), r[2..]);
    }

    #[test]
    fn queries_filter_by_channel_time_alarm_and_type() {
        let sd = card();
        let all = sd.recordings(T0, &[]);
        let q = ResourceQuery {
            channel: 2,
            start_ms: Some(T0 - 2 * HOUR + 30_000),
            end_ms: Some(T0 - HOUR),
            ..Default::default()
        };
        let got = sd.query(T0, &q, &[]);
        // Overlap: the clip that started 30 s before the range is in; the
        // one starting exactly at its end is not.
        assert_eq!(got.len(), 12);
        assert_eq!(got[0].start_ms, T0 - 2 * HOUR);
        assert_eq!(got.last().unwrap().start_ms, T0 - HOUR - 300_000);
        assert!(got.iter().all(|e| e.channel == 2));
        let alarms = ResourceQuery {
            alarm_mask: ALARM_OVERSPEED,
            ..Default::default()
        };
        let flagged = sd.query(T0, &alarms, &[]);
        assert!(!flagged.is_empty());
        assert_eq!(
            flagged,
            all.iter()
                .filter(|e| e.alarm & ALARM_OVERSPEED != 0)
                .cloned()
                .collect::<Vec<_>>()
        );
        let audio = ResourceQuery {
            av_type: 1,
            ..Default::default()
        };
        assert!(
            sd.query(T0, &audio, &[]).is_empty(),
            "video-only recordings"
        );
        let backup = ResourceQuery {
            storage_type: 2,
            ..Default::default()
        };
        assert!(sd.query(T0, &backup, &[]).is_empty());
        let main = ResourceQuery {
            stream_type: 1,
            storage_type: 1,
            av_type: 2,
            ..Default::default()
        };
        assert_eq!(sd.query(T0, &main, &[]), all);
    }

    #[test]
    fn reported_alarms_flag_the_recordings_they_fall_in() {
        let sd = card();
        let a = AlarmSpan {
            start_ms: T0 - HOUR + 50_000,
            end_ms: T0 - HOUR + 70_000,
            bits: 1 << 0,
        };
        let r = sd.recordings(T0, &[a]);
        let hit: Vec<_> = r.iter().filter(|e| e.alarm & 1 != 0).collect();
        assert_eq!(hit.len(), 2, "both channels of one clip");
        assert!(hit.iter().all(|e| e.start_ms == T0 - HOUR));
    }

    /// 10 s at 25 fps with a keyframe every 2 s, as the fixtures are.
    fn tape() -> Arc<Tape> {
        Arc::new(Tape::new((0..250u64).map(|i| (i * 40, i % 50 == 0, false))).unwrap())
    }

    fn drain(p: &mut Playback) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(f) = p.next_frame() {
            out.push(f.time_ms);
            p.sent(&f);
        }
        out
    }

    #[test]
    fn normal_playback_covers_the_span_looping_the_input() {
        assert_eq!(tape().period_ms(), 10_000);
        let mut p = Playback::new(tape(), T0, T0 + 25_000, playback_mode::NORMAL, 3, 0);
        assert_eq!(p.speed(), 1, "normal ignores the speed field");
        let t = drain(&mut p);
        assert_eq!(t.len(), 625);
        assert_eq!((t[0], *t.last().unwrap()), (T0, T0 + 24_960));
        assert!(t.windows(2).all(|w| w[1] - w[0] == 40));
    }

    #[test]
    fn a_tape_starts_at_the_first_keyframe() {
        // Starts mid-GOP, with audio before the keyframe.
        let frames = [
            (0, false, false),
            (10, false, true),
            (40, true, false),
            (50, false, true),
            (80, false, false),
        ];
        let t = Tape::new(frames).unwrap();
        let units: Vec<_> = t.frames().iter().map(|f| (f.unit, f.offset_ms)).collect();
        assert_eq!(units, [(2, 0), (3, 10), (4, 40)]);
        assert_eq!(t.period_ms(), 80);
    }

    #[test]
    fn fast_forward_keyframes_and_rewind() {
        let mut ff = Playback::new(tape(), T0, T0 + 10_000, playback_mode::FAST_FORWARD, 3, 0);
        assert_eq!(ff.speed(), 4);
        assert_eq!(drain(&mut ff).len(), 250);
        assert_eq!(ff.wall_between(T0, T0 + 4_000), Duration::from_secs(1));
        let mut k = Playback::new(tape(), T0, T0 + 10_000, playback_mode::KEYFRAMES_ONLY, 0, 0);
        assert_eq!(
            drain(&mut k),
            [0, 2_000, 4_000, 6_000, 8_000].map(|d| T0 + d)
        );
        // Rewind starts at the last keyframe before the end and goes back.
        let mut r = Playback::new(
            tape(),
            T0,
            T0 + 15_000,
            playback_mode::KEYFRAME_REWIND,
            5,
            0,
        );
        assert_eq!(r.speed(), 16);
        assert_eq!(
            drain(&mut r),
            [14_000, 12_000, 10_000, 8_000, 6_000, 4_000, 2_000, 0].map(|d| T0 + d)
        );
        let mut one = Playback::new(tape(), T0, T0 + 10_000, playback_mode::SINGLE_FRAME, 0, 0);
        assert_eq!(drain(&mut one), [T0]);
    }

    #[test]
    fn controls_pause_seek_speed_and_stop() {
        let mut p = Playback::new(tape(), T0, T0 + 60_000, playback_mode::NORMAL, 0, 0);
        for _ in 0..10 {
            let f = p.next_frame().unwrap();
            p.sent(&f);
        }
        assert_eq!(
            p.control(playback_control::PAUSE, 0, None),
            ControlOutcome::Applied
        );
        assert!(p.is_paused());
        p.control(playback_control::RESUME, 0, None);
        assert!(!p.is_paused());
        assert_eq!(
            p.next_frame().unwrap().time_ms,
            T0 + 400,
            "resumes where it was"
        );
        // Seek lands on the keyframe at or before the time asked for.
        p.control(playback_control::SEEK, 0, Some(T0 + 31_000));
        assert_eq!(p.next_frame().unwrap().time_ms, T0 + 30_000);
        let f = p.next_frame().unwrap();
        p.sent(&f);
        assert_eq!(p.next_frame().unwrap().time_ms, T0 + 30_040);
        assert_eq!(
            p.control(playback_control::SEEK, 0, None),
            ControlOutcome::Refused
        );
        p.control(playback_control::FAST_FORWARD, 4, None);
        assert_eq!(p.speed(), 8);
        p.control(playback_control::KEYFRAMES_ONLY, 0, None);
        assert_eq!(p.next_frame().unwrap().time_ms, T0 + 32_000);
        assert_eq!(p.speed(), 8, "keyframes only keeps the speed without one");
        // Rewind after the keyframe at 32 s: the keyframe before it.
        let f = p.next_frame().unwrap();
        p.sent(&f);
        p.control(playback_control::KEYFRAME_REWIND, 2, None);
        assert_eq!(p.next_frame().unwrap().time_ms, T0 + 30_000);
        assert_eq!(p.speed(), 2);
        assert!(!p.is_forward());
        assert_eq!(p.control(9, 0, None), ControlOutcome::Refused);
        assert!(!Playback::accepts(7, None) && Playback::accepts(5, Some(T0)));
        assert_eq!(
            p.control(playback_control::STOP, 0, None),
            ControlOutcome::Stop
        );
        assert_eq!(p.next_frame(), None);
    }

    #[test]
    fn av_type_picks_audio_or_video() {
        let frames =
            (0..100u64).flat_map(|i| [(i * 40, i % 50 == 0, false), (i * 40, false, true)]);
        let t = Arc::new(Tape::new(frames).unwrap());
        let count = |av| {
            let mut p = Playback::new(t.clone(), T0, T0 + 4_000, playback_mode::NORMAL, 0, av);
            drain(&mut p).len()
        };
        assert_eq!((count(0), count(1), count(2)), (200, 100, 100));
        // Keyframes only with audio only: nothing, and no endless search.
        let k = Playback::new(t, T0, T0 + 4_000, playback_mode::KEYFRAMES_ONLY, 0, 1);
        assert_eq!(k.next_frame(), None);
    }

    #[test]
    fn alarms_report_every_second_then_clear() {
        let s = Duration::from_secs;
        let plan = AlarmPlan::new(&[s(12)], s(3), 0x2);
        let mut t = Duration::ZERO;
        let mut reports = vec![(t, plan.bits_at(t))];
        while t < s(30) {
            t = plan.next_report(t, s(10));
            reports.push((t, plan.bits_at(t)));
        }
        let secs: Vec<_> = reports.iter().map(|(t, b)| (t.as_secs(), *b)).collect();
        assert_eq!(
            secs,
            [
                (0, 0),
                (10, 0),
                (12, 2),
                (13, 2),
                (14, 2),
                (15, 0),
                (25, 0),
                (35, 0)
            ]
        );
        assert_eq!(
            plan.spans(T0),
            [AlarmSpan {
                start_ms: T0 + 12_000,
                end_ms: T0 + 15_000,
                bits: 2
            }]
        );
        assert_eq!(AlarmPlan::default().next_report(s(5), s(5)), s(10));
    }
}
