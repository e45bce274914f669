//! The storage contract, the same checks on every implementation: the local directory, memory,
//! the upload queue, and (feature `s3`) an S3-compatible store, moto's server started here on
//! 127.0.0.1 and reached with SigV4-signed requests by object_store's real client. Then a live
//! stream muxed into the bucket, directly and through the upload queue across an outage of the
//! store: its playlist names only objects that are there, every one decodes, nothing is lost,
//! and no playlist reached the store before the segments it names.
//!
//! Needs for the S3 part: FLEET_MOTO_SERVER, the path of moto's `moto_server`
//! (`scripts/install-moto.sh` installs it and prints the path; `scripts/test.sh` sets it).

use std::io::Write;

use std::sync::Arc;
use std::time::Duration;

use streamcore::storage::upload::UploadQueue;
use streamcore::storage::Scoped;
use streamcore::{FsStorage, MemoryStorage, Storage, StoredObject};

fn keys(mut objects: Vec<StoredObject>) -> Vec<String> {
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    objects.into_iter().map(|o| o.key).collect()
}

/// 300 kB that no two offsets of share: a segment-sized body whose corruption would show.
fn body() -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// What every [`Storage`] promises, on an empty store.
fn contract(store: &dyn Storage, what: &str) {
    assert!(store.list("").unwrap().is_empty(), "{what}: starts empty");
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");

    // A segment is neither listed nor readable until committed, then complete.
    let seg = body();
    let mut w = store.begin_segment("live/cab_1/0.ts").unwrap();
    w.write_all(&seg[..100_000]).unwrap();
    assert!(
        store.list("live").unwrap().is_empty(),
        "{what}: partial listed"
    );
    w.write_all(&seg[100_000..]).unwrap();
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");
    w.commit().unwrap();
    assert!(
        store.read("live/cab_1/0.ts").unwrap().unwrap() == seg,
        "{what}: body"
    );
    let listed = store.list("live/cab_1").unwrap();
    assert_eq!(listed.len(), 1, "{what}");
    assert_eq!(listed[0].bytes, seg.len() as u64, "{what}");
    let age = std::time::SystemTime::now()
        .duration_since(listed[0].modified)
        .unwrap_or_default();
    assert!(age.as_secs() < 600, "{what}: modified is the write time");
    // A fetch gives the same bytes with the same write time as the listing (to the second:
    // S3 keeps no finer).
    let fetched = store.fetch("live/cab_1/0.ts").unwrap().unwrap();
    assert!(fetched.bytes == seg, "{what}: fetched body");
    let apart = fetched
        .modified
        .duration_since(listed[0].modified)
        .or_else(|e| Ok::<_, ()>(e.duration()))
        .unwrap();
    assert!(
        apart.as_secs() <= 1,
        "{what}: fetched time {apart:?} from the listed one"
    );
    assert_eq!(store.fetch("live/cab_1/9.ts").unwrap(), None, "{what}");

    // An aborted segment leaves nothing.
    let mut w = store.begin_segment("live/cab_1/1.ts").unwrap();
    w.write_all(b"partial").unwrap();
    w.abort();

    // A playlist is replaced whole.
    store
        .replace_playlist("live/cab_1/index.m3u8", b"#EXTM3U\n#v1\n")
        .unwrap();
    store
        .replace_playlist("live/cab_1/index.m3u8", b"#EXTM3U\n#v2\n")
        .unwrap();
    assert_eq!(
        store.read("live/cab_1/index.m3u8").unwrap().unwrap(),
        b"#EXTM3U\n#v2\n",
        "{what}"
    );

    // A prefix is a directory, not a string prefix.
    let mut w = store.begin_segment("live/cab_10/0.ts").unwrap();
    w.write_all(b"other stream").unwrap();
    w.commit().unwrap();
    assert_eq!(
        keys(store.list("live/cab_1").unwrap()),
        ["live/cab_1/0.ts", "live/cab_1/index.m3u8"],
        "{what}"
    );
    assert_eq!(keys(store.list("").unwrap()).len(), 3, "{what}");
    assert!(store.list("live/cab").unwrap().is_empty(), "{what}");

    // Removal says whether there was something (retention counts it).
    assert!(store.remove("live/cab_1/0.ts").unwrap(), "{what}");
    assert!(!store.remove("live/cab_1/0.ts").unwrap(), "{what}");
    assert_eq!(store.read("live/cab_1/0.ts").unwrap(), None, "{what}");
    assert_eq!(
        keys(store.list("").unwrap()).len(),
        2,
        "{what}: {:?}",
        keys(store.list("").unwrap())
    );

    // Keys that name nothing we own are refused by every operation.
    for bad in ["../x", "/etc/passwd", "live//x", "a/./b", "a b", ""] {
        assert!(store.begin_segment(bad).is_err(), "{what}: {bad:?}");
        assert!(store.replace_playlist(bad, b"x").is_err(), "{what}");
        assert!(store.read(bad).is_err(), "{what}: {bad:?}");
        assert!(store.remove(bad).is_err(), "{what}: {bad:?}");
    }
}

