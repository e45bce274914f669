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
    let total: usize = frames.iter().map(|f| f.data.len()).sum();
    assert_eq!(total, data.len() - 1634 * 30);
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
