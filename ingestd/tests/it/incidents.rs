//! Alarm incidents through the whole daemon (SQLite catalog, real sockets):
//! an alarm while nothing streams is fetched from the device with 0x9201
//! once its post-alarm time has passed, and the upload becomes the
//! incident's video; a device offline by then is asked when it is back.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common::*;
use ingestd::jt808::auth_code;

const PHONE: [u8; 6] = [0x01, 0x37, 0x00, 0x13, 0x70, 0x00];
const SIM: &str = "013700137000";

fn bcd(ms: i64) -> [u8; 6] {
    ingestd::jt808::unix_ms_to_bcd_time(ms)
}

/// A 0x0200 body at `ms` (second precision, UTC+8) with `alarm` bits.
fn position(alarm: u32, ms: i64) -> Vec<u8> {
    let mut b = alarm.to_be_bytes().to_vec();
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(&22_543_096u32.to_be_bytes());
    b.extend_from_slice(&114_057_865u32.to_be_bytes());
    b.extend_from_slice(&[0, 10, 2, 0x58, 0, 90]);
    b.extend_from_slice(&bcd(ms));
    b
}

async fn login(s: &mut TcpStream) {
    let mut reg = vec![0x00, 0x2c, 0x03, 0x00];
    reg.extend_from_slice(b"ABCDE");
    reg.extend_from_slice(&[0; 20]);
    reg.extend_from_slice(b"T000001");
    reg.push(1);
    reg.extend_from_slice(b"INC123");
    send(s, &frame(0x0100, &PHONE, 1, None, None, &reg)).await;
    read_frame(s).await;
    let code = auth_code(SECRET, SIM);
    send(s, &frame(0x0102, &PHONE, 2, None, None, code.as_bytes())).await;
    read_frame(s).await;
}

/// Message id, serial and body of a platform frame.
fn parse(frame: &[u8]) -> (u16, u16, Vec<u8>) {
    let raw = ingestd::jt808::unescape(&frame[1..frame.len() - 1]).unwrap();
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    (
        id,
        u16::from_be_bytes([raw[10], raw[11]]),
        raw[12..raw.len() - 1].to_vec(),
    )
}

/// Reads frames until a 0x9201 arrives (positions get 0x8001s first);
/// returns its serial, channel and span (Unix ms from the BCD times).
async fn next_playback_request(s: &mut TcpStream, within: Duration) -> (u16, u8, i64, i64) {
    tokio::time::timeout(within, async {
        loop {
            let (id, serial, body) = parse(&read_frame_patiently(s).await);
            if id != 0x9201 {
                continue;
            }
            let n = body[0] as usize;
            let r = &body[1 + n..];
            let time =
                |t: &[u8]| ingestd::jt808::bcd_time_to_unix_ms(t.try_into().unwrap()).unwrap();
            return (serial, r[4], time(&r[10..16]), time(&r[16..22]));
        }
    })
    .await
    .expect("a 0x9201 in time")
}

/// One 0x7e...0x7e frame, however long it takes (the caller bounds it).
async fn read_frame_patiently(s: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    loop {
        let b = s.read_u8().await.expect("808 connection open");
        if out.is_empty() && b != 0x7e {
            continue;
        }
        out.push(b);
        if b == 0x7e && out.len() > 1 {
            return out;
        }
    }
}

fn app_config(dir: &std::path::Path) -> ingestd::config::Config {
    let mut cfg = ingestd::config::Config::for_tests(dir);
    cfg.auth_secret = Some(SECRET.into());
    cfg.incidents = ingestd::incidents::IncidentConfig::new(
        Duration::from_secs(2),
        Duration::from_secs(1),
        vec![2],
        true,
        1,
        Default::default(),
    )
    .unwrap();
    cfg
}

/// The whole daemon on a fresh data dir with this file's incident settings,
/// and the device logged in on its JT/T 808 connection.
async fn start_logged_in() -> (tempfile::TempDir, ingestd::app::App, TcpStream) {
    let dir = tempfile::tempdir().unwrap();
    let app = ingestd::app::start(app_config(dir.path()), streamcore::StreamConfig::default())
        .await
        .unwrap();
    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    (dir, app, s)
}

/// Appends one frame of channel `ch` stamped `ts` (device ms) as JT/T 1078 packets.
fn packets(ch: u8, f: &CaptureFrame, ts: i64, seq: &mut u16, out: &mut BytesMut) {
    let p = ingestd::jt1078::PacketizeParams {
        sim: ingestd::jt1078::Sim::parse(SIM).unwrap(),
        channel: ch,
        data_type: f.data_type,
        payload_type: 98,
        timestamp_ms: ts as u64,
        last_i_interval_ms: 0,
        last_frame_interval_ms: 40,
        max_body: 950,
    };
    ingestd::jt1078::packetize(&p, seq, &f.data, out);
}