#[test]
fn local_and_memory_storage_keep_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(&FsStorage::open(dir.path(), false).unwrap(), "fs");
    let durable = tempfile::tempdir().unwrap();
    contract(
        &FsStorage::open(durable.path(), true).unwrap(),
        "fs durable",
    );
    contract(&MemoryStorage::new(), "memory");
    let shared = MemoryStorage::new();
    contract(
        &Scoped::new(Arc::new(shared.clone()), "site-a").unwrap(),
        "scoped",
    );
    assert!(shared.names().iter().all(|k| k.starts_with("site-a/")));
    // Nothing partial was left on disk.
    assert!(!dir.path().join("live/cab_1/1.ts.part").exists());
}

/// The upload queue keeps the contract while uploads are still under way, and once flushed the
/// store behind it holds exactly what the contract left.
#[test]
fn the_upload_queue_keeps_the_contract() {
    let remote = MemoryStorage::new();
    let spill = tempfile::tempdir().unwrap();
    let queue = UploadQueue::open(Arc::new(remote.clone()), spill.path(), 2).unwrap();
    contract(&queue, "upload queue");
    assert!(queue.flush(Duration::from_secs(10)));
    assert_eq!(
        remote.names(),
        ["live/cab_1/index.m3u8", "live/cab_10/0.ts"]
    );
    assert_eq!(queue.backlog().operations, 0);
    assert_eq!(
        std::fs::read_dir(spill.path()).unwrap().count(),
        0,
        "spill files removed once uploaded"
    );
}

/// The fencing authority a node asks before each upload: here a current fence (the catalog's
/// lease in ingestd), and whether it can be reached at all.
struct CurrentFence {
    fence: std::sync::atomic::AtomicI64,
    reachable: std::sync::atomic::AtomicBool,
    asked: std::sync::atomic::AtomicU64,
}

impl streamcore::storage::upload::UploadFence for CurrentFence {
    fn admits(&self, _key: &str, fence: i64) -> std::io::Result<bool> {
        use std::sync::atomic::Ordering::SeqCst;
        self.asked.fetch_add(1, SeqCst);
        if !self.reachable.load(SeqCst) {
            return Err(std::io::Error::other("catalog unreachable"));
        }
        Ok(fence == self.fence.load(SeqCst))
    }
}

/// Two writers of one stream through fenced views of one queue: only the current fence's
/// segments and playlists reach the store, the other's are dropped and counted, and while the
/// authority cannot be asked nothing is uploaded unchecked (it waits, then goes).
#[test]
fn fenced_writes_reach_the_store_only_under_the_current_fence() {
    use std::sync::atomic::Ordering::SeqCst;
    let remote = MemoryStorage::new();
    let spill = tempfile::tempdir().unwrap();
    let authority = Arc::new(CurrentFence {
        fence: 2.into(),
        reachable: false.into(),
        asked: 0.into(),
    });
    let queue = Arc::new(
        UploadQueue::open_fenced(
            Arc::new(remote.clone()),
            spill.path(),
            2,
            Some(authority.clone()),
        )
        .unwrap(),
    );
    let (old, new) = (queue.fenced(1), queue.fenced(2));
    let write = |w: &Arc<dyn Storage>, seq: u32, who: &str| {
        let mut seg = w.begin_segment(&format!("live/cab_1/{seq}.ts")).unwrap();
        seg.write_all(format!("{who} {seq}").as_bytes()).unwrap();
        seg.commit().unwrap();
        w.replace_playlist(
            "live/cab_1/index.m3u8",
            format!("{who} lists {seq}").as_bytes(),
        )
        .unwrap();
    };
    write(&new, 5, "new");
    write(&old, 4, "old");
    // Unreachable: asked, retried, nothing uploaded, and the writers' reads still see their
    // own queued writes.
    std::thread::sleep(Duration::from_millis(600));
    assert!(authority.asked.load(SeqCst) >= 2);
    assert!(remote.names().is_empty());
    assert!(queue.backlog().failing);
    authority.reachable.store(true, SeqCst);
    assert!(queue.flush(Duration::from_secs(10)));
    assert_eq!(remote.names(), ["live/cab_1/5.ts", "live/cab_1/index.m3u8"]);
    assert_eq!(
        remote.get("live/cab_1/index.m3u8").unwrap(),
        b"new lists 5".to_vec()
    );
    let backlog = queue.backlog();
    assert_eq!((backlog.superseded, backlog.uploaded), (2, 2));
    // An unfenced write (the single-node case) is never asked about.
    let before = authority.asked.load(SeqCst);
    queue.replace_playlist("live/raw/index.m3u8", b"x").unwrap();
    assert!(queue.flush(Duration::from_secs(10)));
    assert_eq!(authority.asked.load(SeqCst), before);
    assert_eq!(
        std::fs::read_dir(spill.path()).unwrap().count(),
        0,
        "a dropped segment's spill file is removed too"
    );
}

