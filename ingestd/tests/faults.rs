//! Faults under the running daemon (in-process, real sockets) while a
//! control device streams the real capture: the data dir's disk fills up
//! (a small tmpfs) and is freed again; the catalog database (PostgreSQL
//! behind a TCP relay) goes away mid-run and comes back.

mod common;

use common::{control_device, device_video_frames, last_listed, rss_kib, wait_until};

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ingestd::config::Config;
use ingestd::metrics::Metrics;

const CONTROL_SIM: &str = "014200000001";
const CONTROL: &str = "014200000001_1";

/// The daemon's warnings and errors, captured for the whole test binary
/// (the tests of this file share one global subscriber).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
            .with_writer(move || Sink(sink.clone()))
            .init();
        buf
    })
    .clone()
}

fn control_stat(m: &Metrics) -> ingestd::metrics::StreamStats {
    m.stream(CONTROL).unwrap_or_default()
}

/// A tmpfs mounted for the test, unmounted on drop. Mounting needs root;
/// if it fails the test fails (it must not pass without having filled a
/// disk).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount(8)");
        assert!(
            out.status.success(),
            "the disk-full test needs to mount a tmpfs (root, mount(8)): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a file still open elsewhere must not keep the mount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes a file until the filesystem is full; returns its path and size.
fn fill(dir: &Path) -> (PathBuf, u64) {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5au8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling: {e}");
                break;
            }
        }
    }
    (path, n)
}

/// URIs listed by a playlist with, for each, whether a DISCONTINUITY
/// precedes it.
fn listed(playlist: &Path) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(playlist).unwrap_or_default();
    let mut disc = false;
    let mut out = Vec::new();
    for l in text.lines() {
        if l == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if !l.starts_with('#') && !l.is_empty() {
            out.push((l.to_string(), std::mem::take(&mut disc)));
        }
    }
    out
}

/// Every listed segment is a complete file: present, not a `.part`, a
/// whole number of 188-byte TS packets.
fn assert_listed_complete(dir: &Path, when: &str) -> usize {
    let segs = listed(&dir.join("index.m3u8"));
    for (uri, _) in &segs {
        assert!(!uri.ends_with(".part"), "{when}: {uri} listed");
        let len = std::fs::metadata(dir.join(uri))
            .unwrap_or_else(|e| panic!("{when}: listed {uri} missing: {e}"))
            .len();
        assert!(
            len > 0 && len.is_multiple_of(188),
            "{when}: {uri} has {len} bytes"
        );
    }
    segs.len()
}

fn ffmpeg_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A JT/T 808 heartbeat on a fresh connection is answered (0x8001).
fn heartbeat_answered(addr: SocketAddr, serial: u16) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let phone = [1, 0x42, 0, 0, 0, 9];
    s.write_all(&common::frame(0x0002, &phone, serial, None, None, &[]))
        .unwrap();
    let mut reply = [0u8; 64];
    let n = s
        .read(&mut reply)
        .expect("808 reply while the disk is full");
    assert!(n > 3 && reply[0] == 0x7e, "{:?}", &reply[..n]);
    assert_eq!(&reply[1..3], &[0x80, 0x01], "general reply");
}

