//! The device's own recordings through hlsd, with the real daemons: ingestd and hlsd in-process
//! on 127.0.0.1 sharing a data dir and the default SQLite catalog, and a dashcam with an SD card
//! ([`device`]) speaking JT/T 808/1078 over TCP. hlsd lists what the device holds (0x9205 ->
//! 0x1205), starts uploads (0x9201) and answers once their playlist plays, forwards 0x9202,
//! and serves a session as MP4; the results are read by ffprobe.

use crate::common::eventually;
use crate::common::sd_card as device;

use std::path::Path;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use ingestd::jt808::{playback_control, PlatformCommand, Resource};
use reqwest::StatusCode;
use serde_json::{json, Value};
use streamcore::playlist::MediaPlaylist;

use device::{Behaviour, Device, FRAME_MS};

const DAY_MS: i64 = 86_400_000;

/// Midnight (UTC+8, the device's zone) ten days ago: the day the device's recordings are from.
/// Recent, since ingestd takes a device's frame times as real time only within a year of now.
fn day0() -> i64 {
    const UTC8_MS: i64 = 8 * 3_600_000;
    let now = chrono::Utc::now().timestamp_millis();
    (now - 10 * DAY_MS + UTC8_MS).div_euclid(DAY_MS) * DAY_MS - UTC8_MS
}

struct Daemons {
    ingest: ingestd::app::App,
    hls: hlsd::Running,
    data: tempfile::TempDir,
    /// hlsd's base URL.
    base: String,
}

impl Daemons {
    async fn start(watch_timeout: Duration) -> Daemons {
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
        let hls = Self::hlsd(data.path(), &ingest, |c| c.watch_timeout = watch_timeout).await;
        Daemons {
            base: format!("http://{}", hls.addr),
            ingest,
            hls,
            data,
        }
    }

    /// Another hlsd on the same data dir and ingestd.
    async fn hlsd(
        data: &Path,
        ingest: &ingestd::app::App,
        tweak: impl FnOnce(&mut hlsd::Config),
    ) -> hlsd::Running {
        let mut cfg = hlsd::Config::new(data);
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.ingestd_url = format!("http://{}", ingest.running.http_addr);
        cfg.allow_anonymous = true;
        tweak(&mut cfg);
        hlsd::serve(cfg).await.unwrap()
    }

