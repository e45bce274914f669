//! [`UploadQueue`]: a [`Storage`] that answers at local-disk speed and forwards everything to a
//! slower one (an object store) from background threads, so the media workers that commit
//! segments and replace playlists never wait for the network, and an unreachable store loses
//! nothing.
//!
//! A committed segment stays in the spill directory until it is uploaded; a playlist is queued
//! as text. Operations are kept in order per *lane* (the key's directory, i.e. one stream), so a
//! playlist reaches the store only after every segment queued before it: the store never holds
//! a playlist naming a missing object. Lanes upload in parallel on a few threads. A failed
//! upload is retried with backoff, never skipped, so the order survives an outage; a newer
//! playlist of a lane replaces an older one still waiting (readers only ever want the newest).
//!
//! Crash safety: a committed segment is renamed to `<seq>~<key with / as ~>.pending` before the
//! commit returns, so a restart finds what was not uploaded yet and uploads it first, in the old
//! order; files still being written (`.staging`) are removed. Playlists waiting at a crash are
//! lost with the process: the stream rewrites its playlist when it resumes.
//!
//! Fencing: when several nodes may write the same keys (a stream whose device reconnected to
//! another node), a writer gets a [`UploadQueue::fenced`] view: its operations carry a fencing
//! number (kept in the spill file's name, `<seq>@<fence>~...`), and each is shown to the
//! queue's [`UploadFence`] right before every upload attempt. One the fence refuses is dropped
//! (counted in [`Backlog::superseded`]): a node that lost a stream never overwrites the newer
//! writer's playlist, however long its backlog.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{key_parts, Fetched, SegmentWriter, StagedSegment, Storage, StoredObject};

/// How long a failing upload waits before its first retry; doubled per failure up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Decides, right before each upload of a fenced operation, whether its writer still owns the
/// key (see the module docs).
pub trait UploadFence: Send + Sync {
    /// `Ok(false)`: a newer writer took over, drop the operation. An error (the authority
    /// cannot be asked) is retried like a failed upload: nothing is uploaded unchecked.
    fn admits(&self, key: &str, fence: i64) -> io::Result<bool>;
}

#[derive(Clone)]
enum Op {
    Segment {
        key: String,
        file: PathBuf,
        bytes: u64,
        queued: Instant,
        fence: Option<i64>,
    },
    Playlist {
        key: String,
        text: Vec<u8>,
        queued: Instant,
        fence: Option<i64>,
    },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Segment { key, .. } | Op::Playlist { key, .. } => key,
        }
    }
    fn queued(&self) -> Instant {
        match self {
            Op::Segment { queued, .. } | Op::Playlist { queued, .. } => *queued,
        }
    }
    fn fence(&self) -> Option<i64> {
        match self {
            Op::Segment { fence, .. } | Op::Playlist { fence, .. } => *fence,
        }
    }
    fn bytes(&self) -> u64 {
        match self {
            Op::Segment { bytes, .. } => *bytes,
            Op::Playlist { text, .. } => text.len() as u64,
        }
    }
}

#[derive(Default)]
struct Lanes {
    /// Waiting operations per lane, oldest first.
    waiting: HashMap<String, VecDeque<Op>>,
    /// Lanes with waiting operations and no upload in progress, in the order they became so.
    ready: VecDeque<String>,
    /// Lanes with an upload in progress.
    busy: HashSet<String>,
    /// The operation each busy lane is uploading: not in the store yet, so reads, lists and
    /// the backlog still count it.
    in_flight: HashMap<String, Op>,
    /// Keys removed while their upload was in flight: deleted from the store once it lands.
    removed: HashSet<String>,
    stopping: bool,
}

impl Lanes {
    /// Every operation not in the store yet: uploading and waiting.
    fn not_stored(&self) -> impl Iterator<Item = &Op> {
        self.in_flight
            .values()
            .chain(self.waiting.values().flatten())
    }

