//! The catalog writer: a named thread that takes [`Record`]s from a bounded
//! crossbeam channel and writes them in batched transactions, so producers
//! (connection tasks, mux workers) never wait on the database.
//!
//! - [`CatalogWriter::send`] is `try_send`: when the channel is full the
//!   record is dropped and counted, never blocking media.
//! - Batches: up to `batch_max` records, or whatever arrived within
//!   `linger` of the first one, in one transaction.
//! - Outage (connect fails, or a failed batch is followed by a failed
//!   `SELECT 1`): the connection is dropped, the batch kept, and the writer
//!   retries with exponential backoff (`backoff_min` doubling up to
//!   `backoff_max`), meanwhile still draining the channel into a buffer of
//!   at most `buffer_max` records; records beyond it are dropped, counted and
//!   logged. Every record is idempotent, so a batch that committed just
//!   before the connection broke can safely be written again.
//! - Lock contention (SQLite busy, deadlock, serialization failure) and
//!   exhausted resources (disk full, I/O error, too many connections) are
//!   retried the same way without reconnecting: the records stay buffered
//!   until the resource returns.
//! - A batch the database rejects while healthy (a constraint, a value out
//!   of range) is retried record by record; only the bad records are
//!   dropped (counted as `rejected`).
//!
//! Counters ([`WriterStats`]) are plain atomics for a Prometheus exporter.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use super::conn::{AnyConn, DbUrl};
use super::record::{now_ms, Record};
use super::write::{apply_batch, validate, Known};
use super::Error;

/// Tuning of a [`CatalogWriter`].
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Records the channel holds before `send` drops.
    pub channel_capacity: usize,
    /// Records per transaction at most.
    pub batch_max: usize,
    /// How long a batch waits for more records after its first one.
    pub linger: Duration,
    /// Records held in memory while the database is unreachable.
    pub buffer_max: usize,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// On shutdown, how long to keep trying to write what is buffered.
    pub shutdown_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            channel_capacity: 65_536,
            batch_max: 500,
            linger: Duration::from_millis(50),
            buffer_max: 200_000,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// A snapshot of the writer's counters (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records accepted by `send`.
    pub received: u64,
    /// Records committed to the database.
    pub written: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Failed attempts that were retried (outage or lock contention).
    pub retries: u64,
    /// Successful connects after the first.
    pub reconnects: u64,
    /// Records dropped by `send` because the channel was full.
    pub dropped_queue_full: u64,
    /// Records dropped because the outage buffer was full.
    pub dropped_buffer_full: u64,
    /// Records still unwritten when shutdown gave up.
    pub dropped_shutdown: u64,
    /// Records refused as invalid (by validation or by a healthy database).
    pub rejected: u64,
    /// Gauge: records held by the writer thread right now.
    pub buffered: u64,
    /// Gauge: whether the writer currently holds a working connection.
    pub connected: bool,
}

