//! The JT/T 1078 connection task: parses packets, opens a media session per
//! SIM + channel, reassembles frames and forwards them to the media workers,
//! publishes the parser's and reassembler's counters, and ends the sessions
//! when the connection closes.

use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{read_until, Gauge};
use crate::context::Ctx;
use crate::jt1078::{
    DataType, Jt1078Event, Jt1078Frame, Jt1078Parser, ParserCounters, Reassembler,
    ReassemblyCounters, Sim, SkipReason, PT_H265,
};
use crate::media::{FrameKind, MediaFrame, MediaMsg, PoolClosed, SessionKind};
use crate::metrics::{StreamCounters, StreamStats};
use crate::sessions::{now_ms, IngestEvent, MediaSessionRecord, PlaybackTicket};
use streamcore::StreamName;

/// Resync warnings logged per connection before they turn into debug lines
/// (a magic flood would otherwise write a warning every 4 bytes).
const RESYNC_WARNINGS: u64 = 3;

/// Serves one JT/T 1078 connection until EOF, a read error, a timeout or
/// shutdown.
pub(crate) async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _open = Gauge::new(&ctx.metrics.connections_open_1078);
    let mut conn = Connection::new(ctx, peer);
    let mut first = true;
    let mut deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    loop {
        // Behind a full media queue the bytes wait in the socket (the
        // device slows down), not read and half-processed here; the wait
        // does not count against the idle timeout.
        let waited = tokio::select! {
            w = ctx.media.wait_for_room(conn.workers) => w,
            _ = super::stopped(&mut stop) => break,
        };
        deadline += waited;
        // Wait for data before taking a read buffer: a thousand idle
        // connections would otherwise each hold 16 KiB between frames.
        if conn.parser.buffered() == 0 {
            tokio::select! {
                _ = sock.readable() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = super::stopped(&mut stop) => break,
            }
        }
        let r = read_until(
            &mut sock,
            conn.parser.buffer_mut(),
            deadline,
            first,
            ctx,
            &mut stop,
        )
        .await;
        match r {
            Ok(Some(0)) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => {
                debug!(error = %e, "jt1078 read ended");
                break;
            }
        }
        let read_at = Instant::now();
        if let Err(why) = conn.forward_packets(read_at).await {
            if let Closed::Refused(sim) = why {
                ctx.metrics.jt1078_refused.fetch_add(1, Relaxed);
                warn!(%sim, %peer, "media connection refused: the SIM has no authenticated JT/T 808 session on this node");
            }
            break;
        }
        // Between frames a connection usually has nothing buffered: it then
        // holds no read buffer either (the next read takes a fresh one).
        if conn.parser.buffered() == 0 {
            *conn.parser.buffer_mut() = bytes::BytesMut::new();
        }
        // Only whole packets move the deadline (see `read_until`).
        if conn.publish_counter_deltas() > 0 {
            first = false;
            deadline = tokio::time::Instant::now() + ctx.config.idle_timeout;
        }
    }
    conn.end_sessions().await;
}

/// Why a connection stops reading.
enum Closed {
    /// The media workers are gone (shutdown).
    Pool,
    /// The SIM's device has not authenticated (`--device-auth required`).
    Refused(String),
}

impl From<PoolClosed> for Closed {
    fn from(_: PoolClosed) -> Self {
        Closed::Pool
    }
}

/// The media session of one SIM + channel on this connection.
struct StreamSlot {
    stream: Arc<str>,
    sim: Arc<str>,
    kind: SessionKind,
    session_id: u64,
    /// Host time the media session started.
    started_ms: i64,
    /// The 0x9201 request this connection's upload answers.
    playback: Option<Arc<PlaybackTicket>>,
    /// The upload's timeline (rewinds run backwards on the device's clock).
    clock: PlaybackClock,
}

/// Turns an upload's device timestamps into a timeline that runs forward.
/// Played forward (any speed) the device's timestamps are used as they are:
/// a 4x upload spans the recorded time. Rewinding, they decrease: they are
/// mirrored about the frame where the rewind began, so each keyframe lasts
/// as long as the recorded time between it and the next, and the output
/// stays monotonic (HLS cannot run backwards).
#[derive(Debug, Default, Clone, Copy)]
struct PlaybackClock {
    /// Device time where the current rewind began, and what it maps to.
    mirror: Option<(i64, i64)>,
    /// Last device time and the time it was mapped to.
    last: Option<(i64, i64)>,
}

impl PlaybackClock {
    fn map(&mut self, rewinding: bool, ts: i64) -> i64 {
        let out = match (rewinding, self.mirror) {
            (false, _) => {
                self.mirror = None;
                ts
            }
            (true, Some((origin, at))) => at + (origin - ts),
            (true, None) => {
                let (origin, at) = self.last.unwrap_or((ts, ts));
                self.mirror = Some((origin, at));
                at + (origin - ts)
            }
        };
        self.last = Some((ts, out));
        out
    }
}