    /// The newest not-yet-stored operation on `key`.
    fn newest(&self, key: &str) -> Option<&Op> {
        let lane = lane_of(key);
        let waiting = self
            .waiting
            .get(lane)
            .and_then(|q| q.iter().rev().find(|op| op.key() == key));
        waiting.or_else(|| self.in_flight.get(lane).filter(|op| op.key() == key))
    }

    fn push(&mut self, lane: String, op: Op) {
        let queue = self.waiting.entry(lane.clone()).or_default();
        if let Op::Playlist { key, fence, .. } = &op {
            // A newer playlist supersedes an older one of the same writer still waiting in
            // this lane: it is queued after everything the older one named, so dropping the
            // older loses nothing. Another writer's may yet be the one the fence admits.
            queue.retain(
                |o| !matches!(o, Op::Playlist { key: k, fence: f, .. } if k == key && f == fence),
            );
        }
        queue.push_back(op);
        if queue.len() == 1 && !self.busy.contains(&lane) && !self.ready.contains(&lane) {
            self.ready.push_back(lane);
        }
    }
}

/// What is waiting to be uploaded, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Segments and playlists not yet in the store (uploads in progress included).
    pub operations: u64,
    pub bytes: u64,
    /// How long the oldest of them has waited.
    pub oldest: Duration,
    /// Whether the last upload attempt failed (the store is down or refusing).
    pub failing: bool,
    /// Uploads done since start.
    pub uploaded: u64,
    /// Fenced operations dropped since start because a newer writer took their keys over.
    pub superseded: u64,
}

struct Shared {
    remote: Arc<dyn Storage>,
    spill: PathBuf,
    lanes: Mutex<Lanes>,
    wake: Condvar,
    seq: AtomicU64,
    failing: AtomicBool,
    uploaded: AtomicU64,
    superseded: AtomicU64,
    fence: Option<Arc<dyn UploadFence>>,
}

/// A [`Storage`] in front of a slower one; see the module docs.
pub struct UploadQueue {
    shared: Arc<Shared>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for UploadQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadQueue({})", self.shared.spill.display())
    }
}

