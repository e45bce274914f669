//! Connection tasks, one submodule per listener: [`jt808`] (signalling),
//! [`jt1078`] (video) and [`raw`] (raw H.264 port). Each task owns its
//! socket and buffers; protocol logic stays in the sans-IO codecs.
//!
//! Shared here: `read_until` with its slowloris-safe deadline rule, the
//! shutdown wait, and [`Gauge`] for the open-connection metrics.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tracing::info;

use crate::context::Ctx;

pub(crate) mod jt1078;
pub(crate) mod jt808;
pub(crate) mod raw;

/// Resolves once shutdown is signalled (the watch guard is not held across
/// an await, keeping connection futures `Send`).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
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

/// Counts a connection in an open-connections gauge for as long as it lives.
struct Gauge<'a>(&'a AtomicU64);
impl<'a> Gauge<'a> {
    fn new(g: &'a AtomicU64) -> Self {
        g.fetch_add(1, Relaxed);
        Gauge(g)
    }
}
impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
