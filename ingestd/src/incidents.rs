//! Incidents: the video of every alarm, without a click.
//!
//! A position (0x0200, 0x0704) with alarm bits set opens one incident per
//! alarm bit and per channel configured for that alarm, covering from
//! `before` ahead of the first report to `after` past the last one; it stays
//! open (an EVENT playlist that grows) while the bit is set, and closes when
//! a report clears it or the device goes offline.
//!
//! Once the post-alarm time has passed, each channel's incident gets its
//! video: the span we recorded live when that channel was streaming, else
//! the device's own recording, asked for with 0x9201. Fetches queue per
//! device (bounded), wait for the device to be online, run at most
//! `uploads_per_device` at a time, and are retried a few times before the
//! incident says why it has no video.
//!
//! [`AlarmTracker`] is the pure part (reports in, incident updates out);
//! [`run`] is the task that records them and drives the fetches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use streamcore::catalog::Record;
use streamcore::StreamName;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::context::{CommandError, Ctx, PlaybackParams};
use crate::jt808::playback_mode;
use crate::media::SessionKind;
use crate::sessions::{now_ms, IncidentKey};

/// The `source` of alarm incidents.
pub const SOURCE: &str = "jt808";

/// JT/T 808-2019 table 24: the alarm word of 0x0200, bit by bit (bits
/// 15-17 are reserved). The names are the incidents' kinds
/// (`alarm:<name>`) and the config file's rule keys.
pub const ALARM_NAMES: &[(u8, &str)] = &[
    (0, "emergency"),
    (1, "overspeed"),
    (2, "fatigue_driving"),
    (3, "danger_warning"),
    (4, "gnss_module_fault"),
    (5, "gnss_antenna_disconnected"),
    (6, "gnss_antenna_short_circuit"),
    (7, "power_undervoltage"),
    (8, "power_off"),
    (9, "display_fault"),
    (10, "tts_fault"),
    (11, "camera_fault"),
    (12, "ic_card_reader_fault"),
    (13, "overspeed_warning"),
    (14, "fatigue_warning"),
    (18, "driving_overtime"),
    (19, "parking_overtime"),
    (20, "area_in_out"),
    (21, "route_in_out"),
    (22, "route_time_abnormal"),
    (23, "route_deviation"),
    (24, "vss_fault"),
    (25, "fuel_abnormal"),
    (26, "vehicle_stolen"),
    (27, "illegal_ignition"),
    (28, "illegal_displacement"),
    (29, "collision_warning"),
    (30, "rollover_warning"),
    (31, "illegal_door_opening"),
];

/// The name of alarm bit `bit` (`bit_<n>` for reserved bits).
pub fn alarm_name(bit: u8) -> String {
    ALARM_NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map_or_else(|| format!("bit_{bit}"), |(_, n)| (*n).to_string())
}

/// The incident kind of alarm bit `bit`.
pub fn incident_kind(bit: u8) -> String {
    format!("alarm:{}", alarm_name(bit))
}

/// A config-file override for one alarm (`[incident_rules.<name or bit>]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    /// Seconds before the alarm.
    pub before: Option<u64>,
    /// Seconds after it ends.
    pub after: Option<u64>,
    /// Channels; an empty list turns the alarm's incidents off.
    pub channels: Option<Vec<u8>>,
}

/// What one alarm's incidents cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub before: Duration,
    pub after: Duration,
    pub channels: Vec<u8>,
}

/// Incident settings (see `ingestd --help`, `incident_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentConfig {
    pub before: Duration,
    pub after: Duration,
    pub channels: Vec<u8>,
    /// Ask devices for the video we did not record live.
    pub fetch: bool,
    pub uploads_per_device: usize,
    /// Per-bit overrides of before/after/channels.
    rules: BTreeMap<u8, RuleOverride>,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            before: Duration::from_secs(15),
            after: Duration::from_secs(15),
            channels: vec![1],
            fetch: true,
            uploads_per_device: 1,
            rules: BTreeMap::new(),
        }
    }
}