fn lane_of(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// `<seq>[@<fence>]~<key with / as ~>.pending`: `~` is not a key character, so the name gives
/// the key back, the sequence number the order, and the fence survives a restart.
fn pending_name(seq: u64, fence: Option<i64>, key: &str) -> String {
    let fence = fence.map(|f| format!("@{f}")).unwrap_or_default();
    format!("{seq:020}{fence}~{}.pending", key.replace('/', "~"))
}

fn parse_pending(name: &str) -> Option<(u64, Option<i64>, String)> {
    let (head, key) = name.strip_suffix(".pending")?.split_once('~')?;
    let key = key.replace('~', "/");
    key_parts(&key).ok()?;
    let (seq, fence) = match head.split_once('@') {
        Some((seq, fence)) => (seq, Some(fence.parse().ok()?)),
        None => (head, None),
    };
    Some((seq.parse().ok()?, fence, key))
}

impl UploadQueue {
    /// Forwards to `remote` with `workers` upload threads (at least 1), spilling segments in
    /// `spill` (created if missing). Segments a previous process left there are queued first,
    /// in their old order.
    pub fn open(
        remote: Arc<dyn Storage>,
        spill: impl Into<PathBuf>,
        workers: usize,
    ) -> io::Result<Self> {
        Self::open_fenced(remote, spill, workers, None)
    }

    /// Like [`UploadQueue::open`], with `fence` asked before each upload of a fenced
    /// operation (see [`UploadQueue::fenced`]).
    pub fn open_fenced(
        remote: Arc<dyn Storage>,
        spill: impl Into<PathBuf>,
        workers: usize,
        fence: Option<Arc<dyn UploadFence>>,
    ) -> io::Result<Self> {
        let spill = spill.into();
        fs::create_dir_all(&spill)?;
        let mut leftovers = Vec::new();
        for entry in fs::read_dir(&spill)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((seq, fence, key)) = parse_pending(&name) {
                leftovers.push((seq, fence, key, entry.path(), entry.metadata()?.len()));
            } else if name.ends_with(".staging") {
                let _ = fs::remove_file(entry.path());
            }
        }
        leftovers.sort_by_key(|(seq, ..)| *seq);
        let next_seq = leftovers.last().map_or(0, |(seq, ..)| seq + 1);
        let mut lanes = Lanes::default();
        let now = Instant::now();
        if !leftovers.is_empty() {
            tracing::info!(
                segments = leftovers.len(),
                spill = %spill.display(),
                "uploading segments a previous run had not uploaded"
            );
        }
        for (_, fence, key, file, bytes) in leftovers {
            lanes.push(
                lane_of(&key).to_owned(),
                Op::Segment {
                    key,
                    file,
                    bytes,
                    queued: now,
                    fence,
                },
            );
        }
        let shared = Arc::new(Shared {
            remote,
            spill,
            lanes: Mutex::new(lanes),
            wake: Condvar::new(),
            seq: AtomicU64::new(next_seq),
            failing: AtomicBool::new(false),
            uploaded: AtomicU64::new(0),
            superseded: AtomicU64::new(0),
            fence,
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("upload-{i}"))
                    .spawn(move || shared.work())
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(UploadQueue { shared, workers })
    }

    /// What is waiting.
    pub fn backlog(&self) -> Backlog {
        let lanes = self.shared.lock();
        let mut b = Backlog {
            failing: self.shared.failing.load(Ordering::Relaxed),
            uploaded: self.shared.uploaded.load(Ordering::Relaxed),
            superseded: self.shared.superseded.load(Ordering::Relaxed),
            ..Backlog::default()
        };
        let now = Instant::now();
        for op in lanes.not_stored() {
            b.operations += 1;
            b.bytes += op.bytes();
            b.oldest = b.oldest.max(now.saturating_duration_since(op.queued()));
        }
        b
    }

    /// Waits until nothing is waiting or `timeout` passes; true when everything is uploaded.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lanes = self.shared.lock();
        loop {
            if lanes.waiting.values().all(VecDeque::is_empty) && lanes.busy.is_empty() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lanes = self
                .shared
                .wake
                .wait_timeout(lanes, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn enqueue(&self, op: Op) {
        let lane = lane_of(op.key()).to_owned();
        self.shared.lock().push(lane, op);
        self.shared.wake.notify_all();
    }

    /// This queue as seen by a writer holding `fence`: its segments and playlists are uploaded
    /// only while the queue's [`UploadFence`] admits the fence (everything else is shared).
    pub fn fenced(self: &Arc<Self>, fence: i64) -> Arc<dyn Storage> {
        Arc::new(FencedWrites {
            queue: self.clone(),
            fence,
        })
    }

    fn begin_segment_with(
        &self,
        key: &str,
        fence: Option<i64>,
    ) -> io::Result<Box<dyn SegmentWriter>> {
        key_parts(key)?;
        let seq = self.shared.seq.fetch_add(1, Ordering::Relaxed);
        let pending = self.shared.spill.join(pending_name(seq, fence, key));
        let staging = pending.with_extension("staging");
        let shared = self.shared.clone();
        let key = key.to_owned();
        let segment = StagedSegment::create(staging, move |file, staged| {
            let bytes = file.metadata()?.len();
            // Renamed before the commit returns: from here a crash still uploads it.
            fs::rename(staged, &pending)?;
            let lane = lane_of(&key).to_owned();
            shared.lock().push(
                lane,
                Op::Segment {
                    key,
                    file: pending,
                    bytes,
                    queued: Instant::now(),
                    fence,
                },
            );
            shared.wake.notify_all();
            Ok(())
        })?;
        Ok(Box::new(segment))
    }

    fn replace_playlist_with(&self, key: &str, text: &[u8], fence: Option<i64>) -> io::Result<()> {
        key_parts(key)?;
        self.enqueue(Op::Playlist {
            key: key.to_owned(),
            text: text.to_vec(),
            queued: Instant::now(),
            fence,
        });
        Ok(())
    }
}

/// [`UploadQueue::fenced`]'s view.
struct FencedWrites {
    queue: Arc<UploadQueue>,
    fence: i64,
}

impl std::fmt::Debug for FencedWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} fenced {}", self.queue, self.fence)
    }
}