/// Disk full under the running daemon: segments whose writes fail are
/// logged with the storage error, counted (`failed_segments`) and never listed, 808 is still answered,
/// and once space is freed the control stream publishes again after a
/// DISCONTINUITY; every listed segment decodes and every catalog row
/// points to a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_loses_segments_counted_and_publishing_resumes() {
    let started = Instant::now();
    let logs = captured_logs();
    let tmpfs = Tmpfs::mount("32m");
    let data = tmpfs.path().to_owned();
    // The catalog lives elsewhere: this test is about the media disk.
    let db_dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(&data);
    cfg.database_url = format!("sqlite://{}", db_dir.path().join("c.sqlite").display());
    let stream_cfg = streamcore::StreamConfig {
        keep_segments: true,
        ..Default::default()
    };
    let app = ingestd::app::start(cfg, stream_cfg).await.unwrap();
    let (a1078, a808) = (app.running.jt1078_addr, app.running.jt808_addr);
    let m = app.running.ctx.metrics.clone();
    let stop = Arc::new(AtomicBool::new(false));
    // Four times real time: a 4 s segment every second.
    let control = tokio::spawn(control_device(
        a1078,
        CONTROL_SIM,
        4,
        device_video_frames(),
        stop.clone(),
    ));
    let stream_dir = data.join("live").join(CONTROL);
    wait_until("control publishes", 15, || {
        control_stat(&m).remux.segments >= 2
    })
    .await;

    // Fill the disk.
    let (filler, filled) = fill(&data);
    let before_full = last_listed(&data, CONTROL);
    let t_full = Instant::now();
    wait_until("segments fail on the full disk", 15, || {
        control_stat(&m).remux.failed_segments >= 2
    })
    .await;
    let full_for = t_full.elapsed();
    let listed_full = assert_listed_complete(&stream_dir, "disk full");
    tokio::task::spawn_blocking(move || heartbeat_answered(a808, 7))
        .await
        .unwrap();
    let rss_full = rss_kib();

    // Free the space: publishing resumes with a discontinuity.
    std::fs::remove_file(&filler).unwrap();
    let failed_while_full = control_stat(&m).remux.failed_segments;
    let last_full = last_listed(&data, CONTROL);
    let t_free = Instant::now();
    wait_until("publishing resumes after space is freed", 15, || {
        last_listed(&data, CONTROL) >= last_full + 2
    })
    .await;
    let resumed_in = t_free.elapsed();
    stop.store(true, Relaxed);
    control.await.unwrap();
    let catalog = app.catalog.clone();
    app.shutdown().await;
    let st = control_stat(&m);

    let n = assert_listed_complete(&stream_dir, "after the outage");
    let segs = listed(&stream_dir.join("index.m3u8"));
    let disc: Vec<usize> = (0..segs.len()).filter(|&i| segs[i].1).collect();
    assert_eq!(disc.len(), 1, "one DISCONTINUITY, at the loss: {segs:?}");
    assert!(disc[0] > 0, "{segs:?}");
    // The segment after the discontinuity was written after the disk
    // filled up, i.e. the discontinuity marks the lost media.
    let first_after: u64 = segs[disc[0]].0.trim_end_matches(".ts").parse().unwrap();
    assert!(first_after >= before_full, "{segs:?}");
    for (uri, _) in &segs {
        let errors = ffmpeg_errors(&stream_dir.join(uri));
        assert_eq!(errors, "", "{uri}");
    }
    // The losses were logged with their cause.
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let lost: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("segment lost") && l.contains(CONTROL))
        .collect();
    assert!(lost.len() as u64 >= failed_while_full, "{logs}");
    assert!(
        lost.iter().all(|l| l.contains("No space left on device")),
        "{lost:?}"
    );
    // No partial file left behind, and no catalog row without its file.
    for e in std::fs::read_dir(&stream_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".part"), "{name} left behind");
    }
    let rows = tokio::task::spawn_blocking(move || {
        catalog
            .segments_in_range(CONTROL, i64::MIN, i64::MAX)
            .unwrap()
    })
    .await
    .unwrap();
    // Every published segment is listed and has its row (the catalog is
    // not on the full disk).
    assert_eq!(n as u64, st.remux.segments, "{st:?}");
    assert_eq!(rows.len(), n, "{} rows, {n} listed", rows.len());
    for r in &rows {
        assert!(data.join(&r.path).is_file(), "row {} has no file", r.path);
    }
    assert!(
        st.remux.failed_segments >= failed_while_full && st.remux.segments >= 4,
        "{st:?}"
    );
    eprintln!(
        "disk full: filled {} MiB; {} segments failed in {full_for:?} (listed stayed complete: \
         {listed_full}); resumed {resumed_in:?} after freeing; {n} listed, {} rows, \
         {} published in all; RSS {rss_full} KiB while full; test {:?}",
        filled >> 20,
        failed_while_full,
        rows.len(),
        st.remux.segments,
        started.elapsed()
    );
    drop(tmpfs);
}

// ------------------------------------------------------------- database

/// A TCP relay on 127.0.0.1 in front of the database server, which the
/// test takes down (listener closed, live connections cut) and brings back
/// on the same port.
struct Relay {
    addr: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(target: SocketAddr) -> Relay {
        let mut r = Relay {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            stop: Arc::new(AtomicBool::new(false)),
            live: Arc::new(Mutex::new(Vec::new())),
            accept: None,
        };
        r.up();
        r
    }

