//! Device and media session tracking, and the events ingestd emits for the
//! catalog (positions, device online/offline, media sessions).
//!
//! The registry maps a SIM to its JT/T 808 connection (online flag, last seen,
//! a command channel the HTTP control API uses) and remembers which
//! SIM + channel has been asked for a playback (0x9201) so the next JT/T 1078
//! connection for it is recorded as a playback session rather than live.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::jt808::{Location, PlatformCommand};
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// A command for a device's connection task; the reply is the serial used
/// (or `None` if the device had not identified itself).
#[derive(Debug)]
pub struct CommandRequest {
    pub cmd: PlatformCommand,
    pub reply: oneshot::Sender<Option<u16>>,
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

#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    devices: Mutex<HashMap<String, Device>>,
    media: Mutex<HashMap<u64, MediaSessionRecord>>,
    playback: Mutex<HashMap<(String, u8), Instant>>,
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

    pub fn expect_playback(&self, sim: &str, channel: u8) {
        self.playback
            .lock()
            .expect("registry lock")
            .insert((sim.to_string(), channel), Instant::now());
    }

    /// Whether a media connection for `sim`/`channel` answers a playback
    /// request (consumes the expectation).
    pub fn take_playback(&self, sim: &str, channel: u8) -> bool {
        let mut p = self.playback.lock().expect("registry lock");
        p.retain(|_, t| t.elapsed() < PLAYBACK_EXPECTATION);
        p.remove(&(sim.to_string(), channel)).is_some()
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
