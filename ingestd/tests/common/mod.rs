//! Test helpers: an independent JT/T 808 frame builder written from the spec
//! (not using ingestd's encoder), a frame reader, a tiny HTTP client, and a
//! daemon started in-process on 127.0.0.1 port 0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use ingestd::config::Config;
use ingestd::jt1078::{
    packetize, DataType, Jt1078Event, Jt1078Parser, PacketizeParams, Reassembler, Sim,
};
use ingestd::server::{Hooks, Running};
use ingestd::sessions::IngestEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SECRET: &str = "test-secret";

/// Builds a complete 0x7e-framed JT/T 808 message by hand: header (2013, or
/// 2019 when `version` is set), body, XOR checksum, 7e/7d escaping.
pub fn frame(
    msg_id: u16,
    phone_bcd: &[u8],
    serial: u16,
    version: Option<u8>,
    sub: Option<(u16, u16)>,
    body: &[u8],
) -> Vec<u8> {
    let mut attrs = body.len() as u16;
    if sub.is_some() {
        attrs |= 0x2000;
    }
    if version.is_some() {
        attrs |= 0x4000;
    }
    let mut raw = vec![];
    raw.extend_from_slice(&msg_id.to_be_bytes());
    raw.extend_from_slice(&attrs.to_be_bytes());
    if let Some(v) = version {
        raw.push(v);
    }
    raw.extend_from_slice(phone_bcd);
    raw.extend_from_slice(&serial.to_be_bytes());
    if let Some((t, i)) = sub {
        raw.extend_from_slice(&t.to_be_bytes());
        raw.extend_from_slice(&i.to_be_bytes());
    }
    raw.extend_from_slice(body);
    let mut x = 0u8;
    for b in &raw {
        x ^= b;
    }
    raw.push(x);
    let mut out = vec![0x7e];
    for b in raw {
        match b {
            0x7e => out.extend_from_slice(&[0x7d, 0x02]),
            0x7d => out.extend_from_slice(&[0x7d, 0x01]),
            b => out.push(b),
        }
    }
    out.push(0x7e);
    out
}

/// The body of a 0x8001 reply.
pub fn general_reply(serial: u16, msg_id: u16, result: u8) -> Vec<u8> {
    let mut b = serial.to_be_bytes().to_vec();
    b.extend_from_slice(&msg_id.to_be_bytes());
    b.push(result);
    b
}

/// Reads one 0x7e...0x7e frame (with flags) from the socket, with a timeout.
pub async fn read_frame(sock: &mut TcpStream) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut out = Vec::new();
        loop {
            let b = sock.read_u8().await.expect("read");
            if out.is_empty() && b != 0x7e {
                continue;
            }
            out.push(b);
            if b == 0x7e && out.len() > 1 {
                return out;
            }
        }
    })
    .await
    .expect("reply within 5 s")
}

/// Asserts nothing arrives for a short while.
pub async fn expect_silence(sock: &mut TcpStream) {
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_millis(300), sock.read(&mut b)).await;
    assert!(r.is_err(), "unexpected data: {r:?} {b:?}");
}

pub async fn send(sock: &mut TcpStream, bytes: &[u8]) {
    sock.write_all(bytes).await.expect("write");
}

/// Minimal HTTP/1.1 request; returns (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_http(addr, &req).await
}

/// Sends `request` (head and body, as given) and reads the answer.
pub async fn raw_http(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect http");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp))
        .await
        .expect("http response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&resp).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    // Chunked bodies: good enough to strip the size lines for small JSON.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .filter(|l| !l.is_empty() && !l.chars().all(|c| c.is_ascii_hexdigit()))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        body
    };
    (status, body)
}

pub struct Daemon {
    pub running: Running,
    pub events: crossbeam_channel::Receiver<IngestEvent>,
    pub dir: tempfile::TempDir,
}

pub async fn start(hooks: Hooks) -> Daemon {
    start_with(hooks, |_| {}).await
}

/// [`start`] with the test configuration changed by `tweak`.
pub async fn start_with(hooks: Hooks, tweak: impl FnOnce(&mut Config)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let hooks = Hooks {
        events: Some(tx),
        ..hooks
    };
    let mut cfg = Config::for_tests(dir.path());
    cfg.auth_secret = Some(SECRET.into());
    tweak(&mut cfg);
    let running = ingestd::server::start(cfg, hooks).await.expect("start");
    Daemon {
        running,
        events: rx,
        dir,
    }
}

/// Collects events until `n` match `pred` (5 s timeout).
pub fn wait_events(
    rx: &crossbeam_channel::Receiver<IngestEvent>,
    n: usize,
    pred: impl Fn(&IngestEvent) -> bool,
) -> Vec<IngestEvent> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.len() < n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => got.push(e),
            Ok(_) => {}
            Err(_) => panic!("only {} of {n} events: {got:?}", got.len()),
        }
    }
    got
}