impl IncidentConfig {
    /// Validates the settings; rule keys are alarm names or bit numbers.
    pub fn new(
        before: Duration,
        after: Duration,
        channels: Vec<u8>,
        fetch: bool,
        uploads_per_device: usize,
        rules: BTreeMap<String, RuleOverride>,
    ) -> Result<Self, String> {
        let check = |what: &str, chans: &[u8]| match chans.iter().find(|&&c| c == 0) {
            Some(_) => Err(format!("{what}: channel 0 is not a video channel")),
            None => Ok(()),
        };
        check("incident-channels", &channels)?;
        let mut by_bit = BTreeMap::new();
        for (key, rule) in rules {
            let bit = match key.parse::<u8>() {
                Ok(b) if b < 32 => b,
                _ => ALARM_NAMES
                    .iter()
                    .find(|(_, n)| *n == key)
                    .map(|(b, _)| *b)
                    .ok_or_else(|| {
                        format!(
                            "incident_rules.{key}: not an alarm bit (0-31) or name ({})",
                            ALARM_NAMES
                                .iter()
                                .map(|(_, n)| *n)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    })?,
            };
            check(
                &format!("incident_rules.{key}.channels"),
                rule.channels.as_deref().unwrap_or(&[]),
            )?;
            by_bit.insert(bit, rule);
        }
        Ok(IncidentConfig {
            before,
            after,
            channels,
            fetch,
            uploads_per_device: uploads_per_device.max(1),
            rules: by_bit,
        })
    }

    /// The rule of alarm bit `bit`.
    pub fn rule(&self, bit: u8) -> Rule {
        let o = self.rules.get(&bit).cloned().unwrap_or_default();
        Rule {
            before: o.before.map_or(self.before, Duration::from_secs),
            after: o.after.map_or(self.after, Duration::from_secs),
            channels: o.channels.unwrap_or_else(|| self.channels.clone()),
        }
    }
}

/// A position's alarm word, for the tracker.
#[derive(Debug, Clone, PartialEq)]
pub enum AlarmReport {
    Position {
        sim: String,
        alarm: u32,
        /// Device time of the fix (Unix ms), or the receive time.
        at_ms: i64,
        /// Host time it arrived.
        received_ms: i64,
        lat: f64,
        lon: f64,
    },
    /// The device's 808 connection closed.
    Offline { sim: String, at_ms: i64 },
}

/// One alarm of one device, from its first report.
#[derive(Debug, Clone, PartialEq)]
struct OpenAlarm {
    first_ms: i64,
    last_ms: i64,
    /// `received_ms - at_ms` of the latest report: device to host time.
    host_offset_ms: i64,
    lat: f64,
    lon: f64,
}

/// An incident to write (one per channel of the alarm's rule).
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentUpdate {
    pub sim: String,
    pub bit: u8,
    pub channel: u8,
    pub from_ms: i64,
    pub to_ms: i64,
    pub open: bool,
    pub lat: f64,
    pub lon: f64,
    /// Host time at which `to_ms` will have passed (when to fetch).
    pub due_host_ms: i64,
}

impl IncidentUpdate {
    pub fn key(&self) -> IncidentKey {
        IncidentKey {
            sim: self.sim.clone(),
            channel: Some(self.channel),
            from_ms: self.from_ms,
            kind: incident_kind(self.bit),
            source: SOURCE.into(),
        }
    }

