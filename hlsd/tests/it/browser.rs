//! The web page in headless Chromium (Debian's /usr/bin/chromium driven by playwright-core from
//! hlsd/web/node_modules): a live stream that slides in real time plays for more than 20 s
//! across segment boundaries and a real discontinuity with currentTime always advancing and no
//! fatal hls.js error; the GPS marker follows PROGRAM-DATE-TIME; a VOD session plays to its
//! end. The screenshot is kept at target/artifacts/hlsd-page.png. Device audio transcoded to
//! AAC is heard (a Web Audio analyser on the page's video finds the fixture's tone), and an
//! H.265 stream either plays or the page says the browser cannot decode it.
//!
//! Needs: `npm ci --prefix hlsd/web`, Debian packages `chromium` and `ffmpeg`, Node.js.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{
    default_url, install, now_ms, session_records, start, write_catalog, write_playlist, Clips, Seg,
};
use streamcore::catalog::Record;

const SIM: &str = "132570034500";
const WINDOW: usize = 5;

fn require(path: &str, hint: &str) {
    assert!(
        Path::new(path).exists(),
        "browser test needs {path}: {hint}"
    );
}

/// Publishes one more segment every segment duration, sliding a window of [`WINDOW`] and
/// bumping DISCONTINUITY-SEQUENCE when the discontinuity leaves the window, as ingestd would.
fn run_live(dir: PathBuf, segs: Vec<Seg>, disc_at: u64, pdt0: i64, stop: Arc<AtomicBool>) {
    let mut published: usize = 4;
    loop {
        let lo = published.saturating_sub(WINDOW);
        let window = &segs[lo..published];
        let disc_seq = u64::from(window[0].seq > disc_at);
        write_playlist(
            &dir,
            window,
            &[disc_at],
            disc_seq,
            pdt0,
            published == segs.len(),
        );
        if published == segs.len() || stop.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_secs_f64(segs[published].duration));
        published += 1;
    }
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    wall: i64,
    t: f64,
    paused: bool,
    w: u32,
    frags: u32,
    disc: u32,
    fatal: Vec<serde_json::Value>,
    pdt: Option<f64>,
    marker: Option<serde_json::Value>,
    engine: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_live_across_a_discontinuity_and_vod_to_the_end() {
    require("/usr/bin/chromium", "apt-get install -y chromium");
    let web = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/web/node_modules/playwright-core"
    );
    require(web, "run `npm ci --prefix hlsd/web`");

    // 40 s of stream: enough that a browser slow to start still has > 23 s ahead of it.
    let clips = Clips::make(20, 20);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let all = clips.all();
    let disc_at = clips.b[0].seq;
    // Wall-clock PDT: the live edge is "now", as with a real device.
    let pdt0 = now_ms() - 8_000;
    let live_dir = install(data, &format!("{SIM}_1"), &all);
    // A finished recording on channel 2 for the VOD part.
    let vod_dir = install(data, &format!("{SIM}_2"), &clips.a[..3]);
    write_playlist(&vod_dir, &clips.a[..3], &[], 0, pdt0, true);
    // The catalog ingestd would have written (the default SQLite file in the data dir): the
    // device with a GPS track covering the stream (a gentle curve, one fix per second), the
    // finished channel-2 session and an overspeed incident on channel 1.
    let vod_id = format!("{SIM}_2-{pdt0}-00000000000000b2");
    let mut records = vec![Record::DeviceSeen {
        sim: SIM.into(),
        plate: None,
        auth_code: None,
        at: now_ms(),
    }];
    for i in -20..60i64 {
        let a = i as f64 / 25.0;
        records.push(Record::Position {
            sim: SIM.into(),
            device_time_ms: pdt0 + i * 1000,
            lat: 31.2304 + 0.004 * a.sin() + 0.0008 * a,
            lon: 121.4737 + 0.006 * a,
            speed: (38.0 + 10.0 * a.cos()) as f32,
            heading: (90 + i * 2).rem_euclid(360) as u16,
            altitude: 10,
            alarm: 0,
            status: 0,
        });
    }
    records.extend(session_records(
        &vod_id,
        &format!("{SIM}_2"),
        &clips.a[..3],
        &[],
        pdt0,
        true,
    ));
    records.push(Record::Incident {
        sim: SIM.into(),
        channel: Some(1),
        from_ms: pdt0 + 4000,
        to_ms: pdt0 + 12000,
        kind: "overspeed".into(),
        source: "0x0200 alarm bit 1".into(),
        session_id: None,
    });
    write_catalog(&default_url(data), &records);

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (dir, segs, stop) = (live_dir.clone(), all.clone(), stop.clone());
        std::thread::spawn(move || run_live(dir, segs, disc_at, pdt0, stop))
    };
    let srv = start(data, |_| {}).await;
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("hlsd-page.png");
    let _ = std::fs::remove_file(&shot);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/browser/drive.mjs");
    let base = format!("http://{}", srv.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .args([script, &base, &format!("{SIM}_1"), SIM, &vod_id])
            .arg(&shot)
            .output()
            .expect("node (Node.js) is needed for the browser test")
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    srv.shutdown().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let samples: Vec<Sample> = serde_json::from_value(v["live"]["samples"].clone()).unwrap();
    let report = serde_json::to_string_pretty(&v).unwrap();
    std::fs::write(artifacts.join("hlsd-browser.json"), &report).unwrap();

    // Live: started, played >= 20 s of media, never stalled, no fatal error.
    assert!(samples.len() > 30, "{report}");
    assert_eq!(
        samples[0].engine.as_deref(),
        Some("hls.js"),
        "Chromium uses MSE via hls.js"
    );
    assert!(samples[0].t > 0.0, "playing before sampling: {report}");
    let first = &samples[0];
    let last = samples.last().unwrap();
    assert!(
        last.t - first.t >= 20.0,
        "played {} s of media in {} ms: {report}",
        last.t - first.t,
        last.wall - first.wall
    );
    for w in samples.windows(3) {
        // Every ~1 s of wall time (three samples, 500 ms apart) the picture moved on.
        assert!(
            w[2].t > w[0].t + 0.3,
            "stalled around t={}: {report}",
            w[0].t
        );
        assert!(!w[2].paused);
    }
    assert!(
        samples.iter().all(|s| s.fatal.is_empty()),
        "fatal hls.js error: {report}"
    );
    assert!(
        last.frags - first.frags >= 8,
        "crossed segment boundaries: {report}"
    );
    assert!(
        last.disc >= 1,
        "crossed the discontinuity (hls.js saw cc change): {report}"
    );
    assert!(samples.iter().all(|s| s.w == 640));
    // The track marker follows the picture's PROGRAM-DATE-TIME and moves along the track.
    let with_marker: Vec<&Sample> = samples.iter().filter(|s| s.marker.is_some()).collect();
    assert!(
        with_marker.len() > samples.len() / 2,
        "marker shown: {report}"
    );
    let pdt_first = with_marker[0].pdt.unwrap();
    let pdt_last = with_marker.last().unwrap().pdt.unwrap();
    assert!(
        pdt_last - pdt_first >= 15_000.0,
        "picture time advanced with playback: {report}"
    );
    assert!(
        pdt_first >= pdt0 as f64 && pdt_last <= (pdt0 + 41_000) as f64,
        "PDT within the stream: {report}"
    );
    let mx = |s: &Sample| s.marker.as_ref().unwrap()["x"].as_f64().unwrap();
    assert!(
        (mx(with_marker.last().unwrap()) - mx(with_marker[0])).abs() > 50.0,
        "marker moved: {report}"
    );

    // VOD: played to the end without a fatal error.
    let vod = &v["vod"];
    assert_eq!(vod["ended"], true, "VOD ended: {report}");
    assert!(
        (vod["t"].as_f64().unwrap() - 6.0).abs() < 0.5,
        "played all 6 s: {report}"
    );
    assert!(vod["fatal"].as_array().unwrap().is_empty(), "{report}");

    assert!(
        v["console"].as_array().unwrap().is_empty(),
        "no console errors (missing resources, script errors): {report}"
    );
    assert!(
        artifacts.join("hlsd-page.png").metadata().unwrap().len() > 20_000,
        "screenshot kept"
    );
}

