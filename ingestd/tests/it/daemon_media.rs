//! JT/T 1078 and raw-port media through the running daemon to the worker
//! pool, with a recording handler standing in for streamcore.

use crate::common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use ingestd::media::{FrameKind, MediaHandler, MediaMsg, SessionKind};
use ingestd::server::Hooks;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, Default)]
struct Recorder {
    log: Arc<Mutex<Vec<MediaMsg>>>,
    shutdowns: Arc<AtomicUsize>,
    delay: Duration,
}

impl MediaHandler for Recorder {
    fn handle(&mut self, msg: MediaMsg) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.log.lock().unwrap().push(msg);
    }
    fn shutdown(&mut self) {
        self.shutdowns.fetch_add(1, Ordering::SeqCst);
    }
}

fn hooks(r: &Recorder) -> Hooks {
    let r = r.clone();
    Hooks {
        media: Some(Arc::new(move |_| {
            Box::new(r.clone()) as Box<dyn MediaHandler>
        })),
        events: None,
        metrics: None,
        ..Default::default()
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_over_tcp_reaches_workers_with_backpressure() {
    let rec = Recorder {
        delay: Duration::from_micros(300),
        ..Default::default()
    };
    let Some(path) = capture(
        "jt1078_capture_24s.bin",
        "capture_over_tcp_reaches_workers_with_backpressure",
    ) else {
        return;
    };
    let d = start(hooks(&rec)).await;
    let data = std::fs::read(path).unwrap();
    let mut s = TcpStream::connect(d.running.jt1078_addr).await.unwrap();
    // Garbage first (counted as unattributed/resync), then the capture in
    // odd-sized writes.
    s.write_all(b"garbage!").await.unwrap();
    for c in data.chunks(7919) {
        s.write_all(c).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let log = rec.log.clone();
    // 631 frames + SourceEnded.
    wait_until(|| log.lock().unwrap().len() >= 632).await;
    let msgs = log.lock().unwrap().clone();
    let frames: Vec<_> = msgs
        .iter()
        .filter_map(|m| match m {
            MediaMsg::Frame(f) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(frames.len(), 631);
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.kind == FrameKind::IFrame)
            .count(),
        22
    );
    for f in &frames {
        assert_eq!(&*f.stream, "132570034500_1");
        assert_eq!(
            (&*f.sim, f.channel, f.payload_type),
            ("132570034500", 1, 98)
        );
        assert_eq!(f.session, SessionKind::Live);
    }
    // In order (one worker per stream) with the device timestamps.
    let ts: Vec<i64> = frames.iter().map(|f| f.capture_ms.unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    // The 625 sub-packaged frames (all but the 6 atomic ones) come behind
    // the muxer's AUD, written by the reassembler.
    let aud = streamcore::codec::VideoCodec::H264.access_unit_delimiter();
    let delimited = frames.iter().filter(|f| f.data.starts_with(aud)).count();
    assert_eq!(delimited, 625);
    let total: usize = frames.iter().map(|f| f.data.len()).sum();
    assert_eq!(total, data.len() - 1634 * 30 + delimited * aud.len());
    assert!(
        matches!(msgs.last(), Some(MediaMsg::SourceEnded { stream, session: SessionKind::Live }) if stream == "132570034500_1")
    );

    let st = d.running.ctx.metrics.stream("132570034500_1").unwrap();
    assert_eq!(
        (st.packets, st.frames, st.i_frames, st.dropped_frames),
        (1634, 631, 22, 0)
    );
    assert_eq!(st.bytes_in, data.len() as u64);
    let (_, m) = http(d.running.http_addr, "GET", "/metrics", "").await;
    assert!(
        m.contains("ingestd_stream_frames_total{stream=\"132570034500_1\"} 631"),
        "{m}"
    );
    assert!(
        m.contains("ingestd_stream_resync_skipped_bytes_total{stream=\"132570034500_1\"} 8"),
        "{m}"
    );

    d.running.shutdown().await;
    // Every worker's handler got the shutdown call.
    assert_eq!(rec.shutdowns.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_port_stream_and_name_validation() {
    let rec = Recorder::default();
    let d = start(hooks(&rec)).await;

    let mut bad = TcpStream::connect(d.running.raw_addr).await.unwrap();
    bad.write_all(b"STREAM bad/name\n").await.unwrap();
    let mut resp = String::new();
    bad.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("ERR"), "{resp}");

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut s = TcpStream::connect(d.running.raw_addr).await.unwrap();
    let mut first = b"STREAM cam-01_test\r\n".to_vec();
    first.extend_from_slice(&payload[..1000]);
    s.write_all(&first).await.unwrap();
    // A second source for the same name is refused while the first is live.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut dup = TcpStream::connect(d.running.raw_addr).await.unwrap();
    dup.write_all(b"STREAM cam-01_test\n").await.unwrap();
    let mut resp = String::new();
    dup.read_to_string(&mut resp).await.unwrap();
    assert_eq!(resp, "ERR stream busy\n");

    s.write_all(&payload[1000..]).await.unwrap();
    s.shutdown().await.unwrap();
    let log = rec.log.clone();
    wait_until(|| {
        log.lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, MediaMsg::SourceEnded { .. }))
    })
    .await;
    let msgs = log.lock().unwrap().clone();
    let mut got = Vec::new();
    for m in &msgs {
        match m {
            MediaMsg::Raw(c) => {
                assert_eq!(&*c.stream, "cam-01_test");
                got.extend_from_slice(&c.data);
            }
            MediaMsg::SourceEnded { stream, session } => {
                assert_eq!(
                    (stream.as_str(), *session),
                    ("cam-01_test", SessionKind::Raw)
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got, payload);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_timeout_closes_silent_connections() {
    let rec = Recorder::default();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ingestd::config::Config::for_tests(dir.path());
    cfg.handshake_timeout = Duration::from_millis(200);
    cfg.max_connections = 2;
    let running = ingestd::server::start(cfg, hooks(&rec)).await.unwrap();
    let mut a = TcpStream::connect(running.jt1078_addr).await.unwrap();
    let mut b = TcpStream::connect(running.jt808_addr).await.unwrap();
    // Third connection is over the limit: closed at once.
    let mut c = TcpStream::connect(running.raw_addr).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)));
    // The two silent ones are closed by the handshake timeout.
    for s in [&mut a, &mut b] {
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap();
        assert!(matches!(n, Ok(0) | Err(_)));
    }
    let m = &running.ctx.metrics;
    assert_eq!(m.connections_rejected.load(Ordering::Relaxed), 1);
    assert_eq!(m.connections_timed_out.load(Ordering::Relaxed), 2);
    running.shutdown().await;
}

/// Holds every message until `open` is set, like a worker stalled behind a
/// burst, and records (stream, first byte, length) once let through.
#[derive(Clone, Default)]
struct Stalled {
    open: Arc<std::sync::atomic::AtomicBool>,
    log: Arc<Mutex<Vec<(String, u8, usize)>>>,
}

impl MediaHandler for Stalled {
    fn handle(&mut self, msg: MediaMsg) {
        while !self.open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
        if let MediaMsg::Frame(f) = msg {
            let first = f.data.first().copied().unwrap_or(0);
            self.log
                .lock()
                .unwrap()
                .push((f.stream.to_string(), first, f.data.len()));
        }
    }
    fn shutdown(&mut self) {}
}

/// Keyframes from every device at once (as after a network hiccup) while the
/// workers are stalled: ingestd reads off the sockets no more than its media
/// queues' byte budget plus what each connection holds on its own (the frame
/// it waits to queue, the one it is reassembling, one read), however much the
/// devices send; TCP holds the rest. Once the workers go on, every frame
/// arrives, in order. With queues bounded in frames only (1,024 per worker)
/// ingestd would read all 32 MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyframe_burst_from_every_device_stays_within_the_queue_budget() {
    const DEVICES: usize = 40;
    const FRAMES: usize = 8;
    const FRAME: usize = 100_000;
    const BUDGET: usize = 256 * 1024;
    /// The most one read of a connection takes in (read_until's reserve).
    const READ: usize = 64 * 1024;
    let stalled = Stalled::default();
    let handler = stalled.clone();
    let hooks = Hooks {
        media: Some(Arc::new(move |_| {
            Box::new(handler.clone()) as Box<dyn MediaHandler>
        })),
        ..Default::default()
    };
    let d = common::start_with(hooks, |c| {
        c.media_workers = 2;
        c.media_queue_bytes = BUDGET;
        c.queue_depth = 1024;
    })
    .await;
    let addr = d.running.jt1078_addr;
    let sims: Vec<String> = (0..DEVICES)
        .map(|i| format!("{:012}", 13_800_000_000u64 + i as u64))
        .collect();
    let mut devices = Vec::new();
    for sim in &sims {
        let sim = sim.clone();
        devices.push(tokio::spawn(async move {
            let mut wire = bytes::BytesMut::new();
            let mut seq = 0u16;
            for k in 0..FRAMES {
                let frame = CaptureFrame {
                    data_type: ingestd::jt1078::DataType::IFrame,
                    ts: k as u64 * 2000,
                    data: vec![k as u8; FRAME],
                };
                packets(&sim, &frame, frame.ts, &mut seq, &mut wire);
            }
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&wire).await.unwrap();
            s
        }));
    }
    // Wait until ingestd stops taking bytes in.
    let metrics = d.running.ctx.metrics.clone();
    let read_in = || -> u64 {
        sims.iter()
            .filter_map(|s| metrics.stream(&format!("{s}_1")))
            .map(|st| st.bytes_in)
            .sum()
    };
    let mut last = (read_in(), std::time::Instant::now());
    let settle = std::time::Instant::now();
    while last.1.elapsed() < Duration::from_millis(500)
        && settle.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = read_in();
        if now != last.0 {
            last = (now, std::time::Instant::now());
        }
    }
    let queued = d.running.ctx.media.queued_bytes();
    // Let the workers go before asserting: a stalled worker would hold the
    // daemon's shutdown, and a failure here would hang instead of failing.
    stalled.open.store(true, Ordering::SeqCst);
    assert!(
        queued <= 2 * BUDGET,
        "{queued} bytes queued for 2 workers of {BUDGET}"
    );
    // A connection publishes its byte count after handing its frames on, so
    // one read per connection may not be counted yet.
    let read_at_most = last.0 as usize + DEVICES * READ;
    let bound = 2 * BUDGET + DEVICES * (2 * FRAME + READ);
    let sent = DEVICES * FRAMES * FRAME;
    assert!(
        read_at_most <= bound,
        "read up to {read_at_most} of {sent} bytes sent: above the bound of {bound}"
    );
    let log = stalled.log.clone();
    wait_until(|| log.lock().unwrap().len() >= DEVICES * FRAMES).await;
    let log = log.lock().unwrap().clone();
    for sim in &sims {
        let name = format!("{sim}_1");
        let order: Vec<u8> = log
            .iter()
            .filter(|(s, _, len)| *s == name && *len == FRAME)
            .map(|(_, k, _)| *k)
            .collect();
        assert_eq!(order, (0..FRAMES as u8).collect::<Vec<_>>(), "{name}");
    }
    for dev in devices {
        drop(dev.await.unwrap());
    }
    d.running.shutdown().await;
}
