//! Media hand-off from the async listeners to blocking worker threads.
//!
//! Connection tasks turn JT/T 1078 frames and raw-port bytes into
//! [`MediaMsg`]s and send them through bounded crossbeam channels to a pool of
//! worker threads (one per core by default). A stream always maps to the same
//! worker, so one worker owns a stream's state (e.g. a `streamcore`
//! `LiveStream`, which is `Send` but not `Sync`) and sees its frames in order.
//! What a worker does with a message is a [`MediaHandler`]; the default,
//! [`CountingHandler`], only keeps per-stream counters.
//!
//! Backpressure: when a worker's queue is full, [`MediaSender::send`] waits
//! (without blocking the runtime), so the sending connection stops reading
//! its socket and TCP flow control slows the device down.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use tracing::{info, warn};

use crate::metrics::{Metrics, StreamStats};

/// Which kind of connection produced the media (streamcore's, one
/// definition for connections, workers and the catalog).
pub use streamcore::SessionKind;

/// Kind of a JT/T 1078 frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    IFrame,
    PFrame,
    BFrame,
    Audio,
}

/// One complete frame from a device.
#[derive(Debug, Clone)]
pub struct MediaFrame {
    /// `<SIM>_<channel>` (playback: `<SIM>_<channel>_pb`). Shared, so a
    /// frame carries its names without allocating.
    pub stream: Arc<str>,
    pub sim: Arc<str>,
    pub channel: u8,
    /// JT/T 1078 payload type: 98 H.264, 99 H.265, audio 6/7/8/19/26...
    pub payload_type: u8,
    pub kind: FrameKind,
    /// Device capture time in ms (not necessarily Unix time).
    pub capture_ms: Option<i64>,
    /// Annex-B for video; codec payload for audio.
    pub data: Bytes,
    pub session: SessionKind,
    /// The request a playback upload answers (`None` for live video).
    pub playback: Option<Arc<crate::sessions::PlaybackTicket>>,
    /// When the frame's last byte was read from the socket (publish latency).
    pub received: Instant,
    /// Host time (Unix ms) the media session of this connection started: between nodes that
    /// share a stream, the newest source wins the stream's lease.
    pub source_started_ms: i64,
}

/// A chunk of an Annex-B byte stream from the raw port (no frame boundaries).
#[derive(Debug, Clone)]
pub struct RawChunk {
    pub stream: Arc<str>,
    /// The video codec named on the first line.
    pub codec: streamcore::codec::VideoCodec,
    pub data: Bytes,
    /// When the chunk was read from the socket (publish latency).
    pub received: Instant,
    /// Host time (Unix ms) the connection's stream started (see [`MediaFrame`]).
    pub source_started_ms: i64,
}

/// Messages to the media workers.
#[derive(Debug, Clone)]
pub enum MediaMsg {
    Frame(MediaFrame),
    Raw(RawChunk),
    /// The source of `stream` disconnected (e.g. call `LiveStream::mark_break`
    /// and publish the open segment).
    SourceEnded {
        stream: String,
        session: SessionKind,
    },
}

impl MediaMsg {
    pub fn stream(&self) -> &str {
        match self {
            MediaMsg::Frame(f) => &f.stream,
            MediaMsg::Raw(r) => &r.stream,
            MediaMsg::SourceEnded { stream, .. } => stream,
        }
    }
}

/// What a worker thread does with the messages of the streams it owns.
/// One instance per worker thread.
pub trait MediaHandler: Send + 'static {
    fn handle(&mut self, msg: MediaMsg);
    /// Called about once a second while the worker is idle or busy, for
    /// time-based work (closing streams whose source went quiet).
    fn tick(&mut self) {}
    /// Called once when the daemon shuts down, after the queue drained.
    fn shutdown(&mut self);
}

/// Builds the handler for worker `index`.
pub type HandlerFactory = Arc<dyn Fn(usize) -> Box<dyn MediaHandler> + Send + Sync>;

/// The default handler: per-stream counters only (exported via /metrics).
pub struct CountingHandler {
    metrics: Arc<Metrics>,
}

impl CountingHandler {
    pub fn factory(metrics: Arc<Metrics>) -> HandlerFactory {
        Arc::new(move |_| {
            Box::new(CountingHandler {
                metrics: metrics.clone(),
            }) as Box<dyn MediaHandler>
        })
    }
}

impl MediaHandler for CountingHandler {
    fn handle(&mut self, msg: MediaMsg) {
        match msg {
            MediaMsg::Frame(f) => self
                .metrics
                .add_stream(&f.stream, &StreamStats::worker_frame(f.data.len())),
            MediaMsg::Raw(r) => self
                .metrics
                .add_stream(&r.stream, &StreamStats::worker_frame(r.data.len())),
            MediaMsg::SourceEnded { stream, session } => {
                info!(stream, ?session, "media source ended");
            }
        }
    }
    fn shutdown(&mut self) {}
}

/// How often [`MediaHandler::tick`] runs.
const TICK: Duration = Duration::from_secs(1);

/// How long a worker that has just run out of work waits before it looks
/// again, then parks. Under load this gathers the frames of many streams
/// into one wake-up; it adds at most this much to a frame's latency.
const BATCH_NAP: Duration = Duration::from_millis(1);

/// The worker pool has shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("media worker pool closed")]
pub struct PoolClosed;

/// What travels on a worker queue: media, or the order to finish.
enum WorkerMsg {
    Media(MediaMsg),
    Close,
}

