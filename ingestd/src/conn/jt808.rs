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
use crate::incidents::AlarmReport;
use crate::jt808::{msg, result, Jt808Counters, Jt808Session, RefuseReason, SessionEvent};
use crate::sessions::{now_ms, Answer, CommandRequest, IngestEvent, PositionRecord};

/// A command whose answer someone is waiting for.
struct Waiter {
    /// A 0x9205 query: the answer is the 0x1205 list; its 0x0001 only
    /// counts when it refuses.
    wants_list: bool,
    tx: tokio::sync::oneshot::Sender<Answer>,
}

/// Serves one JT/T 808 connection until EOF, a read or write error, a
/// timeout or shutdown.
pub(crate) async fn handle(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _open = Gauge::new(&ctx.metrics.connections_open_808);
    let local = sock.local_addr().unwrap_or(peer);
    let (mut rd, mut wr) = sock.into_split();
    let (commands, mut command_rx) = mpsc::channel::<CommandRequest>(16);
    let mut conn = Connection::new(ctx, peer, local, commands);
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    let mut first = true;
    let mut deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    debug!("jt808 connection");
    loop {
        tokio::select! {
            r = read_until(&mut rd, &mut buf, deadline, first, ctx, &mut stop) => {
                match r {
                    Ok(Some(0)) | Ok(None) => break,
                    Ok(Some(_)) => {}
                    Err(e) => { debug!(error = %e, "jt808 read ended"); break; }
                }
                conn.session.push(&buf);
                buf.clear();
                conn.handle_events(&mut out);
                // Only whole frames move the deadline (see `read_until`).
                if conn.publish_counter_deltas() > 0 {
                    first = false;
                    deadline = tokio::time::Instant::now() + ctx.config.idle_timeout;
                }
            }
            Some(request) = command_rx.recv() => conn.send_command(request, &mut out),
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                debug!(error = %e, "jt808 write failed");
                break;
            }
            out.clear();
        }
    }
    conn.close();
}

/// One device connection: its protocol session and what the registry knows
/// it by.
struct Connection<'a> {
    ctx: &'a Ctx,
    session: Jt808Session,
    /// Tells this connection's registry entries from those of a newer
    /// connection of the same device.
    conn_id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    /// Handed to the registry so the HTTP API can queue platform commands.
    commands: mpsc::Sender<CommandRequest>,
    /// The SIM of the last message, `None` before the first valid one.
    sim: Option<String>,
    /// Session counters already added to the metrics.
    published: Jt808Counters,
    /// Commands awaiting the device's answer, by serial.
    waiting: std::collections::HashMap<u16, Waiter>,
    /// Refusals logged at warn level (the rest go to debug).
    refusals_logged: u32,
}

impl<'a> Connection<'a> {
    fn new(
        ctx: &'a Ctx,
        peer: SocketAddr,
        local: SocketAddr,
        commands: mpsc::Sender<CommandRequest>,
    ) -> Self {
        let secret = ctx.config.auth_secret.as_deref().unwrap_or_default();
        let session = Jt808Session::with_clock(secret, ctx.config.device_clock)
            .with_policy(ctx.access.policy());
        let published = *session.counters();
        Connection {
            ctx,
            session,
            conn_id: ctx.registry.next_id(),
            peer,
            local,
            commands,
            sim: None,
            published,
            waiting: Default::default(),
            refusals_logged: 0,
        }
    }

    /// Handles every message the pushed input completed; replies go to `out`.
    fn handle_events(&mut self, out: &mut BytesMut) {
        while let Some(ev) = self.session.poll(out) {
            self.handle_event(ev);
        }
    }

    /// Adds the session's counters since the last call to the metrics;
    /// returns how many frames arrived in between.
    fn publish_counter_deltas(&mut self) -> u64 {
        let (c, last) = (*self.session.counters(), self.published);
        let m = &self.ctx.metrics;
        m.jt808_frames.fetch_add(c.frames - last.frames, Relaxed);
        m.jt808_messages
            .fetch_add(c.messages - last.messages, Relaxed);
        m.jt808_bad_checksum
            .fetch_add(c.bad_checksum - last.bad_checksum, Relaxed);
        m.jt808_bad_frames
            .fetch_add(c.bad_frames - last.bad_frames, Relaxed);
        self.published = c;
        c.frames - last.frames
    }

    /// Writes a platform command from the HTTP API to `out` and answers the
    /// request with the serial used.
    fn send_command(&mut self, request: CommandRequest, out: &mut BytesMut) {
        let serial = self.session.command(&request.cmd, out);
        info!(?serial, cmd = ?request.cmd, "platform command sent");
        if let (Some(serial), Some(tx)) = (serial, request.answer) {
            // Callers that gave up (timed out) leave closed senders behind.
            self.waiting.retain(|_, w| !w.tx.is_closed());
            let wants_list = request.cmd.msg_id() == msg::QUERY_RESOURCES;
            self.waiting.insert(serial, Waiter { wants_list, tx });
        }
        let _ = request.reply.send(serial);
    }