impl WriterStats {
    /// All records lost for any reason other than being invalid.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_buffer_full + self.dropped_shutdown
    }

    /// Appends the counters in the Prometheus text format, each metric named
    /// `<prefix>_<counter>` (e.g. prefix `ingestd_catalog`).
    pub fn write_prometheus(&self, prefix: &str, out: &mut String) {
        use std::fmt::Write;
        let counters = [
            (
                "records_received_total",
                "records accepted by send",
                self.received,
            ),
            ("records_written_total", "records committed", self.written),
            ("batches_total", "transactions committed", self.batches),
            (
                "retries_total",
                "failed attempts retried after backoff",
                self.retries,
            ),
            (
                "reconnects_total",
                "reconnections after a lost connection",
                self.reconnects,
            ),
            (
                "records_rejected_total",
                "records refused as invalid",
                self.rejected,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {prefix}_{name} Catalog writer: {help}.");
            let _ = writeln!(out, "# TYPE {prefix}_{name} counter");
            let _ = writeln!(out, "{prefix}_{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP {prefix}_records_dropped_total Catalog writer: records lost, by reason."
        );
        let _ = writeln!(out, "# TYPE {prefix}_records_dropped_total counter");
        for (reason, v) in [
            ("queue_full", self.dropped_queue_full),
            ("buffer_full", self.dropped_buffer_full),
            ("shutdown", self.dropped_shutdown),
        ] {
            let _ = writeln!(
                out,
                "{prefix}_records_dropped_total{{reason=\"{reason}\"}} {v}"
            );
        }
        let gauges = [
            ("records_buffered", "records held in memory", self.buffered),
            (
                "connected",
                "1 while the database connection works",
                u64::from(self.connected),
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {prefix}_{name} Catalog writer: {help}.");
            let _ = writeln!(out, "# TYPE {prefix}_{name} gauge");
            let _ = writeln!(out, "{prefix}_{name} {v}");
        }
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    retries: AtomicU64,
    reconnects: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_buffer_full: AtomicU64,
    dropped_shutdown: AtomicU64,
    rejected: AtomicU64,
    buffered: AtomicU64,
    connected: AtomicU64,
    /// Wall-clock ms of the last drop warning, to rate-limit them.
    last_drop_log_ms: AtomicI64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriterStats {
            received: g(&self.received),
            written: g(&self.written),
            batches: g(&self.batches),
            retries: g(&self.retries),
            reconnects: g(&self.reconnects),
            dropped_queue_full: g(&self.dropped_queue_full),
            dropped_buffer_full: g(&self.dropped_buffer_full),
            dropped_shutdown: g(&self.dropped_shutdown),
            rejected: g(&self.rejected),
            buffered: g(&self.buffered),
            connected: g(&self.connected) != 0,
        }
    }

    /// True at most once a second, so a flood of drops logs a summary line
    /// rather than one line per record.
    fn should_log_drop(&self) -> bool {
        let now = now_ms();
        let last = self.last_drop_log_ms.load(Ordering::Relaxed);
        now - last >= 1000
            && self
                .last_drop_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

enum Msg {
    Record(Record),
    Flush(Sender<()>),
}

/// Handle to the writer thread. Dropping it (or [`CatalogWriter::shutdown`])
/// closes the channel and waits for the thread to write what it holds, for
/// at most `shutdown_timeout` plus one statement.
pub struct CatalogWriter {
    tx: Option<Sender<Msg>>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for CatalogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWriter")
            .field("stats", &self.stats())
            .finish()
    }
}

impl CatalogWriter {
    /// Starts the writer thread for `url`. It connects lazily and rides out
    /// an unreachable database (run [`super::Catalog::open`] first to apply
    /// migrations and fail fast on a wrong URL).
    pub fn spawn(url: &str, cfg: WriterConfig) -> Result<CatalogWriter, Error> {
        let url = DbUrl::parse(url)?;
        let (tx, rx) = crossbeam_channel::bounded(cfg.channel_capacity.max(1));
        let counters = Arc::new(Counters::default());
        let state = WriterThread {
            url,
            batch_max: cfg.batch_max.max(1),
            cfg,
            rx,
            counters: counters.clone(),
            conn: None,
            ever_connected: false,
            known: Known::default(),
            buf: VecDeque::new(),
            flush_waiters: Vec::new(),
            taken: 0,
            done: 0,
            closed: false,
            shutdown_deadline: None,
        };
        let thread = std::thread::Builder::new()
            .name("catalog-writer".into())
            .spawn(move || state.run())
            .map_err(|source| Error::Io {
                path: "catalog-writer thread".into(),
                source,
            })?;
        Ok(CatalogWriter {
            tx: Some(tx),
            counters,
            thread: Some(thread),
        })
    }

    /// Queues a record without blocking. Returns false (and counts it) if
    /// the record is invalid or the channel is full.
    pub fn send(&self, record: Record) -> bool {
        if let Err(why) = validate(&record) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(kind = record.kind_name(), %why, "catalog record rejected");
            return false;
        }
        let Some(tx) = &self.tx else { return false };
        match tx.try_send(Msg::Record(record)) {
            Ok(()) => {
                self.counters.received.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(Msg::Record(r)))
            | Err(TrySendError::Disconnected(Msg::Record(r))) => {
                let n = self
                    .counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                if self.counters.should_log_drop() {
                    tracing::warn!(
                        kind = r.kind_name(),
                        dropped_total = n,
                        "catalog writer queue full; dropping records"
                    );
                }
                false
            }
            Err(_) => false,
        }
    }

    /// Waits until everything sent before this call has been written (or
    /// dropped/rejected and counted). False if `timeout` passed first.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return true };
        let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
        let deadline = Instant::now() + timeout;
        if tx.send_deadline(Msg::Flush(ack_tx), deadline).is_err() {
            return false;
        }
        ack_rx.recv_deadline(deadline).is_ok()
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Closes the channel, lets the thread write what it holds (bounded by
    /// `shutdown_timeout`), and returns the final counters.
    pub fn shutdown(mut self) -> WriterStats {
        self.stop();
        self.counters.snapshot()
    }

    fn stop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("catalog writer thread panicked");
            }
        }
    }
}