/// One video frame as a device sends it: a whole access unit, its JT/T 1078
/// data type and capture time.
#[derive(Clone)]
pub struct CaptureFrame {
    pub data_type: DataType,
    pub ts: u64,
    pub data: Vec<u8>,
}

#[path = "../../../fixtures/captures.rs"]
mod captures;

/// A third-party capture (see `fixtures/captures.rs`), or `None` after
/// reporting that `test` skipped it.
pub fn capture(name: &str, test: &str) -> Option<std::path::PathBuf> {
    captures::capture(name, test)
}

/// The video frames a simulated dashcam sends in the daemon suites: the
/// project's fixture `baseline.h264` (320x240, 25 fps, I and P frames,
/// 2 s GOP, 10 s), one access unit per frame at 40 ms steps, starting with
/// its first keyframe.
pub fn device_video_frames() -> Vec<CaptureFrame> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/baseline.h264");
    let data = std::fs::read(path).expect("committed fixture");
    streamcore::access_unit::split_access_units(&data)
        .iter()
        .enumerate()
        .map(|(i, au)| CaptureFrame {
            data_type: if au.keyframe {
                DataType::IFrame
            } else {
                DataType::PFrame
            },
            ts: i as u64 * 40,
            data: au.to_annexb(),
        })
        .collect()
}

/// Video frames of the real 24 s device capture, reassembled, from its
/// first I-frame on (so each replay starts with a keyframe); `None` (and a
/// line saying `test` skipped it) when the capture is absent.
pub fn capture_video_frames(test: &str) -> Option<Vec<CaptureFrame>> {
    let path = capture("jt1078_capture_24s.bin", test)?;
    let mut p = Jt1078Parser::new();
    p.push(&std::fs::read(path).unwrap());
    let mut r = Reassembler::default();
    let mut frames = Vec::new();
    while let Some(ev) = p.pull() {
        if let Jt1078Event::Packet(pkt) = ev {
            if let Some(f) = r.push(pkt) {
                if f.data_type.is_video() {
                    frames.push(CaptureFrame {
                        data_type: f.data_type,
                        ts: f.timestamp_ms.unwrap(),
                        data: f.data.to_vec(),
                    });
                }
            }
        }
    }
    // Start at the first I-frame so every loop of the control device
    // begins with a keyframe.
    let first_i = frames
        .iter()
        .position(|f| f.data_type == DataType::IFrame)
        .unwrap();
    frames.drain(..first_i);
    Some(frames)
}

pub fn packets(sim: &str, frame: &CaptureFrame, ts: u64, seq: &mut u16, out: &mut BytesMut) {
    let p = PacketizeParams {
        sim: Sim::parse(sim).unwrap(),
        channel: 1,
        data_type: frame.data_type,
        payload_type: 98,
        timestamp_ms: ts,
        last_i_interval_ms: 0,
        last_frame_interval_ms: 40,
        max_body: 950,
    };
    packetize(&p, seq, &frame.data, out);
}

/// The control device: the capture looped with its clock carried on, paced
/// at `speed` times real time, until `stop`.
pub async fn control_device(
    addr: SocketAddr,
    sim: &str,
    speed: u64,
    frames: Vec<CaptureFrame>,
    stop: Arc<AtomicBool>,
) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let span = frames.last().unwrap().ts - frames[0].ts + 40;
    let t0 = Instant::now();
    let mut seq = 0u16;
    let mut lap = 0u64;
    while !stop.load(Relaxed) {
        for f in &frames {
            let media_ms = lap * span + (f.ts - frames[0].ts);
            let due = t0 + Duration::from_millis(media_ms / speed);
            tokio::time::sleep_until(due.into()).await;
            let mut out = BytesMut::new();
            packets(sim, f, 1_700_000_000_000 + media_ms, &mut seq, &mut out);
            s.write_all(&out).await.expect("control device write");
            if stop.load(Relaxed) {
                break;
            }
        }
        lap += 1;
    }
}

/// Last media sequence number listed by a stream's playlist (0 if none).
pub fn last_listed(dir: &Path, stream: &str) -> u64 {
    let Ok(text) = std::fs::read_to_string(dir.join("live").join(stream).join("index.m3u8")) else {
        return 0;
    };
    let seq: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .map_or(0, |v| v.parse().unwrap());
    let n = text.lines().filter(|l| l.ends_with(".ts")).count() as u64;
    seq + n
}

pub async fn wait_until(what: &str, secs: u64, cond: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < end, "not within {secs} s: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// xorshift64*: deterministic noise.
pub fn noise(n: usize, mut x: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Waits (bounded) until the peer closes; true if it did.
pub async fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}