    async fn device(&self, sim: &str, b: Behaviour) -> Device {
        Device::connect(self.ingest.running.jt808_addr, sim, b).await
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

async fn get(url: &str) -> (StatusCode, Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}"));
    (status, v)
}

async fn post(url: &str, body: &Value) -> (StatusCode, Value) {
    post_raw(url, body.to_string()).await
}

async fn post_raw(url: &str, body: String) -> (StatusCode, Value) {
    let r = client()
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{url}: not JSON: {text}"));
    (status, v)
}

/// The playlist at `url` once it ends with ENDLIST.
async fn ended_playlist(url: &str) -> MediaPlaylist {
    eventually("ENDLIST", 30, || async {
        let r = client().get(url).send().await.ok()?;
        let text = r.text().await.ok()?;
        text.ends_with("#EXT-X-ENDLIST\n")
            .then(|| MediaPlaylist::parse_any(&text).unwrap())
    })
    .await
}

/// What ffprobe reads from `input` (a URL or a file): the first video stream's codec and size,
/// its packets when `count` (the whole input is read: only for finished inputs), and the
/// container's duration in ms.
struct Probe {
    codec: String,
    width: u64,
    height: u64,
    packets: Option<u64>,
    duration_ms: Option<f64>,
}

async fn ffprobe(input: &str, count: bool) -> Probe {
    let mut cmd = Process::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"]);
    if count {
        cmd.arg("-count_packets");
    }
    cmd.args([
        "-show_entries",
        "stream=codec_name,width,height,nb_read_packets:format=duration",
        "-of",
        "json",
        input,
    ]);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("ffprobe"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {input}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    Probe {
        codec: s["codec_name"].as_str().unwrap_or_default().to_owned(),
        width: s["width"].as_u64().unwrap_or(0),
        height: s["height"].as_u64().unwrap_or(0),
        packets: s["nb_read_packets"].as_str().and_then(|n| n.parse().ok()),
        duration_ms: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse::<f64>().ok())
            .map(|d| d * 1000.0),
    }
}

/// Asserts that `p` is the fixture's video lasting `span_ms`: one frame per 40 ms of it, and a
/// duration within one frame of it.
fn assert_span(p: &Probe, span_ms: i64, what: &str) {
    assert_eq!(
        (p.codec.as_str(), p.width, p.height),
        ("h264", 320, 240),
        "{what}"
    );
    assert_eq!(
        p.packets,
        Some((span_ms / FRAME_MS) as u64),
        "{what}: frames"
    );
    let d = p.duration_ms.expect("a duration");
    assert!(
        (d - span_ms as f64).abs() <= FRAME_MS as f64,
        "{what}: duration {d} ms for a span of {span_ms} ms"
    );
}

/// The recordings on a card: `n` on channel 1 (one a minute, 50 s long, every seventh flagged
/// with an 808 alarm bit and a video alarm bit, i.e. above 32 bits) and `m` on channel 2.
fn card(n: i64, m: i64) -> Vec<Resource> {
    let day0 = day0();
    let one = |channel: u8, i: i64| Resource {
        channel,
        start_ms: day0 + i * 60_000,
        end_ms: day0 + i * 60_000 + 50_000,
        alarm: if i % 7 == 3 { (1 << 33) | 0b10 } else { 0 },
        av_type: 2,
        stream_type: 1,
        storage_type: 1,
        size: 1_000_000 + i as u32,
    };
    (0..n)
        .map(|i| one(1, i))
        .chain((0..m).map(|i| one(2, 2 * i)))
        .collect()
}

/// The playback session of `stream` catalogued last (the device's uploads).
async fn last_session(base: &str, sim: &str, stream: &str) -> Value {
    eventually("the upload's session ended in the catalog", 20, || async {
        let (_, v) = get(&format!("{base}/api/devices/{sim}/sessions")).await;
        v.as_array()?
            .iter()
            .find(|s| s["stream"] == stream && s["kind"] == "playback")
            .filter(|s| s["ended_ms"].is_i64())
            .cloned()
    })
    .await
}

/// Downloads `url` into `dir`; returns the file and the answer's headers.
async fn download(url: &str, dir: &Path) -> (std::path::PathBuf, reqwest::header::HeaderMap) {
    let r = client().get(url).send().await.unwrap();
    let headers = r.headers().clone();
    assert_eq!(r.status(), StatusCode::OK, "{url}: {headers:?}");
    let path = dir.join("video.mp4");
    std::fs::write(&path, r.bytes().await.unwrap()).unwrap();
    (path, headers)
}

/// The device's list through hlsd: the 500 recordings of a channel exactly as the card holds
/// them (their 0x1205 arrives in sub-packages), the query's filters forwarded as given,
/// bad parameters refused before anything is sent, and ingestd's errors passed on: offline
/// device 404, silent device 504 within the query's timeout, ingestd unreachable 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_are_the_devices_list() {
    let day0 = day0();
    const SIM: &str = "013800000171";
    let d = Daemons::start(Duration::from_secs(20)).await;
    let recordings = card(500, 20);
    let mut dev = d
        .device(
            SIM,
            Behaviour {
                recordings: recordings.clone(),
                ..Default::default()
            },
        )
        .await;
    let url = |q: &str| format!("{}/api/devices/{SIM}/recordings?{q}", d.base);