#[cfg(feature = "s3")]
mod s3 {
    use super::*;

    use std::sync::Mutex;
    use std::time::Instant;

    use streamcore::storage::s3::parse_s3_url;
    use streamcore::{LiveStream, SegmentWriter, StreamConfig};

    use crate::common::{ffmpeg_errors, fixture, parse_playlist, stepping_clock};
    use crate::moto::Moto;

    #[test]
    fn s3_urls_are_checked() {
        assert_eq!(
            parse_s3_url("s3://fleet-video/site-a/").unwrap(),
            ("fleet-video".into(), "site-a".into())
        );
        assert_eq!(
            parse_s3_url("s3://fleet-video").unwrap(),
            ("fleet-video".into(), String::new())
        );
        for bad in [
            "fleet-video",
            "s3://",
            "s3://Fleet",
            "s3://ab",
            "s3://fleet/../x",
            "s3://fleet/a b",
        ] {
            assert!(parse_s3_url(bad).is_err(), "{bad}");
        }
    }

    /// The contract on a bucket's root and under a prefix; what the prefixed storage wrote is
    /// under its prefix in the bucket, and no staging file is left behind.
    #[test]
    fn s3_storage_keeps_the_contract() {
        let moto = Moto::start();
        moto.create_bucket("fleet-root");
        moto.create_bucket("fleet-prefixed");
        let staging = tempfile::tempdir().unwrap();
        contract(&moto.storage("s3://fleet-root", staging.path()), "s3");
        contract(
            &moto.storage("s3://fleet-prefixed/site-a", staging.path()),
            "s3 prefixed",
        );
        let whole = moto.storage("s3://fleet-prefixed", staging.path());
        assert_eq!(
            keys(whole.list("").unwrap()),
            ["site-a/live/cab_1/index.m3u8", "site-a/live/cab_10/0.ts"]
        );
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
        // A bucket that does not exist is an error, not an empty store.
        let missing = moto.storage("s3://no-such-bucket", staging.path());
        assert!(missing.list("").is_err());
        assert!(missing.replace_playlist("a.m3u8", b"x").is_err());
    }

    /// A live stream muxed into the bucket: every segment the playlist names is there, whole
    /// (ffmpeg decodes each one read back from the store without an error), and nothing else.
    #[test]
    fn a_live_stream_publishes_into_s3() {
        let moto = Moto::start();
        moto.create_bucket("fleet-live");
        let staging = tempfile::tempdir().unwrap();
        let storage = Arc::new(moto.storage("s3://fleet-live/live/cab_1", staging.path()));
        let cfg = StreamConfig {
            clock: stepping_clock(),
            ..Default::default()
        };
        let mut stream = LiveStream::with_storage("cab_1", storage.clone(), cfg).unwrap();
        let data = std::fs::read(fixture("baseline.h264")).unwrap();
        for chunk in data.chunks(1400) {
            stream.push_bytes(chunk).unwrap();
        }
        stream.finish(true).unwrap();

        let playlist = String::from_utf8(storage.read("index.m3u8").unwrap().unwrap()).unwrap();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let (segments, _) = parse_playlist(&playlist);
        assert!(segments.len() >= 2, "{playlist}");
        let mut stored = keys(storage.list("").unwrap());
        stored.retain(|k| k.ends_with(".ts"));
        let mut named: Vec<String> = segments.iter().map(|(_, uri)| uri.clone()).collect();
        named.sort();
        assert_eq!(stored, named, "the playlist names exactly what is stored");
        let dir = tempfile::tempdir().unwrap();
        for (_, uri) in &segments {
            let path = dir.path().join(uri);
            std::fs::write(&path, storage.read(uri).unwrap().unwrap()).unwrap();
            assert_eq!(ffmpeg_errors(&path), "", "{uri}");
        }
        assert_eq!(std::fs::read_dir(staging.path()).unwrap().count(), 0);
    }

