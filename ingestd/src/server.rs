//! The daemon's network side: tokio listeners for JT/T 808, JT/T 1078 and the
//! raw H.264 port, connection limits and timeouts, and orderly shutdown.
//!
//! Connection tasks only own a socket and a buffer; protocol logic lives in
//! the sans-IO [`crate::jt808`] and [`crate::jt1078`] modules, media goes to
//! [`crate::media`] workers, events to the [`Hooks::events`] channel.
//!
//! Shutdown (mini-redis style): a watch channel tells accept loops and
//! connection tasks to stop; each task holds a clone of a completion sender,
//! so the runner knows when all of them are gone; then the media pool drains
//! its queues and calls [`crate::media::MediaHandler::shutdown`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::Config;
use crate::jt1078::{DataType, Jt1078Event, Jt1078Parser, Reassembler, Sim};
use crate::jt808::{Jt808Session, PlatformCommand, SessionEvent};
use crate::media::{
    CountingHandler, FrameKind, HandlerFactory, MediaFrame, MediaMsg, MediaPool, RawChunk,
    SessionKind,
};
use crate::metrics::{Metrics, StreamStats};
use crate::sessions::{
    device_stream_name, now_ms, valid_stream_name, CommandRequest, IngestEvent, MediaSessionRecord,
    PositionRecord, Registry,
};

/// [`Running::ctx`] hands it out, so embedders keep naming it from here.
pub use crate::context::Ctx;

/// What the embedding code plugs in.
#[derive(Clone, Default)]
pub struct Hooks {
    /// Builds each media worker's handler; `None`: [`CountingHandler`].
    pub media: Option<HandlerFactory>,
    /// Receives positions and session events (try_send: dropped and counted
    /// when full, so a slow catalog never stalls devices).
    pub events: Option<crossbeam_channel::Sender<IngestEvent>>,
    /// Counters to use (shared with the media handlers); `None`: new ones.
    pub metrics: Option<Arc<Metrics>>,
}

/// A running daemon.
pub struct Running {
    pub jt808_addr: SocketAddr,
    pub jt1078_addr: SocketAddr,
    pub raw_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub ctx: Arc<Ctx>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, closes connections, drains the media workers.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.done.await;
    }
}

