//! A dashcam with an SD card, for the playback and browser suites: registers, authenticates,
//! reports a position and keeps its connection alive with heartbeats over JT/T 808, answers
//! 0x9205 with a 0x1205 list of the recordings it holds that overlap the asked span (carrying
//! the query's serial, sub-packaged when long, as devices send it) or stays silent when told
//! to, acknowledges 0x9201 and uploads the requested span over JT/T 1078 from the project's
//! fixture, stamped with the recording's own times (as fast as the connection takes it, or at
//! a pace), then closes the connection, and obeys 0x9202 (pause, resume, stop). Every platform
//! command it gets is handed to the test, decoded with ingestd's codec.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ingestd::jt808::{
    self, playback_control, DeviceClock, PlatformCommand, Resource, ResourceList,
};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

pub use super::dashcam::FRAME_MS;
use super::dashcam::{self, fixture_frames, MediaSender};

/// What the device does.
#[derive(Clone)]
pub struct Behaviour {
    /// The recordings on its card.
    pub recordings: Vec<Resource>,
    /// False: it never answers a 0x9205 (a device that ignores the query).
    pub answer_queries: bool,
    /// False: it acknowledges 0x9201 and never uploads.
    pub upload: bool,
    /// Time between frames of an upload (zero: as fast as the connection takes them;
    /// [`FRAME_MS`]: a 1x playback, at real time).
    pub pace: Duration,
    /// Frames after which an upload waits for [`Device::release`] (`Some(0)`: connected, nothing
    /// sent yet).
    pub hold_after: Option<u64>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            recordings: Vec::new(),
            answer_queries: true,
            upload: true,
            pace: Duration::ZERO,
            hold_after: None,
        }
    }
}

/// What the test learns from the device.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A platform media command (0x9201, 0x9202, 0x9205, ...), as the device decoded it.
    Command(PlatformCommand),
    /// An upload ended: frames sent, and whether a 0x9202 stop ended it.
    UploadDone { sent: u64, stopped: bool },
}

/// The state 0x9202 sets for the running upload.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ctl {
    Play,
    Pause,
    Stop,
}

pub struct Device {
    events: mpsc::UnboundedReceiver<Event>,
    release: Arc<Notify>,
    behaviour: Arc<Mutex<Behaviour>>,
}

/// The recordings matching a 0x9205 query: its channel (0 = any), overlapping its span.
fn matching(recordings: &[Resource], q: &PlatformCommand) -> Vec<Resource> {
    let PlatformCommand::QueryResources {
        channel,
        start_ms,
        end_ms,
        ..
    } = q
    else {
        return Vec::new();
    };
    recordings
        .iter()
        .filter(|r| *channel == 0 || r.channel == *channel)
        .filter(|r| start_ms.is_none_or(|s| r.end_ms > s))
        .filter(|r| end_ms.is_none_or(|e| r.start_ms < e))
        .cloned()
        .collect()
}

