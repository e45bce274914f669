//! Low-Latency HLS from the whole daemon: a raw-port encoder streams real H.264 at real time
//! over TCP on 127.0.0.1; `GET /ll/<stream>/...` on the HTTP port starts the stream's
//! rendition on demand and answers the playlist with parts, holds blocking requests until what they ask for exists, refuses what the
//! specification says to refuse, and serves bytes ffprobe reads as the frames sent.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ingestd::config::Config;
use streamcore::ll::{parse_file_name, LlFile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;

const STREAM: &str = "llcam";

/// A daemon whose segments are 1-2 s (TARGETDURATION 2: held requests give up after 6 s).
async fn start(low_latency: bool) -> (ingestd::app::App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    if !low_latency {
        cfg.low_latency = None;
    }
    let stream = streamcore::StreamConfig {
        keep_segments: true,
        target_segment: streamcore::Dur90k::from_secs(1),
        max_segment_secs: 2,
        ..Default::default()
    };
    (ingestd::app::start(cfg, stream).await.unwrap(), dir)
}

/// Streams the fixture's access units at 25 fps over the raw port for `secs`, then closes.
fn encoder(raw: SocketAddr, secs: u64) -> tokio::task::JoinHandle<()> {
    let data =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/baseline.h264"))
            .unwrap();
    let units: Vec<Vec<u8>> = streamcore::access_unit::split_access_units(&data)
        .iter()
        .map(|au| au.to_annexb())
        .collect();
    tokio::spawn(async move {
        let mut s = TcpStream::connect(raw).await.unwrap();
        s.write_all(format!("STREAM {STREAM}\n").as_bytes())
            .await
            .unwrap();
        let t0 = Instant::now();
        for (i, au) in units.iter().cycle().enumerate() {
            let due = t0 + Duration::from_millis(40 * i as u64);
            if due > t0 + Duration::from_secs(secs) {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            s.write_all(au).await.unwrap();
        }
        s.shutdown().await.unwrap();
    })
}

/// GET with a generous timeout (held requests); (status, headers, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut resp))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, resp[split + 4..].to_vec())
}

fn ll_path(file: &str) -> String {
    format!("/ll/{STREAM}/{file}")
}

/// The playlist's preload hint: (msn, part).
fn hint(text: &str) -> (u64, u32) {
    let uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))
        .unwrap_or_else(|| panic!("no preload hint in {text}"))
        .trim_end_matches('"');
    match parse_file_name(uri) {
        Some(LlFile::Part { msn, part }) => (msn, part),
        other => panic!("hint {uri}: {other:?}"),
    }
}

/// URIs of a playlist's tags' `URI="..."` attributes of lines starting with `prefix`.
fn uris<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .collect()
}