/// Binds all listeners and starts serving; returns the bound addresses.
pub async fn start(config: Config, hooks: Hooks) -> std::io::Result<Running> {
    let l808 = TcpListener::bind(config.jt808_listen).await?;
    let l1078 = TcpListener::bind(config.jt1078_listen).await?;
    let lraw = TcpListener::bind(config.raw_listen).await?;
    let lhttp = TcpListener::bind(config.http_listen).await?;
    let metrics = hooks.metrics.unwrap_or_default();
    let factory = hooks
        .media
        .unwrap_or_else(|| CountingHandler::factory(metrics.clone()));
    let pool = MediaPool::start(config.media_workers, config.queue_depth, factory);
    let ctx = Arc::new(Ctx {
        metrics,
        registry: Arc::new(Registry::default()),
        media: pool.sender(),
        events: hooks.events,
        jt1078_addr: l1078.local_addr()?,
        config,
    });
    let (stop, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    let addrs = (
        l808.local_addr()?,
        ctx.jt1078_addr,
        lraw.local_addr()?,
        lhttp.local_addr()?,
    );
    for (listener, kind) in [
        (l808, Listener::Jt808),
        (l1078, Listener::Jt1078),
        (lraw, Listener::Raw),
    ] {
        tokio::spawn(accept_loop(
            listener,
            kind,
            ctx.clone(),
            limit.clone(),
            stop_rx.clone(),
            done_tx.clone(),
        ));
    }
    let mut http_stop = stop_rx.clone();
    let http_done = done_tx.clone();
    let routes = crate::http::routes(ctx.clone());
    tokio::spawn(async move {
        warp::serve(routes)
            .incoming(lhttp)
            .graceful(async move {
                stopped(&mut http_stop).await;
            })
            .run()
            .await;
        drop(http_done);
    });
    drop(done_tx);
    let done = tokio::spawn(async move {
        // Every task holds a done_tx clone; recv() yields None once all ended.
        let _ = done_rx.recv().await;
        let _ = tokio::task::spawn_blocking(move || pool.join()).await;
    });
    info!(
        jt808 = %addrs.0, jt1078 = %addrs.1, raw = %addrs.2, http = %addrs.3,
        "ingestd listening"
    );
    Ok(Running {
        jt808_addr: addrs.0,
        jt1078_addr: addrs.1,
        raw_addr: addrs.2,
        http_addr: addrs.3,
        ctx,
        stop,
        done,
    })
}

/// Starts, runs until `shutdown` resolves, then shuts down in order.
pub async fn run(
    config: Config,
    hooks: Hooks,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let running = start(config, hooks).await?;
    shutdown.await;
    info!("shutting down: no new connections, draining");
    running.shutdown().await;
    info!("shutdown complete");
    Ok(())
}

/// Resolves once shutdown is signalled (the watch guard is not held across
/// an await, keeping connection futures `Send`).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[derive(Debug, Clone, Copy)]
enum Listener {
    Jt808,
    Jt1078,
    Raw,
}

async fn accept_loop(
    listener: TcpListener,
    kind: Listener,
    ctx: Arc<Ctx>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        let (sock, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, ?kind, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.metrics.connections_rejected.fetch_add(1, Relaxed);
            warn!(%peer, ?kind, "connection limit reached, refusing");
            drop(sock);
            continue;
        };
        ctx.metrics.connections_total.fetch_add(1, Relaxed);
        let _ = sock.set_nodelay(true);
        let ctx = ctx.clone();
        let stop = stop.clone();
        let done = done.clone();
        tokio::spawn(async move {
            match kind {
                Listener::Jt808 => {
                    let span = info_span!("jt808", %peer, sim = tracing::field::Empty);
                    jt808_conn(sock, peer, &ctx, stop).instrument(span).await
                }
                Listener::Jt1078 => {
                    let span = info_span!("jt1078", %peer);
                    jt1078_conn(sock, peer, &ctx, stop).instrument(span).await
                }
                Listener::Raw => {
                    let span = info_span!("raw", %peer);
                    raw_conn(sock, peer, &ctx, stop).instrument(span).await
                }
            }
            drop(permit);
            drop(done);
        });
    }
}

/// Reads with the handshake timeout for the first read and the idle timeout
/// after; `Ok(None)` on shutdown, `Ok(Some(0))` on EOF.
async fn read_some(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    first: bool,
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<Option<usize>> {
    let t = if first {
        ctx.config.handshake_timeout
    } else {
        ctx.config.idle_timeout
    };
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio::select! {
        r = tokio::time::timeout(t, sock.read_buf(buf)) => match r {
            Ok(r) => r.map(Some),
            Err(_) => {
                ctx.metrics.connections_timed_out.fetch_add(1, Relaxed);
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, if first { "handshake timeout" } else { "idle timeout" }))
            }
        },
        _ = stopped(stop) => Ok(None),
    }
}

/// Reads until `deadline`; `Ok(None)` on shutdown, `Ok(Some(0))` on EOF.
///
/// The JT/T listeners move the deadline only when a complete packet or
/// frame arrives (handshake timeout for the first, idle timeout after), not
/// on every byte: a slowloris sender trickling one byte at a time would
/// otherwise hold its connection (and a slot of the connection limit) for
/// ever.
async fn read_until(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    deadline: tokio::time::Instant,
    handshake: bool,
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<Option<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio::select! {
        r = tokio::time::timeout_at(deadline, sock.read_buf(buf)) => match r {
            Ok(r) => r.map(Some),
            Err(_) => {
                ctx.metrics.connections_timed_out.fetch_add(1, Relaxed);
                let why = if handshake {
                    "no complete packet within the handshake timeout"
                } else {
                    "no complete packet within the idle timeout"
                };
                info!(why, "closing connection");
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why))
            }
        },
        _ = stopped(stop) => Ok(None),
    }
}