    /// Hands a device's answer to whoever waits for it (by serial).
    fn answered(&mut self, answer: Answer) {
        let serial = match &answer {
            Answer::Reply(r) => {
                let acknowledges_query = r.result == result::OK
                    && self.waiting.get(&r.serial).is_some_and(|w| w.wants_list);
                if acknowledges_query {
                    return;
                }
                r.serial
            }
            Answer::Resources(l) => l.serial,
        };
        if let Some(w) = self.waiting.remove(&serial) {
            let _ = w.tx.send(answer);
        }
    }

    /// Marks the device offline unless a newer connection has taken it over.
    fn close(self) {
        let ctx = self.ctx;
        if let Some(s) = self.sim {
            if ctx.registry.device_gone(&s, self.conn_id) {
                info!(sim = %s, "device offline");
                ctx.report_alarm(AlarmReport::Offline {
                    sim: s.clone(),
                    at_ms: now_ms(),
                });
                ctx.emit(IngestEvent::DeviceOffline {
                    sim: s,
                    at_ms: now_ms(),
                });
            }
        }
    }

    /// Keeps the registry up to date for the device an event came from,
    /// then records the event (metrics, catalog, log).
    fn handle_event(&mut self, ev: SessionEvent) {
        let ev_sim = match &ev {
            SessionEvent::Registered { sim, .. }
            | SessionEvent::Authenticated { sim }
            | SessionEvent::AuthFailed { sim }
            | SessionEvent::Heartbeat { sim }
            | SessionEvent::Position { sim, .. }
            | SessionEvent::TerminalReply { sim, .. }
            | SessionEvent::Resources { sim, .. }
            | SessionEvent::Unsupported { sim, .. } => Some(sim.clone()),
            SessionEvent::Refused { .. } | SessionEvent::Error(_) => None,
        };
        // A device is online (commands reach it, its media is accepted)
        // only once it authenticated, unless the policy lets it skip that.
        if let Some(s) = ev_sim.filter(|s| self.session.accepts(s)) {
            self.track_device(s);
        }
        let ctx = self.ctx;
        match ev {
            SessionEvent::Position { sim, location } => {
                ctx.metrics.positions.fetch_add(1, Relaxed);
                if location.alarm != 0 {
                    info!(%sim, alarm = format_args!("{:#010x}", location.alarm), "alarm flags set");
                }
                let received_ms = now_ms();
                ctx.report_alarm(AlarmReport::Position {
                    sim: sim.clone(),
                    alarm: location.alarm,
                    at_ms: location.time_ms.unwrap_or(received_ms),
                    received_ms,
                    lat: location.lat(),
                    lon: location.lon(),
                });
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
                info!(%sim, plate = %register.plate, terminal = %register.terminal_id, "registered");
                ctx.emit(IngestEvent::Record(
                    streamcore::catalog::Record::DeviceRegistered {
                        sim,
                        plate: register.plate,
                        plate_color: register.plate_color,
                        maker_id: register.maker_id,
                        model: register.model,
                        terminal_id: register.terminal_id,
                        province: register.province,
                        city: register.city,
                        at: now_ms(),
                    },
                ));
            }
            SessionEvent::Refused {
                sim,
                msg_id,
                reason,
            } => {
                let counter = match reason {
                    RefuseReason::Unauthenticated => &ctx.metrics.jt808_refused_unauthenticated,
                    RefuseReason::NotAllowed => &ctx.metrics.jt808_refused_not_allowed,
                };
                counter.fetch_add(1, Relaxed);
                // One clear line per connection; a device retrying every
                // second must not flood the log.
                if self.refusals_logged < 1 {
                    self.refusals_logged += 1;
                    warn!(%sim, msg_id = format_args!("{msg_id:#06x}"), reason = reason.as_str(),
                        "device refused (further refusals on this connection logged at debug)");
                } else {
                    debug!(%sim, msg_id = format_args!("{msg_id:#06x}"), reason = reason.as_str(), "device refused");
                }
            }
            SessionEvent::Authenticated { sim } => info!(%sim, "authenticated"),
            SessionEvent::TerminalReply { reply, .. } => self.answered(Answer::Reply(reply)),
            SessionEvent::Resources { sim, list } => {
                info!(%sim, serial = list.serial, recordings = list.items.len(), "recording list");
                self.answered(Answer::Resources(list));
            }
            SessionEvent::Heartbeat { .. } => {}
        }
    }

    /// Follows the SIM the device speaks for (it may change on one
    /// connection) and marks the device online on this connection.
    fn track_device(&mut self, s: String) {
        let ctx = self.ctx;
        if self.sim.as_deref() != Some(&s) {
            if let Some(old) = self.sim.take() {
                ctx.registry.device_gone(&old, self.conn_id);
            }
            tracing::Span::current().record("sim", s.as_str());
            self.sim = Some(s.clone());
        }
        if ctx.registry.device_seen(
            &s,
            self.conn_id,
            self.peer,
            self.local,
            self.session.is_authenticated(),
            &self.commands,
        ) {
            info!(sim = %s, "device online");
            ctx.emit(IngestEvent::DeviceOnline {
                sim: s,
                peer: self.peer,
                at_ms: now_ms(),
            });
        }
    }
}