    /// What reached the store, in order: a segment's key, or a playlist's key and text.
    type UploadLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// Passes everything to the store and notes, in order, what reached it.
    struct Recording {
        inner: Arc<dyn Storage>,
        log: UploadLog,
    }

    struct RecordingSegment {
        inner: Box<dyn SegmentWriter>,
        key: String,
        log: UploadLog,
    }

    impl Write for RecordingSegment {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }
    }

    impl SegmentWriter for RecordingSegment {
        fn commit(self: Box<Self>) -> std::io::Result<()> {
            self.inner.commit()?;
            self.log.lock().unwrap().push((self.key, None));
            Ok(())
        }
        fn abort(self: Box<Self>) {
            self.inner.abort();
        }
    }

    impl Storage for Recording {
        fn begin_segment(&self, key: &str) -> std::io::Result<Box<dyn SegmentWriter>> {
            Ok(Box::new(RecordingSegment {
                inner: self.inner.begin_segment(key)?,
                key: key.to_owned(),
                log: self.log.clone(),
            }))
        }
        fn replace_playlist(&self, key: &str, text: &[u8]) -> std::io::Result<()> {
            self.inner.replace_playlist(key, text)?;
            let text = String::from_utf8_lossy(text).into_owned();
            self.log.lock().unwrap().push((key.to_owned(), Some(text)));
            Ok(())
        }
        fn remove(&self, key: &str) -> std::io::Result<bool> {
            self.inner.remove(key)
        }
        fn read(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
            self.inner.read(key)
        }
        fn list(&self, prefix: &str) -> std::io::Result<Vec<StoredObject>> {
            self.inner.list(prefix)
        }
    }

    /// Every playlist that reached the store named only segments that had reached it before.
    fn playlists_after_their_segments(log: &[(String, Option<String>)]) -> usize {
        let mut stored = std::collections::HashSet::new();
        let mut playlists = 0;
        for (key, text) in log {
            match text {
                None => {
                    stored.insert(key.rsplit('/').next().unwrap().to_owned());
                }
                Some(text) => {
                    playlists += 1;
                    for (_, uri) in parse_playlist(text).0 {
                        assert!(
                            stored.contains(&uri),
                            "{key} named {uri} before it was stored: {log:?}"
                        );
                    }
                }
            }
        }
        playlists
    }

    /// Opens a live stream on `storage`, runs `then`, and feeds the stream the fixture.
    fn mux_fixture_into(storage: Arc<dyn Storage>, name: &str, then: impl FnOnce()) {
        let cfg = StreamConfig {
            clock: stepping_clock(),
            ..Default::default()
        };
        let mut stream = LiveStream::with_storage(name, storage, cfg).unwrap();
        then();
        let data = std::fs::read(fixture("baseline.h264")).unwrap();
        for chunk in data.chunks(1400) {
            stream.push_bytes(chunk).unwrap();
        }
        stream.finish(true).unwrap();
    }

    /// Reads the finished stream back from `storage`: ffmpeg decodes every segment its
    /// playlist names. Returns the segments' keys, sorted.
    fn read_back_stream(storage: &dyn Storage, prefix: &str) -> Vec<String> {
        let playlist = storage
            .read(&format!("{prefix}/index.m3u8"))
            .unwrap()
            .unwrap();
        let playlist = String::from_utf8(playlist).unwrap();
        assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
        let (segments, _) = parse_playlist(&playlist);
        assert!(segments.len() >= 2, "{playlist}");
        let mut named: Vec<String> = segments
            .iter()
            .map(|(_, uri)| format!("{prefix}/{uri}"))
            .collect();
        named.sort();
        let dir = tempfile::tempdir().unwrap();
        for key in &named {
            let path = dir.path().join(key.replace('/', "_"));
            std::fs::write(&path, storage.read(key).unwrap().unwrap()).unwrap();
            assert_eq!(ffmpeg_errors(&path), "", "{key}");
        }
        named
    }

    /// The finished stream in `storage`: it reads back whole, and its playlist names exactly
    /// the stored segments.
    fn check_stored_stream(storage: &dyn Storage, prefix: &str) {
        let named = read_back_stream(storage, prefix);
        let mut stored: Vec<String> = keys(storage.list(prefix).unwrap())
            .into_iter()
            .filter(|k| k.ends_with(".ts"))
            .collect();
        stored.sort();
        assert_eq!(stored, named, "the playlist names exactly what is stored");
    }

    /// The store goes down while a stream is being recorded: the stream goes on (its commits
    /// wait for no upload), the backlog says so, and once the store is back every segment and
    /// the final playlist arrive, in order, and decode.
    #[test]
    fn uploads_survive_an_outage_in_order() {
        let mut moto = Moto::start();
        moto.create_bucket("fleet-outage");
        let staging = tempfile::tempdir().unwrap();
        let spill = tempfile::tempdir().unwrap();
        let s3: Arc<dyn Storage> = Arc::new(moto.storage("s3://fleet-outage", staging.path()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let recording = Arc::new(Recording {
            inner: s3.clone(),
            log: log.clone(),
        });
        let queue = Arc::new(UploadQueue::open(recording, spill.path(), 4).unwrap());
        // A first stream while the store is up.
        mux_fixture_into(
            Arc::new(Scoped::new(queue.clone(), "live/before").unwrap()),
            "before",
            || {},
        );
        assert!(queue.flush(Duration::from_secs(30)));

        // The store goes down once the stream is open (opening reads the stream's last
        // playlist, which needs the store or this node's own queue).
        mux_fixture_into(
            Arc::new(Scoped::new(queue.clone(), "live/during").unwrap()),
            "during",
            || moto.stop(),
        );
        // Give the uploaders time to fail and to say so.
        let t0 = Instant::now();
        while !queue.backlog().failing {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{:?}",
                queue.backlog()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let backlog = queue.backlog();
        assert!(
            backlog.operations >= 3 && backlog.bytes > 100_000,
            "{backlog:?}"
        );
        // What was recorded is readable through the queue meanwhile (listing needs the store).
        read_back_stream(queue.as_ref(), "live/during");
        assert!(queue.list("live/during").is_err());

        moto.restart();
        moto.create_bucket("fleet-outage");
        assert!(
            queue.flush(Duration::from_secs(60)),
            "{:?}",
            queue.backlog()
        );
        assert!(!queue.backlog().failing);
        check_stored_stream(s3.as_ref(), "live/during");
        let log = log.lock().unwrap();
        assert!(playlists_after_their_segments(&log) >= 1);
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    }

    /// Segments committed while the store is down survive the process: a new queue on the same
    /// spill directory uploads them.
    #[test]
    fn a_restart_uploads_what_the_last_run_could_not() {
        let mut moto = Moto::start();
        let staging = tempfile::tempdir().unwrap();
        let spill = tempfile::tempdir().unwrap();
        moto.stop();
        {
            let s3 = Arc::new(moto.storage("s3://fleet-restart", staging.path()));
            let queue = UploadQueue::open(s3, spill.path(), 2).unwrap();
            for n in 0..3 {
                let mut w = queue.begin_segment(&format!("live/cab_1/{n}.ts")).unwrap();
                w.write_all(&body()).unwrap();
                w.commit().unwrap();
            }
            // A segment still being written when the process ends is not uploaded.
            let mut w = queue.begin_segment("live/cab_1/3.ts").unwrap();
            w.write_all(b"half").unwrap();
            std::mem::forget(w);
            assert!(!queue.flush(Duration::from_millis(500)));
        }
        moto.restart();
        moto.create_bucket("fleet-restart");
        let s3 = Arc::new(moto.storage("s3://fleet-restart", staging.path()));
        let queue = UploadQueue::open(s3.clone(), spill.path(), 2).unwrap();
        assert!(
            queue.flush(Duration::from_secs(30)),
            "{:?}",
            queue.backlog()
        );
        assert_eq!(
            keys(s3.list("").unwrap()),
            ["live/cab_1/0.ts", "live/cab_1/1.ts", "live/cab_1/2.ts"]
        );
        assert!(s3.read("live/cab_1/1.ts").unwrap().unwrap() == body());
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    }
}
