//! The JT/T 1078 connection task: parses packets, opens a media session per
//! SIM + channel, reassembles frames and forwards them to the media workers,
//! publishes the parser's and reassembler's counters, and ends the sessions
//! when the connection closes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{read_until, Gauge};
use crate::context::Ctx;
use crate::jt1078::{DataType, Jt1078Event, Jt1078Parser, Reassembler, Sim};
use crate::media::{FrameKind, MediaFrame, MediaMsg, SessionKind};
use crate::metrics::StreamStats;
use crate::sessions::{device_stream_name, now_ms, IngestEvent, MediaSessionRecord};

/// Resync warnings logged per connection before they turn into debug lines
/// (a magic flood would otherwise write a warning every 4 bytes).
const RESYNC_WARNINGS: u64 = 3;

struct StreamSlot {
    stream: Arc<str>,
    sim: Arc<str>,
    session_id: u64,
}

pub(crate) async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _g = Gauge::new(&ctx.metrics.connections_open_1078);
    let mut parser = Jt1078Parser::new();
    let mut reasm = Reassembler::new(ctx.config.max_frame_bytes);
    // Looked up for every packet; at most MAX_STREAMS keys (foldhash, as in
    // the reassembler).
    let mut slots: foldhash::HashMap<(Sim, u8), StreamSlot> = Default::default();
    // Counters are attributed to the connection's first stream.
    let mut primary: Option<String> = None;
    let mut primary_counters: Option<Arc<crate::metrics::StreamCounters>> = None;
    let (mut lp, mut lr) = (*parser.counters(), *reasm.counters());
    let mut first = true;
    let mut deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    let mut h265_logged = false;
    'conn: loop {
        let r = read_until(
            &mut sock,
            parser.buffer_mut(),
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
        let read_at = std::time::Instant::now();
        while let Some(ev) = parser.pull() {
            let p = match ev {
                Jt1078Event::Packet(p) => p,
                Jt1078Event::Resync { bytes, reason } => {
                    let n = parser.counters().resyncs;
                    let stream = primary.as_deref().unwrap_or("?");
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
                    continue;
                }
            };
            let key = (p.sim, p.channel);
            // Beyond the reassembler's SIM + channel limit no stream is
            // opened (it refuses and counts the packet below).
            let admitted = reasm.admits(p.sim, p.channel);
            if let (true, std::collections::hash_map::Entry::Vacant(slot)) =
                (admitted, slots.entry(key))
            {
                let sim = p.sim.to_string();
                let kind = if ctx.registry.take_playback(&sim, p.channel) {
                    SessionKind::Playback
                } else {
                    SessionKind::Live
                };
                let stream = device_stream_name(&sim, p.channel, kind);
                let rec = MediaSessionRecord {
                    id: ctx.registry.next_id(),
                    stream: stream.clone(),
                    sim: Some(sim.clone()),
                    channel: Some(p.channel),
                    kind,
                    peer,
                    started_ms: now_ms(),
                    ended_ms: None,
                };
                if let Some(rec) = ctx.registry.media_started(rec) {
                    info!(%stream, %sim, channel = p.channel, ?kind, "media session started");
                    ctx.emit(IngestEvent::MediaSessionStarted(rec.clone()));
                    slot.insert(StreamSlot {
                        stream: Arc::from(stream.as_str()),
                        sim: Arc::from(sim.as_str()),
                        session_id: rec.id,
                    });
                }
                if primary.is_none() {
                    primary_counters = Some(ctx.metrics.stream_counters(&stream));
                    primary = Some(stream);
                }
            }
            if p.payload_type == crate::jt1078::PT_H265 && !h265_logged {
                h265_logged = true;
                info!(
                    stream = primary.as_deref().unwrap_or("?"),
                    "H.265 (PT 99) stream: passed to media workers as HEVC"
                );
            }
            let Some(frame) = reasm.push(p) else { continue };
            let kind = match frame.data_type {
                DataType::IFrame => FrameKind::IFrame,
                DataType::PFrame => FrameKind::PFrame,
                DataType::BFrame => FrameKind::BFrame,
                DataType::Audio => FrameKind::Audio,
                // Transparent data is counted by the parser only.
                DataType::Transparent => continue,
            };
            let Some(slot) = slots.get(&(frame.sim, frame.channel)) else {
                continue;
            };
            let session = if slot.stream.ends_with("_pb") {
                SessionKind::Playback
            } else {
                SessionKind::Live
            };
            let msg = MediaMsg::Frame(MediaFrame {
                stream: slot.stream.clone(),
                sim: slot.sim.clone(),
                channel: frame.channel,
                payload_type: frame.payload_type,
                kind,
                capture_ms: frame.timestamp_ms.map(|t| t as i64),
                data: frame.data,
                session,
                received: read_at,
            });
            if ctx.media.send(msg).await.is_err() {
                break 'conn;
            }
        }
        let (cp, cr) = (*parser.counters(), *reasm.counters());
        if cp.packets > lp.packets {
            first = false;
            deadline = tokio::time::Instant::now() + ctx.config.idle_timeout;
        }
        let m = &ctx.metrics;
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
        match &primary_counters {
            Some(c) => c.add(&delta),
            None => {
                ctx.metrics
                    .unattributed_bytes
                    .fetch_add(delta.bytes_in + delta.resync_skipped_bytes, Relaxed);
            }
        }
        (lp, lr) = (cp, cr);
    }
    for (_, slot) in slots {
        let kind = if slot.stream.ends_with("_pb") {
            SessionKind::Playback
        } else {
            SessionKind::Live
        };
        let _ = ctx
            .media
            .send(MediaMsg::SourceEnded {
                stream: slot.stream.to_string(),
                session: kind,
            })
            .await;
        if let Some(rec) = ctx.registry.media_ended(slot.session_id) {
            info!(stream = %slot.stream, "media session ended");
            ctx.emit(IngestEvent::MediaSessionEnded(rec));
        }
    }
}