    fn pump(mut from: TcpStream, mut to: TcpStream) {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("relay port");
        self.addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Relaxed);
        let (stop, live, target) = (self.stop.clone(), self.live.clone(), self.target);
        self.accept = Some(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let mut l = live.lock().unwrap();
                        l.push(client.try_clone().unwrap());
                        l.push(server.try_clone().unwrap());
                        Self::pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                        Self::pump(server, client);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        }));
    }

    fn down(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.down();
    }
}

const PG_ADMIN: &str = "postgres://root@127.0.0.1:5432/test";

fn pg_url() -> String {
    std::env::var("CATALOG_TEST_PG_URL").unwrap_or(PG_ADMIN.into())
}

/// A scratch database on the test PostgreSQL server, dropped at the end.
struct ScratchDb {
    name: String,
}

fn psql(sql: &str) -> std::process::Output {
    Command::new("psql")
        .arg(pg_url())
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("running psql")
}

impl ScratchDb {
    fn create(tag: &str) -> ScratchDb {
        let name = format!("t_ingestd_faults_{tag}_{}", std::process::id());
        let _ = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        let out = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "the database-outage test needs PostgreSQL at {} (psql): {}",
            pg_url(),
            String::from_utf8_lossy(&out.stderr)
        );
        ScratchDb { name }
    }

    /// The server's URL with this database, on `host` (the relay or the
    /// server itself).
    fn url(&self, host: SocketAddr) -> String {
        let url = pg_url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let user = rest.split_once('@').map(|x| format!("{}@", x.0));
        format!(
            "{scheme}://{}{host}/{}",
            user.unwrap_or_default(),
            self.name
        )
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let _ = psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

fn pg_server() -> SocketAddr {
    let url = pg_url();
    let host = url.split_once("://").unwrap().1.split_once('/').unwrap().0;
    let host = host.rsplit_once('@').map_or(host, |x| x.1);
    host.parse()
        .expect("test PostgreSQL URL with an IP:port host")
}

/// What an outage run saw.
struct Outage {
    segment_files: usize,
    rows: usize,
    missing_rows: usize,
    stats: streamcore::catalog::WriterStats,
}

/// The catalog database goes away for ~6 s mid-run while the control
/// device streams: media keeps being published during the outage (and, with
/// `heartbeat`, 808 is still answered); after it the writer reconnects and
/// flushes. The caller checks which outcome it got: rows for every segment,
/// or rows missing exactly for the records counted as dropped.
async fn database_outage(catalog_buffer: usize, heartbeat: bool) -> Outage {
    let started = Instant::now();
    let db = ScratchDb::create(&format!("b{catalog_buffer}"));
    let mut relay = Relay::start(pg_server());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_owned();
    let mut cfg = Config::for_tests(&data);
    cfg.database_url = db.url(relay.addr);
    cfg.catalog_buffer = catalog_buffer;
    let stream_cfg = streamcore::StreamConfig {
        keep_segments: true,
        ..Default::default()
    };
    let app = ingestd::app::start(cfg, stream_cfg).await.unwrap();
    let a1078 = app.running.jt1078_addr;
    let a808 = app.running.jt808_addr;
    let m = app.running.ctx.metrics.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let control = tokio::spawn(control_device(
        a1078,
        CONTROL_SIM,
        4,
        device_video_frames(),
        stop.clone(),
    ));
    wait_until("control publishes", 15, || {
        control_stat(&m).remux.segments >= 2
    })
    .await;
    // Rows are being written before the outage.
    let direct = streamcore::catalog::Catalog::open(&db.url(pg_server())).unwrap();
    let rows = |c: &streamcore::catalog::Catalog| {
        c.segments_in_range(CONTROL, i64::MIN, i64::MAX)
            .unwrap()
            .len()
    };
    let t = Instant::now();
    while rows(&direct) < 1 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no rows before the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The outage.
    relay.down();
    let t_down = Instant::now();
    let segs_down = control_stat(&m).remux.segments;
    wait_until("the writer notices the outage", 10, || {
        !app.catalog_stats().connected
    })
    .await;
    // Counted once the writer has noticed and the count has held still for half a second: a
    // COMMIT already through the relay when it went down can land on the server a moment
    // later (seen once in a full test run), and is not a row written through the cut.
    let mut rows_down = rows(&direct);
    let t = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = rows(&direct);
        if now == rows_down || t.elapsed() > Duration::from_secs(5) {
            break;
        }
        rows_down = now;
    }
    let listed_down = last_listed(&data, CONTROL);
    tokio::time::sleep(Duration::from_secs(6)).await;
    if heartbeat {
        tokio::task::spawn_blocking(move || heartbeat_answered(a808, 9))
            .await
            .unwrap();
    }
    let during = app.catalog_stats();
    let published_during = control_stat(&m).remux.segments - segs_down;
    assert!(
        published_during >= 3,
        "media stalled during the outage: {published_during} segments"
    );
    assert!(last_listed(&data, CONTROL) >= listed_down + 3);
    assert_eq!(
        rows(&direct),
        rows_down,
        "rows written through a cut relay?"
    );
    assert!(during.buffered > 0 && during.retries > 0, "{during:?}");
    let outage = t_down.elapsed();

    // Back: the catalog catches up.
    relay.up();
    let t_up = Instant::now();
    stop.store(true, Relaxed);
    control.await.unwrap();
    wait_until("the writer reconnects", 20, || {
        app.catalog_stats().connected
    })
    .await;
    // Shutdown publishes the open segment and flushes the catalog.
    let catalog_stats = app.shutdown().await;
    let st = control_stat(&m);
    let caught_up = t_up.elapsed();
    let files: Vec<String> = std::fs::read_dir(data.join("live").join(CONTROL))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".ts"))
        .collect();
    let rows_after = direct
        .segments_in_range(CONTROL, i64::MIN, i64::MAX)
        .unwrap();
    let with_row: std::collections::HashSet<String> = rows_after
        .iter()
        .map(|r| r.path.rsplit('/').next().unwrap().to_string())
        .collect();
    let missing = files.iter().filter(|f| !with_row.contains(*f)).count();
    assert_eq!(files.len() as u64, st.remux.segments, "{st:?}");
    assert!(catalog_stats.reconnects >= 1, "{catalog_stats:?}");
    eprintln!(
        "database outage (buffer {catalog_buffer}): {outage:?} down, {published_during} segments \
         published meanwhile, {} records buffered, {} retries; reconnected and flushed within \
         {caught_up:?}; {} segment files, {} rows, {missing} without a row, {} records dropped; \
         test {:?}",
        during.buffered,
        during.retries,
        files.len(),
        rows_after.len(),
        catalog_stats.dropped(),
        started.elapsed()
    );
    drop(relay);
    Outage {
        segment_files: files.len(),
        rows: rows_after.len(),
        missing_rows: missing,
        stats: catalog_stats,
    }
}