impl Storage for FencedWrites {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        self.queue.begin_segment_with(key, Some(self.fence))
    }
    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        self.queue
            .replace_playlist_with(key, text, Some(self.fence))
    }
    fn remove(&self, key: &str) -> io::Result<bool> {
        self.queue.remove(key)
    }
    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.queue.read(key)
    }
    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        self.queue.fetch(key)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        self.queue.list(prefix)
    }
}

impl Drop for UploadQueue {
    /// Stops the workers after their current upload; what still waits stays in the spill
    /// directory for the next start (playlists are rewritten by their streams).
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An upload thread: takes the next ready lane's oldest operation, uploads it (retrying
    /// until it succeeds or the queue stops), then gives the lane back.
    fn work(&self) {
        loop {
            let (lane, op) = {
                let mut lanes = self.lock();
                loop {
                    if lanes.stopping {
                        return;
                    }
                    if let Some(lane) = lanes.ready.pop_front() {
                        if let Some(op) = lanes.waiting.get_mut(&lane).and_then(VecDeque::pop_front)
                        {
                            lanes.busy.insert(lane.clone());
                            lanes.in_flight.insert(lane.clone(), op.clone());
                            break (lane, op);
                        }
                        continue;
                    }
                    lanes = self.wake.wait(lanes).unwrap_or_else(|e| e.into_inner());
                }
            };
            let done = self.upload_until_done(&op);
            if done && self.lock().removed.contains(op.key()) {
                // Removed while uploading: the upload must not bring it back.
                let _ = self.remote.remove(op.key());
            }
            let mut lanes = self.lock();
            lanes.removed.remove(op.key());
            lanes.busy.remove(&lane);
            lanes.in_flight.remove(&lane);
            if !done {
                // Stopping: put it back so the spill file is not forgotten by `read`.
                lanes.waiting.entry(lane).or_default().push_front(op);
                return;
            }
            if lanes.waiting.get(&lane).is_some_and(|q| !q.is_empty()) {
                lanes.ready.push_back(lane);
            } else {
                lanes.waiting.remove(&lane);
            }
            drop(lanes);
            self.wake.notify_all();
        }
    }

