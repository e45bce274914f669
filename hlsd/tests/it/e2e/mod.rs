//! The real daemons together: ingestd and hlsd in-process on 127.0.0.1, sharing a data dir and
//! the default SQLite catalog; a simulated dashcam ([`terminal`]) speaking JT/T 808 over TCP and
//! streaming the project's fixture over JT/T 1078 when the platform asks; hlsd's playlists and
//! API checked by ffmpeg/ffprobe and, in `page_watch_button_plays_the_dashcam_and_its_upload`,
//! by the operator page in headless Chromium. Nothing is hand-built: no catalog rows, no segment
//! files, no fake ingestd.

mod cluster;
mod failover;
mod store;
mod terminal;

use std::path::Path;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use streamcore::playlist::MediaPlaylist;

use crate::common::eventually;
use terminal::{fixture_frames, Command, Frame, MediaSender, Terminal, FRAME_MS};

struct Daemons {
    ingest: ingestd::app::App,
    hls: hlsd::Running,
    _data: tempfile::TempDir,
    /// hlsd's base URL.
    base: String,
    /// ingestd's control API.
    control: String,
}

impl Daemons {
    async fn start() -> Daemons {
        Daemons::start_with(|_| {}, |_| {}).await
    }

    /// Like [`Daemons::start`], with the two configurations adjusted.
    async fn start_with(
        ingest_tweak: impl FnOnce(&mut ingestd::config::Config),
        hls_tweak: impl FnOnce(&mut hlsd::Config),
    ) -> Daemons {
        let data = tempfile::tempdir().unwrap();
        let mut ingest_cfg = ingestd::config::Config {
            // Alarm incidents a few seconds wide, so their video is complete soon.
            incidents: ingestd::incidents::IncidentConfig::new(
                Duration::from_secs(2),
                Duration::from_secs(2),
                vec![1],
                true,
                1,
                Default::default(),
            )
            .unwrap(),
            ..ingestd::config::Config::for_tests(data.path())
        };
        ingest_tweak(&mut ingest_cfg);
        let ingest = ingestd::app::start(
            ingest_cfg,
            streamcore::StreamConfig {
                keep_segments: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let control = format!("http://{}", ingest.running.http_addr);
        let mut cfg = hlsd::Config::new(data.path());
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.ingestd_url = control.clone();
        cfg.watch_timeout = Duration::from_secs(30);
        cfg.allow_anonymous = true;
        hls_tweak(&mut cfg);
        let hls = hlsd::serve(cfg).await.unwrap();
        Daemons {
            base: format!("http://{}", hls.addr),
            control,
            ingest,
            hls,
            _data: data,
        }
    }

    async fn shutdown(self) {
        self.hls.shutdown().await;
        self.ingest.shutdown().await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{url}");
    r.json().await.unwrap()
}

async fn get_text(url: &str) -> (StatusCode, String) {
    let r = client().get(url).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

/// The entry of `/api/streams[?all=1]` named `name`.
async fn listed_stream(base: &str, name: &str, all: bool) -> Option<Value> {
    let q = if all { "?all=1" } else { "" };
    let list = get_json(&format!("{base}/api/streams{q}")).await;
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
}

/// ffmpeg reads `url` (an HLS playlist served by hlsd, and its segments) and decodes it;
/// returns what it printed at level error (empty when clean).
fn ffmpeg_decode_errors(url: &str, seconds: Option<u32>) -> String {
    let mut cmd = Process::new("ffmpeg");
    cmd.args(["-nostdin", "-v", "error", "-i", url]);
    if let Some(s) = seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    let out = cmd.args(["-f", "null", "-"]).output().expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg on {url} failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// ffprobe's view of the first video stream of `url`: codec, width, height.
fn ffprobe_video(url: &str) -> (String, u64, u64) {
    let out = Process::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=codec_name,width,height", "-of", "json", url])
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    (
        s["codec_name"].as_str().unwrap_or_default().to_owned(),
        s["width"].as_u64().unwrap_or(0),
        s["height"].as_u64().unwrap_or(0),
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Streams the live channel at real time until `stop`, as a dashcam does after 0x9101.
fn stream_live(
    addr: std::net::SocketAddr,
    sim: &str,
    channel: u8,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let sim = sim.to_owned();
    tokio::spawn(async move {
        let frames = fixture_frames("baseline.h264");
        let mut m = MediaSender::connect(addr, &sim, channel).await;
        m.send(&frames, now_ms(), u64::MAX, true, &stop).await;
        let sent = m.sent();
        m.close().await;
        sent
    })
}

/// The terminal's answer to 0x9201: the recording of `[start_ms, end_ms)` uploaded as fast as
/// the connection takes it, stamped with the recording's own times, in two parts with `between`
/// run in the middle (while the upload is in progress), then the connection closed.
async fn upload(
    addr: std::net::SocketAddr,
    sim: &str,
    channel: u8,
    start_ms: i64,
    end_ms: i64,
    frames: &[Frame],
    between: impl std::future::Future<Output = ()>,
) -> u64 {
    let total = ((end_ms - start_ms) as u64) / FRAME_MS;
    let never = AtomicBool::new(false);
    let mut m = MediaSender::connect(addr, sim, channel).await;
    m.send(frames, start_ms, total * 6 / 10, false, &never)
        .await;
    between.await;
    m.send(frames, start_ms, total - m.sent(), false, &never)
        .await;
    let sent = m.sent();
    m.close().await;
    sent
}

const SIM: &str = "013800000001";

/// Everything an operator does with one dashcam, through the real daemons: watch (0x9101 reaches
/// the terminal, the live playlist plays), an alarm becomes an incident with video, a playback
/// upload while the channel is live becomes its own `_pb` stream and recording (listed with its
/// SIM, channel and session, ended with ENDLIST when the device closes, its incident is its
/// video), and stop (0x9102 reaches the terminal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_alarm_playback_and_stop_through_the_real_daemons() {
    let d = Daemons::start().await;
    let (base, control) = (d.base.clone(), d.control.clone());
    let mut term = Terminal::connect(d.ingest.running.jt808_addr, SIM).await;
    term.send_position(0);
    eventually("the device online in hlsd", 20, || async {
        let devices = get_json(&format!("{base}/api/devices")).await;
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["sim"] == SIM && v["online"] == true)
            .then_some(())
    })
    .await;

    // Watch through hlsd: it forwards to ingestd, which sends 0x9101; hlsd answers once the
    // live playlist is being written.
    let watch = tokio::spawn({
        let url = format!("{base}/api/devices/{SIM}/channels/1/watch");
        async move { client().post(url).send().await.unwrap() }
    });
    let Command::Live { addr, channel } = term.next_command(Duration::from_secs(10)).await else {
        panic!("expected 0x9101");
    };
    assert_eq!((addr, channel), (d.ingest.running.jt1078_addr, 1));
    let stop_live = Arc::new(AtomicBool::new(false));
    let live = stream_live(addr, SIM, 1, stop_live.clone());
    let r = watch.await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let live_name = format!("{SIM}_1");
    assert_eq!(v["playlist"], format!("/live/{live_name}/index.m3u8"));
    let entry = listed_stream(&base, &live_name, false)
        .await
        .expect("listed live");
    assert_eq!(
        (&entry["sim"], &entry["channel"], &entry["kind"]),
        (&json!(SIM), &json!(1), &json!("live"))
    );
    assert!(entry["session_id"].is_string(), "{entry}");
    let live_url = format!("{base}/live/{live_name}/index.m3u8");
    assert_eq!(ffprobe_video(&live_url), ("h264".into(), 320, 240));
    assert_eq!(ffmpeg_decode_errors(&live_url, Some(3)), "");

    // An alarm lasting two reports: an incident on channel 1 (the configured channel).
    term.send_position(0x0000_0002);
    // While the alarm lasts its incident is open: an EVENT playlist without ENDLIST.
    let open = eventually("the open alarm incident", 20, || async {
        let v = get_json(&format!("{base}/api/devices/{SIM}/incidents")).await;
        v.as_array()?
            .iter()
            .find(|i| i["kind"] == "alarm:overspeed" && i["open"] == true)
            .cloned()
    })
    .await;
    let (status, text) = get_text(&format!("{base}/vod/incident/{}/index.m3u8", open["id"])).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    term.send_position(0x0000_0002);
    tokio::time::sleep(Duration::from_millis(500)).await;
    term.send_position(0);

    // A playback upload while the channel is live (the catalog used to drop the second
    // stream's row of a channel and lose the upload's rows with it). hlsd has no playback
    // route yet: ingestd's control API sends 0x9201.
    let start_ms = (now_ms() / 1000 - 3600) * 1000;
    let end_ms = start_ms + 10_000;
    let r = client()
        .post(format!("{control}/api/devices/{SIM}/channels/1/playback"))
        .json(&json!({ "start_ms": start_ms, "end_ms": end_ms }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let cmd = term.next_command(Duration::from_secs(10)).await;
    let Command::Playback {
        addr,
        channel,
        start_ms: s,
        end_ms: e,
    } = cmd
    else {
        panic!("expected 0x9201, got {cmd:?}");
    };
    assert_eq!(
        (addr, channel, s, e),
        (d.ingest.running.jt1078_addr, 1, start_ms, end_ms)
    );
    let pb_name = format!("{SIM}_1_pb");
    let frames = fixture_frames("baseline.h264");
    let during = async {
        eventually("the upload listed as live", 20, || async {
            listed_stream(&base, &pb_name, false)
                .await
                .filter(|s| s["session_id"].is_string())
        })
        .await
    };
    let (sent, during_entry) = {
        let entry = std::sync::Mutex::new(None);
        let sent = upload(addr, SIM, 1, start_ms, end_ms, &frames, async {
            *entry.lock().unwrap() = Some(during.await);
        })
        .await;
        (sent, entry.into_inner().unwrap().unwrap())
    };
    assert_eq!(sent, 250);
    assert_eq!(
        (
            &during_entry["sim"],
            &during_entry["channel"],
            &during_entry["kind"],
            &during_entry["live"]
        ),
        (&json!(SIM), &json!(1), &json!("playback"), &json!(true)),
        "{during_entry}"
    );
    let pb_url = format!("{base}/live/{pb_name}/index.m3u8");
    let text = eventually("ENDLIST on the upload's playlist", 20, || async {
        let (status, text) = get_text(&pb_url).await;
        (status == StatusCode::OK && text.ends_with("#EXT-X-ENDLIST\n")).then_some(text)
    })
    .await;
    let pl = MediaPlaylist::parse_any(&text).unwrap();
    assert_eq!(pl.duration().as_millis(), 10_000, "{text}");
    assert_eq!(
        pl.segments().next().unwrap().pdt_ms,
        Some(start_ms),
        "{text}"
    );
    assert_eq!(ffmpeg_decode_errors(&pb_url, None), "");
    // Ended: off the live list, on the full one with its recording.
    assert!(listed_stream(&base, &pb_name, false).await.is_none());
    let ended = listed_stream(&base, &pb_name, true).await.unwrap();
    assert_eq!(
        (&ended["ended"], &ended["sim"]),
        (&json!(true), &json!(SIM))
    );
    let session = ended["recording_session_id"].as_str().unwrap().to_owned();
    assert_eq!(during_entry["session_id"], json!(session));

    // The catalog as hlsd serves it: both sessions of the channel, both incidents.
    let sessions = get_json(&format!("{base}/api/devices/{SIM}/sessions")).await;
    let kinds: Vec<(&str, &str)> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stream"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&(pb_name.as_str(), "playback")),
        "{sessions}"
    );
    assert!(kinds.contains(&(live_name.as_str(), "live")), "{sessions}");
    let incidents = eventually("both incidents", 20, || async {
        let v = get_json(&format!("{base}/api/devices/{SIM}/incidents")).await;
        (v.as_array().unwrap().len() >= 2).then_some(v)
    })
    .await;
    let incident = |kind: &str| {
        incidents
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} incident in {incidents}"))
            .clone()
    };
    let pb = incident("playback");
    assert_eq!(
        (&pb["channel"], &pb["session_id"]),
        (&json!(1), &json!(session))
    );
    assert_eq!(pb["started_ms"], json!(start_ms));
    // The playback incident's video is the upload, not the live stream at that time.
    let url = format!("{base}/vod/incident/{}/index.m3u8", pb["id"]);
    let (status, text) = get_text(&url).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let uris: Vec<String> = MediaPlaylist::parse_any(&text)
        .unwrap()
        .segments()
        .map(|s| s.uri.clone())
        .collect();
    assert!(
        !uris.is_empty()
            && uris
                .iter()
                .all(|u| u.starts_with(&format!("/live/{pb_name}/"))),
        "{text}"
    );
    assert!(text.contains("#EXT-X-ENDLIST"));
    assert_eq!(ffmpeg_decode_errors(&url, None), "");
    // The alarm's video is the live stream around it.
    let alarm = incident("alarm:overspeed");
    assert_eq!(
        (&alarm["channel"], &alarm["alarm"]),
        (&json!(1), &json!(2)),
        "{alarm}"
    );
    assert_eq!(alarm["open"], json!(false), "{alarm}");
    // Its segments are catalogued as they close: the playlist is open until they cover it.
    let url = format!("{base}/vod/incident/{}/index.m3u8", alarm["id"]);
    let text = eventually("the alarm's video complete", 20, || async {
        let (status, text) = get_text(&url).await;
        (status == StatusCode::OK && text.ends_with("#EXT-X-ENDLIST\n")).then_some(text)
    })
    .await;
    let pl = MediaPlaylist::parse_any(&text).unwrap();
    let last = pl.segments().last().unwrap();
    assert!(
        // EXTINF carries milliseconds: a rounding's worth of slack.
        last.pdt_ms.unwrap() + last.duration.as_millis() + 1 >= alarm["ended_ms"].as_i64().unwrap(),
        "{alarm} {text}"
    );
    assert!(pl.segments().len() >= 1);
    assert!(
        pl.segments()
            .all(|s| s.uri.starts_with(&format!("/live/{live_name}/"))),
        "{text}"
    );
    assert_eq!(ffmpeg_decode_errors(&url, None), "");
    // Once its post-alarm time has passed, the incident knows its video was recorded live.
    eventually("the alarm's video state", 20, || async {
        let v = get_json(&format!("{base}/api/devices/{SIM}/incidents")).await;
        v.as_array()?
            .iter()
            .find(|i| i["kind"] == "alarm:overspeed" && i["video_state"] == "recorded")
            .cloned()
    })
    .await;

    // Stop through hlsd: 0x9102 (close) reaches the terminal, which stops streaming.
    let r = client()
        .post(format!("{base}/api/devices/{SIM}/channels/1/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        term.next_command(Duration::from_secs(10)).await,
        Command::Control {
            channel: 1,
            command: 0
        }
    );
    stop_live.store(true, Ordering::Relaxed);
    assert!(live.await.unwrap() > 0);
    d.shutdown().await;
}

/// Runs the page driver; returns its observations.
async fn drive_page(base: &str, args: &[&str]) -> Value {
    run_driver("e2e.mjs", base, args).await
}

/// Runs the page driver `script` (in `tests/it/browser/`) with Node and returns the JSON
/// object it prints last.
async fn run_driver(script: &str, base: &str, args: &[&str]) -> Value {
    let script = format!("{}/tests/it/browser/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Process::new("node");
    cmd.arg(&script).arg(base).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("node (Node.js)"))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "page driver {script} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

/// How far the player got, and whether anything was fatal.
fn played(v: &Value) -> f64 {
    let samples = v["samples"].as_array().unwrap();
    assert!(!samples.is_empty(), "{v}");
    for s in samples {
        assert!(
            s["fatal"].as_array().unwrap().is_empty(),
            "fatal player error: {v}"
        );
    }
    let t = |s: &Value| s["t"].as_f64().unwrap();
    t(samples.last().unwrap()) - t(&samples[0])
}

fn require(path: &str) {
    assert!(Path::new(path).exists(), "the page test needs {path}");
}

/// The operator page, in headless Chromium, against the real daemons: its "Watch ch 1" button
/// makes hlsd ask ingestd, the terminal gets 0x9101 and streams, and the page plays the live
/// stream; then the terminal's playback upload plays to its end as a recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_watch_button_plays_the_dashcam_and_its_upload() {
    require("/usr/bin/chromium");
    require(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/web/node_modules/playwright-core"
    ));
    let d = Daemons::start().await;
    let base = d.base.clone();
    let mut term = Terminal::connect(d.ingest.running.jt808_addr, SIM).await;
    term.send_position(0);
    eventually("the device in the catalog", 20, || async {
        let devices = get_json(&format!("{base}/api/devices")).await;
        (!devices.as_array().unwrap().is_empty()).then_some(())
    })
    .await;

    let page = tokio::spawn({
        let base = base.clone();
        async move { drive_page(&base, &["watch", SIM, "1", "8"]).await }
    });
    let Command::Live { addr, .. } = term.next_command(Duration::from_secs(30)).await else {
        panic!("expected 0x9101 from the page's button");
    };
    let stop = Arc::new(AtomicBool::new(false));
    let live = stream_live(addr, SIM, 1, stop.clone());
    let v = page.await.unwrap();
    assert!(
        played(&v) >= 5.0,
        "the live stream played {} s: {v}",
        played(&v)
    );
    let last = v["samples"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((&last["w"], &last["h"]), (&json!(320), &json!(240)), "{v}");
    assert!(
        last["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/live/{SIM}_1/ll.m3u8")),
        "the button plays the low-latency rendition: {v}"
    );
    stop.store(true, Ordering::Relaxed);
    live.await.unwrap();

    // A playback upload, played as the recording it became.
    let start_ms = (now_ms() / 1000 - 7200) * 1000;
    let r = client()
        .post(format!(
            "{}/api/devices/{SIM}/channels/1/playback",
            d.control
        ))
        .json(&json!({ "start_ms": start_ms, "end_ms": start_ms + 6000 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let Command::Playback {
        addr,
        start_ms,
        end_ms,
        ..
    } = term.next_command(Duration::from_secs(10)).await
    else {
        panic!("expected 0x9201");
    };
    upload(
        addr,
        SIM,
        1,
        start_ms,
        end_ms,
        &fixture_frames("baseline.h264"),
        async {},
    )
    .await;
    let pb_name = format!("{SIM}_1_pb");
    let session = eventually("the upload ended", 20, || async {
        listed_stream(&base, &pb_name, true)
            .await
            .filter(|s| s["ended"] == true)
            .and_then(|s| s["recording_session_id"].as_str().map(str::to_owned))
    })
    .await;
    let v = drive_page(
        &base,
        &["play", &format!("sim={SIM}&session={session}"), "20"],
    )
    .await;
    let last = v["samples"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["ended"], true,
        "the recording did not play to its end: {v}"
    );
    assert!(played(&v) >= 5.0, "{v}");
    d.shutdown().await;
}

/// The operator's session in Chromium against the real daemons, no anonymous access: the page
/// shows only the login form, refuses a wrong password, logs in; the grid of two channels asks
/// the dashcam for both (0x9101 twice) and both tiles play; the Stop button of one sends its
/// 0x9102; the page closes, and ingestd stops the other channel by itself (0x9102) once no hlsd
/// has served its playlist for the idle limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_login_grid_stop_and_automatic_stop() {
    require("/usr/bin/chromium");
    require(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/web/node_modules/playwright-core"
    ));
    const IDLE: Duration = Duration::from_secs(6);
    let d = Daemons::start_with(
        |c| {
            c.device_auth = true;
            c.auto_stop = Some(IDLE);
        },
        |c| c.allow_anonymous = false,
    )
    .await;
    d.ingest
        .catalog
        .add_user(
            "dispatch",
            streamcore::catalog::Role::Operator,
            &hlsd::auth::hash_password("grid-password"),
        )
        .unwrap();
    d.ingest.catalog.grant("dispatch", SIM).unwrap();
    let base = d.base.clone();
    let mut term = Terminal::connect(d.ingest.running.jt808_addr, SIM).await;
    term.send_position(0);
    // Nothing for an anonymous client but the page itself.
    let r = client()
        .get(format!("{base}/api/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let shot = std::env::var("HLSD_GRID_SCREENSHOT").ok();
    let streams = format!("{SIM}_1,{SIM}_2");
    let stop_stream = format!("{SIM}_2");
    let page = tokio::spawn({
        let (base, streams, stop_stream) = (base.clone(), streams.clone(), stop_stream.clone());
        async move {
            let mut args = vec!["dispatch", "grid-password", &streams, &stop_stream];
            if let Some(s) = shot.as_deref() {
                args.push(s);
            }
            run_driver("grid.mjs", &base, &args).await
        }
    });
    // The grid asks for both channels; the dashcam streams each.
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let mut channels = Vec::new();
    while channels.len() < 2 {
        match term.next_command(Duration::from_secs(60)).await {
            Command::Live { addr, channel } => {
                channels.push(channel);
                senders.push(stream_live(addr, SIM, channel, stop.clone()));
            }
            other => panic!("expected 0x9101, got {other:?}"),
        }
    }
    channels.sort();
    assert_eq!(channels, [1, 2]);
    // The Stop button of channel 2.
    match term.next_command(Duration::from_secs(90)).await {
        Command::Control { channel, command } => assert_eq!((channel, command), (2, 0)),
        other => panic!("expected 0x9102 for channel 2, got {other:?}"),
    }
    let v = page.await.unwrap();
    assert_eq!(v["devices_before_login"], 0, "{v}");
    assert_eq!(v["wrong_password_refused"], true, "{v}");
    assert!(v["who"].as_str().unwrap().contains("dispatch"), "{v}");
    let playing = v["playing"].as_array().unwrap();
    assert_eq!(playing.len(), 2, "{v}");
    for t in playing {
        assert!(t["t"].as_f64().unwrap() > 3.0, "every tile plays: {v}");
        assert_eq!((&t["w"], &t["h"]), (&json!(320), &json!(240)), "{v}");
    }
    let later = v["after_stop_later"].as_array().unwrap();
    let ch1 = later
        .iter()
        .find(|t| t["stream"] == format!("{SIM}_1"))
        .unwrap();
    assert_eq!(ch1["state"], "playing", "the other tile plays on: {v}");
    // Chromium logs the two refusals before the login (/api/me, the wrong password); nothing
    // else may go wrong.
    let console = v["console"].as_array().unwrap();
    assert!(
        console.len() <= 2 && console.iter().all(|m| m.as_str().unwrap().contains("401")),
        "{v}"
    );

    // The page is gone: channel 1 is stopped by ingestd within the idle limit (+ a tick and
    // the last playlist poll).
    let closed = std::time::Instant::now();
    match term.next_command(IDLE + Duration::from_secs(10)).await {
        Command::Control { channel, command } => assert_eq!((channel, command), (1, 0)),
        other => panic!("expected the automatic 0x9102 for channel 1, got {other:?}"),
    }
    let waited = closed.elapsed();
    assert!(waited <= IDLE + Duration::from_secs(8), "{waited:?}");
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let audit = d.ingest.catalog.audit_log(50, None).unwrap();
    let has = |actor: &str, action: &str, target: &str| {
        audit
            .iter()
            .any(|e| e.actor == actor && e.action == action && e.target == target)
    };
    assert!(
        has("dispatch", "live.start", &format!("{SIM}_1")),
        "{audit:?}"
    );
    assert!(
        has("dispatch", "live.stop", &format!("{SIM}_2")),
        "{audit:?}"
    );
    assert!(
        has("system", "live.auto_stop", &format!("{SIM}_1")),
        "{audit:?}"
    );
    d.shutdown().await;
}

/// ingestd with `--control-token`: its control API answers 401 to a request without the token
/// or with another (metrics stay open), and hlsd, given the token, still commands the dashcam:
/// a watch through hlsd reaches it as 0x9101 and a stop as 0x9102.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestd_control_api_needs_the_token_hlsd_sends() {
    const TOKEN: &str = "control-token-for-the-test";
    let d = Daemons::start_with(
        |c| c.control_token = Some(TOKEN.into()),
        |c| c.ingestd_token = Some(TOKEN.into()),
    )
    .await;
    let (base, control) = (d.base.clone(), d.control.clone());
    let mut term = Terminal::connect(d.ingest.running.jt808_addr, SIM).await;
    term.send_position(0);
    // (method, path, Authorization header): what ingestd answers.
    let status = |post: bool, path: &str, auth: Option<&str>| {
        let url = format!("{control}{path}");
        let mut req = if post {
            client().post(url)
        } else {
            client().get(url)
        };
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        async move { req.send().await.unwrap().status() }
    };
    let live = format!("/api/devices/{SIM}/channels/1/live");
    let bearer = format!("Bearer {TOKEN}");
    // No header, another token, the token without its scheme.
    for auth in [None, Some("Bearer not-the-token"), Some(TOKEN)] {
        assert_eq!(
            status(true, &live, auth).await,
            StatusCode::UNAUTHORIZED,
            "{auth:?}"
        );
    }
    for path in ["/api/devices", "/ll/x/ll.m3u8"] {
        assert_eq!(
            status(false, path, None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
    }
    assert_eq!(
        status(false, "/api/devices", Some(&bearer)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(false, "/metrics", None).await,
        StatusCode::OK,
        "metrics stay open"
    );
    // Nothing reached the device from the refused requests; hlsd's watch does.
    let watch = tokio::spawn({
        let url = format!("{base}/api/devices/{SIM}/channels/1/watch");
        async move { client().post(url).send().await.unwrap() }
    });
    match term.next_command(Duration::from_secs(20)).await {
        Command::Live { channel, .. } => assert_eq!(channel, 1),
        other => panic!("expected 0x9101 from hlsd's watch, got {other:?}"),
    }
    watch.abort();
    let r = client()
        .post(format!("{base}/api/devices/{SIM}/channels/1/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    match term.next_command(Duration::from_secs(20)).await {
        Command::Control { channel, command } => assert_eq!((channel, command), (1, 0)),
        other => panic!("expected 0x9102 from hlsd's stop, got {other:?}"),
    }
    d.shutdown().await;
}
