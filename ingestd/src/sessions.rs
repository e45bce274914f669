//! Device and media session tracking, and the events ingestd emits for the
//! catalog (positions, device online/offline, media sessions).
//!
//! The registry maps a SIM to its JT/T 808 connection (online flag, last seen,
//! a command channel the HTTP control API uses) and remembers which
//! SIM + channel has been asked for a playback (0x9201) so the next JT/T 1078
//! connection for it is recorded as a playback session rather than live.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::jt808::{GeneralReply, Location, PlatformCommand, ResourceList};
use crate::media::SessionKind;

/// How long a 0x9201 request waits for the device's media connection.
const PLAYBACK_EXPECTATION: Duration = Duration::from_secs(120);

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A decoded position with its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionRecord {
    pub sim: String,
    /// When ingestd received it (Unix ms).
    pub received_ms: i64,
    pub location: Location,
}

/// One media connection's span (a recording in the catalog).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MediaSessionRecord {
    pub id: u64,
    pub stream: String,
    pub sim: Option<String>,
    pub channel: Option<u8>,
    pub kind: SessionKind,
    pub peer: SocketAddr,
    pub started_ms: i64,
    /// `None` while open.
    pub ended_ms: Option<i64>,
}

/// Events for the catalog writer (the lead connects the receiver).
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    Position(PositionRecord),
    DeviceOnline {
        sim: String,
        peer: SocketAddr,
        at_ms: i64,
    },
    DeviceOffline {
        sim: String,
        at_ms: i64,
    },
    MediaSessionStarted(MediaSessionRecord),
    MediaSessionEnded(MediaSessionRecord),
    /// A catalog record made outside the media workers (playback requests,
    /// incidents).
    Record(streamcore::catalog::Record),
}

/// A command for a device's connection task; the reply is the serial used
/// (or `None` if the device had not identified itself).
#[derive(Debug)]
pub struct CommandRequest {
    pub cmd: PlatformCommand,
    pub reply: oneshot::Sender<Option<u16>>,
    /// Where the device's answer to the command goes, when the caller
    /// waits for one (see [`Answer`]).
    pub answer: Option<oneshot::Sender<Answer>>,
}

/// What a device answered to a platform command, matched by the command's
/// serial: its 0x0001 general reply, or for a 0x9205 query the 0x1205 list
/// (a query's 0x0001 with result 0 only says the list is coming).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(GeneralReply),
    Resources(ResourceList),
}

#[derive(Debug, Clone)]
struct Device {
    conn_id: u64,
    online: bool,
    authenticated: bool,
    peer: SocketAddr,
    local: SocketAddr,
    connected_ms: i64,
    last_seen_ms: i64,
    cmd: Option<mpsc::Sender<CommandRequest>>,
}

/// What `GET /api/devices` lists.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub sim: String,
    pub online: bool,
    pub authenticated: bool,
    pub peer: String,
    pub connected_ms: i64,
    pub last_seen_ms: i64,
    pub media: Vec<MediaSessionRecord>,
}

/// The incident a playback fetches the video of (its catalog key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentKey {
    pub sim: String,
    pub channel: Option<u8>,
    pub from_ms: i64,
    pub kind: String,
    pub source: String,
}

/// One 0x9201 request, from the command to the end of its upload: the
/// catalog's playback row, and what links the upload's session to the
/// device recording (and incident) it came from.
#[derive(Debug, Clone)]
pub struct PlaybackTicket {
    pub id: String,
    pub sim: String,
    pub channel: u8,
    /// The 0x9201 as sent (span, mode, speed, types).
    pub cmd: PlatformCommand,
    pub requested_ms: i64,
    pub incident: Option<IncidentKey>,
    /// Set when the operator stops the upload (0x9202 stop).
    pub stopped: Arc<AtomicBool>,
    /// The device plays backwards (0x9201 mode 2, or 0x9202 control 4 until
    /// another control): its timestamps decrease.
    pub rewinding: Arc<AtomicBool>,
}