/// Muxes `video` (Annex-B of `codec`, 25 fps) with `audio` (G.711 A-law 40 ms packets) as
/// ingestd would, into the finished stream `DATA/live/<stream>/`.
fn mux_stream(
    data: &Path,
    stream: &str,
    video: &str,
    codec: streamcore::codec::VideoCodec,
    audio: Option<&str>,
) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let bytes = std::fs::read(fixtures.join(video)).unwrap();
    let units = match codec {
        streamcore::codec::VideoCodec::H264 => streamcore::access_unit::split_access_units(&bytes),
        streamcore::codec::VideoCodec::H265 => streamcore::h265::split_access_units(&bytes),
    };
    let alaw = audio.map(|a| std::fs::read(fixtures.join(a)).unwrap());
    let packets: Vec<&[u8]> = alaw
        .as_deref()
        .map_or(Vec::new(), |a| a.chunks(320).collect());
    let cfg = streamcore::StreamConfig {
        codec,
        ..Default::default()
    };
    let dir = data.join("live").join(stream);
    let mut s = streamcore::LiveStream::open(stream, &dir, cfg).unwrap();
    let t0 = now_ms();
    let (mut v, mut a) = (0usize, 0usize);
    while v < units.len() || a < packets.len() {
        if v < units.len() && (a >= packets.len() || v <= a) {
            s.push_frame(&units[v].to_annexb(), Some(t0 + v as i64 * 40))
                .unwrap();
            v += 1;
        } else {
            let codec = streamcore::audio::AudioCodec::G711A;
            s.push_audio(codec, packets[a], Some(t0 + a as i64 * 40))
                .unwrap();
            a += 1;
        }
    }
    s.finish(true).unwrap();
}