/// Resync warnings logged per connection before they turn into debug lines
/// (a magic flood would otherwise write a warning every 4 bytes).
const RESYNC_WARNINGS: u64 = 3;

// ------------------------------------------------------------------ 808

struct Gauge<'a>(&'a std::sync::atomic::AtomicU64);
impl<'a> Gauge<'a> {
    fn new(g: &'a std::sync::atomic::AtomicU64) -> Self {
        g.fetch_add(1, Relaxed);
        Gauge(g)
    }
}
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

async fn jt808_conn(sock: TcpStream, peer: SocketAddr, ctx: &Ctx, mut stop: watch::Receiver<bool>) {
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

// ----------------------------------------------------------------- 1078

struct StreamSlot {
    stream: Arc<str>,
    sim: Arc<str>,
    session_id: u64,
}

async fn jt1078_conn(
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

// ------------------------------------------------------------------ raw

/// Longest accepted first line (`STREAM ` + 64 + CRLF, with slack).
const MAX_RAW_LINE: usize = 128;

async fn raw_conn(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _g = Gauge::new(&ctx.metrics.connections_open_raw);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // First line within the handshake timeout (overall, not per read).
    let deadline = tokio::time::Instant::now() + ctx.config.handshake_timeout;
    let line_end = loop {
        if let Some(i) = buf.iter().position(|&b| b == b'\n') {
            break i;
        }
        if buf.len() > MAX_RAW_LINE {
            let _ = sock.write_all(b"ERR first line too long\n").await;
            return;
        }
        let r = tokio::select! {
            r = tokio::time::timeout_at(deadline, sock.read_buf(&mut buf)) => r,
            _ = stopped(&mut stop) => return,
        };
        match r {
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                ctx.metrics.connections_timed_out.fetch_add(1, Relaxed);
                debug!("raw handshake timeout");
                return;
            }
        }
    };
    let line = buf.split_to(line_end + 1);
    let line = String::from_utf8_lossy(&line);
    let name = match line.trim_end().strip_prefix("STREAM ") {
        Some(n) if valid_stream_name(n) => n.to_string(),
        _ => {
            warn!(line = %line.trim_end(), "raw: bad first line");
            let _ = sock
                .write_all(b"ERR expected 'STREAM <[A-Za-z0-9_-]{1,64}>'\n")
                .await;
            return;
        }
    };
    let rec = MediaSessionRecord {
        id: ctx.registry.next_id(),
        stream: name.clone(),
        sim: None,
        channel: None,
        kind: SessionKind::Raw,
        peer,
        started_ms: now_ms(),
        ended_ms: None,
    };
    let Some(rec) = ctx.registry.media_started(rec) else {
        warn!(stream = %name, "raw: stream busy");
        let _ = sock.write_all(b"ERR stream busy\n").await;
        return;
    };
    info!(stream = %name, "raw stream started");
    ctx.emit(IngestEvent::MediaSessionStarted(rec.clone()));
    let counters = ctx.metrics.stream_counters(&name);
    let shared_name: Arc<str> = Arc::from(name.as_str());
    loop {
        if !buf.is_empty() {
            let data = buf.split().freeze();
            counters.add(&StreamStats {
                bytes_in: data.len() as u64,
                ..Default::default()
            });
            if ctx
                .media
                .send(MediaMsg::Raw(RawChunk {
                    stream: shared_name.clone(),
                    data,
                    received: std::time::Instant::now(),
                }))
                .await
                .is_err()
            {
                break;
            }
        }
        match read_some(&mut sock, &mut buf, false, ctx, &mut stop).await {
            Ok(Some(0)) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(e) => {
                debug!(error = %e, "raw read ended");
                break;
            }
        }
    }
    let _ = ctx
        .media
        .send(MediaMsg::SourceEnded {
            stream: name.clone(),
            session: SessionKind::Raw,
        })
        .await;
    if let Some(rec) = ctx.registry.media_ended(rec.id) {
        info!(stream = %name, "raw stream ended");
        ctx.emit(IngestEvent::MediaSessionEnded(rec));
    }
}