impl PlaybackTicket {
    /// The requested span (Unix ms).
    pub fn span_ms(&self) -> (i64, i64) {
        match &self.cmd {
            PlatformCommand::Playback {
                start_ms, end_ms, ..
            } => (*start_ms, *end_ms),
            _ => (0, 0),
        }
    }
}

/// Why a playback request was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaybackBusy {
    /// An upload of that channel runs (or was asked for and is awaited).
    Uploading(String),
}

#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    devices: Mutex<HashMap<String, Device>>,
    media: Mutex<HashMap<u64, MediaSessionRecord>>,
    /// Playbacks asked for whose media connection has not come yet.
    playback: Mutex<HashMap<(String, u8), (Instant, PlaybackTicket)>>,
    /// Playbacks whose upload runs.
    uploading: Mutex<HashMap<(String, u8), PlaybackTicket>>,
}

impl Registry {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records activity of `sim` on connection `conn_id`; returns true when
    /// this made the device (newly) online on this connection.
    pub fn device_seen(
        &self,
        sim: &str,
        conn_id: u64,
        peer: SocketAddr,
        local: SocketAddr,
        authenticated: bool,
        cmd: &mpsc::Sender<CommandRequest>,
    ) -> bool {
        let now = now_ms();
        let mut d = self.devices.lock().expect("registry lock");
        let e = d.entry(sim.to_string()).or_insert_with(|| Device {
            conn_id: 0,
            online: false,
            authenticated: false,
            peer,
            local,
            connected_ms: now,
            last_seen_ms: now,
            cmd: None,
        });
        let fresh = !e.online || e.conn_id != conn_id;
        if fresh {
            e.conn_id = conn_id;
            e.online = true;
            e.peer = peer;
            e.local = local;
            e.connected_ms = now;
            e.cmd = Some(cmd.clone());
        }
        e.authenticated = authenticated;
        e.last_seen_ms = now;
        fresh
    }

    /// Marks `sim` offline if connection `conn_id` still owns it.
    pub fn device_gone(&self, sim: &str, conn_id: u64) -> bool {
        let mut d = self.devices.lock().expect("registry lock");
        match d.get_mut(sim) {
            Some(e) if e.conn_id == conn_id && e.online => {
                e.online = false;
                e.cmd = None;
                e.last_seen_ms = now_ms();
                true
            }
            _ => false,
        }
    }

    /// Whether `sim` is online on a JT/T 808 connection on which it
    /// authenticated (0x0102).
    pub fn is_authenticated(&self, sim: &str) -> bool {
        let d = self.devices.lock().expect("registry lock");
        d.get(sim).is_some_and(|e| e.online && e.authenticated)
    }

    /// The command channel and local address of an online device.
    pub fn device_handle(&self, sim: &str) -> Option<(mpsc::Sender<CommandRequest>, SocketAddr)> {
        let d = self.devices.lock().expect("registry lock");
        let e = d.get(sim).filter(|e| e.online)?;
        Some((e.cmd.clone()?, e.local))
    }

    pub fn online_count(&self) -> usize {
        self.devices
            .lock()
            .expect("registry lock")
            .values()
            .filter(|d| d.online)
            .count()
    }