    pub fn record(&self) -> Record {
        Record::Incident {
            sim: self.sim.clone(),
            channel: Some(self.channel),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            kind: incident_kind(self.bit),
            source: SOURCE.into(),
            session_id: None,
            open: self.open,
            alarm: 1 << self.bit,
            lat: Some(self.lat),
            lon: Some(self.lon),
            video_state: None,
            video_reason: None,
        }
    }
}

/// Alarm bits per device into incident updates. No I/O, no clock.
#[derive(Debug, Default)]
pub struct AlarmTracker {
    open: HashMap<(String, u8), OpenAlarm>,
}

impl AlarmTracker {
    /// Updates for one report: an incident per channel for every alarm
    /// bit set (opened or extended), and closing ones for bits cleared.
    pub fn report(&mut self, cfg: &IncidentConfig, r: &AlarmReport) -> Vec<IncidentUpdate> {
        let mut out = Vec::new();
        match r {
            AlarmReport::Position {
                sim,
                alarm,
                at_ms,
                received_ms,
                lat,
                lon,
            } => {
                for bit in 0..32u8 {
                    let key = (sim.clone(), bit);
                    let set = alarm & (1 << bit) != 0;
                    if set {
                        let a = self.open.entry(key).or_insert(OpenAlarm {
                            first_ms: *at_ms,
                            last_ms: *at_ms,
                            host_offset_ms: received_ms - at_ms,
                            lat: *lat,
                            lon: *lon,
                        });
                        // A report older than the last one (a 0x0704
                        // back-fill) does not move the end backwards.
                        if *at_ms >= a.last_ms {
                            a.last_ms = *at_ms;
                            a.host_offset_ms = received_ms - at_ms;
                        }
                        a.first_ms = a.first_ms.min(*at_ms);
                        let a = a.clone();
                        updates(cfg, sim, bit, &a, true, &mut out);
                    } else if let Some(a) = self.open.remove(&key) {
                        let mut a = a;
                        a.last_ms = a.last_ms.max(*at_ms);
                        updates(cfg, sim, bit, &a, false, &mut out);
                    }
                }
            }
            AlarmReport::Offline { sim, .. } => {
                let bits: Vec<u8> = self
                    .open
                    .keys()
                    .filter(|(s, _)| s == sim)
                    .map(|(_, b)| *b)
                    .collect();
                for bit in bits {
                    if let Some(a) = self.open.remove(&(sim.clone(), bit)) {
                        updates(cfg, sim, bit, &a, false, &mut out);
                    }
                }
            }
        }
        out
    }
}

fn updates(
    cfg: &IncidentConfig,
    sim: &str,
    bit: u8,
    a: &OpenAlarm,
    open: bool,
    out: &mut Vec<IncidentUpdate>,
) {
    let rule = cfg.rule(bit);
    let (before, after) = (
        rule.before.as_millis() as i64,
        rule.after.as_millis() as i64,
    );
    for &channel in &rule.channels {
        out.push(IncidentUpdate {
            sim: sim.to_string(),
            bit,
            channel,
            from_ms: a.first_ms - before,
            to_ms: a.last_ms + after,
            open,
            lat: a.lat,
            lon: a.lon,
            due_host_ms: a.last_ms + after + a.host_offset_ms,
        });
    }
}

/// Fetches queued per device beyond which new incidents get no video.
const MAX_QUEUED_PER_DEVICE: usize = 32;
/// Attempts of one fetch (device refused, no answer) before giving up.
const MAX_ATTEMPTS: u32 = 3;
/// Wait between attempts.
const RETRY_AFTER_MS: i64 = 20_000;
/// A fetch whose device stays offline this long is given up.
const GIVE_UP_OFFLINE_MS: i64 = 24 * 3600 * 1000;
/// A requested upload whose connection never comes is given up after this.
const UPLOAD_NEVER_CAME_MS: i64 = 120_000;

/// One incident's video still to get.
#[derive(Debug, Clone)]
struct Fetch {
    update: IncidentUpdate,
    attempts: u32,
    /// The incident's video state is final: the fetch leaves the queue.
    settled: bool,
    not_before_ms: i64,
    /// A playback request of it runs: its ticket id and when it was made.
    running: Option<(String, i64, bool)>,
    announced_waiting: bool,
}

/// The incident task: reads alarm reports, writes incidents, fetches their
/// video. Ends when the report channel closes.
pub async fn run(ctx: Arc<Ctx>, mut reports: mpsc::Receiver<AlarmReport>) {
    let mut tracker = AlarmTracker::default();
    let mut queues: HashMap<String, VecDeque<Fetch>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = reports.recv() => {
                let Some(r) = r else { break };
                for u in tracker.report(&ctx.config.incidents, &r) {
                    ctx.record(u.record());
                    if !u.open {
                        enqueue(&ctx, &mut queues, u);
                    }
                }
            }
            _ = tick.tick() => {
                for q in queues.values_mut() {
                    step_device(&ctx, q).await;
                }
                queues.retain(|_, q| !q.is_empty());
            }
        }
    }
}

/// Queues the video fetch of an incident that just closed (fetched, or found
/// recorded live, once its post-alarm time has passed).
fn enqueue(ctx: &Ctx, queues: &mut HashMap<String, VecDeque<Fetch>>, u: IncidentUpdate) {
    info!(
        sim = %u.sim,
        channel = u.channel,
        kind = %incident_kind(u.bit),
        from_ms = u.from_ms,
        to_ms = u.to_ms,
        "alarm incident closed"
    );
    let q = queues.entry(u.sim.clone()).or_default();
    if q.len() >= MAX_QUEUED_PER_DEVICE {
        let why =
            format!("more than {MAX_QUEUED_PER_DEVICE} incidents of this device wait for video");
        set_video(ctx, &u, "failed", Some(why));
        return;
    }
    q.push_back(Fetch {
        not_before_ms: u.due_host_ms,
        update: u,
        attempts: 0,
        settled: false,
        running: None,
        announced_waiting: false,
    });
}