    /// One upload attempt; `Ok(false)` when a segment's spill file is gone (retention removed
    /// it while it waited; a NotFound from the store, e.g. a missing bucket, is a failure).
    fn upload(&self, op: &Op) -> io::Result<bool> {
        match op {
            Op::Segment { key, file, .. } => match fs::read(file) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
                Ok(bytes) => {
                    let mut w = self.remote.begin_segment(key)?;
                    io::Write::write_all(&mut w, &bytes)?;
                    w.commit().map(|()| true)
                }
            },
            Op::Playlist { key, text, .. } => {
                self.remote.replace_playlist(key, text).map(|()| true)
            }
        }
    }

    fn upload_until_done(&self, op: &Op) -> bool {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let admitted = match (op.fence(), &self.fence) {
                (Some(fence), Some(authority)) => authority.admits(op.key(), fence),
                _ => Ok(true),
            };
            let result = match admitted {
                Ok(true) => match self.upload(op) {
                    // Retention removed the segment while it waited: nothing to upload.
                    Ok(false) => return true,
                    other => other.map(drop),
                },
                Ok(false) => {
                    if let Op::Segment { file, .. } = op {
                        let _ = fs::remove_file(file);
                    }
                    self.superseded.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(
                        key = op.key(),
                        "upload dropped: a newer writer holds the key"
                    );
                    return true;
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if let Op::Segment { file, .. } = op {
                        let _ = fs::remove_file(file);
                    }
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            key = op.key(),
                            "object store reachable again; uploading the backlog"
                        );
                    }
                    self.uploaded.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(key = op.key(), error = %e, "upload failed; segments wait in the spill directory and are retried in order");
                    }
                }
            }
            let stop = {
                let lanes = self.lock();
                if lanes.stopping {
                    true
                } else {
                    self.wake
                        .wait_timeout(lanes, delay)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                        .stopping
                }
            };
            if stop {
                return false;
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

impl Storage for UploadQueue {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        self.begin_segment_with(key, None)
    }

    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        self.replace_playlist_with(key, text, None)
    }

    fn remove(&self, key: &str) -> io::Result<bool> {
        key_parts(key)?;
        let mut dropped = false;
        {
            let mut lanes = self.shared.lock();
            if lanes.removed.contains(key) {
                // Already removed while uploading; the uploader deletes it from the store.
                return Ok(false);
            }
            if lanes
                .in_flight
                .get(lane_of(key))
                .is_some_and(|op| op.key() == key)
            {
                lanes.removed.insert(key.to_owned());
                dropped = true;
            }
            if let Some(queue) = lanes.waiting.get_mut(lane_of(key)) {
                queue.retain(|op| {
                    if op.key() != key {
                        return true;
                    }
                    if let Op::Segment { file, .. } = op {
                        let _ = fs::remove_file(file);
                    }
                    dropped = true;
                    false
                });
            }
        }
        Ok(self.shared.remote.remove(key)? || dropped)
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.fetch(key)?.map(|f| f.bytes))
    }

    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        key_parts(key)?;
        // Read your writes: the newest version not yet stored wins over the store's, and a key
        // removed while uploading is gone.
        let queued = {
            let lanes = self.shared.lock();
            if lanes.removed.contains(key) {
                return Ok(None);
            }
            lanes.newest(key).map(|op| match op {
                Op::Playlist { text, .. } => Ok(text.clone()),
                Op::Segment { file, .. } => Err(file.clone()),
            })
        };
        // Queued versions were written a moment ago: "now" is their time.
        let now = |bytes| {
            Some(Fetched {
                bytes,
                modified: std::time::SystemTime::now(),
            })
        };
        match queued {
            Some(Ok(text)) => Ok(now(text)),
            Some(Err(file)) => match fs::read(&file) {
                Ok(bytes) => Ok(now(bytes)),
                // Uploaded meanwhile (the file is removed after the upload).
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.shared.remote.fetch(key),
                Err(e) => Err(e),
            },
            None => self.shared.remote.fetch(key),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        let mut out = self.shared.remote.list(prefix)?;
        let lanes = self.shared.lock();
        out.retain(|o| !lanes.removed.contains(&o.key));
        // Removed keys count as seen: not listed from the queue either.
        let mut seen: HashSet<String> = out
            .iter()
            .map(|o| o.key.clone())
            .chain(lanes.removed.iter().cloned())
            .collect();
        let under = |k: &str| {
            prefix.is_empty() || k.strip_prefix(prefix).is_some_and(|r| r.starts_with('/'))
        };
        for op in lanes.not_stored() {
            let key = op.key();
            if !under(key) || !seen.insert(key.to_owned()) {
                continue;
            }
            let modified = match op {
                Op::Segment { file, .. } => fs::metadata(file).and_then(|m| m.modified()).ok(),
                Op::Playlist { .. } => None,
            };
            out.push(StoredObject {
                key: key.to_owned(),
                bytes: op.bytes(),
                modified: modified.unwrap_or_else(std::time::SystemTime::now),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_names_give_the_key_and_order_back() {
        let name = pending_name(42, None, "live/cab_1/7.ts");
        assert_eq!(
            parse_pending(&name),
            Some((42, None, "live/cab_1/7.ts".into()))
        );
        let fenced = pending_name(43, Some(7), "live/cab_1/8.ts");
        assert_eq!(
            parse_pending(&fenced),
            Some((43, Some(7), "live/cab_1/8.ts".into()))
        );
        assert!(
            pending_name(9, Some(12), "a") < pending_name(10, None, "a"),
            "sorts by sequence"
        );
        assert_eq!(parse_pending("x.pending"), None);
        assert_eq!(parse_pending("00000000000000000001~..~x.pending"), None);
    }

    #[test]
    fn lanes_are_directories() {
        assert_eq!(lane_of("live/cab_1/7.ts"), "live/cab_1");
        assert_eq!(lane_of("index.m3u8"), "");
    }
}
