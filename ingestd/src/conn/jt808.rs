//! The JT/T 808 connection task: feeds the socket to a [`Jt808Session`],
//! writes its replies, turns its events into registry updates, metrics and
//! [`IngestEvent`]s, and writes the platform commands the HTTP API queues
//! for the device.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::{read_until, Gauge};
use crate::context::Ctx;
use crate::jt808::{Jt808Session, PlatformCommand, SessionEvent};
use crate::sessions::{now_ms, CommandRequest, IngestEvent, PositionRecord};

pub(crate) async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _g = Gauge::new(&ctx.metrics.connections_open_808);
    let local = sock.local_addr().unwrap_or(peer);
    let (mut rd, mut wr) = sock.into_split();
    let mut sess = Jt808Session::new(&ctx.config.auth_secret);
    let conn_id = ctx.registry.next_id();
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<CommandRequest>(16);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    let mut sim: Option<String> = None;
    let mut first = true;
    let mut deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    let mut last = *sess.counters();
    debug!("jt808 connection");
    loop {
        tokio::select! {
            r = read_until(&mut rd, &mut buf, deadline, first, ctx, &mut stop) => {
                match r {
                    Ok(Some(0)) | Ok(None) => break,
                    Ok(Some(_)) => {}
                    Err(e) => { debug!(error = %e, "jt808 read ended"); break; }
                }
                sess.push(&buf);
                buf.clear();
                while let Some(ev) = sess.poll(&mut out) {
                    handle_808_event(ev, ctx, &mut sim, conn_id, peer, local, &sess, &cmd_tx);
                }
                let c = *sess.counters();
                let m = &ctx.metrics;
                m.jt808_frames.fetch_add(c.frames - last.frames, Relaxed);
                m.jt808_messages.fetch_add(c.messages - last.messages, Relaxed);
                m.jt808_bad_checksum.fetch_add(c.bad_checksum - last.bad_checksum, Relaxed);
                m.jt808_bad_frames.fetch_add(c.bad_frames - last.bad_frames, Relaxed);
                if c.frames > last.frames {
                    first = false;
                    deadline = tokio::time::Instant::now() + ctx.config.idle_timeout;
                }
                last = c;
            }
            Some(req) = cmd_rx.recv() => {
                let serial = sess.command(&req.cmd, &mut out);
                if let (Some(s), PlatformCommand::Playback { channel, .. }) = (&sim, &req.cmd) {
                    ctx.registry.expect_playback(s, *channel);
                }
                info!(?serial, cmd = ?req.cmd, "platform command sent");
                let _ = req.reply.send(serial);
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                debug!(error = %e, "jt808 write failed");
                break;
            }
            out.clear();
        }
    }
    if let Some(s) = sim {
        if ctx.registry.device_gone(&s, conn_id) {
            info!(sim = %s, "device offline");
            ctx.emit(IngestEvent::DeviceOffline {
                sim: s,
                at_ms: now_ms(),
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn handle_808_event(
    ev: SessionEvent,
    ctx: &Ctx,
    sim: &mut Option<String>,
    conn_id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    sess: &Jt808Session,
    cmd_tx: &mpsc::Sender<CommandRequest>,
) {
    let ev_sim = match &ev {
        SessionEvent::Registered { sim, .. }
        | SessionEvent::Authenticated { sim }
        | SessionEvent::AuthFailed { sim }
        | SessionEvent::Heartbeat { sim }
        | SessionEvent::Position { sim, .. }
        | SessionEvent::TerminalReply { sim, .. }
        | SessionEvent::Unsupported { sim, .. } => Some(sim.clone()),
        SessionEvent::Error(_) => None,
    };
    if let Some(s) = ev_sim {
        if sim.as_deref() != Some(&s) {
            if let Some(old) = sim.take() {
                ctx.registry.device_gone(&old, conn_id);
            }
            tracing::Span::current().record("sim", s.as_str());
            *sim = Some(s.clone());
        }
        if ctx
            .registry
            .device_seen(&s, conn_id, peer, local, sess.is_authenticated(), cmd_tx)
        {
            info!(sim = %s, "device online");
            ctx.emit(IngestEvent::DeviceOnline {
                sim: s,
                peer,
                at_ms: now_ms(),
            });
        }
    }
    match ev {
        SessionEvent::Position { sim, location } => {
            ctx.metrics.positions.fetch_add(1, Relaxed);
            if location.alarm != 0 {
                info!(%sim, alarm = format_args!("{:#010x}", location.alarm), "alarm flags set");
            }
            ctx.emit(IngestEvent::Position(PositionRecord {
                sim,
                received_ms: now_ms(),
                location,
            }));
        }
        SessionEvent::Unsupported { sim, msg_id } => {
            ctx.metrics.jt808_unsupported.fetch_add(1, Relaxed);
            debug!(%sim, msg_id = format_args!("{msg_id:#06x}"), "unsupported message");
        }
        SessionEvent::AuthFailed { sim } => warn!(%sim, "authentication failed"),
        SessionEvent::Error(e) => debug!(error = %e, "jt808 frame rejected"),
        SessionEvent::Registered { sim, register } => {
            info!(%sim, plate = %register.plate, terminal = %register.terminal_id, "registered")
        }
        SessionEvent::Authenticated { sim } => info!(%sim, "authenticated"),
        SessionEvent::Heartbeat { .. } | SessionEvent::TerminalReply { .. } => {}
    }
}
