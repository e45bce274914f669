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

/// The fix of the gentle curve through Shanghai at second `i` (-20..60) of [`gentle_track`].
fn track_fix(i: i64) -> (f64, f64) {
    let a = i as f64 / 25.0;
    (31.2304 + 0.004 * a.sin() + 0.0008 * a, 121.4737 + 0.006 * a)
}

/// The device, seen now, with its GPS track around `pdt0`: a gentle curve through Shanghai,
/// one fix per second from 20 s before to 60 s after.
fn device_with_track(pdt0: i64) -> Vec<Record> {
    let seen = Record::DeviceSeen {
        sim: SIM.into(),
        plate: None,
        auth_code: None,
        at: now_ms(),
    };
    let track = (-20..60i64).map(|i| {
        let a = i as f64 / 25.0;
        let (lat, lon) = track_fix(i);
        Record::Position {
            sim: SIM.into(),
            device_time_ms: pdt0 + i * 1000,
            lat,
            lon,
            speed: (38.0 + 10.0 * a.cos()) as f32,
            heading: (90 + i * 2).rem_euclid(360) as u16,
            altitude: 10,
            alarm: 0,
            status: 0,
        }
    });
    std::iter::once(seen).chain(track).collect()
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
    let mut records = device_with_track(pdt0);
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
        open: false,
        alarm: 0,
        lat: None,
        lon: None,
        video_state: None,
        video_reason: None,
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

pub(crate) fn node(script: &str, args: &[&str]) -> serde_json::Value {
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

/// The device view of the operator page against the real daemons (ingestd and hlsd sharing a
/// data dir and catalog) and a device with recordings on its card: picking the device opens
/// its view on today (the browser's time zone) and asks the device for that day; the timeline
/// shows exactly the device's recordings of the day, one bar each on its channel's row, the
/// alarm-flagged ones marked with their alarm names in the tooltip; the date picker asks for
/// another day; a click has the device upload a recording (0x9201 with its span), which plays
/// in hls.js while it arrives, pauses and resumes through the page's controls (0x9202), ends
/// with ENDLIST and plays to its end; the upload then shows as "recorded here" with its MP4.
/// The screenshot is kept at target/artifacts/page-recordings.png (docs/page-recordings.png is
/// a copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_plays_a_recording_from_the_device() {
    use chrono::{Duration as Days, Local, TimeZone};
    use common::sd_card::{Behaviour, Device, Event, FRAME_MS};
    use ingestd::jt808::{playback_control, PlatformCommand, Resource};
    use serde_json::json;

    require("/usr/bin/chromium", "apt-get install -y chromium");
    require(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/web/node_modules/playwright-core"
        ),
        "run `npm ci --prefix hlsd/web`",
    );
    const SIM: &str = "013800000017";
    let data = tempfile::tempdir().unwrap();
    let ingest = ingestd::app::start(
        ingestd::config::Config::for_tests(data.path()),
        streamcore::StreamConfig {
            keep_segments: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let srv = start(data.path(), |cfg| {
        cfg.ingestd_url = format!("http://{}", ingest.running.http_addr);
        cfg.watch_timeout = Duration::from_secs(30);
    })
    .await;

    // Days in the local zone, the browser's (Chromium runs here with the same TZ): the card
    // holds recordings of today and yesterday. The view opens on today; the date picker goes
    // to yesterday and back.
    let today = Local::now().date_naive();
    let yesterday = today - Days::days(1);
    let midnight = |d: chrono::NaiveDate| {
        Local
            .from_local_datetime(&d.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .timestamp_millis()
    };
    let (day_start, day_end) = (midnight(today), midnight(today + Days::days(1)));
    let rec = |channel: u8, start_s: i64, secs: i64, alarm: u64| Resource {
        channel,
        start_ms: day_start + start_s * 1000,
        end_ms: day_start + (start_s + secs) * 1000,
        alarm,
        av_type: 0,
        stream_type: 1,
        storage_type: 1,
        size: (secs * 125_000) as u32,
    };
    let h = 3600;
    let clicked = rec(1, 9 * h, 8, 0);
    let card = vec![
        rec(1, -4 * h, 30 * 60, 0),                    // yesterday 20:00
        rec(1, -600, 1200, 0), // across midnight: on both days, cut at 00:00
        rec(1, h + 600, 20 * 60, 0), // 01:10
        rec(1, 6 * h + 1800, 35 * 60, 1 << 1), // overspeed
        clicked.clone(),       // 09:00, 8 s
        rec(1, 13 * h + 2700, 50 * 60, 0), // 13:45
        rec(1, 18 * h + 1200, 15 * 60, (1 << 32) | 1), // video signal loss + emergency
        rec(2, 6 * h + 1800, 35 * 60, 1 << 1), // overspeed
        rec(2, 15 * h, 40 * 60, 0), // 15:00
        rec(2, 21 * h, 10 * 60, 1 << 2), // fatigue driving
    ];
    // Uploads at real time, so that the page plays one while it arrives.
    let behaviour = Behaviour {
        recordings: card.clone(),
        pace: Duration::from_millis(FRAME_MS as u64),
        ..Default::default()
    };
    let mut device = Device::connect(ingest.running.jt808_addr, SIM, behaviour).await;
    // A day as the page asks for it, [00:00:00, 23:59:59] in the device's BCD seconds: a
    // 0x9205 for every channel, as (channel, from, to).
    let day_query = |from: i64, to: i64| Some((0, Some(from), Some(to - 1000)));
    let query = |c: &PlatformCommand| match c {
        PlatformCommand::QueryResources {
            channel,
            start_ms,
            end_ms,
            ..
        } => Some((*channel, *start_ms, *end_ms)),
        _ => None,
    };
    let of_day: Vec<&Resource> = card
        .iter()
        .filter(|r| r.end_ms > day_start && r.start_ms < day_end)
        .collect();
    assert_eq!(of_day.len(), 9);

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("page-recordings.png");
    let _ = std::fs::remove_file(&shot);
    let (base, shot_arg) = (
        format!("http://{}", srv.addr),
        shot.to_string_lossy().into_owned(),
    );
    let (day_arg, click_arg) = (yesterday.to_string(), clicked.start_ms.to_string());
    let v = tokio::task::spawn_blocking(move || {
        node(
            "recordings.mjs",
            &[&base, SIM, &day_arg, &click_arg, &shot_arg],
        )
    })
    .await
    .unwrap();
    let report = serde_json::to_string_pretty(&v).unwrap();
    std::fs::write(artifacts.join("page-recordings.json"), &report).unwrap();
    // What the device heard, in order, and the frames each finished upload sent.
    let events = device.all_pending();
    let heard: Vec<&PlatformCommand> = events
        .iter()
        .filter_map(|e| match e {
            Event::Command(c) => Some(c),
            Event::UploadDone { .. } => None,
        })
        .collect();
    let uploads: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            Event::UploadDone { sent, .. } => Some(*sent),
            Event::Command(_) => None,
        })
        .collect();
    // The MP4 link the page offers for the finished upload downloads a video.
    let mp4 = match v["pb_mp4"].as_str() {
        Some(href) => {
            let r = reqwest::get(format!("http://{}{href}", srv.addr))
                .await
                .unwrap();
            let kind = r.headers().get("content-type").cloned();
            Some((r.status().as_u16(), kind, r.bytes().await.unwrap().len()))
        }
        None => None,
    };
    srv.shutdown().await;
    ingest.shutdown().await;

    // The view opened on today, in the browser's zone, and asked the device for that day; the
    // date picker asked for yesterday, "Today" for today again.
    assert_eq!(v["today_view"]["day_input"], today.to_string(), "{report}");
    assert_eq!(v["other_view"]["day_input"], yesterday.to_string());
    assert_eq!(
        heard[..3].iter().map(|c| query(c)).collect::<Vec<_>>(),
        [
            day_query(day_start, day_end),
            day_query(midnight(yesterday), day_start),
            day_query(day_start, day_end),
        ],
        "{heard:?}"
    );
    assert_eq!(v["other"]["recordings"], 2, "{report}");
    assert_eq!(v["back"]["recordings"], of_day.len(), "{report}");
    // Every recording of the day a bar on its channel's row, alarm-flagged ones marked.
    let view = &v["today_view"];
    let bars = view["device_bars"].as_array().unwrap();
    assert_eq!(bars.len(), of_day.len(), "{report}");
    for r in &of_day {
        let bar = bars
            .iter()
            .find(|b| b["start_ms"] == r.start_ms && b["channel"] == r.channel)
            .unwrap_or_else(|| panic!("no bar for {r:?}: {report}"));
        assert_eq!(bar["row_channel"], r.channel, "on its channel's row");
        assert_eq!(bar["end_ms"], r.end_ms);
        assert_eq!(bar["alarm_marked"], r.alarm != 0, "{bar}");
        assert!(bar["width_px"].as_f64().unwrap() >= 2.0, "clickable: {bar}");
    }
    assert_eq!(
        bars.iter().filter(|b| b["alarm_marked"] == true).count(),
        4,
        "{report}"
    );
    let title = |alarm: u64| {
        bars.iter().find(|b| b["alarm"] == alarm).unwrap()["title"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(title(2).contains("overspeed"), "{report}");
    let both = title((1 << 32) | 1);
    assert!(
        both.contains("emergency") && both.contains("video signal loss"),
        "{both}"
    );
    assert!(title(4).contains("fatigue driving"), "{report}");
    assert!(view["status"]
        .as_str()
        .unwrap()
        .contains("9 recordings this day, 4 alarm-flagged"));

    // The click asked for exactly that recording, and the controls reached the device.
    assert!(
        heard.iter().any(|c| matches!(
            c,
            PlatformCommand::Playback { channel: 1, start_ms, end_ms, .. }
                if (*start_ms, *end_ms) == (clicked.start_ms, clicked.end_ms)
        )),
        "{heard:?}"
    );
    let controls: Vec<u8> = heard
        .iter()
        .filter_map(|h| match h {
            PlatformCommand::PlaybackControl {
                channel: 1,
                control,
                ..
            } => Some(*control),
            _ => None,
        })
        .collect();
    assert_eq!(
        controls,
        [playback_control::PAUSE, playback_control::RESUME],
        "{heard:?}"
    );
    assert_eq!(uploads, [200], "the whole 8 s were uploaded: {report}");
    assert_eq!(v["playback"]["answer"]["stream"], format!("{SIM}_1_pb"));

    // It played while the upload ran: started before the playlist had ENDLIST, in hls.js.
    let first = &v["first"];
    assert_eq!(first["engine"], "hls.js", "{report}");
    assert_eq!(
        first["endlist"], false,
        "played before the upload ended: {report}"
    );
    assert_eq!(first["kind"], "playback");
    // Paused with the controls: the picture held still.
    let (p0, p1) = (&v["pause"]["before"], &v["pause"]["after"]);
    assert_eq!(p1["paused"], true, "{report}");
    assert!(
        (p1["t"].as_f64().unwrap() - p0["t"].as_f64().unwrap()).abs() < 0.1,
        "{report}"
    );
    // Then to the end: the playlist got ENDLIST, the player reached its end, with pictures.
    let samples = v["samples"].as_array().unwrap();
    let t = |s: &serde_json::Value| s["t"].as_f64().unwrap();
    assert!(
        t(samples.last().unwrap()) > t(&samples[0]) + 2.0,
        "currentTime advanced: {report}"
    );
    let last = &v["last"];
    assert_eq!(last["ended"], true, "played to the end: {report}");
    assert_eq!(last["endlist"], true, "{report}");
    assert!(
        (t(last) - 8.0).abs() < 0.5,
        "the recording is 8 s long: {report}"
    );
    assert_eq!(
        (&last["w"], &last["h"]),
        (&json!(320), &json!(240)),
        "{report}"
    );
    assert!(last["frames"].as_u64().unwrap() >= 150, "{report}");
    assert!(
        samples
            .iter()
            .all(|s| s["fatal"].as_array().unwrap().is_empty()),
        "no fatal hls.js error: {report}"
    );
    // The upload is a recording of ours now, on the same day and channel, with its MP4.
    let here = v["after"]["here_bars"].as_array().unwrap();
    // Placed where the recording is on the day, not at the time we received it.
    assert!(
        here.iter().any(|b| b["kind"] == "playback"
            && b["channel"] == 1
            && b["start_ms"] == clicked.start_ms
            && b["end_ms"] == clicked.end_ms),
        "{report}"
    );
    assert!(
        v["pb_mp4"]
            .as_str()
            .is_some_and(|h| h.starts_with("/vod/session/") && h.ends_with("/video.mp4")),
        "{report}"
    );
    let (status, kind, len) = mp4.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(kind.unwrap(), "video/mp4");
    assert!(len > 10_000, "{len} bytes");
    assert!(
        shot.metadata().unwrap().len() > 20_000,
        "screenshot kept: {report}"
    );
}

/// The slippy-map tile (z, x, y) holding a point: the OSM formula, written from its definition
/// here so the test does not share the page's projection code.
fn tile_of(lat: f64, lon: f64, z: u32) -> (u32, u32) {
    let n = f64::from(1u32 << z);
    let x = ((lon + 180.0) / 360.0 * n).floor();
    let lat = lat.to_radians();
    let y = ((1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / std::f64::consts::PI) / 2.0 * n).floor();
    (x as u32, y as u32)
}

/// A tile server on 127.0.0.1: one PNG (made by ffmpeg) for every path, each path asked for
/// recorded.
async fn tile_server() -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use warp::Filter;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("tile.png");
    let ok = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=c=0x9fc59a:s=256x256",
        ])
        .args(["-frames:v", "1", "-y"])
        .arg(&png)
        .status()
        .expect("ffmpeg installed");
    assert!(ok.success());
    let png = bytes::Bytes::from(std::fs::read(&png).unwrap());
    let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = hits.clone();
    let route = warp::path::full().map(move |p: warp::path::FullPath| {
        seen.lock().unwrap().push(p.as_str().to_owned());
        warp::http::Response::builder()
            .header("content-type", "image/png")
            .body(png.clone())
            .unwrap()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (addr, hits)
}

async fn run_map(base: String, sim: &str, shot: Option<PathBuf>) -> serde_json::Value {
    let sim = sim.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut args = vec![base, sim];
        args.extend(shot.map(|p| p.display().to_string()));
        node(
            "map.mjs",
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .await
    .unwrap()
}

const CROSS_BORDER_SIM: &str = "013800138000";

/// The map: by default its base layer is the Natural Earth outlines embedded in hlsd (no
/// network but hlsd), detailed enough at street scale that the browser finds China under a
/// Shanghai track, and China then Hong Kong under the ends of a cross-border route; with `--map-tile-url` the browser draws the deployment's tiles, and the tile
/// under the track's first fix is the one the OSM tiling formula gives for it; with a tile
/// server that cannot be reached, the outlines are drawn instead of a blank map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_map_draws_offline_outlines_or_the_configured_tiles() {
    require("/usr/bin/chromium", "apt-get install -y chromium");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path();
    let pdt0 = now_ms() - 60_000;
    let mut records = device_with_track(pdt0);
    let (inc_lat, inc_lon) = track_fix(30);
    records.push(Record::Incident {
        sim: SIM.into(),
        channel: Some(1),
        from_ms: pdt0 + 30_000,
        to_ms: pdt0 + 40_000,
        kind: "alarm:overspeed".into(),
        source: "0x0200 alarm bit 1".into(),
        session_id: None,
        open: false,
        alarm: 2,
        lat: Some(inc_lat),
        lon: Some(inc_lon),
        video_state: None,
        video_reason: None,
    });
    records.push(Record::DeviceSeen {
        sim: CROSS_BORDER_SIM.into(),
        plate: None,
        auth_code: None,
        at: now_ms(),
    });
    // A truck from Shenzhen (Lianhuashan) across the border at Lok Ma Chau to Mong Kok, Kowloon.
    let route = [
        (22.5600, 114.0600),
        (22.5140, 114.0700),
        (22.4450, 114.0220),
        (22.3710, 114.1140),
        (22.3193, 114.1694),
    ];
    for (i, w) in route.windows(2).enumerate() {
        for k in 0..60 {
            let f = f64::from(k) / 60.0;
            records.push(Record::Position {
                sim: CROSS_BORDER_SIM.into(),
                device_time_ms: pdt0 - 600_000 + (i as i64 * 60 + i64::from(k)) * 1000,
                lat: w[0].0 + (w[1].0 - w[0].0) * f,
                lon: w[0].1 + (w[1].1 - w[0].1) * f,
                speed: 60.0,
                heading: 180,
                altitude: 10,
                alarm: 0,
                status: 0,
            });
        }
    }
    records.push(Record::Position {
        sim: CROSS_BORDER_SIM.into(),
        device_time_ms: pdt0 - 600_000 + 240 * 1000,
        lat: route[4].0,
        lon: route[4].1,
        speed: 0.0,
        heading: 180,
        altitude: 10,
        alarm: 0,
        status: 0,
    });
    write_catalog(&default_url(data), &records);
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();

    // Offline: the embedded outlines, the close-up set at this scale.
    let srv = start(data, |_| {}).await;
    let v = run_map(format!("http://{}", srv.addr), SIM, None).await;
    let border = run_map(
        format!("http://{}", srv.addr),
        CROSS_BORDER_SIM,
        Some(artifacts.join("hlsd-map.png")),
    )
    .await;
    srv.shutdown().await;
    // Shenzhen to Kowloon: the browser finds the border where Natural Earth has it.
    assert_eq!(border["map"]["layer"], "outlines", "{border}");
    assert_eq!(
        border["countries_under_start"],
        serde_json::json!(["China"]),
        "{border}"
    );
    assert_eq!(
        border["countries_under_end"],
        serde_json::json!(["Hong Kong"]),
        "{border}"
    );
    assert!(
        border["map"]["countries"].as_u64().unwrap() >= 2,
        "{border}"
    );
    assert_eq!(v["map"]["layer"], "outlines", "{v}");
    assert_eq!(v["map"]["detail"], "10m", "{v}");
    assert_eq!(v["start_on_screen"], true, "{v}");
    assert_eq!(
        v["countries_under_start"],
        serde_json::json!(["China"]),
        "{v}"
    );
    assert_eq!(v["incident_marks"], 1, "{v}");
    let labels = v["graticule"].to_string();
    assert!(labels.contains("121.") && labels.contains("°E"), "{v}");
    assert!(labels.contains("31.") && labels.contains("°N"), "{v}");
    let scale = v["scale"][0].as_str().unwrap();
    assert!(scale.ends_with(" m") || scale.ends_with(" km"), "{v}");
    assert_eq!(v["attribution"], "Natural Earth", "{v}");
    assert!(v["images"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["console"].as_array().unwrap().is_empty(), "{v}");

    // The deployment's tile server.
    let (tiles, hits) = tile_server().await;
    let attribution = "Tiles: test server";
    let srv = start(data, |c| {
        c.map_tile_url = Some(format!("http://{tiles}/{{z}}/{{x}}/{{y}}.png"));
        c.map_attribution = Some(attribution.into());
    })
    .await;
    let v = run_map(format!("http://{}", srv.addr), SIM, None).await;
    srv.shutdown().await;
    assert_eq!(v["map"]["layer"], "tiles", "{v}");
    let z = v["map"]["tiles"]["z"].as_u64().unwrap() as u32;
    assert!(
        (14..=19).contains(&z),
        "street-scale zoom for a 1 km track: {v}"
    );
    let wanted = v["map"]["tiles"]["wanted"].as_u64().unwrap();
    assert!(wanted >= 4, "{v}");
    assert_eq!(v["map"]["tiles"]["loaded"], wanted, "{v}");
    let (lat, lon) = track_fix(-20);
    let (x, y) = tile_of(lat, lon, z);
    let path = format!("/{z}/{x}/{y}.png");
    assert_eq!(
        v["tile_under_start"].as_str(),
        Some(format!("http://{tiles}{path}").as_str()),
        "{v}"
    );
    let asked = hits.lock().unwrap().clone();
    assert!(asked.contains(&path), "{asked:?}");
    assert_eq!(
        asked.len() as u64,
        wanted,
        "each tile fetched once: {asked:?}"
    );
    assert!(
        v["countries_under_start"].as_array().unwrap().is_empty(),
        "{v}"
    );
    assert_eq!(v["attribution"], attribution, "{v}");
    assert!(v["console"].as_array().unwrap().is_empty(), "{v}");

    // A tile server nobody answers at: the outlines instead of a blank map.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let srv = start(data, |c| {
        c.map_tile_url = Some(format!("http://{dead}/{{z}}/{{x}}/{{y}}.png"));
    })
    .await;
    let v = run_map(format!("http://{}", srv.addr), SIM, None).await;
    srv.shutdown().await;
    assert_eq!(v["map"]["layer"], "tiles", "{v}");
    assert_eq!(
        v["map"]["tiles"]["failed"], v["map"]["tiles"]["wanted"],
        "{v}"
    );
    assert_eq!(
        v["countries_under_start"],
        serde_json::json!(["China"]),
        "{v}"
    );
}