fn node(script: &str, args: &[&str]) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/browser")
        .join(script);
    let out = Command::new("node")
        .arg(path)
        .args(args)
        .output()
        .expect("node installed");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{script}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Dashcam audio (G.711 A-law, transcoded to AAC by streamcore) is heard in the page's player:
/// a Web Audio analyser on the page's <video> sees the 1 kHz tone of the fixture at a level
/// well above silence while hls.js plays (a stream can play and still be silent, which
/// currentTime alone would not show).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_transcoded_device_audio() {
    require("/usr/bin/chromium", "apt-get install -y chromium");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    mux_stream(
        data,
        "cab_audio",
        "baseline.h264",
        streamcore::codec::VideoCodec::H264,
        Some("audio/tone1k_g711a.raw"),
    );
    let srv = start(data, |_| {}).await;
    let url = format!("http://{}/?stream=cab_audio", srv.addr);
    let out = tokio::task::spawn_blocking(move || node("audio.mjs", &[&url, "5"]))
        .await
        .unwrap();
    let played = out["played_s"].as_f64().unwrap_or(0.0);
    assert!(played > 3.0, "{out}");
    let samples = out["samples"].as_array().unwrap();
    let tone = samples
        .iter()
        .filter(|s| {
            let hz = s["peak_hz"].as_f64().unwrap_or(0.0);
            (hz - 1000.0).abs() <= 20.0 && s["rms_db"].as_f64().unwrap_or(-200.0) > -30.0
        })
        .count();
    assert!(
        tone * 10 >= samples.len() * 8,
        "{tone} of {} samples hear the 1 kHz tone: {out}",
        samples.len()
    );
    assert!(
        out["source_buffers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap_or("").contains("mp4a")),
        "{out}"
    );
    srv.shutdown().await;
}

/// An H.265 stream: where the browser has an HEVC decoder it plays; where it has none (Debian's
/// Chromium on a machine without one), the page says so on the player instead of showing a
/// black box.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_explains_h265_it_cannot_decode() {
    require("/usr/bin/chromium", "apt-get install -y chromium");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    mux_stream(
        data,
        "cab_hevc",
        "hevc_nob.h265",
        streamcore::codec::VideoCodec::H265,
        None,
    );
    let srv = start(data, |_| {}).await;
    let url = format!("http://{}/?stream=cab_hevc", srv.addr);
    let out = tokio::task::spawn_blocking(move || node("codec.mjs", &[&url, "6"]))
        .await
        .unwrap();
    if out["hevc_supported"].as_bool() == Some(true) {
        assert!(out["t"].as_f64().unwrap_or(0.0) > 2.0, "{out}");
    } else {
        let codec = out["unsupported"].as_str().unwrap_or("");
        assert!(
            codec.starts_with("hvc1") || codec.starts_with("hev1"),
            "{out}"
        );
        assert!(out["overlay"].as_str().unwrap().contains("H.265"), "{out}");
    }
    srv.shutdown().await;
}
