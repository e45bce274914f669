//! The whole daemon (catalog, remux workers, listeners) in-process, fed a
//! dashcam's JT/T 1078 packets over TCP on 127.0.0.1 (the project's fixture, and
//! the real 24 s device capture when present), checked with ffmpeg and
//! against the catalog.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::BytesMut;
use ingestd::config::Config;
use ingestd::jt1078::{DataType, Jt1078Event, Jt1078Packet, Jt1078Parser, Sim, SubPackage};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::common;

/// Both sources stream as this SIM's channel 1.
const CAPTURE_STREAM: &str = "132570034500_1";

/// What a test replays: the project's fixture as a dashcam sends it
/// (always), and the real device capture when it is present.
struct Source {
    name: &'static str,
    packets: Vec<Jt1078Packet>,
}

fn sources(test: &str) -> Vec<Source> {
    let mut v = vec![Source {
        name: "fixture",
        packets: fixture_packets(),
    }];
    if let Some(path) = common::capture("jt1078_capture_24s.bin", test) {
        let packets = parse(&std::fs::read(path).unwrap());
        assert_eq!(packets.len(), 1634);
        v.push(Source {
            name: "capture",
            packets,
        });
    }
    v
}

/// The fixture's frames three times over (30 s, timestamps running on),
/// sub-packaged as JT/T 1078 packets of SIM 132570034500 channel 1.
fn fixture_packets() -> Vec<Jt1078Packet> {
    let frames = common::device_video_frames();
    let lap = frames.last().unwrap().ts + 40;
    let mut bytes = BytesMut::new();
    let mut seq = 0;
    for round in 0..3 {
        for f in &frames {
            common::packets(
                "132570034500",
                f,
                1_700_000_000_000 + round * lap + f.ts,
                &mut seq,
                &mut bytes,
            );
        }
    }
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Vec<Jt1078Packet> {
    let mut p = Jt1078Parser::new();
    p.push(bytes);
    std::iter::from_fn(|| p.pull())
        .filter_map(|e| match e {
            Jt1078Event::Packet(p) => Some(p),
            Jt1078Event::Resync { .. } => None,
        })
        .collect()
}

fn encode(packets: &[Jt1078Packet], sim: Option<&str>) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        let mut p = p.clone();
        if let Some(s) = sim {
            p.sim = Sim::parse(s).unwrap();
        }
        p.encode(&mut out);
    }
    out.to_vec()
}

/// Capture span from the first I-frame to the last frame, and the frame step.
fn capture_span_ms(packets: &[Jt1078Packet]) -> (i64, i64) {
    let video: Vec<&Jt1078Packet> = packets
        .iter()
        .filter(|p| {
            matches!(
                p.data_type,
                DataType::IFrame | DataType::PFrame | DataType::BFrame
            )
        })
        .filter(|p| matches!(p.sub, SubPackage::Atomic | SubPackage::First))
        .collect();
    let first_i = video
        .iter()
        .position(|p| p.data_type == DataType::IFrame)
        .unwrap();
    let t0 = video[first_i].timestamp_ms.unwrap() as i64;
    let t1 = video.last().unwrap().timestamp_ms.unwrap() as i64;
    let frames = (video.len() - first_i - 1) as i64;
    (t1 - t0, (t1 - t0 + frames / 2) / frames)
}

async fn start() -> (ingestd::app::App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::for_tests(dir.path());
    let stream = streamcore::StreamConfig {
        keep_segments: true,
        ..Default::default()
    };
    (ingestd::app::start(cfg, stream).await.unwrap(), dir)
}

/// Sends `bytes` over one connection in pseudo-random chunks (1-3000 bytes).
async fn send_chunked(addr: std::net::SocketAddr, bytes: &[u8], seed: u64) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut x = seed;
    let mut at = 0;
    while at < bytes.len() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let n = ((x >> 33) as usize % 3000 + 1).min(bytes.len() - at);
        s.write_all(&bytes[at..at + n]).await.unwrap();
        at += n;
    }
    s.shutdown().await.unwrap();
}

