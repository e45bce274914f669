//! A stream that moves between ingest nodes sharing a catalog and an object store (moto's S3
//! server): its playlist goes on, with one writer at a time.
//!
//! - Two connections of one dashcam channel on two nodes at once (it reconnected through the
//!   balancer while the old connection lingers and still sends): the newer one's node writes
//!   the stream from then on; no segment object is ever written twice with different bytes,
//!   the media sequence never goes back, and ffmpeg decodes the playlist.
//! - Node A killed with SIGKILL (a child process running ingestd), on PostgreSQL and on
//!   MySQL/MariaDB: the dashcam reconnects to node B; the playlist hlsd serves out of the store
//!   continues after a discontinuity with higher sequence numbers, every listed segment is
//!   there and decodes; the operator's live request through the hlsd configured with node A
//!   reaches the dashcam on node B.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use streamcore::playlist::MediaPlaylist;
use streamcore::storage::StorageLocation;

use super::terminal::{Command, Terminal};
use super::{client, ffmpeg_decode_errors, ffprobe_video, get_text, stream_live};
use crate::common::{eventually, ServerDb};
use crate::moto::Moto;

const BUCKET: &str = "fleet-failover";
const STORE_URL: &str = "s3://fleet-failover/site";

fn stream_config() -> streamcore::StreamConfig {
    streamcore::StreamConfig {
        keep_segments: true,
        target_segment: streamcore::Dur90k::from_secs(1),
        max_segment_secs: 2,
        ..Default::default()
    }
}

fn node_config(
    dir: &Path,
    catalog_url: &str,
    id: &str,
    moto: &[(String, String)],
) -> ingestd::config::Config {
    let mut cfg = ingestd::config::Config::for_tests(dir);
    cfg.database_url = catalog_url.to_owned();
    cfg.instance_id = Some(id.to_owned());
    cfg.storage = StorageLocation::parse(STORE_URL).unwrap();
    cfg.storage_vars = moto.to_vec();
    cfg
}

async fn hlsd_on_store(
    dir: &Path,
    catalog_url: &str,
    ingestd_url: &str,
    moto: &[(String, String)],
) -> hlsd::Running {
    let mut cfg = hlsd::Config::new(dir);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.database_url = Some(catalog_url.to_owned());
    cfg.ingestd_url = ingestd_url.to_owned();
    cfg.watch_timeout = Duration::from_secs(30);
    cfg.allow_anonymous = true;
    cfg.storage = StorageLocation::parse(STORE_URL).unwrap();
    cfg.storage_vars = moto.to_vec();
    // Every read sees the store as it is (the test compares objects across writers).
    cfg.storage_playlist_ttl = Duration::ZERO;
    hlsd::serve(cfg).await.unwrap()
}

/// What a viewer saw of a stream, read straight from the store (hlsd's cache would hide an
/// overwritten object): each segment's bytes by sequence number, and the highest media
/// sequence so far. Panics on what a player could not survive: a sequence whose object changed,
/// a media sequence that went back, a listed segment that is not there.
struct Viewer {
    store: Arc<dyn streamcore::Storage>,
    stream: String,
    segments: HashMap<u64, Vec<u8>>,
    media_sequence: u64,
}

impl Viewer {
    fn new(moto: &Moto, stream: &str, staging: &Path) -> Viewer {
        Viewer {
            store: Arc::new(moto.storage(STORE_URL, staging)),
            stream: stream.to_owned(),
            segments: HashMap::new(),
            media_sequence: 0,
        }
    }

    async fn read(&self, file: &str) -> Option<Vec<u8>> {
        let (store, key) = (self.store.clone(), format!("live/{}/{file}", self.stream));
        tokio::task::spawn_blocking(move || store.read(&key).unwrap())
            .await
            .unwrap()
    }