/// Uploads `[start, end)` of the fixture as the device's recording of
/// channel `ch`: one frame per 40 ms of recorded time, stamped with it, one
/// every `pace` of wall time (zero: flat out). Returns the frames sent.
async fn upload(addr: std::net::SocketAddr, ch: u8, start: i64, end: i64, pace: Duration) -> usize {
    let frames = device_video_frames();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let (mut seq, mut out) = (0u16, BytesMut::new());
    let began = tokio::time::Instant::now();
    let n = ((end - start) / 40) as usize;
    for i in 0..n {
        packets(
            ch,
            &frames[i % frames.len()],
            start + i as i64 * 40,
            &mut seq,
            &mut out,
        );
        if !pace.is_zero() {
            s.write_all(&out).await.unwrap();
            out.clear();
            tokio::time::sleep_until(began + pace * i as u32).await;
        }
    }
    s.write_all(&out).await.unwrap();
    s.shutdown().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_while_nothing_streams_is_fetched_from_the_device() {
    let (dir, app, mut s) = start_logged_in().await;
    let catalog = app.catalog.clone();
    // Whole seconds: the BCD time has no milliseconds.
    let t0 = ingestd::sessions::now_ms() / 1000 * 1000;
    send(
        &mut s,
        &frame(0x0200, &PHONE, 3, None, None, &position(1 << 29, t0)),
    )
    .await;
    send(
        &mut s,
        &frame(0x0200, &PHONE, 4, None, None, &position(1 << 29, t0 + 1000)),
    )
    .await;
    // While the alarm lasts the incident is open, on the configured channel.
    let open = eventually_catalog(&app, || {
        catalog
            .incidents(SIM, 0, i64::MAX)
            .unwrap()
            .into_iter()
            .find(|i| i.open)
    })
    .await;
    assert_eq!(
        (open.channel, open.kind.as_str(), open.alarm),
        (2, "alarm:collision_warning", 1 << 29)
    );
    assert_eq!(open.from_ms, t0 - 2000);
    send(
        &mut s,
        &frame(0x0200, &PHONE, 5, None, None, &position(0, t0 + 2000)),
    )
    .await;

    // Once 1 s past the alarm's end, the device is asked for the span.
    let (serial, ch, start, end) = next_playback_request(&mut s, Duration::from_secs(10)).await;
    assert_eq!((ch, start, end), (2, t0 - 2000, t0 + 3000));
    send(
        &mut s,
        &frame(
            0x0001,
            &PHONE,
            6,
            None,
            None,
            &general_reply(serial, 0x9201, 0),
        ),
    )
    .await;
    let sent = upload(app.running.jt1078_addr, ch, start, end, Duration::ZERO).await;
    assert_eq!(sent, 125);

    let inc = eventually_catalog(&app, || {
        catalog
            .incidents(SIM, 0, i64::MAX)
            .unwrap()
            .into_iter()
            .find(|i| {
                i.kind == "alarm:collision_warning" && i.video_state.as_deref() == Some("fetched")
            })
    })
    .await;
    assert!(!inc.open);
    assert_eq!((inc.from_ms, inc.to_ms), (t0 - 2000, t0 + 3000));
    let session = inc.session_id.clone().expect("the upload's session");
    let segments = catalog.segments_of_session(&session).unwrap();
    let total: i64 = segments.iter().map(|s| s.duration_90k).sum();
    // The recorded span, to the frame.
    assert!(
        (total - 5 * 90_000).abs() <= 3600,
        "{total} ticks: {segments:?}"
    );
    assert_eq!(segments[0].program_date_time_ms, start);
    for seg in &segments {
        let path = dir.path().join(&seg.path);
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The request is catalogued with its outcome and linked to the session.
    let pb = catalog.playbacks_of_device(SIM, 0, i64::MAX).unwrap();
    assert_eq!(pb.len(), 1, "{pb:?}");
    assert_eq!(
        (pb[0].from_ms, pb[0].to_ms, pb[0].session_id.as_deref()),
        (start, end, Some(session.as_str()))
    );
    assert_eq!(pb[0].state.as_str(), "complete");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_offline_after_its_alarm_is_asked_when_it_is_back() {
    let (_dir, app, mut s) = start_logged_in().await;
    let catalog = app.catalog.clone();
    let t0 = ingestd::sessions::now_ms() / 1000 * 1000;
    send(
        &mut s,
        &frame(0x0200, &PHONE, 3, None, None, &position(1 << 1, t0)),
    )
    .await;
    read_frame(&mut s).await;
    // Gone before the alarm's post-time passed: the incident closes there.
    drop(s);
    let waiting = eventually_catalog(&app, || {
        catalog
            .incidents(SIM, 0, i64::MAX)
            .unwrap()
            .into_iter()
            .find(|i| i.video_state.as_deref() == Some("waiting_online"))
    })
    .await;
    assert_eq!(
        (waiting.kind.as_str(), waiting.open),
        ("alarm:overspeed", false)
    );
    assert!(waiting.video_reason.unwrap().contains("offline"));

    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    let (_, ch, start, end) = next_playback_request(&mut s, Duration::from_secs(10)).await;
    assert_eq!((ch, start, end), (2, waiting.from_ms, waiting.to_ms));
    eventually_catalog(&app, || {
        catalog
            .incidents(SIM, 0, i64::MAX)
            .unwrap()
            .into_iter()
            .find(|i| i.video_state.as_deref() == Some("requested"))
    })
    .await;
    app.shutdown().await;
}

/// Polls `find` (after flushing the catalog) for up to 20 s.
async fn eventually_catalog<T>(app: &ingestd::app::App, find: impl Fn() -> Option<T>) -> T {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        app.flush_catalog(Duration::from_secs(5));
        if let Some(v) = find() {
            return v;
        }
        assert!(std::time::Instant::now() < end, "not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks for a playback of channel `ch` through the control API, answers the
/// 0x9201 as the device, and returns the requested span.
async fn request_playback(
    app: &ingestd::app::App,
    s: &mut TcpStream,
    ch: u8,
    body: String,
) -> (i64, i64) {
    let api = app.running.http_addr;
    let path = format!("/api/devices/{SIM}/channels/{ch}/playback");
    let pending = tokio::spawn(async move { http(api, "POST", &path, &body).await });
    let (serial, got_ch, start, end) = next_playback_request(s, Duration::from_secs(5)).await;
    assert_eq!(got_ch, ch);
    send(
        s,
        &frame(
            0x0001,
            &PHONE,
            9,
            None,
            None,
            &general_reply(serial, 0x9201, 0),
        ),
    )
    .await;
    let (status, text) = pending.await.unwrap();
    assert_eq!(status, 200, "{text}");
    (start, end)
}

/// The playlist of an ended upload: its EXTINF durations and tags.
async fn ended_playlist(dir: &std::path::Path, stream: &str) -> String {
    let path = dir.join("live").join(stream).join("index.m3u8");
    wait_until("the upload's ENDLIST", 20, || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("#EXT-X-ENDLIST"))
    })
    .await;
    std::fs::read_to_string(&path).unwrap()
}

fn extinf_ms(text: &str) -> Vec<f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|v| v.trim_end_matches(',').parse::<f64>().unwrap() * 1000.0)
        .collect()
}

/// Fast forward at 4x: the device sends 8 s of recording in 2 s, stamped with
/// the recorded times, and the playlist spans the 8 s. Keyframe rewind: the
/// device sends keyframes 2 s apart with falling timestamps; the playlist
/// runs forward, one keyframe per 2 s, with no break.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_forward_and_rewind_uploads_follow_the_recorded_time() {
    let (dir, app, mut s) = start_logged_in().await;
    let t0 = ingestd::sessions::now_ms() / 1000 * 1000 - 3_600_000;
    let (start, end) = request_playback(
        &app,
        &mut s,
        1,
        format!(
            r#"{{"start_ms":{t0},"end_ms":{},"mode":1,"speed":4}}"#,
            t0 + 8000
        ),
    )
    .await;
    // 4x: 10 ms of wall time per 40 ms frame.
    let sent = upload(
        app.running.jt1078_addr,
        1,
        start,
        end,
        Duration::from_millis(10),
    )
    .await;
    assert_eq!(sent, 200);
    let text = ended_playlist(dir.path(), &format!("{SIM}_1_pb")).await;
    let total: f64 = extinf_ms(&text).iter().sum();
    assert!((total - 8000.0).abs() <= 40.0, "{total} ms:\n{text}");
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");

    // Keyframe rewind from t0 + 10 s back to t0 + 2 s on channel 2.
    let (start, end) = request_playback(
        &app,
        &mut s,
        2,
        format!(
            r#"{{"start_ms":{t0},"end_ms":{},"mode":2,"speed":1}}"#,
            t0 + 10_000
        ),
    )
    .await;
    assert_eq!((start, end), (t0, t0 + 10_000));
    let frames = device_video_frames();
    let key = frames
        .iter()
        .find(|f| f.data_type == ingestd::jt1078::DataType::IFrame)
        .unwrap();
    let mut media = TcpStream::connect(app.running.jt1078_addr).await.unwrap();
    let (mut seq, mut out) = (0u16, BytesMut::new());
    for k in 0..5i64 {
        packets(2, key, end - k * 2000, &mut seq, &mut out);
    }
    media.write_all(&out).await.unwrap();
    media.shutdown().await.unwrap();
    let text = ended_playlist(dir.path(), &format!("{SIM}_2_pb")).await;
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let durations = extinf_ms(&text);
    // Four 2 s steps between the five keyframes, and the last one lasts as
    // long as the step before it.
    let total: f64 = durations.iter().sum();
    assert!((total - 10_000.0).abs() < 1.0, "{durations:?}\n{text}");
    // It starts at the recording's end, where the device began.
    assert!(
        text.contains(&format!(
            "#EXT-X-PROGRAM-DATE-TIME:{}",
            streamcore::playlist::format_pdt(end)
        )),
        "{text}"
    );
    app.shutdown().await;
}