    let (status, list) = get(&url(&format!("channel=1&from={day0}&to={}", day0 + DAY_MS))).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list.as_array().unwrap().len(), 500);
    assert_eq!(list, serde_json::to_value(&recordings[..500]).unwrap());
    assert_eq!(list[3]["alarm"], json!((1u64 << 33) | 0b10));
    assert_eq!(
        dev.next_command(Duration::from_secs(5)).await,
        PlatformCommand::QueryResources {
            channel: 1,
            start_ms: Some(day0),
            end_ms: Some(day0 + DAY_MS),
            alarm_mask: 0,
            av_type: 0,
            stream_type: 0,
            storage_type: 0,
        }
    );

    // Filters reach the device as given (RFC 3339 times as the instant they name); an
    // unknown parameter (a cache buster) is not forwarded, so ingestd doesn't refuse it.
    let (status, list) = get(&url(&format!(
        "channel=2&from={}&to={}&alarm_mask=8589934594&av_type=2&stream_type=1&storage_type=1&_=123",
        chrono::DateTime::from_timestamp_millis(day0)
            .unwrap()
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339()
            .replace('+', "%2B"),
        day0 + 3_600_000
    )))
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list, serde_json::to_value(&recordings[500..]).unwrap());
    assert_eq!(
        dev.next_command(Duration::from_secs(5)).await,
        PlatformCommand::QueryResources {
            channel: 2,
            start_ms: Some(day0),
            end_ms: Some(day0 + 3_600_000),
            alarm_mask: (1 << 33) | 0b10,
            av_type: 2,
            stream_type: 1,
            storage_type: 1,
        }
    );

    // Refused here, with the parameter named; the device is not asked.
    for (q, what) in [
        ("channel=x&from=1&to=2", "channel"),
        ("channel=256", "channel"),
        ("channel=1&from=yesterday", "from"),
        (&format!("from={day0}&to={day0}") as &str, "from < to"),
        ("av_type=256", "av_type"),
        ("alarm_mask=-1", "alarm_mask"),
        ("timeout_ms=soon", "timeout_ms"),
    ] {
        let (status, v) = get(&url(q)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(what), "{q}: {v}");
    }
    let (status, v) = get(&format!("{}/api/devices/12ab/recordings", d.base)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("sim"), "{v}");
    assert_eq!(dev.pending(), None, "a refused query reached the device");

    // A device that is not connected: ingestd's 404, passed on.
    let (status, v) = get(&format!(
        "{}/api/devices/013800000999/recordings?channel=1",
        d.base
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not connected"),
        "{v}"
    );

    // A device that never answers: a 504 once the query's timeout has passed, not a hung
    // request.
    dev.set(|b| b.answer_queries = false);
    // A device given longer than hlsd's HTTP client allows by default (10 s): hlsd outwaits
    // ingestd, so the 504 is ingestd's own (it names the SIM), after the whole wait.
    let long = tokio::spawn({
        let url = url("channel=1&timeout_ms=11000");
        async move {
            let t0 = Instant::now();
            let (status, v) = get(&url).await;
            (status, v, t0.elapsed())
        }
    });
    let t0 = Instant::now();
    let (status, v) = get(&url("channel=1&timeout_ms=700")).await;
    let took = t0.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert!(v["error"].is_string(), "{v}");
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    assert!(matches!(
        dev.next_command(Duration::from_secs(1)).await,
        PlatformCommand::QueryResources { channel: 1, .. }
    ));
    // ... and with ingestd's own answer timeout (2 s in tests), which hlsd outwaits.
    let t0 = Instant::now();
    let (status, v) = get(&url("channel=1")).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());

    let (status, v, took) = long.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["sim"], json!(SIM), "not ingestd's answer: {v}");
    assert!(took >= Duration::from_secs(11), "answered after {took:?}");

    // ingestd unreachable: a 502 saying so. Asked about a device no node holds, so hlsd goes to
    // its --ingestd-url (the device above is held by the running ingestd, which the node
    // registry would find).
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let lonely = Daemons::hlsd(d.data.path(), &d.ingest, |c| {
        c.ingestd_url = format!("http://{dead}");
    })
    .await;
    let (status, v) = get(&format!(
        "http://{}/api/devices/013800000999/recordings?channel=1",
        lonely.addr
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{v}");
    assert!(v["error"].as_str().unwrap().contains("unreachable"), "{v}");
    lonely.shutdown().await;
    d.shutdown().await;
}

/// Playback through hlsd: the answer comes while the upload runs and its playlist plays; the
/// playlist ends with ENDLIST when the device is done, lasting the requested span within one
/// frame; the session downloads as an MP4 of that span (under the playlist's token when tokens
/// are on). A second upload of the channel is answered for its own segments, not for the
/// finished playlist the first one left, and its MP4 is its own span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_plays_while_uploading_and_downloads_as_mp4() {
    let day0 = day0();
    const SIM: &str = "013800000172";
    let d = Daemons::start(Duration::from_secs(20)).await;
    let base = d.base.clone();
    // Uploads hold after 6 s of media (a 4 s segment is out by then) until released.
    let mut dev = d
        .device(
            SIM,
            Behaviour {
                pace: Duration::from_millis(5),
                hold_after: Some(150),
                ..Default::default()
            },
        )
        .await;
    let start_ms = day0 + 8 * 3_600_000;
    let end_ms = start_ms + 10_000;
    let playback_url = format!("{base}/api/devices/{SIM}/channels/1/playback");
    let (status, v) = post(
        &playback_url,
        &json!({"start_ms": start_ms, "end_ms": end_ms}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let stream = format!("{SIM}_1_pb");
    assert_eq!(v["stream"], json!(stream), "{v}");
    // The upload's own playlist: its catalog session's.
    let id = v["session_id"]
        .as_str()
        .expect("the upload's session")
        .to_owned();
    assert_eq!(
        v["playlist"],
        json!(format!("/vod/session/{id}/index.m3u8"))
    );
    assert_eq!(
        v["live_playlist"],
        json!(format!("/live/{stream}/index.m3u8"))
    );
    assert_eq!(v["ended"], json!(false), "answered while uploading: {v}");
    assert!(v["playback_id"].is_string(), "{v}");
    assert!(v["waited_ms"].is_u64(), "{v}");
    let PlatformCommand::Playback {
        channel,
        start_ms: s,
        end_ms: e,
        mode,
        speed,
        ..
    } = dev.next_command(Duration::from_secs(5)).await
    else {
        panic!("expected 0x9201");
    };
    assert_eq!((channel, s, e, mode, speed), (1, start_ms, end_ms, 0, 0));

    // Plays while the device still uploads (an EVENT playlist, no ENDLIST yet).
    let live_url = format!("{base}{}", v["playlist"].as_str().unwrap());
    let text = client()
        .get(&live_url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("#EXT-X-PLAYLIST-TYPE:EVENT") && !text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    let p = ffprobe(&live_url, false).await;
    assert_eq!((p.codec.as_str(), p.width, p.height), ("h264", 320, 240));
    assert!(dev.pending().is_none(), "the upload ended before release");
    dev.release();
    assert_eq!(
        dev.upload_done(Duration::from_secs(20)).await,
        (((end_ms - start_ms) / FRAME_MS) as u64, false)
    );
    let pl = ended_playlist(&live_url).await;
    assert_eq!(pl.segments().next().unwrap().pdt_ms, Some(start_ms));
    // One TARGETDURATION while open and once finished (the stream's, 8 s): a playlist whose
    // target changes is refused by Chromium's player.
    let open_target = MediaPlaylist::parse_any(&text).unwrap().target_duration();
    assert_eq!((open_target, pl.target_duration()), (8, 8), "{text}");
    assert_span(
        &ffprobe(&live_url, true).await,
        end_ms - start_ms,
        "playlist",
    );

    // The session as an MP4.
    let session = last_session(&base, SIM, &stream).await;
    assert_eq!(session["id"], json!(id), "{v}");
    assert_eq!(v["download"], json!(format!("/vod/session/{id}/video.mp4")));
    let dir = tempfile::tempdir().unwrap();
    let mp4_url = format!("{base}/vod/session/{id}/video.mp4");
    let (file, headers) = download(&mp4_url, dir.path()).await;
    assert_eq!(headers["content-type"], "video/mp4");
    assert_eq!(
        headers["content-disposition"],
        format!("attachment; filename=\"{stream}_{id}.mp4\"").as_str()
    );
    assert_eq!(headers["x-session-ended"], "true");
    assert_eq!(headers["x-clip-start-ms"], start_ms.to_string().as_str());
    assert_span(
        &ffprobe(file.to_str().unwrap(), true).await,
        end_ms - start_ms,
        "session MP4",
    );
    for (url, code) in [
        (format!("{base}/vod/session/nope/video.mp4"), 404),
        (format!("{base}/vod/session/a%2F..%2Fb/video.mp4"), 404),
    ] {
        let (status, v) = get(&url).await;
        assert_eq!(status.as_u16(), code, "{url}: {v}");
    }

    // With tokens on, the MP4 needs the session playlist's token, in the query or the path.
    let secret = "playback-secret";
    let guarded = Daemons::hlsd(d.data.path(), &d.ingest, |c| {
        c.token_secret = Some(secret.into());
        c.allow_anonymous = false;
    })
    .await;
    let signer = hlsd::TokenSigner::new(secret);
    let expiry = hlsd::token::now_unix() + 600;
    let good = signer.sign(&format!("vod/session/{id}"), expiry);
    let other = signer.sign(&stream, expiry);
    let g = format!("http://{}", guarded.addr);
    for (url, code) in [
        (format!("{g}/vod/session/{id}/video.mp4"), 401),
        (format!("{g}/vod/session/{id}/video.mp4?token={other}"), 403),
        (format!("{g}/vod/session/{id}/video.mp4?token={good}"), 200),
        (format!("{g}/vod/session/{id}/t/{good}/video.mp4"), 200),
    ] {
        let r = client().head(&url).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{url}");
    }
    guarded.shutdown().await;

    // A second upload of the channel: the first one's session is finished (ENDLIST,
    // segments), but the answer waits for this upload's own session. The device holds
    // before sending anything.
    dev.set(|b| b.hold_after = Some(0));
    let start2 = start_ms + 3_600_000;
    let end2 = start2 + 6_000;
    let second = tokio::spawn({
        let url = playback_url.clone();
        async move { post(&url, &json!({"start_ms": start2, "end_ms": end2})).await }
    });
    assert!(matches!(
        dev.next_command(Duration::from_secs(5)).await,
        PlatformCommand::Playback { start_ms, .. } if start_ms == start2
    ));
    // One upload per channel at a time: ingestd's 409 passes through.
    let (status, busy) = post(&playback_url, &json!({"start_ms": start2, "end_ms": end2})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{busy}");
    assert!(busy["error"].is_string(), "{busy}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !second.is_finished(),
        "answered from the previous upload's playlist"
    );
    dev.release();
    let (status, v2) = second.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{v2}");
    assert_eq!(v2["live_playlist"], v["live_playlist"]);
    assert_ne!(v2["playlist"], v["playlist"]);
    assert_ne!(v2["playback_id"], v["playback_id"]);
    assert_eq!(dev.upload_done(Duration::from_secs(20)).await, (150, false));
    let second_url = format!("{base}{}", v2["playlist"].as_str().unwrap());
    let pl2 = ended_playlist(&second_url).await;
    // This upload only: it starts at its own span.
    assert_eq!(pl2.segments().next().unwrap().pdt_ms, Some(start2));
    let id2 = v2["session_id"].as_str().unwrap();
    let (file, _) = download(&format!("{base}/vod/session/{id2}/video.mp4"), dir.path()).await;
    assert_span(
        &ffprobe(file.to_str().unwrap(), true).await,
        end2 - start2,
        "second session MP4",
    );
    d.shutdown().await;
}

/// Playback control through hlsd reaches the device as 0x9202 with the right control byte
/// (pause, resume, speed, seek, stop); stop ends the upload and its playlist. Bad requests are
/// refused with a reason (here or by ingestd), an offline device is a 404, and an upload that
/// never comes is a 504 naming the playlist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_control_reaches_the_device() {
    let day0 = day0();
    const SIM: &str = "013800000173";
    let d = Daemons::start(Duration::from_secs(20)).await;
    let base = d.base.clone();
    let mut dev = d
        .device(
            SIM,
            Behaviour {
                pace: Duration::from_millis(FRAME_MS as u64),
                ..Default::default()
            },
        )
        .await;
    let start_ms = day0 + 9 * 3_600_000;
    let end_ms = start_ms + 60_000;
    let (status, v) = post(
        &format!("{base}/api/devices/{SIM}/channels/1/playback"),
        &json!({"start_ms": start_ms, "end_ms": end_ms, "av_type": 2, "stream_type": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let PlatformCommand::Playback {
        av_type,
        stream_type,
        ..
    } = dev.next_command(Duration::from_secs(5)).await
    else {
        panic!("expected 0x9201");
    };
    assert_eq!((av_type, stream_type), (2, 1));

    let control = format!("{base}/api/devices/{SIM}/channels/1/playback/control");
    let seek_ms = start_ms + 30_000;
    for (body, control_byte, speed, seek) in [
        (json!({"action": "pause"}), playback_control::PAUSE, 0, None),
        (
            json!({"action": "resume"}),
            playback_control::RESUME,
            0,
            None,
        ),
        (
            json!({"action": "speed", "speed": 4}),
            playback_control::FAST_FORWARD,
            3,
            None,
        ),
        (
            json!({"action": "seek", "seek_ms": seek_ms}),
            playback_control::SEEK,
            0,
            Some(seek_ms),
        ),
    ] {
        let (status, v) = post(&control, &body).await;
        assert_eq!(status, StatusCode::OK, "{body}: {v}");
        assert_eq!(v["action"], body["action"], "{v}");
        assert_eq!(
            dev.next_command(Duration::from_secs(5)).await,
            PlatformCommand::PlaybackControl {
                channel: 1,
                control: control_byte,
                speed,
                seek_ms: seek,
            },
            "{body}"
        );
    }

    // Refused with a reason: by hlsd (not JSON, no action, too large) or by ingestd (an
    // action it doesn't know), and nothing reaches the device.
    for (body, code, what) in [
        ("pause".to_owned(), 400, "request body"),
        (json!({"speed": 2}).to_string(), 400, "action"),
        (json!({"action": "fly"}).to_string(), 400, "fly"),
        (
            json!({"action": "pause", "pad": "x".repeat(20_000)}).to_string(),
            413,
            "16 KiB",
        ),
    ] {
        let (status, v) = post_raw(&control, body.clone()).await;
        assert_eq!(status.as_u16(), code, "{body:.40}: {v}");
        assert!(v["error"].as_str().unwrap().contains(what), "{v}");
    }
    for body in [
        json!({"start_ms": start_ms}),
        json!({"start_ms": "soon", "end_ms": end_ms}),
        json!([start_ms, end_ms]),
    ] {
        let (status, v) = post(
            &format!("{base}/api/devices/{SIM}/channels/1/playback"),
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    assert!(
        !matches!(dev.pending(), Some(device::Event::Command(_))),
        "a refused request reached the device"
    );

    // Stop: the device ends the upload, the playlist gets ENDLIST.
    let (status, v) = post(&control, &json!({"action": "stop"})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(
        dev.next_command(Duration::from_secs(5)).await,
        PlatformCommand::PlaybackControl {
            channel: 1,
            control: playback_control::STOP,
            speed: 0,
            seek_ms: None,
        }
    );
    let (sent, stopped) = dev.upload_done(Duration::from_secs(10)).await;
    assert!(stopped && sent < 1500, "sent {sent}, stopped {stopped}");
    ended_playlist(&format!("{base}/live/{SIM}_1_pb/index.m3u8")).await;

    // An offline device: ingestd's 404 for both.
    for (path, body) in [
        ("playback", json!({"start_ms": start_ms, "end_ms": end_ms})),
        ("playback/control", json!({"action": "pause"})),
    ] {
        let url = format!("{base}/api/devices/013800000998/channels/1/{path}");
        let (status, v) = post(&url, &body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{url}: {v}");
        assert!(
            v["error"].as_str().unwrap().contains("not connected"),
            "{v}"
        );
    }

    // A device that acknowledges and never uploads: a 504 within hlsd's watch timeout,
    // naming the playlist to poll.
    let quick = Daemons::hlsd(d.data.path(), &d.ingest, |c| {
        c.watch_timeout = Duration::from_secs(3)
    })
    .await;
    dev.set(|b| b.upload = false);
    let t0 = Instant::now();
    let (status, v) = post(
        &format!(
            "http://{}/api/devices/{SIM}/channels/2/playback",
            quick.addr
        ),
        &json!({"start_ms": start_ms, "end_ms": end_ms}),
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(
        v["live_playlist"],
        json!(format!("/live/{SIM}_2_pb/index.m3u8"))
    );
    assert!(v["playback_id"].is_string(), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    quick.shutdown().await;
    d.shutdown().await;
}
