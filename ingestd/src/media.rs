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
//! Backpressure: each worker's queue is bounded in bytes (a burst of
//! keyframes from every device at once must not become a burst of memory)
//! and in messages. A connection does not read its socket while a worker it
//! feeds has less than a quarter of its budget free
//! ([`MediaSender::wait_for_room`]), so TCP flow control slows the device
//! down and what arrives in a burst waits in the kernel, not half-processed
//! in this process: a frame is read when there is room for it and spends
//! only the queue's few milliseconds between its read and its worker. When
//! a frame still finds the queue full, [`MediaSender::send`] waits (without
//! blocking the runtime); waiting senders are woken in the order they came,
//! as soon as the worker has finished the bytes they need.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
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

    /// The media bytes it carries (what it weighs in a queue).
    pub fn bytes(&self) -> usize {
        match self {
            MediaMsg::Frame(f) => f.data.len(),
            MediaMsg::Raw(r) => r.data.len(),
            MediaMsg::SourceEnded { .. } => 0,
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

/// What travels on a worker queue: media with the bytes of the worker's
/// budget it holds, or the order to finish.
enum WorkerMsg {
    Media(MediaMsg, u32),
    Close,
}

/// One worker's queue: the channel, and its byte budget as a semaphore of
/// bytes (fair: waiters are served first come, first served).
struct WorkerQueue {
    tx: Sender<WorkerMsg>,
    budget: Arc<tokio::sync::Semaphore>,
    /// The budget's size in bytes: no message holds more than this.
    capacity: u32,
    /// Woken when the free budget climbs back to [`WorkerQueue::room`].
    room_freed: Arc<tokio::sync::Notify>,
}

impl WorkerQueue {
    /// Free budget below which connections feeding this worker stop reading.
    fn room(&self) -> usize {
        room_for(self.capacity)
    }
}

fn room_for(capacity: u32) -> usize {
    capacity as usize / 4
}

/// How long a connection waits for room before looking again by itself (a
/// safety net: the worker wakes it when room is made).
const ROOM_RECHECK: Duration = Duration::from_millis(50);

/// Where a worker's time goes, cumulative since it started.
#[derive(Debug, Default)]
pub struct WorkerLoad {
    /// Wall time spent handling messages.
    pub busy_ns: AtomicU64,
    /// CPU time of the worker's thread (of which the busy time's remainder
    /// was spent blocked: in a storage write the disk cannot take yet).
    pub cpu_ns: AtomicU64,
}

/// The window over which a worker judges whether it keeps up.
const LOAD_WINDOW: Duration = Duration::from_secs(10);

/// Tells the operator, at most once per [`LOAD_WINDOW`], that a worker is
/// the bottleneck and whether the disk or the CPU holds it back.
struct LoadWatch {
    worker: usize,
    since: Instant,
    busy_at_start: u64,
    cpu_at_start: u64,
}

impl LoadWatch {
    fn new(worker: usize) -> Self {
        LoadWatch {
            worker,
            since: Instant::now(),
            busy_at_start: 0,
            cpu_at_start: 0,
        }
    }

    /// Called once per tick with the worker's cumulative figures.
    fn tick(&mut self, load: &WorkerLoad) {
        let cpu = thread_cpu_ns();
        load.cpu_ns.store(cpu, Relaxed);
        let wall = self.since.elapsed();
        if wall < LOAD_WINDOW {
            return;
        }
        let busy = load.busy_ns.load(Relaxed);
        let busy_share = (busy - self.busy_at_start) as f64 / wall.as_nanos() as f64;
        let cpu_share = (cpu.saturating_sub(self.cpu_at_start)) as f64 / wall.as_nanos() as f64;
        *self = LoadWatch {
            worker: self.worker,
            since: Instant::now(),
            busy_at_start: busy,
            cpu_at_start: cpu,
        };
        let (busy_pct, cpu_pct) = (
            (busy_share * 100.0).round() as u64,
            (cpu_share * 100.0).round() as u64,
        );
        match Bottleneck::judge(busy_share, cpu_share) {
            None => {}
            Some(Bottleneck::Disk) => warn!(
                worker = self.worker,
                busy_pct,
                cpu_pct,
                "media worker blocked on storage writes for most of the last 10 s: the disk is the bottleneck; devices are being slowed down (nothing is dropped)"
            ),
            Some(Bottleneck::Cpu) => warn!(
                worker = self.worker,
                busy_pct,
                cpu_pct,
                "media worker busy on CPU for the last 10 s: the machine is at its limit; devices are being slowed down (nothing is dropped)"
            ),
        }
    }
}

/// What holds a worker back when it cannot keep up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bottleneck {
    /// Busy, but mostly off the CPU: blocked in writes the disk cannot take.
    Disk,
    /// Busy on the CPU.
    Cpu,
}

impl Bottleneck {
    /// From the shares of a window a worker spent busy (handling media) and
    /// on the CPU: `None` while it keeps up (idle a tenth of the time or more:
    /// its queue empties, so no connection waits long for it).
    pub fn judge(busy_share: f64, cpu_share: f64) -> Option<Bottleneck> {
        if busy_share < 0.9 {
            None
        } else if cpu_share < busy_share / 2.0 {
            Some(Bottleneck::Disk)
        } else {
            Some(Bottleneck::Cpu)
        }
    }
}

/// CPU time consumed by the calling thread, in nanoseconds (0 where unknown).
fn thread_cpu_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own; the clock id is a
        // constant every Linux has.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0 {
            return ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
        }
    }
    0
}