/// Cloneable sending side used by connection tasks.
#[derive(Clone)]
pub struct MediaSender {
    queues: Arc<Vec<Sender<WorkerMsg>>>,
    /// Picks a stream's worker; hashed once per message, so foldhash (seeded
    /// once per process: every message of a stream goes to one worker).
    route: foldhash::fast::RandomState,
}

impl MediaSender {
    fn worker_for(&self, stream: &str) -> usize {
        (self.route.hash_one(stream) % self.queues.len() as u64) as usize
    }

    /// Sends, waiting while the worker's queue is full. Errors only when the
    /// pool is gone (shutdown).
    pub async fn send(&self, msg: MediaMsg) -> Result<(), PoolClosed> {
        let q = &self.queues[self.worker_for(msg.stream())];
        let mut msg = WorkerMsg::Media(msg);
        let mut backoff = Duration::from_micros(200);
        loop {
            match q.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(PoolClosed),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
            }
        }
    }

    /// Total queued messages over all workers.
    pub fn queue_depth(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }
}

/// The worker pool.
pub struct MediaPool {
    sender: MediaSender,
    threads: Vec<JoinHandle<()>>,
}

impl MediaPool {
    pub fn start(workers: usize, queue_depth: usize, factory: HandlerFactory) -> MediaPool {
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..workers.max(1) {
            let (tx, rx): (Sender<WorkerMsg>, Receiver<WorkerMsg>) =
                crossbeam_channel::bounded(queue_depth.max(1));
            queues.push(tx);
            let mut handler = factory(i);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("media-{i}"))
                    .spawn(move || {
                        // Close is queued behind everything already sent, so
                        // the queue drains before the handler shuts down.
                        let mut last_tick = std::time::Instant::now();
                        // Set when the last wait for work was a nap: the
                        // queue had been busy, so more is likely coming.
                        let mut napped = false;
                        loop {
                            let msg = match rx.try_recv() {
                                Ok(m) => Ok(m),
                                Err(TryRecvError::Disconnected) => break,
                                Err(TryRecvError::Empty) if !napped => {
                                    // Busy: nap rather than park, so the
                                    // next messages are taken in one wake-up
                                    // instead of one context switch each
                                    // (senders wake a parked worker per
                                    // message).
                                    napped = true;
                                    std::thread::sleep(BATCH_NAP);
                                    continue;
                                }
                                Err(TryRecvError::Empty) => rx.recv_timeout(TICK),
                            };
                            match msg {
                                Ok(WorkerMsg::Media(m)) => {
                                    napped = false;
                                    handler.handle(m)
                                }
                                Ok(WorkerMsg::Close) => break,
                                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                            }
                            if last_tick.elapsed() >= TICK {
                                last_tick = std::time::Instant::now();
                                handler.tick();
                            }
                        }
                        handler.shutdown();
                    })
                    .expect("spawn media worker"),
            );
        }
        MediaPool {
            sender: MediaSender {
                queues: Arc::new(queues),
                route: Default::default(),
            },
            threads,
        }
    }

    pub fn sender(&self) -> MediaSender {
        self.sender.clone()
    }

    /// Queues a close order behind the pending media of every worker (blocking
    /// while queues are full), then joins the workers. Call after the
    /// connection tasks have ended; later sends fail.
    pub fn join(self) {
        for q in self.sender.queues.iter() {
            let _ = q.send(WorkerMsg::Close);
        }
        for t in self.threads {
            if t.join().is_err() {
                warn!("media worker panicked");
            }
        }
    }
}

/// Per-stream counters kept by [`CountingHandler`] (also used by tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounts {
    pub frames: u64,
    pub bytes: u64,
}

/// A snapshot type for tests and the HTTP API.
pub type StreamCounts = HashMap<String, WorkerCounts>;

#[cfg(test)]
mod tests {
    use super::*;

    struct Gated(Receiver<()>, Arc<std::sync::Mutex<Vec<String>>>);
    impl MediaHandler for Gated {
        fn handle(&mut self, msg: MediaMsg) {
            let _ = self.0.recv();
            self.1.lock().unwrap().push(msg.stream().to_string());
        }
        fn shutdown(&mut self) {
            self.1.lock().unwrap().push("shutdown".into());
        }
    }

    fn raw(name: &str) -> MediaMsg {
        MediaMsg::Raw(RawChunk {
            stream: Arc::from(name),
            codec: Default::default(),
            data: Bytes::from_static(b"x"),
            received: Instant::now(),
            source_started_ms: 0,
        })
    }

    #[tokio::test]
    async fn send_waits_while_queue_full_then_drains_in_order() {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (g, l) = (gate_rx.clone(), log.clone());
        let pool = MediaPool::start(
            1,
            1,
            Arc::new(move |_| Box::new(Gated(g.clone(), l.clone()))),
        );
        let tx = pool.sender();
        tx.send(raw("s")).await.unwrap();
        // The worker picks up the first message and blocks on the gate.
        while tx.queue_depth() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tx.send(raw("s")).await.unwrap();
        assert_eq!(tx.queue_depth(), 1);
        // Queue full: the third send must wait.
        let third = tokio::time::timeout(Duration::from_millis(100), tx.send(raw("s"))).await;
        assert!(third.is_err(), "send did not wait on a full queue");
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
        }
        tx.send(raw("s")).await.unwrap();
        drop(tx);
        tokio::task::spawn_blocking(move || pool.join())
            .await
            .unwrap();
        // The timed-out third send was cancelled before enqueueing.
        assert_eq!(*log.lock().unwrap(), vec!["s", "s", "s", "shutdown"]);
    }
}