impl Drop for CatalogWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Failure {
    /// The database is unreachable: reconnect, back off, keep the batch.
    Outage(String),
    /// Lock contention or an exhausted resource: back off and retry on the
    /// same connection.
    Transient(String),
    /// The database is fine but refused the batch.
    Rejected(DieselError),
}

struct WriterThread {
    url: DbUrl,
    cfg: WriterConfig,
    batch_max: usize,
    rx: Receiver<Msg>,
    counters: Arc<Counters>,
    conn: Option<AnyConn>,
    ever_connected: bool,
    known: Known,
    buf: VecDeque<Record>,
    /// flush() callers, each with the `taken` count its ack waits for.
    flush_waiters: Vec<(u64, Sender<()>)>,
    /// Records taken off the channel so far (the channel is FIFO, so a
    /// flush message is preceded by exactly `taken` records).
    taken: u64,
    /// Records finished so far: written, rejected or dropped.
    done: u64,
    closed: bool,
    shutdown_deadline: Option<Instant>,
}

impl WriterThread {
    fn run(mut self) {
        let mut backoff = self.cfg.backoff_min;
        loop {
            self.ack_flushes();
            if self.buf.is_empty() {
                if self.closed {
                    return;
                }
                match self.rx.recv() {
                    Ok(m) => self.accept(m),
                    Err(_) => {
                        self.close();
                        continue;
                    }
                }
                // Give the batch `linger` to fill up, unless someone is
                // waiting in flush() for it to be written now.
                let until = Instant::now() + self.cfg.linger;
                while self.buf.len() < self.batch_max
                    && !self.closed
                    && self.flush_waiters.is_empty()
                {
                    match self.rx.recv_deadline(until) {
                        Ok(m) => self.accept(m),
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => self.close(),
                    }
                }
            } else {
                // Backlog: take everything waiting (accept() bounds the
                // buffer) so producers keep room in the channel while we
                // catch up, without lingering.
                loop {
                    match self.rx.try_recv() {
                        Ok(m) => self.accept(m),
                        Err(crossbeam_channel::TryRecvError::Empty) => break,
                        Err(crossbeam_channel::TryRecvError::Disconnected) => {
                            self.close();
                            break;
                        }
                    }
                }
            }
            if self.buf.is_empty() {
                continue;
            }
            match self.write_front() {
                Ok(()) => backoff = self.cfg.backoff_min,
                Err(()) => {
                    if self.give_up_if_shutting_down() {
                        return;
                    }
                    self.wait(backoff);
                    backoff = (backoff * 2).min(self.cfg.backoff_max);
                }
            }
            if self.give_up_if_shutting_down() {
                return;
            }
        }
    }

    fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            self.shutdown_deadline = Some(Instant::now() + self.cfg.shutdown_timeout);
        }
    }

    fn give_up_if_shutting_down(&mut self) -> bool {
        match self.shutdown_deadline {
            Some(d) if Instant::now() >= d && !self.buf.is_empty() => {
                let n = self.buf.len() as u64;
                self.buf.clear();
                self.counters
                    .dropped_shutdown
                    .fetch_add(n, Ordering::Relaxed);
                self.counters.buffered.store(0, Ordering::Relaxed);
                tracing::error!(dropped = n, url = %self.url, "catalog writer shut down with unwritten records");
                self.done += n;
                self.ack_flushes();
                true
            }
            _ => false,
        }
    }

    fn accept(&mut self, m: Msg) {
        match m {
            Msg::Flush(ack) => self.flush_waiters.push((self.taken, ack)),
            Msg::Record(r) => {
                self.taken += 1;
                if self.buf.len() >= self.cfg.buffer_max {
                    self.done += 1;
                    let n = self
                        .counters
                        .dropped_buffer_full
                        .fetch_add(1, Ordering::Relaxed)
                        + 1;
                    if self.counters.should_log_drop() {
                        tracing::warn!(
                            kind = r.kind_name(),
                            dropped_total = n,
                            buffered = self.buf.len(),
                            url = %self.url,
                            "catalog unreachable and buffer full; dropping records"
                        );
                    }
                } else {
                    self.buf.push_back(r);
                }
                self.counters
                    .buffered
                    .store(self.buf.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Sleeps for `d` while still moving records from the channel into the
    /// buffer, so producers' `try_send` keeps succeeding during an outage.
    fn wait(&mut self, d: Duration) {
        let until = Instant::now() + d;
        let until = match self.shutdown_deadline {
            Some(s) => until.min(s),
            None => until,
        };
        loop {
            match self.rx.recv_deadline(until) {
                Ok(m) => self.accept(m),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.close();
                    // Nothing more can arrive; just sleep out the rest.
                    let until = match self.shutdown_deadline {
                        Some(s) => until.min(s),
                        None => until,
                    };
                    std::thread::sleep(until.saturating_duration_since(Instant::now()));
                    return;
                }
            }
        }
    }

    /// Writes the first batch of the buffer. Err(()) means "back off, then
    /// try again"; the records are still in the buffer.
    fn write_front(&mut self) -> Result<(), ()> {
        let n = self.buf.len().min(self.batch_max);
        match self.try_batch(n) {
            Ok(()) => {
                self.commit_front(n);
                Ok(())
            }
            Err(Failure::Outage(e)) => {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, buffered = self.buf.len(), url = %self.url, "catalog unreachable; will retry");
                Err(())
            }
            Err(Failure::Transient(e)) => {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "catalog batch hit lock contention; will retry");
                Err(())
            }
            Err(Failure::Rejected(e)) => {
                tracing::warn!(error = %e, records = n, "catalog refused a batch; retrying record by record");
                self.write_one_by_one(n)
            }
        }
    }

    fn ack_flushes(&mut self) {
        let done = self.done;
        self.flush_waiters.retain(|(target, ack)| {
            if *target <= done {
                let _ = ack.send(());
                false
            } else {
                true
            }
        });
    }

    fn commit_front(&mut self, n: usize) {
        self.buf.drain(..n);
        self.done += n as u64;
        self.counters.written.fetch_add(n as u64, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters
            .buffered
            .store(self.buf.len() as u64, Ordering::Relaxed);
    }

    fn write_one_by_one(&mut self, n: usize) -> Result<(), ()> {
        for _ in 0..n {
            match self.try_batch(1) {
                Ok(()) => self.commit_front(1),
                Err(Failure::Rejected(e)) => {
                    let r = self.buf.pop_front().expect("n <= len");
                    self.done += 1;
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .buffered
                        .store(self.buf.len() as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, record = ?r, "catalog refused a record; dropped");
                }
                Err(Failure::Outage(e) | Failure::Transient(e)) => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "catalog failed mid-batch; will retry");
                    return Err(());
                }
            }
        }
        Ok(())
    }

    fn try_batch(&mut self, n: usize) -> Result<(), Failure> {
        if self.conn.is_none() {
            match AnyConn::connect(&self.url) {
                Ok(c) => {
                    if self.ever_connected {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(url = %self.url, "catalog writer reconnected");
                    }
                    self.ever_connected = true;
                    self.known.clear();
                    self.conn = Some(c);
                    self.counters.connected.store(1, Ordering::Relaxed);
                }
                Err(e) => return Err(Failure::Outage(e.to_string())),
            }
        }
        let conn = self.conn.as_mut().expect("connected above");
        let batch = &self.buf.make_contiguous()[..n];
        match apply_batch(conn, batch, &mut self.known, now_ms()) {
            Ok(()) => Ok(()),
            Err(e) if is_transient(&e) => Err(Failure::Transient(e.to_string())),
            Err(e) => {
                if conn.is_healthy() {
                    Err(Failure::Rejected(e))
                } else {
                    self.conn = None;
                    self.counters.connected.store(0, Ordering::Relaxed);
                    Err(Failure::Outage(e.to_string()))
                }
            }
        }
    }
}