/// One media connection: its parser and reassembler, a stream slot per
/// SIM + channel it carries, and the counters already published.
struct Connection<'a> {
    ctx: &'a Ctx,
    peer: SocketAddr,
    parser: Jt1078Parser,
    reasm: Reassembler,
    /// Looked up for every packet; at most MAX_STREAMS keys (foldhash, as in
    /// the reassembler).
    slots: foldhash::HashMap<(Sim, u8), StreamSlot>,
    /// The connection's first stream: its counters are attributed to it.
    primary: Option<String>,
    primary_counters: Option<Arc<StreamCounters>>,
    published_parser: ParserCounters,
    published_reasm: ReassemblyCounters,
    h265_logged: bool,
    /// The media workers its streams go to: it reads only while they have room.
    workers: u64,
}

impl<'a> Connection<'a> {
    fn new(ctx: &'a Ctx, peer: SocketAddr) -> Self {
        let parser = Jt1078Parser::new();
        let reasm = Reassembler::new(ctx.config.max_frame_bytes);
        Connection {
            ctx,
            peer,
            published_parser: *parser.counters(),
            published_reasm: *reasm.counters(),
            parser,
            reasm,
            slots: Default::default(),
            primary: None,
            primary_counters: None,
            h265_logged: false,
            workers: 0,
        }
    }

    /// Handles every packet parsed from the buffered input: opens stream
    /// slots, reassembles, forwards complete frames. Errors only when the
    /// media workers are gone (shutdown).
    async fn forward_packets(&mut self, read_at: Instant) -> Result<(), Closed> {
        while let Some(ev) = self.parser.pull() {
            let p = match ev {
                Jt1078Event::Packet(p) => p,
                Jt1078Event::Resync { bytes, reason } => {
                    self.log_resync(bytes, reason);
                    continue;
                }
            };
            if !self.slots.contains_key(&(p.sim, p.channel))
                && self.ctx.access.requires_auth()
                && !self.ctx.registry.is_authenticated(&p.sim.to_string())
            {
                return Err(Closed::Refused(p.sim.to_string()));
            }
            self.open_stream_slot(p.sim, p.channel);
            if p.payload_type == PT_H265 && !self.h265_logged {
                self.h265_logged = true;
                info!(
                    stream = self.primary.as_deref().unwrap_or("?"),
                    "H.265 (PT 99) stream: passed to media workers as HEVC"
                );
            }
            if let Some(frame) = self.reasm.push(p) {
                self.forward_frame(frame, read_at).await?;
            }
        }
        Ok(())
    }

    fn log_resync(&self, bytes: u64, reason: SkipReason) {
        let n = self.parser.counters().resyncs;
        let stream = self.primary.as_deref().unwrap_or("?");
        if n <= RESYNC_WARNINGS {
            warn!(stream, bytes, ?reason, "jt1078 resync");
        } else if n.is_power_of_two() {
            warn!(
                stream,
                resyncs = n,
                "jt1078 resyncs continue (logged at debug)"
            );
        } else {
            debug!(stream, bytes, ?reason, "jt1078 resync");
        }
    }

    /// Starts the media session of a SIM + channel on its first packet.
    fn open_stream_slot(&mut self, sim: Sim, channel: u8) {
        let ctx = self.ctx;
        // Beyond the reassembler's SIM + channel limit no stream is
        // opened (it refuses and counts the packet).
        let admitted = self.reasm.admits(sim, channel);
        let (true, Entry::Vacant(slot)) = (admitted, self.slots.entry((sim, channel))) else {
            return;
        };
        let sim = sim.to_string();
        let playback = ctx.registry.take_playback(&sim, channel).map(Arc::new);
        let kind = if playback.is_some() {
            SessionKind::Playback
        } else {
            SessionKind::Live
        };
        let stream = if kind == SessionKind::Playback {
            StreamName::playback(&sim, channel)
        } else {
            StreamName::live(&sim, channel)
        }
        .to_string();
        let rec = MediaSessionRecord {
            id: ctx.registry.next_id(),
            stream: stream.clone(),
            sim: Some(sim.clone()),
            channel: Some(channel),
            kind,
            peer: self.peer,
            started_ms: now_ms(),
            ended_ms: None,
        };
        if let Some(rec) = ctx.registry.media_started(rec) {
            info!(%stream, %sim, channel, ?kind, "media session started");
            ctx.emit(IngestEvent::MediaSessionStarted(rec.clone()));
            slot.insert(StreamSlot {
                stream: Arc::from(stream.as_str()),
                sim: Arc::from(sim.as_str()),
                kind,
                session_id: rec.id,
                started_ms: rec.started_ms,
                playback,
                clock: PlaybackClock::default(),
            });
            self.workers |= ctx.media.worker_bit(&stream);
        }
        if self.primary.is_none() {
            self.primary_counters = Some(ctx.metrics.stream_counters(&stream));
            self.primary = Some(stream);
        }
    }