fn set_video(ctx: &Ctx, u: &IncidentUpdate, state: &str, reason: Option<String>) {
    let key = u.key();
    ctx.record(Record::IncidentVideo {
        sim: key.sim,
        channel: key.channel,
        from_ms: key.from_ms,
        kind: key.kind,
        source: key.source,
        video_state: state.into(),
        video_reason: reason,
        session_id: None,
    });
}

/// Whether `stream` has had a live session open since before `from_host_ms`.
fn recorded_live(ctx: &Ctx, stream: &str, from_host_ms: i64) -> bool {
    ctx.registry.media_sessions().iter().any(|s| {
        s.stream == stream && s.kind == SessionKind::Live && s.started_ms <= from_host_ms + 2_000
    })
}

/// Advances one device's fetch queue: finished uploads leave it, due
/// fetches start while upload slots are free.
async fn step_device(ctx: &Ctx, q: &mut VecDeque<Fetch>) {
    let now = now_ms();
    let cfg = &ctx.config.incidents;
    // Uploads that ended (or never came) free their slot.
    q.retain_mut(|f| {
        let Some((id, asked_ms, seen)) = &mut f.running else {
            return true;
        };
        let u = &f.update;
        if ctx.registry.is_uploading(&u.sim, u.channel, id) {
            *seen = true;
            return true;
        }
        let awaited = ctx
            .registry
            .current_playback(&u.sim, u.channel)
            .is_some_and(|t| &t.id == id);
        if awaited && now - *asked_ms < UPLOAD_NEVER_CAME_MS {
            return true;
        }
        if !*seen {
            ctx.registry.cancel_playback(&u.sim, u.channel, id);
            set_video(
                ctx,
                u,
                "failed",
                Some(
                    "the device accepted the playback request but never connected its upload"
                        .into(),
                ),
            );
        }
        // When it was seen, the media worker recorded the outcome.
        false
    });
    let mut running = q.iter().filter(|f| f.running.is_some()).count();
    for f in q.iter_mut() {
        if f.running.is_some() || f.not_before_ms > now {
            continue;
        }
        let u = f.update.clone();
        let host_from = u.due_host_ms - (u.to_ms - u.from_ms);
        let stream = StreamName::live(&u.sim, u.channel).to_string();
        if recorded_live(ctx, &stream, host_from) {
            set_video(ctx, &u, "recorded", None);
            f.settled = true;
            continue;
        }
        if !cfg.fetch {
            let why = "the channel was not streaming and fetching from the device is off \
                       (--incident-fetch)";
            set_video(ctx, &u, "failed", Some(why.into()));
            f.settled = true;
            continue;
        }
        if !ctx.registry.is_online(&u.sim) {
            if now - u.due_host_ms > GIVE_UP_OFFLINE_MS {
                set_video(
                    ctx,
                    &u,
                    "failed",
                    Some("the device stayed offline for a day after the alarm".into()),
                );
                f.settled = true;
            } else if !f.announced_waiting {
                f.announced_waiting = true;
                set_video(
                    ctx,
                    &u,
                    "waiting_online",
                    Some("the device is offline; the video is fetched when it is back".into()),
                );
            }
            continue;
        }
        if running >= cfg.uploads_per_device
            || ctx.registry.current_playback(&u.sim, u.channel).is_some()
        {
            continue;
        }
        let params = PlaybackParams {
            channel: u.channel,
            av_type: 0,
            stream_type: 0,
            storage_type: 0,
            mode: playback_mode::NORMAL,
            speed: 0,
            start_ms: u.from_ms,
            end_ms: u.to_ms,
        };
        match ctx.start_playback(&u.sim, params, Some(u.key())).await {
            Ok(started) => {
                let id = &started.ticket.id;
                info!(sim = %u.sim, channel = u.channel, playback = %id, "fetching incident video");
                set_video(ctx, &u, "requested", None);
                f.running = Some((started.ticket.id, now, false));
                running += 1;
            }
            Err(CommandError::Busy(_)) | Err(CommandError::Offline) => {}
            Err(e) => {
                f.attempts += 1;
                let attempt = f.attempts;
                let (sim, channel) = (&u.sim, u.channel);
                warn!(%sim, channel, error = %e, attempt, "incident video request failed");
                if f.attempts >= MAX_ATTEMPTS {
                    set_video(
                        ctx,
                        &u,
                        "failed",
                        Some(format!("{e} ({} attempts)", f.attempts)),
                    );
                    f.settled = true;
                } else {
                    f.not_before_ms = now + RETRY_AFTER_MS;
                }
            }
        }
    }
    q.retain(|f| !f.settled);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(sim: &str, alarm: u32, at_ms: i64) -> AlarmReport {
        AlarmReport::Position {
            sim: sim.into(),
            alarm,
            at_ms,
            received_ms: at_ms + 500,
            lat: 22.5,
            lon: 114.0,
        }
    }

    #[test]
    fn an_alarm_opens_grows_and_closes_per_bit_and_channel() {
        let defaults = IncidentConfig::default();
        let mut rules = BTreeMap::new();
        rules.insert(
            "collision_warning".to_string(),
            RuleOverride {
                before: Some(30),
                after: Some(5),
                channels: Some(vec![3]),
            },
        );
        let cfg = IncidentConfig::new(defaults.before, defaults.after, vec![1, 2], true, 1, rules)
            .unwrap();
        let mut t = AlarmTracker::default();
        assert!(t.report(&cfg, &pos("1", 0, 1_000)).is_empty());
        let u = t.report(&cfg, &pos("1", 1 << 1, 10_000));
        assert_eq!(u.len(), 2, "overspeed on channels 1 and 2: {u:?}");
        assert!(u
            .iter()
            .all(|u| u.open && u.from_ms == -5_000 && u.to_ms == 25_000));
        let u = t.report(&cfg, &pos("1", 1 << 1 | 1 << 29, 12_000));
        assert_eq!(u.len(), 3);
        let collision: Vec<_> = u.iter().filter(|u| u.bit == 29).collect();
        assert_eq!(collision.len(), 1);
        assert_eq!(
            (
                collision[0].channel,
                collision[0].from_ms,
                collision[0].to_ms
            ),
            (3, -18_000, 17_000)
        );
        // The overspeed incident keeps its start (its catalog key) and grows.
        assert!(u
            .iter()
            .filter(|u| u.bit == 1)
            .all(|u| u.from_ms == -5_000 && u.to_ms == 27_000));
        let u = t.report(&cfg, &pos("1", 1 << 29, 14_000));
        let closed: Vec<_> = u.iter().filter(|u| !u.open).collect();
        assert_eq!(closed.len(), 2);
        assert!(closed
            .iter()
            .all(|u| u.bit == 1 && u.to_ms == 29_000 && u.due_host_ms == 29_500));
        let u = t.report(
            &cfg,
            &AlarmReport::Offline {
                sim: "1".into(),
                at_ms: 20_000,
            },
        );
        assert_eq!(u.len(), 1);
        assert!(!u[0].open && u[0].bit == 29);
        assert!(t.open.is_empty());
    }

    #[test]
    fn rules_are_checked() {
        let mut rules = BTreeMap::new();
        rules.insert("no_such_alarm".to_string(), RuleOverride::default());
        let e = IncidentConfig::new(Duration::ZERO, Duration::ZERO, vec![1], true, 1, rules)
            .unwrap_err();
        assert!(
            e.contains("no_such_alarm") && e.contains("overspeed"),
            "{e}"
        );
        assert!(IncidentConfig::new(
            Duration::ZERO,
            Duration::ZERO,
            vec![0],
            true,
            1,
            BTreeMap::new()
        )
        .is_err());
        let mut rules = BTreeMap::new();
        rules.insert(
            "1".to_string(),
            RuleOverride {
                channels: Some(vec![]),
                ..Default::default()
            },
        );
        let cfg =
            IncidentConfig::new(Duration::ZERO, Duration::ZERO, vec![1], true, 1, rules).unwrap();
        assert!(cfg.rule(1).channels.is_empty());
        assert_eq!(cfg.rule(2).channels, vec![1]);
        assert_eq!(incident_kind(29), "alarm:collision_warning");
        assert_eq!(alarm_name(16), "bit_16");
    }
}
