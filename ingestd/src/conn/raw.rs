//! The raw port's connection task: a `STREAM <name> [h264|h265]` first line
//! (H.264 when the codec is left out), then Annex-B bytes forwarded as they
//! arrive (no frame boundaries) to the media workers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::{stopped, Gauge};
use crate::context::Ctx;
use crate::media::{MediaMsg, RawChunk, SessionKind};
use crate::metrics::StreamStats;
use crate::sessions::{now_ms, IngestEvent, MediaSessionRecord};

/// Longest accepted first line (`STREAM ` + 64 + CRLF, with slack).
const MAX_RAW_LINE: usize = 128;

/// Serves one raw-port connection until EOF, a read error, a timeout or
/// shutdown.
pub(crate) async fn handle(
    mut sock: TcpStream,
    peer: SocketAddr,
    ctx: &Ctx,
    mut stop: watch::Receiver<bool>,
) {
    let _open = Gauge::new(&ctx.metrics.connections_open_raw);
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
    let Some((name, codec)) = parse_first_line(line.trim_end()) else {
        warn!(line = %line.trim_end(), "raw: bad first line");
        let _ = sock
            .write_all(b"ERR expected 'STREAM <[A-Za-z0-9_-]{1,64}> [h264|h265]'\n")
            .await;
        return;
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
    let worker = ctx.media.worker_bit(&name);
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
                    codec,
                    data,
                    received: std::time::Instant::now(),
                    source_started_ms: rec.started_ms,
                }))
                .await
                .is_err()
            {
                break;
            }
        }
        // As for JT/T 1078 (`conn::jt1078`): no reading behind a full queue.
        tokio::select! {
            _ = ctx.media.wait_for_room(worker) => {}
            _ = stopped(&mut stop) => break,
        }
        match read_some(&mut sock, &mut buf, ctx, &mut stop).await {
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

/// Reads with the idle timeout; `Ok(None)` on shutdown, `Ok(Some(0))` on EOF.
/// `STREAM <name>` or `STREAM <name> <codec>`.
fn parse_first_line(line: &str) -> Option<(String, streamcore::codec::VideoCodec)> {
    let mut words = line.strip_prefix("STREAM ")?.split(' ');
    let name = words
        .next()
        .filter(|n| streamcore::layout::valid_stream_name(n))?;
    let codec = match words.next() {
        None => Default::default(),
        Some(c) => c.parse().ok()?,
    };
    words.next().is_none().then(|| (name.to_string(), codec))
}

async fn read_some(
    sock: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    ctx: &Ctx,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<Option<usize>> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio::select! {
        r = tokio::time::timeout(ctx.config.idle_timeout, sock.read_buf(buf)) => match r {
            Ok(r) => r.map(Some),
            Err(_) => {
                ctx.metrics.connections_timed_out.fetch_add(1, Relaxed);
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"))
            }
        },
        _ = stopped(stop) => Ok(None),
    }
}