    /// Sends one reassembled audio or video frame to the media workers.
    async fn forward_frame(
        &mut self,
        frame: Jt1078Frame,
        read_at: Instant,
    ) -> Result<(), PoolClosed> {
        let kind = match frame.data_type {
            DataType::IFrame => FrameKind::IFrame,
            DataType::PFrame => FrameKind::PFrame,
            DataType::BFrame => FrameKind::BFrame,
            DataType::Audio => FrameKind::Audio,
            // Transparent data is counted by the parser only.
            DataType::Transparent => return Ok(()),
        };
        let Some(slot) = self.slots.get_mut(&(frame.sim, frame.channel)) else {
            return Ok(());
        };
        let mut capture_ms = frame.timestamp_ms.map(|t| t as i64);
        if let (Some(t), Some(ticket)) = (capture_ms, &slot.playback) {
            let rewinding = ticket.rewinding.load(Relaxed);
            capture_ms = Some(slot.clock.map(rewinding, t));
        }
        let msg = MediaMsg::Frame(MediaFrame {
            stream: slot.stream.clone(),
            sim: slot.sim.clone(),
            channel: frame.channel,
            payload_type: frame.payload_type,
            kind,
            capture_ms,
            data: frame.data,
            session: slot.kind,
            playback: slot.playback.clone(),
            received: read_at,
            source_started_ms: slot.started_ms,
        });
        self.ctx.media.send(msg).await
    }

    /// Adds the parser's and reassembler's counters since the last call to
    /// the metrics; returns how many packets arrived in between.
    fn publish_counter_deltas(&mut self) -> u64 {
        let (cp, cr) = (*self.parser.counters(), *self.reasm.counters());
        let (lp, lr) = (self.published_parser, self.published_reasm);
        let m = &self.ctx.metrics;
        m.jt1078_resyncs.fetch_add(cp.resyncs - lp.resyncs, Relaxed);
        m.jt1078_parse_errors
            .fetch_add(cp.parse_errors - lp.parse_errors, Relaxed);
        m.jt1078_refused_packets
            .fetch_add(cr.refused_packets - lr.refused_packets, Relaxed);
        let delta = StreamStats {
            bytes_in: cp.bytes - lp.bytes,
            packets: cp.packets - lp.packets,
            frames: cr.frames - lr.frames,
            i_frames: cr.i_frames - lr.i_frames,
            dropped_frames: cr.dropped_frames - lr.dropped_frames,
            resyncs: cp.resyncs - lp.resyncs,
            resync_skipped_bytes: cp.resync_skipped_bytes - lp.resync_skipped_bytes,
            parse_errors: cp.parse_errors - lp.parse_errors,
            audio_packets: cp.audio_packets - lp.audio_packets,
            transparent_packets: cp.transparent_packets - lp.transparent_packets,
            ..Default::default()
        };
        match &self.primary_counters {
            Some(c) => c.add(&delta),
            None => {
                m.unattributed_bytes
                    .fetch_add(delta.bytes_in + delta.resync_skipped_bytes, Relaxed);
            }
        }
        (self.published_parser, self.published_reasm) = (cp, cr);
        delta.packets
    }

    /// Tells the media workers each stream ended and closes its session.
    async fn end_sessions(self) {
        let ctx = self.ctx;
        for (_, slot) in self.slots {
            let _ = ctx
                .media
                .send(MediaMsg::SourceEnded {
                    stream: slot.stream.to_string(),
                    session: slot.kind,
                })
                .await;
            if let Some(t) = &slot.playback {
                ctx.registry.playback_ended(&t.sim, t.channel, &t.id);
            }
            if let Some(rec) = ctx.registry.media_ended(slot.session_id) {
                info!(stream = %slot.stream, "media session ended");
                ctx.emit(IngestEvent::MediaSessionEnded(rec));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PlaybackClock;

    #[test]
    fn a_rewind_runs_forward_spaced_by_the_recorded_time() {
        let mut c = PlaybackClock::default();
        // Forward at 0, 40, 80; then keyframes backwards every 2 s; then forward again.
        let fwd: Vec<i64> = [0, 40, 80].iter().map(|&t| c.map(false, t)).collect();
        assert_eq!(fwd, [0, 40, 80]);
        let back: Vec<i64> = [80, -1920, -3920].iter().map(|&t| c.map(true, t)).collect();
        assert_eq!(back, [80, 2080, 4080]);
        // A rewind from the very first frame mirrors about it.
        let mut c = PlaybackClock::default();
        assert_eq!(c.map(true, 10_000), 10_000);
        assert_eq!(c.map(true, 8_000), 12_000);
        assert_eq!(
            c.map(false, 8_040),
            8_040,
            "forward again: the device's clock"
        );
    }
}