/// Cloneable sending side used by connection tasks.
#[derive(Clone)]
pub struct MediaSender {
    queues: Arc<Vec<WorkerQueue>>,
    /// Per worker, where its time goes.
    loads: Arc<Vec<Arc<WorkerLoad>>>,
    /// Picks a stream's worker; hashed once per message, so foldhash (seeded
    /// once per process: every message of a stream goes to one worker).
    route: foldhash::fast::RandomState,
}

impl MediaSender {
    fn worker_for(&self, stream: &str) -> usize {
        (self.route.hash_one(stream) % self.queues.len() as u64) as usize
    }

    /// The worker of `stream` as a bit of a set for [`Self::wait_for_room`]
    /// (workers past the 64th share bits: they are waited for together).
    pub fn worker_bit(&self, stream: &str) -> u64 {
        1 << (self.worker_for(stream) % 64)
    }

    /// Waits until every worker in `workers` (a set of [`Self::worker_bit`]s;
    /// empty: none) has room, and returns how long that took. A connection
    /// calls it before each read.
    pub async fn wait_for_room(&self, workers: u64) -> Duration {
        let started = tokio::time::Instant::now();
        for (i, q) in self.queues.iter().enumerate() {
            if workers & (1 << (i % 64)) == 0 {
                continue;
            }
            // The usual case, without registering as a waiter.
            if q.budget.available_permits() >= q.room() {
                continue;
            }
            loop {
                let freed = q.room_freed.notified();
                tokio::pin!(freed);
                // Registered before looking, so a wake-up in between is not lost.
                freed.as_mut().enable();
                if q.budget.available_permits() >= q.room() || q.budget.is_closed() {
                    break;
                }
                let _ = tokio::time::timeout(ROOM_RECHECK, freed).await;
            }
        }
        started.elapsed()
    }