    /// Reads the playlist and every segment it lists; returns the playlist.
    async fn watch(&mut self) -> Option<MediaPlaylist> {
        let text = String::from_utf8(self.read("index.m3u8").await?).unwrap();
        let p = MediaPlaylist::parse_any(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(
            p.media_sequence() >= self.media_sequence,
            "media sequence went back from {} to {}:\n{text}",
            self.media_sequence,
            p.media_sequence()
        );
        self.media_sequence = p.media_sequence();
        for s in p.segments() {
            let bytes = self
                .read(&s.uri)
                .await
                .unwrap_or_else(|| panic!("listed {} missing:\n{text}", s.uri));
            assert_eq!(bytes.first(), Some(&0x47), "{} is not MPEG-TS", s.uri);
            match self.segments.get(&s.sequence) {
                Some(seen) => assert!(
                    *seen == bytes,
                    "segment {} was written twice with different bytes",
                    s.sequence
                ),
                None => {
                    self.segments.insert(s.sequence, bytes);
                }
            }
        }
        Some(p)
    }

    /// Watches until `done` says the playlist is what was waited for, for at most `secs`.
    async fn until(
        &mut self,
        what: &str,
        secs: u64,
        done: impl Fn(&MediaPlaylist) -> bool,
    ) -> MediaPlaylist {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(p) = self.watch().await {
                if done(&p) {
                    return p;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A counter of ingestd's `/metrics`.
async fn metric(control: &str, name: &str) -> u64 {
    let (_, text) = get_text(&format!("{control}/metrics")).await;
    super::store::metric(&text, name, "")
}

async fn lease_holder(catalog: &streamcore::catalog::Catalog, stream: &str) -> Option<String> {
    let (cat, stream) = (catalog.clone(), stream.to_owned());
    tokio::task::spawn_blocking(move || cat.stream_lease_holder(&stream).unwrap().map(|h| h.0))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_of_one_channel_on_two_nodes_have_one_writer() {
    const SIM: &str = "013900139001";
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let vars = moto.vars();
    let (dir_a, dir_b, dir_h) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let catalog_url = format!("sqlite://{}", dir_h.path().join("catalog.sqlite").display());
    let a = ingestd::app::start(
        node_config(dir_a.path(), &catalog_url, "node-a", &vars),
        stream_config(),
    )
    .await
    .unwrap();
    let b = ingestd::app::start(
        node_config(dir_b.path(), &catalog_url, "node-b", &vars),
        stream_config(),
    )
    .await
    .unwrap();
    let control_a = format!("http://{}", a.running.http_addr);
    let hls = hlsd_on_store(dir_h.path(), &catalog_url, &control_a, &vars).await;
    let stream = format!("{SIM}_1");
    let playlist_url = format!("http://{}/live/{stream}/index.m3u8", hls.addr);

    // The old connection, on A.
    let stop = Arc::new(AtomicBool::new(false));
    let old = stream_live(a.running.jt1078_addr, SIM, 1, stop.clone());
    let mut viewer = Viewer::new(&moto, &stream, dir_h.path());
    viewer
        .until("A's first segments in the store", 40, |p| {
            p.segments().len() >= 2
        })
        .await;
    assert_eq!(
        lease_holder(&a.catalog, &stream).await.as_deref(),
        Some("node-a")
    );

    // The newer connection, on B, while the old one keeps sending.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let new = stream_live(b.running.jt1078_addr, SIM, 1, stop.clone());
    eventually("B holds the stream", 30, || async {
        (lease_holder(&a.catalog, &stream).await.as_deref() == Some("node-b")).then_some(())
    })
    .await;
    eventually("A drops the older connection's media", 30, || async {
        (metric(&control_a, "ingestd_superseded_frames_total").await > 0).then_some(())
    })
    .await;
    // Both connections keep sending for a while; the viewer reads everything, all along.
    let handed_over = viewer.media_sequence;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(p) = viewer.watch().await {
            last = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let last = last.unwrap();
    assert!(
        last.media_sequence() + last.segments().len() as u64 > handed_over + 4,
        "the stream goes on under B"
    );
    assert!(
        last.segments().any(|s| s.discontinuity) || last.discontinuity_sequence() > 0,
        "the hand-over is marked"
    );
    let errors = ffmpeg_decode_errors(&playlist_url, Some(4));
    assert!(
        errors.is_empty(),
        "ffmpeg decoding the handed-over stream: {errors}"
    );
    // Nothing A had queued after losing the stream reached the store, and it says so.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = (old.await, new.await);
    a.shutdown().await;
    b.shutdown().await;
    let after = viewer.watch().await.unwrap();
    assert!(after.segments().count() > 0);
    hls.shutdown().await;
}

// ------------------------------------------------------------------ SIGKILL

/// Where the child process finds its node's settings.
const CHILD_ENV: &str = "FLEET_TEST_FAILOVER_NODE";

/// Not a check of its own: the body of node A when [`failover_after_sigkill`] runs this test
/// binary again as a child process (with [`CHILD_ENV`] set), so that the node can be killed
/// with SIGKILL. Without the variable it returns at once.
#[test]
fn failover_child_node() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut lines = spec.lines();
    let (dir, catalog_url) = (lines.next().unwrap(), lines.next().unwrap());
    let vars: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let app = ingestd::app::start(
            node_config(Path::new(dir), catalog_url, "node-a", &vars),
            stream_config(),
        )
        .await
        .unwrap();
        let r = &app.running;
        println!("NODE {} {} {}", r.jt808_addr, r.jt1078_addr, r.http_addr);
        std::future::pending::<()>().await;
    });
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test leaves none.
struct Node(std::process::Child);

impl Node {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts node A as a child process; its JT/T 808, JT/T 1078 and control addresses.
fn spawn_node_a(
    dir: &Path,
    catalog_url: &str,
    vars: &[(String, String)],
) -> (Node, [std::net::SocketAddr; 3]) {
    let mut spec = format!("{}\n{catalog_url}\n", dir.display());
    for (k, v) in vars {
        spec.push_str(&format!("{k}={v}\n"));
    }
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "e2e::failover::failover_child_node",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        // libtest's "test ... " is on the same line.
        if let Some((_, addrs)) = line.split_once("NODE ") {
            let a: Vec<std::net::SocketAddr> =
                addrs.split(' ').map(|s| s.parse().unwrap()).collect();
            return (Node(child), [a[0], a[1], a[2]]);
        }
    }
    let _ = child.kill();
    let status = child.wait();
    panic!("node A exited before it started: {status:?}");
}

async fn failover_after_sigkill(db: ServerDb) {
    const SIM: &str = "013900139002";
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let vars = moto.vars();
    let (dir_a, dir_b, dir_ha, dir_hb) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mut child, [jt808_a, jt1078_a, http_a]) = spawn_node_a(dir_a.path(), &db.url, &vars);
    let b = ingestd::app::start(
        node_config(dir_b.path(), &db.url, "node-b", &vars),
        stream_config(),
    )
    .await
    .unwrap();
    // hlsd A is configured with node A only; hlsd B with node B.
    let hls_a = hlsd_on_store(dir_ha.path(), &db.url, &format!("http://{http_a}"), &vars).await;
    let control_b = format!("http://{}", b.running.http_addr);
    let hls_b = hlsd_on_store(dir_hb.path(), &db.url, &control_b, &vars).await;
    let stream = format!("{SIM}_1");
    let playlist_url = format!("http://{}/live/{stream}/index.m3u8", hls_b.addr);

    // The dashcam on node A: signalling and video.
    let term = Terminal::connect(jt808_a, SIM).await;
    term.send_position(0);
    let stop_a = Arc::new(AtomicBool::new(false));
    let _sender_a = stream_live(jt1078_a, SIM, 1, stop_a.clone());
    let mut viewer = Viewer::new(&moto, &stream, dir_hb.path());
    let before = viewer
        .until("A's segments in the store", 60, |p| p.segments().len() >= 3)
        .await;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/baseline.h264");
    assert_eq!(
        ffprobe_video(&playlist_url),
        ffprobe_video(fixture.to_str().unwrap()),
        "hlsd B serves the dashcam's video"
    );
    let last_before = before.media_sequence() + before.segments().len() as u64 - 1;

    // SIGKILL: no shutdown, no final playlist, its spill and registry rows left behind.
    child.kill();
    stop_a.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(term);

    // The dashcam reconnects through the balancer, to node B.
    let mut term = Terminal::connect(b.running.jt808_addr, SIM).await;
    term.send_position(0);
    let stop_b = Arc::new(AtomicBool::new(false));
    let sender_b = stream_live(b.running.jt1078_addr, SIM, 1, stop_b.clone());
    let after = viewer
        .until("the playlist going on under node B", 60, |p| {
            p.media_sequence() + p.segments().len() as u64 > last_before + 3
        })
        .await;
    // B's first segment follows a discontinuity, above every sequence A published.
    let first_b = after
        .segments()
        .find(|s| s.sequence > last_before && s.discontinuity)
        .or_else(|| after.segments().find(|s| s.sequence > last_before))
        .unwrap();
    assert!(
        first_b.discontinuity || after.discontinuity_sequence() > before.discontinuity_sequence(),
        "the break between the nodes is marked:\n{after:?}"
    );
    let errors = ffmpeg_decode_errors(&playlist_url, Some(4));
    assert!(
        errors.is_empty(),
        "ffmpeg decoding across the failover: {errors}"
    );

    // The operator asks hlsd A (configured with the dead node A) for live video on channel 2:
    // the registry sends it to node B, where the dashcam is.
    let watch = tokio::spawn({
        let url = format!("http://{}/api/devices/{SIM}/channels/2/watch", hls_a.addr);
        async move { client().post(url).send().await.unwrap().status() }
    });
    match term.next_command(Duration::from_secs(30)).await {
        Command::Live { channel, .. } => assert_eq!(channel, 2),
        other => panic!("expected 0x9101 on node B, got {other:?}"),
    }
    watch.abort();
    stop_b.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sender_b.await;
    b.shutdown().await;
    hls_a.shutdown().await;
    hls_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_after_sigkill_on_postgres() {
    failover_after_sigkill(ServerDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_after_sigkill_on_mysql() {
    failover_after_sigkill(ServerDb::mysql()).await;
}