async fn playlist_with_parts(http: SocketAddr) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(http, &ll_path("ll.m3u8")).await;
        let text = String::from_utf8(body).unwrap();
        if status == 200 && text.contains("#EXT-X-PART:") && text.contains("#EXTINF:") {
            return text;
        }
        assert!(
            Instant::now() < end,
            "no parts within 10 s: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_blocking_reload_and_refusals() {
    let (app, _dir) = start(true).await;
    let http = app.running.http_addr;
    let sender = encoder(app.running.raw_addr, 12);

    // The playlist, its tags, and bytes ffprobe reads as H.264.
    let text = playlist_with_parts(http).await;
    for tag in [
        "#EXT-X-VERSION:9\n",
        "#EXT-X-TARGETDURATION:2\n",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=0.600\n",
        "#EXT-X-PART-INF:PART-TARGET=0.200\n",
        "#EXT-X-PROGRAM-DATE-TIME:",
    ] {
        assert!(text.contains(tag), "{tag} missing from {text}");
    }
    let maps = uris(&text, "#EXT-X-MAP:");
    let (status, head, init) = get(http, &ll_path(maps[0])).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: video/mp4"),
        "{head}"
    );
    let mut file = init.clone();
    let parts = uris(&text, "#EXT-X-PART:");
    // The parts of the last complete segment, from its independent first part.
    let first = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-PART:") && l.ends_with("INDEPENDENT=YES"))
        .filter_map(|l| l.split("URI=\"").nth(1)?.split('"').next())
        .next()
        .unwrap();
    let from = parts.iter().position(|p| *p == first).unwrap();
    for p in &parts[from..] {
        let (status, _, bytes) = get(http, &ll_path(p)).await;
        assert_eq!(status, 200, "{p}");
        file.extend_from_slice(&bytes);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parts.mp4");
    std::fs::write(&path, &file).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v",
            "-show_entries",
        ])
        .args(["stream=codec_name,nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("ffprobe");
    let probe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frames: usize = probe.split(',').nth(1).unwrap().parse().unwrap();
    assert!(
        probe.starts_with("h264,") && frames >= 5 * (parts.len() - from) - 5,
        "{probe}"
    );

    // A blocking reload for the hinted part is held until the playlist lists it.
    let (msn, part) = hint(&text);
    let asked = Instant::now();
    let (status, _, body) = get(
        http,
        &ll_path(&format!("ll.m3u8?_HLS_msn={msn}&_HLS_part={part}")),
    )
    .await;
    let text2 = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text2}");
    assert!(
        text2.contains(&format!("URI=\"ll-{msn}.{part}.m4s\"")) || hint(&text2).0 > msn,
        "the answer lists part {msn}.{part}: {text2}"
    );
    assert!(asked.elapsed() < Duration::from_secs(3));
    // The part after the new hint: held, then its bytes.
    let (m2, p2) = hint(&text2);
    let (status, _, bytes) = get(http, &ll_path(&format!("ll-{m2}.{p2}.m4s"))).await;
    assert_eq!(status, 200);
    assert!(bytes.windows(4).any(|w| w == b"moof"), "a fragment");

    // Refusals: too far ahead, a part without a segment number, a bad value, unknown names.
    let (last, _) = hint(&text2);
    for (q, want) in [
        (format!("ll.m3u8?_HLS_msn={}", last + 3), 400),
        (format!("ll.m3u8?_HLS_msn={last}&_HLS_part=40"), 400),
        ("ll.m3u8?_HLS_part=1".to_string(), 400),
        ("ll.m3u8?_HLS_msn=x".to_string(), 400),
        ("ll.m3u8?_HLS_skip=NO".to_string(), 400),
        (format!("ll-{}.0.m4s", last + 5), 404),
        ("ll-init-9.mp4".into(), 404),
        ("index.m3u8".into(), 404),
    ] {
        let (status, _, body) = get(http, &ll_path(&q)).await;
        assert_eq!(status, want, "{q}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, _) = get(http, "/ll/nosuch/ll.m3u8").await;
    assert_eq!(status, 404);

    // Once the window slid, the first parts listed are gone.
    sender.await.unwrap();
    let (status, _, _) = get(http, &ll_path(parts[0])).await;
    assert_eq!(status, 404, "{} left the 6 s window", parts[0]);

    // The encoder left: a request for what comes next is not held forever (503 after
    // three target durations, 6 s).
    let text3 = String::from_utf8(get(http, &ll_path("ll.m3u8")).await.2).unwrap();
    let (m3, p3) = hint(&text3);
    let asked = Instant::now();
    let (status, _, _) = get(
        http,
        &ll_path(&format!("ll.m3u8?_HLS_msn={m3}&_HLS_part={}", p3 + 1)),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        asked.elapsed() >= Duration::from_secs(5),
        "held until the limit"
    );

    let metrics = String::from_utf8(get(http, "/metrics").await.2).unwrap();
    for m in [
        "ingestd_ll_streams 1",
        "ingestd_ll_requests_total{result=\"timeout\"} 1",
        "ingestd_ll_blocked_requests 0",
    ] {
        assert!(metrics.contains(m), "{m} in {metrics}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_serves_only_the_classic_playlist() {
    let (app, dir) = start(false).await;
    let http = app.running.http_addr;
    let sender = encoder(app.running.raw_addr, 3);
    sender.await.unwrap();
    common::wait_until("a segment listed", 10, || {
        common::last_listed(dir.path(), STREAM) > 0
    })
    .await;
    let (status, _, _) = get(http, &ll_path("ll.m3u8")).await;
    assert_eq!(status, 404);
    let metrics = String::from_utf8(get(http, "/metrics").await.2).unwrap();
    assert!(metrics.contains("ingestd_ll_streams 0"), "{metrics}");
    app.shutdown().await;
}