    /// Sends, waiting while the worker's queue is full. Errors only when the
    /// pool is gone (shutdown).
    pub async fn send(&self, msg: MediaMsg) -> Result<(), PoolClosed> {
        let q = &self.queues[self.worker_for(msg.stream())];
        // A frame larger than the whole budget waits for an empty queue.
        let weight = msg.bytes().min(q.capacity as usize) as u32;
        match q.budget.acquire_many(weight).await {
            // The worker gives the bytes back once it has handled the frame.
            Ok(permit) => permit.forget(),
            Err(_) => return Err(PoolClosed),
        }
        let mut msg = WorkerMsg::Media(msg, weight);
        // The message bound is the backstop for floods of tiny messages;
        // the byte budget is what normally makes senders wait.
        let mut backoff = Duration::from_micros(200);
        loop {
            match q.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => {
                    q.budget.add_permits(weight as usize);
                    return Err(PoolClosed);
                }
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
        self.queues.iter().map(|q| q.tx.len()).sum()
    }

    /// Each worker's cumulative busy and CPU time.
    pub fn worker_loads(&self) -> &[Arc<WorkerLoad>] {
        &self.loads
    }

    /// Media bytes queued (or being handled) over all workers.
    pub fn queued_bytes(&self) -> usize {
        self.queues
            .iter()
            .map(|q| (q.capacity as usize).saturating_sub(q.budget.available_permits()))
            .sum()
    }
}

/// The worker pool.
pub struct MediaPool {
    sender: MediaSender,
    threads: Vec<JoinHandle<()>>,
}

impl MediaPool {
    /// `workers` threads, each with a queue of at most `queue_depth`
    /// messages and `queue_bytes` media bytes.
    pub fn start(
        workers: usize,
        queue_depth: usize,
        queue_bytes: usize,
        factory: HandlerFactory,
    ) -> MediaPool {
        let mut queues = Vec::new();
        let mut loads = Vec::new();
        let mut threads = Vec::new();
        let capacity = queue_bytes.clamp(1, u32::MAX as usize) as u32;
        for i in 0..workers.max(1) {
            let (tx, rx): (Sender<WorkerMsg>, Receiver<WorkerMsg>) =
                crossbeam_channel::bounded(queue_depth.max(1));
            let budget = Arc::new(tokio::sync::Semaphore::new(capacity as usize));
            let room_freed = Arc::new(tokio::sync::Notify::new());
            queues.push(WorkerQueue {
                tx,
                budget: budget.clone(),
                capacity,
                room_freed: room_freed.clone(),
            });
            let room = room_for(capacity);
            let load = Arc::new(WorkerLoad::default());
            loads.push(load.clone());
            let mut handler = factory(i);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("media-{i}"))
                    .spawn(move || {
                        // Close is queued behind everything already sent, so
                        // the queue drains before the handler shuts down.
                        let mut last_tick = std::time::Instant::now();
                        let mut watch = LoadWatch::new(i);
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
                                Ok(WorkerMsg::Media(m, weight)) => {
                                    napped = false;
                                    let started = Instant::now();
                                    handler.handle(m);
                                    load.busy_ns
                                        .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
                                    budget.add_permits(weight as usize);
                                    // Wake the readers when the free budget
                                    // climbs past the mark, not per frame.
                                    let free = budget.available_permits();
                                    if free >= room && free < room + weight as usize {
                                        room_freed.notify_waiters();
                                    }
                                }
                                Ok(WorkerMsg::Close) => break,
                                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                            }
                            if last_tick.elapsed() >= TICK {
                                last_tick = std::time::Instant::now();
                                let started = Instant::now();
                                handler.tick();
                                load.busy_ns
                                    .fetch_add(started.elapsed().as_nanos() as u64, Relaxed);
                                watch.tick(&load);
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
                loads: Arc::new(loads),
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
            let _ = q.tx.send(WorkerMsg::Close);
            // Senders still waiting for bytes learn the pool is gone.
            q.budget.close();
            q.room_freed.notify_waiters();
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
        raw_of(name, 1)
    }

    fn raw_of(name: &str, len: usize) -> MediaMsg {
        MediaMsg::Raw(RawChunk {
            stream: Arc::from(name),
            codec: Default::default(),
            data: Bytes::from(vec![b'x'; len]),
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
            1 << 20,
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

    /// The queue is bounded in bytes, whatever the message count allows:
    /// a sender waits until the worker has handled enough of what is
    /// queued, and a message larger than the whole budget still goes
    /// through once the queue is empty.
    #[tokio::test]
    async fn send_waits_for_the_byte_budget() {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (g, l) = (gate_rx.clone(), log.clone());
        let pool = MediaPool::start(
            1,
            1000,
            10_000,
            Arc::new(move |_| Box::new(Gated(g.clone(), l.clone()))),
        );
        let tx = pool.sender();
        tx.send(raw_of("a", 6_000)).await.unwrap();
        assert_eq!(tx.queued_bytes(), 6_000);
        // 6,000 + 6,000 > 10,000: waits although 998 messages would fit.
        let second = tokio::time::timeout(Duration::from_millis(100), tx.send(raw_of("b", 6_000)));
        assert!(second.await.is_err(), "send did not wait for bytes");
        assert_eq!(tx.queued_bytes(), 6_000);
        gate_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), tx.send(raw_of("b", 6_000)))
            .await
            .expect("the handled frame's bytes came back")
            .unwrap();
        // Larger than the budget: admitted alone once "b" is handled.
        let big = tokio::spawn({
            let tx = tx.clone();
            async move { tx.send(raw_of("c", 50_000)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!big.is_finished(), "admitted beside a queued frame");
        gate_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), big)
            .await
            .expect("admitted once the queue emptied")
            .unwrap()
            .unwrap();
        assert_eq!(tx.queued_bytes(), 10_000);
        gate_tx.send(()).unwrap();
        drop(tx);
        tokio::task::spawn_blocking(move || pool.join())
            .await
            .unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["a", "b", "c", "shutdown"]);
    }

    /// A worker's load figures tell a worker blocked off the CPU (as in a
    /// write the disk cannot take yet) from one computing: busy time is wall
    /// time in the handler, CPU time the thread's own clock.
    #[tokio::test]
    async fn worker_load_tells_blocked_from_computing() {
        struct Work(bool);
        impl MediaHandler for Work {
            fn handle(&mut self, _: MediaMsg) {
                let until = Instant::now() + Duration::from_millis(30);
                if self.0 {
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                } else {
                    std::thread::sleep(Duration::from_millis(30));
                }
            }
            fn shutdown(&mut self) {}
        }
        for spin in [false, true] {
            let pool = MediaPool::start(1, 64, 1 << 20, Arc::new(move |_| Box::new(Work(spin))));
            let tx = pool.sender();
            for _ in 0..10 {
                tx.send(raw("s")).await.unwrap();
            }
            let load = tx.worker_loads()[0].clone();
            // The CPU clock is read once per tick (a second).
            let deadline = Instant::now() + Duration::from_secs(10);
            while (load.busy_ns.load(Relaxed) < 290_000_000 || load.cpu_ns.load(Relaxed) == 0)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let busy = load.busy_ns.load(Relaxed) as f64;
            let cpu = load.cpu_ns.load(Relaxed) as f64;
            assert!(busy >= 290e6, "busy {busy} ns");
            let verdict = Bottleneck::judge(1.0, cpu / busy);
            let want = if spin {
                Bottleneck::Cpu
            } else {
                Bottleneck::Disk
            };
            assert_eq!(
                verdict,
                Some(want),
                "spin {spin}: busy {busy} ns, cpu {cpu} ns"
            );
            drop(tx);
            tokio::task::spawn_blocking(move || pool.join())
                .await
                .unwrap();
        }
        assert_eq!(Bottleneck::judge(0.5, 0.01), None, "keeping up");
    }
}