impl Device {
    /// Connects, registers and authenticates, reports a position; then serves platform commands
    /// until dropped.
    pub async fn connect(jt808_addr: SocketAddr, sim: &str, behaviour: Behaviour) -> Device {
        let register = dashcam::registration("PBK", "sd-cam", "0000002", "PBK-001");
        let (mut inbox, outbox) = dashcam::login(jt808_addr, sim, register).await;
        outbox.position(0);
        // Well inside ingestd's idle timeout.
        outbox.heartbeats(Duration::from_secs(5));

        let (events_tx, events) = mpsc::unbounded_channel();
        let release = Arc::new(Notify::new());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let (ctl_tx, ctl_rx) = watch::channel(Ctl::Play);
        tokio::spawn({
            let (release, behaviour, sim) = (release.clone(), behaviour.clone(), sim.to_owned());
            async move {
                while let Some(m) = inbox.next().await {
                    let id = m.header.msg_id;
                    let Ok(cmd) = PlatformCommand::decode(id, &m.body, DeviceClock::UTC8) else {
                        continue;
                    };
                    let _ = events_tx.send(Event::Command(cmd.clone()));
                    let b = behaviour.lock().unwrap().clone();
                    if let PlatformCommand::QueryResources { .. } = cmd {
                        // The list is the answer (no 0x0001), matched by the query's serial.
                        if b.answer_queries {
                            let list = ResourceList {
                                serial: m.header.serial,
                                items: matching(&b.recordings, &cmd),
                            };
                            outbox.send(jt808::msg::RESOURCE_LIST, list.encode(DeviceClock::UTC8));
                        }
                        continue;
                    }
                    outbox.ack(&m);
                    match cmd {
                        PlatformCommand::Playback {
                            ip,
                            tcp_port,
                            channel,
                            start_ms,
                            end_ms,
                            ..
                        } if b.upload => {
                            ctl_tx.send_replace(Ctl::Play);
                            let addr: SocketAddr = format!("{ip}:{tcp_port}").parse().unwrap();
                            let upload = Upload {
                                addr,
                                sim: sim.clone(),
                                channel,
                                start_ms,
                                end_ms,
                                behaviour: b,
                                release: release.clone(),
                                ctl: ctl_rx.clone(),
                            };
                            let events_tx = events_tx.clone();
                            tokio::spawn(async move {
                                let done = upload.run().await;
                                let _ = events_tx.send(done);
                            });
                        }
                        PlatformCommand::PlaybackControl { control, .. } => {
                            let state = match control {
                                playback_control::PAUSE => Ctl::Pause,
                                playback_control::STOP => Ctl::Stop,
                                _ => Ctl::Play,
                            };
                            ctl_tx.send_replace(state);
                        }
                        _ => {}
                    }
                }
            }
        });
        Device {
            events,
            release,
            behaviour,
        }
    }

    /// The next event, within `within`.
    pub async fn next(&mut self, within: Duration) -> Event {
        tokio::time::timeout(within, self.events.recv())
            .await
            .expect("a device event in time")
            .expect("device connection open")
    }

    /// The next platform command, skipping other events.
    pub async fn next_command(&mut self, within: Duration) -> PlatformCommand {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Event::Command(c) = self.next(left).await {
                return c;
            }
        }
    }

    /// The next finished upload, skipping other events.
    pub async fn upload_done(&mut self, within: Duration) -> (u64, bool) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Event::UploadDone { sent, stopped } = self.next(left).await {
                return (sent, stopped);
            }
        }
    }

    /// An event already received, if any (`None`: nothing happened).
    pub fn pending(&mut self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Every event received and not taken yet, in order.
    pub fn all_pending(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.pending()).collect()
    }

    /// Lets a held upload go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// Changes what the device does from now on.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }
}

/// One upload of a recorded span.
struct Upload {
    addr: SocketAddr,
    sim: String,
    channel: u8,
    start_ms: i64,
    end_ms: i64,
    behaviour: Behaviour,
    release: Arc<Notify>,
    ctl: watch::Receiver<Ctl>,
}

impl Upload {
    /// Sends the span's frames (the fixture looped, one per 40 ms of recording) at the
    /// behaviour's pace, obeying pause and stop, then closes the connection as a device does
    /// when it is done.
    async fn run(mut self) -> Event {
        let frames = fixture_frames("baseline.h264");
        let mut media = MediaSender::connect(self.addr, &self.sim, self.channel).await;
        let total = ((self.end_ms - self.start_ms) / FRAME_MS) as u64;
        let pace = self.behaviour.pace;
        let (mut next, mut stopped) = (Instant::now(), false);
        while media.sent() < total {
            let mut waited = false;
            if self.behaviour.hold_after == Some(media.sent()) {
                self.release.notified().await;
                waited = true;
            }
            // Paused: wait for resume or stop.
            waited |= *self.ctl.borrow() == Ctl::Pause;
            let state = *self
                .ctl
                .wait_for(|c| *c != Ctl::Pause)
                .await
                .expect("control channel");
            if state == Ctl::Stop {
                stopped = true;
                break;
            }
            // At pace from the last frame sent, or from now after a wait.
            if !pace.is_zero() {
                if waited {
                    next = Instant::now();
                }
                tokio::time::sleep_until(next).await;
                next += pace;
            }
            if !media.send_one(&frames, self.start_ms).await {
                break;
            }
        }
        let sent = media.sent();
        media.close().await;
        Event::UploadDone { sent, stopped }
    }
}
