//! Two machines' worth of daemons on one object store: ingestd (node A) uploads segments and
//! playlists to moto's S3 server through its upload queue; an hlsd with a data dir of its own
//! (node B, nothing shared on disk but the catalog) serves the stream out of the store. The
//! dashcam is started through hlsd B's watch, which needs B to see the playlist appear in the
//! store; ffprobe/ffmpeg decode what B serves; many viewers of one segment cost the store one
//! GET (hlsd's own counters, checked against what the viewers got); and a shutdown of ingestd
//! uploads the ended playlist before it returns.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use streamcore::playlist::MediaPlaylist;
use streamcore::storage::StorageLocation;

use super::terminal::{Command, Terminal};
use super::{client, ffmpeg_decode_errors, ffprobe_video, get_json, get_text, stream_live};
use crate::common::eventually;
use crate::moto::Moto;

const SIM: &str = "013800138000";
const BUCKET: &str = "fleet-cluster";
const STORE_URL: &str = "s3://fleet-cluster/site-a";

/// `name value` of a Prometheus text exposition line, summed over labels matching `labels`.
pub(super) fn metric(text: &str, name: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(key, _)| {
            key.strip_prefix(name)
                .is_some_and(|rest| rest.is_empty() || rest.contains(labels))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Files under `dir/live` (segments or playlists a node wrote to its own disk).
fn local_live_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(streams) = std::fs::read_dir(dir.join("live")) else {
        return out;
    };
    for s in streams.flatten() {
        for f in std::fs::read_dir(s.path()).into_iter().flatten().flatten() {
            out.push(f.path().display().to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_ingested_on_one_node_plays_from_another_hlsd_out_of_the_store() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = StorageLocation::parse(STORE_URL).unwrap();

    let mut ingest_cfg = ingestd::config::Config::for_tests(dir_a.path());
    ingest_cfg.storage = store.clone();
    ingest_cfg.storage_vars = moto.vars();
    let catalog_url = ingest_cfg.database_url.clone();
    let ingest = ingestd::app::start(
        ingest_cfg,
        streamcore::StreamConfig {
            keep_segments: true,
            target_segment: streamcore::Dur90k::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let control = format!("http://{}", ingest.running.http_addr);

    let mut cfg = hlsd::Config::new(dir_b.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.database_url = Some(catalog_url);
    cfg.ingestd_url = control.clone();
    cfg.watch_timeout = Duration::from_secs(30);
    cfg.allow_anonymous = true;
    cfg.storage = store;
    cfg.storage_vars = moto.vars();
    let hls = hlsd::serve(cfg).await.unwrap();
    let base = format!("http://{}", hls.addr);

    // The operator asks hlsd B; ingestd A commands the dashcam, which streams to A.
    let mut term = Terminal::connect(ingest.running.jt808_addr, SIM).await;
    term.send_position(0);
    let watch = tokio::spawn({
        let url = format!("{base}/api/devices/{SIM}/channels/1/watch");
        async move { client().post(url).send().await.unwrap() }
    });
    match term.next_command(Duration::from_secs(20)).await {
        Command::Live { channel, .. } => assert_eq!(channel, 1),
        other => panic!("expected 0x9101, got {other:?}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = stream_live(ingest.running.jt1078_addr, SIM, 1, stop.clone());
    let answer = watch.await.unwrap();
    let status = answer.status();
    assert_eq!(status, StatusCode::OK, "{}", answer.text().await.unwrap());

    let stream = format!("{SIM}_1");
    let playlist_url = format!("{base}/live/{stream}/index.m3u8");
    eventually("hlsd B serving 3 segments from the store", 40, || async {
        let (status, text) = get_text(&playlist_url).await;
        let p = MediaPlaylist::parse_any(&text).ok()?;
        (status == StatusCode::OK && p.segments().len() >= 3).then_some(())
    })
    .await;

    // Everything B serves came from the store: neither node holds the stream on its disk.
    assert!(
        local_live_files(dir_a.path()).is_empty(),
        "ingestd kept media on disk: {:?}",
        local_live_files(dir_a.path())
    );
    assert!(local_live_files(dir_b.path()).is_empty());

    // Decoded by tools nobody here wrote, through B.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/baseline.h264");
    let served = ffprobe_video(&playlist_url);
    assert_eq!(
        served,
        ffprobe_video(fixture.to_str().unwrap()),
        "what B serves is the dashcam's video"
    );
    assert_eq!(served.0, "h264");
    let errors = ffmpeg_decode_errors(&playlist_url, Some(6));
    assert!(errors.is_empty(), "ffmpeg decoding through B: {errors}");

    // B lists the stream as live from the catalog and the store.
    let listed = get_json(&format!("{base}/api/streams")).await;
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == stream.as_str())
        .unwrap_or_else(|| panic!("{stream} not in {listed}"));
    assert_eq!(entry["live"], true, "{entry}");

    // Many viewers of one segment: one GET to the store, every viewer gets the whole object.
    // The segment is one listed after everything above was read, so nobody fetched it yet.
    let sequence = |p: &MediaPlaylist| p.media_sequence() + p.segments().len() as u64;
    let seen = {
        let (_, text) = get_text(&playlist_url).await;
        sequence(&MediaPlaylist::parse_any(&text).unwrap())
    };
    let newer = eventually("a segment nobody has read yet", 20, || async {
        let (_, text) = get_text(&playlist_url).await;
        let p = MediaPlaylist::parse_any(&text).ok()?;
        (sequence(&p) > seen).then(|| p.segments().last().unwrap().uri.clone())
    })
    .await;
    let segment_url = format!("{base}/live/{stream}/{newer}");
    let metrics_url = format!("{base}/metrics");
    let before = get_text(&metrics_url).await.1;
    let viewers: Vec<_> = (0..24)
        .map(|_| {
            let url = segment_url.clone();
            tokio::spawn(async move {
                let r = client().get(url).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.bytes().await.unwrap()
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for v in viewers {
        bodies.push(v.await.unwrap());
    }
    assert!(bodies[0].len() > 1000 && bodies[0].len() % 188 == 0);
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every viewer got the same segment"
    );
    let after = get_text(&metrics_url).await.1;
    let gets = |t: &str| metric(t, "hlsd_store_gets_total", "kind=\"segment\"");
    assert_eq!(
        gets(&after) - gets(&before),
        1,
        "24 viewers of one segment cost one GET:\n{after}"
    );
    assert!(metric(&after, "hlsd_store_cache_hits_total", "") >= 23);

    // ingestd's uploads show in its metrics, with nothing left behind while the store is up.
    let ingest_metrics = get_text(&format!("{control}/metrics")).await.1;
    assert!(metric(&ingest_metrics, "ingestd_storage_uploads_total", "") >= 4);
    assert_eq!(metric(&ingest_metrics, "ingestd_storage_failing", ""), 0);

    // A shutdown uploads what it finishes: B soon serves the ended playlist.
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();
    ingest.shutdown().await;
    let ended = eventually("the ended playlist served by B", 10, || async {
        let (_, text) = get_text(&playlist_url).await;
        MediaPlaylist::parse_any(&text)
            .ok()
            .filter(|p| p.is_ended())
    })
    .await;
    assert!(ended.segments().len() >= 3);
    hls.shutdown().await;
}