/// Errors worth retrying unchanged after a pause, with the connection
/// still up: lock contention (SQLite busy/locked, MySQL deadlock or lock wait
/// timeout, PostgreSQL serialization failure or deadlock) and exhausted
/// resources (disk full, I/O errors, too many connections). Retrying these
/// keeps the records buffered until the resource returns, instead of
/// refusing them as if they were bad data.
fn is_transient(e: &DieselError) -> bool {
    const MARKERS: &[&str] = &[
        "database is locked",
        "database table is locked",
        "deadlock",
        "lock wait timeout",
        "is full", // SQLite: database or disk is full; MySQL 1114: the table ... is full
        "disk i/o error", // SQLite
        "no space left", // PostgreSQL: could not extend file ...
        "error 28", // MySQL: Got error 28 from storage engine
        "out of memory",
        "too many connections",
        "read-only",         // a server in recovery, a replica after failover
        "readonly database", // SQLite
    ];
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        DieselError::DatabaseError(_, info) => {
            let m = info.message().to_ascii_lowercase();
            MARKERS.iter().any(|k| m.contains(k))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_err(kind: DatabaseErrorKind, msg: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(msg.to_owned()))
    }

    #[test]
    fn prometheus_text_names_every_counter() {
        let st = WriterStats {
            received: 10,
            written: 7,
            dropped_buffer_full: 2,
            connected: true,
            ..WriterStats::default()
        };
        let mut out = String::new();
        st.write_prometheus("ingestd_catalog", &mut out);
        assert!(
            out.contains("\ningestd_catalog_records_written_total 7\n"),
            "{out}"
        );
        assert!(out.contains("ingestd_catalog_records_dropped_total{reason=\"buffer_full\"} 2\n"));
        assert!(
            out.contains("# TYPE ingestd_catalog_connected gauge\ningestd_catalog_connected 1\n")
        );
        assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 11);
    }

    #[test]
    fn resource_and_lock_errors_are_retried_not_rejected() {
        use DatabaseErrorKind::*;
        for (kind, msg) in [
            (Unknown, "database or disk is full"),
            (Unknown, "database is locked"),
            (
                Unknown,
                "could not extend file \"base/1/2\": No space left on device",
            ),
            (Unknown, "The table 'positions' is full"),
            (
                Unknown,
                "Deadlock found when trying to get lock; try restarting transaction",
            ),
            (SerializationFailure, "could not serialize access"),
            (Unknown, "cannot execute INSERT in a read-only transaction"),
        ] {
            assert!(is_transient(&db_err(kind, msg)), "{msg}");
        }
        for (kind, msg) in [
            (ForeignKeyViolation, "FOREIGN KEY constraint failed"),
            (
                UniqueViolation,
                "duplicate key value violates unique constraint",
            ),
            (CheckViolation, "new row violates check constraint"),
            (Unknown, "value too long for type character varying(20)"),
        ] {
            assert!(!is_transient(&db_err(kind, msg)), "{msg}");
        }
    }
}