/// With the default buffer (200k records) nothing overflows: every segment
/// published during the outage gets its row once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_media_continues_and_the_catalog_catches_up() {
    let o = database_outage(ingestd::config::DEFAULT_CATALOG_BUFFER, true).await;
    assert_eq!(o.stats.dropped(), 0, "{:?}", o.stats);
    assert_eq!(o.missing_rows, 0);
    assert_eq!(o.rows, o.segment_files);
}

/// With a 2-record buffer the outage overflows it: segments published
/// meanwhile beyond the buffer have no row, each of them is a counted drop,
/// and every record sent is either written or counted as dropped. (The
/// writer drains into the same small buffer right after reconnecting, so a
/// session record can be dropped too: drops >= missing rows.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_beyond_the_buffer_drops_are_counted() {
    let o = database_outage(2, false).await;
    let st = o.stats;
    assert!(st.dropped_buffer_full >= 1, "{st:?}");
    assert!(o.missing_rows >= 1);
    assert!(o.missing_rows as u64 <= st.dropped(), "{st:?}");
    assert_eq!(o.rows + o.missing_rows, o.segment_files);
    // Session start, one record per segment, session end.
    assert_eq!(st.received, o.segment_files as u64 + 2, "{st:?}");
    assert_eq!(
        st.written + st.dropped() + st.rejected,
        st.received,
        "{st:?}"
    );
    assert!(st.dropped() - o.missing_rows as u64 <= 2, "{st:?}");
}