fn ffmpeg_errors(playlist: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(playlist)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg installed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn extinf_total_ms(text: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|v| v.trim_end_matches(',').parse::<f64>().unwrap())
        .sum::<f64>()
        * 1000.0
}

async fn wait_for(cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_over_tcp_becomes_a_recording_of_its_own_span() {
    for Source { name, packets } in sources("device_over_tcp_becomes_a_recording_of_its_own_span") {
        recording_of_its_own_span(name, &packets).await;
    }
}

async fn recording_of_its_own_span(source: &str, packets: &[Jt1078Packet]) {
    let (app, dir) = start().await;
    send_chunked(app.running.jt1078_addr, &encode(packets, None), 7).await;
    let metrics = app.running.ctx.metrics.clone();
    let registry = app.running.ctx.registry.clone();
    // Read to the end and closed (shutting down would cut an unread tail).
    wait_for(|| {
        registry.media_sessions().is_empty()
            && metrics
                .stream(CAPTURE_STREAM)
                .is_some_and(|s| s.remux.segments >= 5)
    })
    .await;
    let catalog = app.catalog.clone();
    let stats = app.shutdown().await;
    assert_eq!(stats.dropped(), 0);
    // Every segment closed by an arriving keyframe (all but the last, which
    // the disconnect closes) has its publish latency recorded.
    let published = metrics.stream(CAPTURE_STREAM).unwrap().remux.segments;
    assert_eq!(metrics.publish_latency.count(), published - 1);
    let p99 = metrics.publish_latency.quantile(0.99).unwrap();
    assert!(p99 < std::time::Duration::from_secs(5), "{p99:?}");

    let live = dir.path().join("live").join(CAPTURE_STREAM);
    let text = std::fs::read_to_string(live.join("index.m3u8")).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    assert_eq!(ffmpeg_errors(&live.join("index.m3u8")), "");
    // The recording covers the device's own span (the live playlist may
    // have slid past its start; the catalog keeps every segment).
    let (span, frame) = capture_span_ms(packets);
    assert!(extinf_total_ms(&text) <= span as f64 + frame as f64 + 1.0);

    // One session, ended, whose segments are exactly the playlist's files.
    let sessions = catalog
        .sessions_of_stream(CAPTURE_STREAM, 0, i64::MAX)
        .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert!(sessions[0].ended_ms.is_some());
    let segs = catalog.segments_of_session(&sessions[0].id).unwrap();
    let total: i64 = segs.iter().map(|s| s.duration_90k).sum::<i64>() / 90;
    assert!(
        (total - span).abs() <= frame + 1,
        "{source}: segments total {total} ms vs span {span} ms"
    );
    // The playlist lists the newest of them, by their file names.
    let listed: Vec<&str> = text.lines().filter(|l| l.ends_with(".ts")).collect();
    assert!(!listed.is_empty() && segs.len() >= listed.len());
    for (row, uri) in segs[segs.len() - listed.len()..].iter().zip(&listed) {
        assert_eq!(row.path, format!("live/{CAPTURE_STREAM}/{uri}"));
    }
    for row in &segs {
        assert!(dir.path().join(&row.path).is_file(), "{}", row.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_between_packets_and_a_lost_packet_still_give_a_valid_playlist() {
    let test = "garbage_between_packets_and_a_lost_packet_still_give_a_valid_playlist";
    for Source { name, packets } in sources(test) {
        garbage_and_a_lost_packet(name, &packets).await;
    }
}

async fn garbage_and_a_lost_packet(source: &str, packets: &[Jt1078Packet]) {
    let (app, dir) = start().await;
    // Lost in transit: a middle packet of a sub-packaged frame from 400 on,
    // which breaks a frame that the reassembler must drop and count.
    let lost = (400..packets.len())
        .find(|&i| packets[i].sub == SubPackage::Middle)
        .unwrap();
    let mut bytes = Vec::new();
    let mut garbage = 0;
    for (i, p) in packets.iter().enumerate() {
        if i == lost {
            continue;
        }
        bytes.extend_from_slice(&encode(std::slice::from_ref(p), None));
        if i % 97 == 0 {
            bytes.extend_from_slice(b"\x00\xffgarbage01c\x30\x31");
            garbage += 1;
        }
    }
    send_chunked(app.running.jt1078_addr, &bytes, 11).await;
    let metrics = app.running.ctx.metrics.clone();
    let registry = app.running.ctx.registry.clone();
    // The connection's counters are final once it has read everything and
    // closed (its media session is gone); five segments alone could be
    // reached while the tail, and some of the garbage, is still unread.
    wait_for(|| {
        registry.media_sessions().is_empty()
            && metrics
                .stream(CAPTURE_STREAM)
                .is_some_and(|s| s.remux.segments >= 5)
    })
    .await;
    let m = metrics.stream(CAPTURE_STREAM).unwrap();
    app.shutdown().await;
    assert!(
        m.resyncs >= garbage - 1,
        "{source}: {garbage} insertions, {m:?}"
    );
    assert!(m.resync_skipped_bytes > 0, "{source}: {m:?}");
    assert!(m.dropped_frames >= 1, "{source}: {m:?}");
    let index = dir
        .path()
        .join("live")
        .join(CAPTURE_STREAM)
        .join("index.m3u8");
    let text = std::fs::read_to_string(&index).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"));
    // The decoder may conceal the damage of the lost frame's references,
    // but the playlist and every segment must be readable end to end.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&index)
        .args(["-map", "0:v", "-f", "null", "-"])
        .status()
        .unwrap();
    assert!(out.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_at_once_and_a_reconnect_mid_stream() {
    for Source { name, packets } in sources("two_devices_at_once_and_a_reconnect_mid_stream") {
        two_devices_and_a_reconnect(name, &packets).await;
    }
}

async fn two_devices_and_a_reconnect(source: &str, packets: &[Jt1078Packet]) {
    let (app, dir) = start().await;
    let (a, b) = ("013800000001", "013800000002");
    let addr = app.running.jt1078_addr;
    // Device A drops its connection after packet 800 (mid-GOP) and comes
    // back with the rest; device B streams everything meanwhile.
    let first = encode(&packets[..800], Some(a));
    let second = encode(&packets[800..], Some(a));
    let all_b = encode(packets, Some(b));
    let ta = tokio::spawn(async move {
        send_chunked(addr, &first, 3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_chunked(addr, &second, 5).await;
    });
    let tb = tokio::spawn(async move { send_chunked(addr, &all_b, 9).await });
    ta.await.unwrap();
    tb.await.unwrap();
    let metrics = app.running.ctx.metrics.clone();
    let (sa, sb) = (format!("{a}_1"), format!("{b}_1"));
    let registry = app.running.ctx.registry.clone();
    // Read to the end and closed (shutting down would cut an unread tail).
    wait_for(|| {
        registry.media_sessions().is_empty()
            && metrics.stream(&sa).is_some_and(|s| s.remux.segments >= 5)
            && metrics.stream(&sb).is_some_and(|s| s.remux.segments >= 5)
    })
    .await;
    let catalog = app.catalog.clone();
    app.shutdown().await;
    for s in [&sa, &sb] {
        let index = dir.path().join("live").join(s).join("index.m3u8");
        let text = std::fs::read_to_string(&index).unwrap();
        assert_eq!(ffmpeg_errors(&index), "", "{source} {s}: {text}");
        // The device clock follows on across the reconnect: no discontinuity.
        assert!(
            !text.contains("#EXT-X-DISCONTINUITY\n"),
            "{source} {s}: {text}"
        );
    }
    // Device A's reconnect is a second session of the same stream.
    assert_eq!(
        catalog.sessions_of_stream(&sa, 0, i64::MAX).unwrap().len(),
        2
    );
    assert_eq!(
        catalog.sessions_of_stream(&sb, 0, i64::MAX).unwrap().len(),
        1
    );
}

/// One device over TCP: channel 1 sends H.264 with G.711 A-law audio in
/// HiSilicon frames (and a few packets of an audio payload type we do not
/// decode), channel 2 sends H.265 (payload type 99). ffprobe finds AAC
/// beside the H.264 and HEVC on channel 2; both decode cleanly; the
/// unknown audio is counted by type and harms nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_h265_from_a_device_become_hls() {
    use ingestd::jt1078::{packetize, PacketizeParams};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let video = common::device_video_frames();
    let alaw = std::fs::read(root.join("audio/tone1k_g711a_hisi.raw")).unwrap();
    let hevc =
        streamcore::h265::split_access_units(&std::fs::read(root.join("hevc_nob.h265")).unwrap());
    let sim = Sim::parse("013912345678").unwrap();
    let t0 = 1_700_000_000_000u64;
    // (time, channel, type, payload type, body), sent in time order.
    let mut units: Vec<(u64, u8, DataType, u8, Vec<u8>)> = Vec::new();
    for f in &video {
        units.push((t0 + f.ts, 1, f.data_type, 98, f.data.clone()));
    }
    for (k, p) in alaw.chunks(324).enumerate() {
        units.push((t0 + k as u64 * 40, 1, DataType::Audio, 6, p.to_vec()));
        if k % 50 == 7 {
            // G.722 (payload type 2): not decoded.
            units.push((t0 + k as u64 * 40, 1, DataType::Audio, 2, vec![0x55; 160]));
        }
    }
    for (i, au) in hevc.iter().enumerate() {
        let t = if au.keyframe {
            DataType::IFrame
        } else {
            DataType::PFrame
        };
        units.push((t0 + i as u64 * 40, 2, t, 99, au.to_annexb()));
    }
    units.sort_by_key(|u| (u.0, u.2 == DataType::Audio, u.1));
    let mut wire = BytesMut::new();
    let mut seq = 0u16;
    for (ts, channel, data_type, payload_type, body) in &units {
        let p = PacketizeParams {
            sim,
            channel: *channel,
            data_type: *data_type,
            payload_type: *payload_type,
            timestamp_ms: *ts,
            last_i_interval_ms: 0,
            last_frame_interval_ms: 40,
            max_body: 950,
        };
        packetize(&p, &mut seq, body, &mut wire);
    }
    let (app, dir) = start().await;
    send_chunked(app.running.jt1078_addr, &wire, 11).await;
    let metrics = app.running.ctx.metrics.clone();
    let registry = app.running.ctx.registry.clone();
    // Shutting down closes connections: wait until this one has read it all
    // and closed (no media session left), not only for the first segments.
    wait_for(|| {
        registry.media_sessions().is_empty()
            && ["013912345678_1", "013912345678_2"]
                .iter()
                .all(|s| metrics.stream(s).is_some_and(|s| s.remux.segments >= 2))
    })
    .await;
    app.shutdown().await;
    let ch1 = metrics.stream("013912345678_1").unwrap();
    assert_eq!(ch1.remux.audio_rejected, 0, "{ch1:?}");
    // 10 s of audio in AAC frames of 1024 samples at 8 kHz: about 78.
    assert!(ch1.remux.audio_frames_muxed >= 70, "{ch1:?}");
    assert_eq!(ch1.remux.frames_muxed, video.len() as u64, "{ch1:?}");
    let rendered = metrics.render((0, 0), 0);
    assert!(
        rendered.contains("ingestd_audio_unsupported_packets_total{payload_type=\"2\"} 5"),
        "{rendered}"
    );
    let probe = |stream: &str| {
        let playlist = dir.path().join("live").join(stream).join("index.m3u8");
        assert_eq!(ffmpeg_errors(&playlist), "", "{stream}");
        let out = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name",
                "-of",
                "csv=p=0",
            ])
            .arg(&playlist)
            .output()
            .unwrap();
        let mut codecs: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end_matches(',').to_string())
            .filter(|l| !l.is_empty())
            .collect();
        codecs.sort();
        codecs.dedup();
        codecs
    };
    assert_eq!(probe("013912345678_1"), ["aac", "h264"]);
    assert_eq!(probe("013912345678_2"), ["hevc"]);
}