    pub fn devices(&self) -> Vec<DeviceInfo> {
        let media: Vec<MediaSessionRecord> = self
            .media
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        let d = self.devices.lock().expect("registry lock");
        let mut v: Vec<DeviceInfo> = d
            .iter()
            .map(|(sim, e)| DeviceInfo {
                sim: sim.clone(),
                online: e.online,
                authenticated: e.authenticated,
                peer: e.peer.to_string(),
                connected_ms: e.connected_ms,
                last_seen_ms: e.last_seen_ms,
                media: media
                    .iter()
                    .filter(|m| m.sim.as_deref() == Some(sim))
                    .cloned()
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.sim.cmp(&b.sim));
        v
    }

    /// Records that a playback of `ticket`'s channel was asked for, unless
    /// one is awaited or uploading there already.
    pub fn expect_playback(&self, ticket: PlaybackTicket) -> Result<(), PlaybackBusy> {
        let key = (ticket.sim.clone(), ticket.channel);
        if let Some(t) = self.uploading.lock().expect("registry lock").get(&key) {
            return Err(PlaybackBusy::Uploading(t.id.clone()));
        }
        let mut p = self.playback.lock().expect("registry lock");
        p.retain(|_, (t, _)| t.elapsed() < PLAYBACK_EXPECTATION);
        if let Some((_, t)) = p.get(&key) {
            return Err(PlaybackBusy::Uploading(t.id.clone()));
        }
        p.insert(key, (Instant::now(), ticket));
        Ok(())
    }

    /// Forgets an expected playback the device refused or never got.
    pub fn cancel_playback(&self, sim: &str, channel: u8, id: &str) {
        let mut p = self.playback.lock().expect("registry lock");
        if p.get(&(sim.to_string(), channel))
            .is_some_and(|(_, t)| t.id == id)
        {
            p.remove(&(sim.to_string(), channel));
        }
    }

    /// The playback request a media connection for `sim`/`channel` answers,
    /// if any (it becomes the uploading one).
    pub fn take_playback(&self, sim: &str, channel: u8) -> Option<PlaybackTicket> {
        let mut p = self.playback.lock().expect("registry lock");
        p.retain(|_, (t, _)| t.elapsed() < PLAYBACK_EXPECTATION);
        let (_, ticket) = p.remove(&(sim.to_string(), channel))?;
        self.uploading
            .lock()
            .expect("registry lock")
            .insert((sim.to_string(), channel), ticket.clone());
        Some(ticket)
    }

    /// The upload of `id` ended (its media connection closed).
    pub fn playback_ended(&self, sim: &str, channel: u8, id: &str) {
        let mut u = self.uploading.lock().expect("registry lock");
        if u.get(&(sim.to_string(), channel))
            .is_some_and(|t| t.id == id)
        {
            u.remove(&(sim.to_string(), channel));
        }
    }

    /// Whether the upload of `id` runs on that channel.
    pub fn is_uploading(&self, sim: &str, channel: u8, id: &str) -> bool {
        self.uploading
            .lock()
            .expect("registry lock")
            .get(&(sim.to_string(), channel))
            .is_some_and(|t| t.id == id)
    }

    /// The playback awaited or uploading on a channel.
    pub fn current_playback(&self, sim: &str, channel: u8) -> Option<PlaybackTicket> {
        let key = (sim.to_string(), channel);
        if let Some(t) = self.uploading.lock().expect("registry lock").get(&key) {
            return Some(t.clone());
        }
        self.playback
            .lock()
            .expect("registry lock")
            .get(&key)
            .map(|(_, t)| t.clone())
    }

    /// Whether `sim` is online now.
    pub fn is_online(&self, sim: &str) -> bool {
        self.devices
            .lock()
            .expect("registry lock")
            .get(sim)
            .is_some_and(|d| d.online)
    }

    /// Starts a media session; `None` if a raw stream of that name is busy.
    pub fn media_started(&self, rec: MediaSessionRecord) -> Option<MediaSessionRecord> {
        let mut m = self.media.lock().expect("registry lock");
        if rec.kind == SessionKind::Raw
            && m.values()
                .any(|o| o.stream == rec.stream && o.ended_ms.is_none())
        {
            return None;
        }
        m.insert(rec.id, rec.clone());
        Some(rec)
    }

    pub fn media_ended(&self, id: u64) -> Option<MediaSessionRecord> {
        let mut r = self.media.lock().expect("registry lock").remove(&id)?;
        r.ended_ms = Some(now_ms());
        Some(r)
    }

    pub fn media_sessions(&self) -> Vec<MediaSessionRecord> {
        let mut v: Vec<_> = self
            .media
            .lock()
            .expect("registry lock")
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|r| r.id);
        v
    }
}
