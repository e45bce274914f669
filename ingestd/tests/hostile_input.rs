//! Hostile input over real sockets against the whole daemon (in-process),
//! while a control device streams the real 24 s capture: random bytes, a
//! 65535-byte length with no body, endless sub-packages, a magic flood, bad
//! JT/T 808 checksums and escapes, an SPS claiming 65536x65536, zero, frozen
//! and backward timestamps, slowloris senders and hundreds of idle
//! connections up to and beyond the connection limit. Each case asserts the
//! counter it must move; the control stream's playlist must keep advancing
//! during and after the abuse, and decode cleanly at the end.

mod common;

use common::{
    closed_by_peer, control_device, device_video_frames, noise, packets, rss_kib, wait_until,
    CaptureFrame,
};

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ingestd::config::Config;
use ingestd::jt1078::{DataType, Jt1078Packet, Sim, SubPackage};
use ingestd::metrics::Metrics;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONTROL_SIM: &str = "013900000001";
const CONTROL: &str = "013900000001_1";
const HANDSHAKE: Duration = Duration::from_secs(2);
const MAX_FRAME: usize = 256 * 1024;
const MAX_CONNECTIONS: usize = 700;
/// NAL bound of the test streams, and the raw-port case's flood (MiB).
const MAX_NAL: usize = 1024 * 1024;
const RAW_ENDLESS_MIB: u64 = 48;

/// Last media sequence number listed by the control playlist.
fn last_listed(dir: &Path) -> u64 {
    common::last_listed(dir, CONTROL)
}

fn control_segments(m: &Metrics) -> u64 {
    m.stream(CONTROL).map_or(0, |s| s.remux.segments)
}

/// Asserts the control playlist lists a newer segment than `before` within
/// `secs`, and returns the new value.
async fn control_advances(dir: &Path, before: u64, when: &str) -> u64 {
    wait_until(&format!("control playlist advances {when}"), 12, || {
        last_listed(dir) > before
    })
    .await;
    last_listed(dir)
}

/// Writes, ignoring errors (the daemon may close a hostile connection).
async fn blast(s: &mut TcpStream, bytes: &[u8]) {
    let _ = s.write_all(bytes).await;
}

/// An exp-Golomb bit writer for a hand-made SPS.
#[derive(Default)]
struct Bits {
    out: Vec<u8>,
    bit: u32,
}

impl Bits {
    fn put(&mut self, v: u64, n: u32) {
        for i in (0..n).rev() {
            if self.bit.is_multiple_of(8) {
                self.out.push(0);
            }
            if (v >> i) & 1 == 1 {
                *self.out.last_mut().unwrap() |= 0x80 >> (self.bit % 8);
            }
            self.bit += 1;
        }
    }
    fn ue(&mut self, v: u64) {
        let x = v + 1;
        let len = 64 - x.leading_zeros();
        self.put(0, len - 1);
        self.put(x, len);
    }
}

/// SPS (Baseline, level 5.1, POC type 2) of 4096x4096 macroblocks, i.e.
/// 65536x65536 pixels: 65535 itself is unreachable in 4:2:0, whose
/// cropping unit is 2 pixels, so this is the largest claim a 16-bit field
/// reader would see.
fn huge_sps() -> Vec<u8> {
    let mut b = Bits::default();
    b.ue(0); // seq_parameter_set_id
    b.ue(0); // log2_max_frame_num_minus4
    b.ue(2); // pic_order_cnt_type
    b.ue(1); // max_num_ref_frames
    b.put(0, 1); // gaps_in_frame_num_value_allowed_flag
    b.ue(4095); // pic_width_in_mbs_minus1
    b.ue(4095); // pic_height_in_map_units_minus1
    b.put(1, 1); // frame_mbs_only_flag
    b.put(1, 1); // direct_8x8_inference_flag
    b.put(0, 1); // frame_cropping_flag
    b.put(0, 1); // vui_parameters_present_flag
    b.put(1, 1); // rbsp_stop_one_bit
    while !b.bit.is_multiple_of(8) {
        b.put(0, 1);
    }
    let mut nal = vec![0x67, 66, 0, 51];
    // Emulation prevention: no 00 00 0x (x <= 3) inside a NAL unit.
    let mut zeros = 0;
    for &byte in &b.out {
        if zeros >= 2 && byte <= 3 {
            nal.push(3);
            zeros = 0;
        }
        nal.push(byte);
        zeros = if byte == 0 { zeros + 1 } else { 0 };
    }
    nal
}

/// The capture's I-frame with its SPS replaced by `sps`.
fn with_sps(iframe: &[u8], sps: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    let starts: Vec<usize> = (0..iframe.len().saturating_sub(3))
        .filter(|&k| iframe[k..k + 3] == [0, 0, 1])
        .collect();
    for (n, &s) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(iframe.len());
        let nal = &iframe[s + 3..end];
        out.extend_from_slice(&[0, 0, 0, 1]);
        if nal.first().map(|b| b & 0x1f) == Some(7) {
            out.extend_from_slice(sps);
        } else {
            out.extend_from_slice(nal.strip_suffix(&[0]).unwrap_or(nal));
        }
        i += 1;
    }
    assert!(i >= 3, "expected SPS, PPS and a slice");
    out
}

fn stream_stat(m: &Metrics, s: &str) -> ingestd::metrics::StreamStats {
    m.stream(s).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_does_not_stop_a_control_device() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.handshake_timeout = HANDSHAKE;
    cfg.idle_timeout = Duration::from_secs(4);
    cfg.max_connections = MAX_CONNECTIONS;
    cfg.max_frame_bytes = MAX_FRAME;
    let stream_cfg = streamcore::StreamConfig {
        keep_segments: true,
        max_nal_bytes: MAX_NAL,
        ..Default::default()
    };
    let app = ingestd::app::start(cfg, stream_cfg).await.unwrap();
    let (a1078, a808) = (app.running.jt1078_addr, app.running.jt808_addr);
    let araw = app.running.raw_addr;
    let m = app.running.ctx.metrics.clone();
    let data = dir.path().to_owned();
    let frames = device_video_frames();

    let stop = Arc::new(AtomicBool::new(false));
    let control = tokio::spawn(control_device(
        a1078,
        CONTROL_SIM,
        2,
        frames.clone(),
        stop.clone(),
    ));
    // Wall-clock gaps between control segments, sampled all along.
    let gaps = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let sampler = {
        let (m, gaps, stop) = (m.clone(), gaps.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut last, mut at) = (0, Instant::now());
            while !stop.load(Relaxed) {
                let n = control_segments(&m);
                if n != last {
                    if last > 0 {
                        gaps.lock().unwrap().push(at.elapsed());
                    }
                    (last, at) = (n, Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            gaps.lock().unwrap().push(at.elapsed());
        })
    };
    wait_until("control stream publishes", 15, || control_segments(&m) >= 1).await;
    let mut listed = last_listed(&data);
    assert!(listed >= 1);

    // Case: zero, frozen and backward device clocks on a separate device,
    // running alongside the other cases.
    let ts_sim = "013900000007";
    let ts_stream = format!("{ts_sim}_1");
    let clocks = {
        let frames = frames.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(a1078).await.unwrap();
            let mut seq = 0;
            let n = frames.len();
            for (i, f) in frames.iter().enumerate() {
                let ts = match i * 3 / n {
                    0 => 0,                 // zero clock
                    1 => 1_700_000_000_000, // frozen clock
                    // running, then 20 s backward at the last quarter
                    _ if i < n * 3 / 4 => 1_700_000_100_000 + (i as u64) * 40,
                    _ => 1_700_000_080_000 + (i as u64) * 40,
                };
                let mut out = BytesMut::new();
                packets(ts_sim, f, ts, &mut seq, &mut out);
                s.write_all(&out).await.unwrap();
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
            s.shutdown().await.unwrap();
        })
    };

    // Case: slowloris on both JT/T ports, one byte per 100 ms: a packet
    // never completes, so the handshake deadline closes them.
    let slowloris = |addr: SocketAddr, bytes: Vec<u8>| {
        tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let t = Instant::now();
            for b in bytes.iter().cycle() {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                if t.elapsed() > HANDSHAKE * 3 {
                    break;
                }
            }
            let closed = closed_by_peer(&mut s, Duration::from_millis(500)).await;
            (closed, t.elapsed())
        })
    };
    let timed_out_before = m.connections_timed_out.load(Relaxed);
    let mut slow_packet = BytesMut::new();
    packets("013900000008", &frames[1], 1, &mut 0, &mut slow_packet);
    let slow_1078 = slowloris(a1078, slow_packet.to_vec());
    // 808: a frame of 70+ bytes, so even one frame takes longer than the
    // handshake timeout at this rate.
    let slow_808 = slowloris(
        a808,
        common::frame(0x0002, &[1, 0x39, 0, 0, 0, 8], 1, None, None, &[0x11; 60]),
    );

    // Case: random bytes on both ports.
    let (resyncs0, unattributed0) = (
        m.jt1078_resyncs.load(Relaxed),
        m.unattributed_bytes.load(Relaxed),
    );
    let mut s = TcpStream::connect(a1078).await.unwrap();
    blast(&mut s, &noise(256 * 1024, 1)).await;
    // A valid packet after the noise completes the resync.
    let mut valid = BytesMut::new();
    packets("013900000002", &frames[1], 1, &mut 0, &mut valid);
    blast(&mut s, &valid).await;
    drop(s);
    let before808 = (
        m.jt808_bad_checksum.load(Relaxed) + m.jt808_bad_frames.load(Relaxed),
        m.jt808_frames.load(Relaxed),
    );
    let mut s = TcpStream::connect(a808).await.unwrap();
    blast(&mut s, &noise(64 * 1024, 2)).await;
    drop(s);
    // The skipped bytes go to the stream the connection turned out to
    // carry, or count as unattributed if it is not known yet at that read.
    wait_until("random 1078 bytes skipped and counted", 5, || {
        let skipped = m.unattributed_bytes.load(Relaxed) - unattributed0
            + stream_stat(&m, "013900000002_1").resync_skipped_bytes;
        m.jt1078_resyncs.load(Relaxed) > resyncs0 && skipped >= 250 * 1024
    })
    .await;
    wait_until("random 808 bytes counted as bad frames", 5, || {
        m.jt808_bad_checksum.load(Relaxed) + m.jt808_bad_frames.load(Relaxed) > before808.0 + 50
    })
    .await;
    assert!(m.jt808_frames.load(Relaxed) > before808.1);

    // Case: a 1078 header with body length 65535 and no body.
    let errors0 = m.jt1078_parse_errors.load(Relaxed);
    let mut hdr = BytesMut::new();
    packets("013900000003", &frames[1], 1, &mut 0, &mut hdr);
    let mut hdr = hdr[..30].to_vec();
    hdr[28] = 0xff;
    hdr[29] = 0xff;
    let mut s = TcpStream::connect(a1078).await.unwrap();
    blast(&mut s, &hdr).await;
    wait_until("65535 body length refused", 5, || {
        m.jt1078_parse_errors.load(Relaxed) > errors0
    })
    .await;
    let t = Instant::now();
    assert!(
        closed_by_peer(&mut s, HANDSHAKE * 2).await,
        "a connection that never completes a packet must be closed"
    );
    assert!(t.elapsed() <= HANDSHAKE + Duration::from_millis(500));
    drop(s);
    listed = control_advances(&data, listed, "after random bytes").await;

    // Case: endless sub-packages (first + middles, never a last): dropped at
    // the frame bound, memory stays bounded.
    let endless = "013900000004";
    let rss0 = rss_kib();
    let mut cycle = BytesMut::new();
    let mut seq = 0u16;
    let body = vec![0x41u8; 900];
    for i in 0..400u32 {
        Jt1078Packet {
            vpxcc: 0x81,
            marker: false,
            payload_type: 98,
            seq,
            sim: Sim::parse(endless).unwrap(),
            channel: 1,
            data_type: DataType::PFrame,
            sub: if i == 0 {
                SubPackage::First
            } else {
                SubPackage::Middle
            },
            timestamp_ms: Some(1),
            last_i_interval_ms: Some(0),
            last_frame_interval_ms: Some(40),
            body: body.clone().into(),
        }
        .encode(&mut cycle);
        seq = seq.wrapping_add(1);
    }
    let rounds = 32 * 1024 * 1024 / cycle.len();
    let mut s = TcpStream::connect(a1078).await.unwrap();
    for _ in 0..rounds {
        s.write_all(&cycle).await.unwrap();
    }
    let endless_stream = format!("{endless}_1");
    wait_until(
        "endless sub-packages dropped at the frame bound",
        10,
        || {
            let st = stream_stat(&m, &endless_stream);
            st.dropped_frames >= rounds as u64 - 1 && st.packets == rounds as u64 * 400
        },
    )
    .await;
    let grown_kib = rss_kib().saturating_sub(rss0);
    drop(s);
    let st = stream_stat(&m, &endless_stream);
    assert_eq!(st.frames, 0, "{st:?}");
    assert!(
        grown_kib < 16 * 1024,
        "RSS grew by {grown_kib} KiB over 32 MiB of sub-packages"
    );

    // Case: a flood of magic bytes.
    let (errors0, resyncs0) = (
        m.jt1078_parse_errors.load(Relaxed),
        m.jt1078_resyncs.load(Relaxed),
    );
    let flood: Vec<u8> = b"01cd".repeat(256 * 1024);
    let rss0 = rss_kib();
    let mut s = TcpStream::connect(a1078).await.unwrap();
    blast(&mut s, &flood).await;
    wait_until("magic flood: every false magic refused", 10, || {
        m.jt1078_parse_errors.load(Relaxed) >= errors0 + 256 * 1024 - 4
    })
    .await;
    assert!(m.jt1078_resyncs.load(Relaxed) >= resyncs0 + 256 * 1024 - 4);
    assert!(rss_kib().saturating_sub(rss0) < 16 * 1024);
    drop(s);

    // Case: one connection inventing a SIM per packet (`First` packets that
    // never complete): only the first MAX_STREAMS pairs get a stream and a
    // partial frame, the rest are refused and counted.
    let refused0 = m.jt1078_refused_packets.load(Relaxed);
    let streams0 = m.streams().len();
    let mut wire = BytesMut::new();
    let body = vec![0x41u8; 900];
    for i in 0..2000u64 {
        Jt1078Packet {
            vpxcc: 0x81,
            marker: false,
            payload_type: 98,
            seq: i as u16,
            sim: Sim::parse(&format!("0141{i:08}")).unwrap(),
            channel: 1,
            data_type: DataType::PFrame,
            sub: SubPackage::First,
            timestamp_ms: Some(1),
            last_i_interval_ms: Some(0),
            last_frame_interval_ms: Some(40),
            body: body.clone().into(),
        }
        .encode(&mut wire);
    }
    let mut s = TcpStream::connect(a1078).await.unwrap();
    s.write_all(&wire).await.unwrap();
    wait_until("invented SIMs refused and counted", 5, || {
        m.jt1078_refused_packets.load(Relaxed)
            >= refused0 + 2000 - ingestd::jt1078::MAX_STREAMS as u64
    })
    .await;
    let opened = m.streams().len() - streams0;
    assert!(
        opened <= ingestd::jt1078::MAX_STREAMS,
        "{opened} streams opened by one connection"
    );
    drop(s);

    // Case: the raw port, one start code then endless bytes: the pending
    // NAL unit is dropped at `max_nal_bytes` (counted), not buffered.
    let raw_stream = "hostile_raw";
    let rss0 = rss_kib();
    let mut s = TcpStream::connect(araw).await.unwrap();
    s.write_all(format!("STREAM {raw_stream}\n").as_bytes())
        .await
        .unwrap();
    s.write_all(&[0, 0, 0, 1, 0x65]).await.unwrap();
    let endless = vec![0x41u8; 1024 * 1024];
    for _ in 0..RAW_ENDLESS_MIB {
        s.write_all(&endless).await.unwrap();
    }
    wait_until("endless raw NAL dropped at the bound", 20, || {
        let st = stream_stat(&m, raw_stream);
        st.worker_bytes >= RAW_ENDLESS_MIB * 1024 * 1024 && st.remux.oversize_nals >= 1
    })
    .await;
    let raw_grown_kib = rss_kib().saturating_sub(rss0);
    assert!(
        raw_grown_kib < 16 * 1024,
        "RSS grew by {raw_grown_kib} KiB over {RAW_ENDLESS_MIB} MiB of one NAL unit"
    );
    let st = stream_stat(&m, raw_stream);
    assert_eq!((st.remux.frames_muxed, st.remux.segments), (0, 0), "{st:?}");
    drop(s);
    listed = control_advances(&data, listed, "after the endless NAL unit").await;

    // Case: JT/T 808 frames with a bad checksum and with a bad escape
    // (7d 03), then a valid one on the same connection.
    let phone = [1, 0x39, 0, 0, 0, 5];
    let (bad_sum0, bad_frames0, messages0) = (
        m.jt808_bad_checksum.load(Relaxed),
        m.jt808_bad_frames.load(Relaxed),
        m.jt808_messages.load(Relaxed),
    );
    let mut wire = Vec::new();
    for serial in 0..10u16 {
        let mut f = common::frame(0x0002, &phone, serial, None, None, &[]);
        let at = f.len() - 2; // the checksum byte, 0x7d-escaped or not
        let at = if f[at - 1] == 0x7d { at - 1 } else { at };
        f[at] = if f[at] == 0x11 { 0x12 } else { 0x11 };
        wire.extend_from_slice(&f);
        let mut f = common::frame(0x0002, &phone, 100 + serial, None, None, &[]);
        f.splice(5..5, [0x7d, 0x03]);
        wire.extend_from_slice(&f);
    }
    wire.extend_from_slice(&common::frame(0x0002, &phone, 200, None, None, &[]));
    let mut s = TcpStream::connect(a808).await.unwrap();
    s.write_all(&wire).await.unwrap();
    wait_until("808 bad frames counted", 5, || {
        m.jt808_messages.load(Relaxed) > messages0
    })
    .await;
    assert_eq!(m.jt808_bad_checksum.load(Relaxed) - bad_sum0, 10);
    assert_eq!(m.jt808_bad_frames.load(Relaxed) - bad_frames0, 10);
    assert_eq!(m.jt808_messages.load(Relaxed) - messages0, 1);
    drop(s);

    // Case: an SPS claiming 65536x65536 (streamcore refuses > 8192x8192).
    let huge = "013900000006";
    let huge_stream = format!("{huge}_1");
    let iframe = frames
        .iter()
        .find(|f| f.data_type == DataType::IFrame)
        .unwrap();
    let hostile = CaptureFrame {
        data_type: DataType::IFrame,
        ts: 0,
        data: with_sps(&iframe.data, &huge_sps()),
    };
    let mut out = BytesMut::new();
    let mut seq = 0;
    for k in 0..5 {
        packets(
            huge,
            &hostile,
            1_700_000_000_000 + k * 40,
            &mut seq,
            &mut out,
        );
    }
    let mut s = TcpStream::connect(a1078).await.unwrap();
    s.write_all(&out).await.unwrap();
    wait_until("hostile SPS dropped and counted", 5, || {
        stream_stat(&m, &huge_stream).remux.bad_nals >= 5
    })
    .await;
    let st = stream_stat(&m, &huge_stream);
    assert_eq!(
        (st.frames, st.remux.frames_muxed, st.remux.segments),
        (5, 0, 0),
        "{st:?}"
    );
    drop(s);
    listed = control_advances(&data, listed, "after floods and bad frames").await;

    // Slowloris: both closed by the handshake deadline, not held open.
    for (what, h) in [("1078", slow_1078), ("808", slow_808)] {
        let (closed, took) = h.await.unwrap();
        assert!(closed, "slowloris on {what} still open after {took:?}");
        assert!(took < HANDSHAKE * 2, "slowloris on {what} lasted {took:?}");
    }
    assert!(m.connections_timed_out.load(Relaxed) >= timed_out_before + 3);

    // Case: hundreds of idle connections up to the limit, then more that
    // are refused; the idle ones are closed by the handshake timeout.
    let (rejected0, timed_out0) = (
        m.connections_rejected.load(Relaxed),
        m.connections_timed_out.load(Relaxed),
    );
    let mut idle = Vec::new();
    for i in 0..MAX_CONNECTIONS + 50 {
        let addr = if i % 2 == 0 { a1078 } else { a808 };
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_until("connections beyond the limit refused", 5, || {
        m.connections_rejected.load(Relaxed) >= rejected0 + 50
    })
    .await;
    let open = m.connections_open_1078.load(Relaxed) + m.connections_open_808.load(Relaxed);
    assert!(open <= MAX_CONNECTIONS as u64, "{open} open");
    listed = control_advances(&data, listed, "with the connection limit reached").await;
    wait_until("idle connections timed out", 10, || {
        m.connections_timed_out.load(Relaxed) >= timed_out0 + MAX_CONNECTIONS as u64 - 60
    })
    .await;
    let mut closed = 0;
    for mut s in idle {
        if closed_by_peer(&mut s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, MAX_CONNECTIONS + 50, "every idle connection closed");

    // The clock-abuse device finished: its stream was remuxed with repaired
    // timestamps and a discontinuity at the backward jump.
    clocks.await.unwrap();
    wait_until("clock-abuse stream counted", 10, || {
        let st = stream_stat(&m, &ts_stream);
        st.remux.repaired_timestamps > 0 && st.remux.discontinuities >= 1 && st.remux.segments >= 2
    })
    .await;

    // After the abuse: the control stream still advances.
    control_advances(&data, listed, "after the abuse").await;
    stop.store(true, Relaxed);
    control.await.unwrap();
    sampler.await.unwrap();
    let control_st = stream_stat(&m, CONTROL);
    app.shutdown().await;

    let max_gap = gaps.lock().unwrap().iter().max().copied().unwrap();
    assert!(
        max_gap < Duration::from_secs(8),
        "control segments stalled for {max_gap:?}"
    );
    assert_eq!(control_st.dropped_frames, 0, "{control_st:?}");
    assert_eq!(control_st.resyncs, 0, "{control_st:?}");
    for (name, strict) in [(CONTROL, true), (ts_stream.as_str(), false)] {
        let index = data.join("live").join(name).join("index.m3u8");
        let text = std::fs::read_to_string(&index).unwrap();
        if strict {
            assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        } else {
            assert!(text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        }
        let out = std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-i"])
            .arg(&index)
            .args(["-f", "null", "-"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{name}: {text}");
    }
    eprintln!(
        "hostile_input: {:?}, control segments {}, max gap {max_gap:?}",
        started.elapsed(),
        control_st.remux.segments
    );
}

async fn counting_daemon(dir: &Path) -> ingestd::server::Running {
    let mut cfg = Config::for_tests(dir);
    cfg.handshake_timeout = Duration::from_secs(1);
    cfg.idle_timeout = Duration::from_secs(2);
    ingestd::server::start(cfg, Default::default())
        .await
        .unwrap()
}

/// Regression: the handshake/idle timeouts were per read, so a sender
/// trickling one byte per 100 ms (never a whole packet) held its
/// connection, and a slot of the connection limit, for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_trickling_bytes_is_closed_at_the_handshake_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let running = counting_daemon(dir.path()).await;
    let frames = device_video_frames();
    let mut pkt = BytesMut::new();
    packets("013900000009", &frames[1], 1, &mut 0, &mut pkt);
    let mut s = TcpStream::connect(running.jt1078_addr).await.unwrap();
    let t = Instant::now();
    for b in pkt.iter() {
        if s.write_all(&[*b]).await.is_err() || t.elapsed() > Duration::from_secs(4) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(closed_by_peer(&mut s, Duration::from_millis(500)).await);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(running.ctx.metrics.connections_timed_out.load(Relaxed), 1);
    running.shutdown().await;
}

/// Regression: resyncs and rejected headers of a connection that never
/// sent a valid packet had no stream to be counted under and were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_before_any_valid_packet_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let running = counting_daemon(dir.path()).await;
    let m = running.ctx.metrics.clone();
    let mut s = TcpStream::connect(running.jt1078_addr).await.unwrap();
    s.write_all(&b"01cd".repeat(1000)).await.unwrap();
    wait_until("magic flood counted", 5, || {
        m.jt1078_parse_errors.load(Relaxed) >= 996 && m.jt1078_resyncs.load(Relaxed) >= 996
    })
    .await;
    assert!(m.streams().is_empty());
    drop(s);
    running.shutdown().await;
}

/// Raises the soft open-file limit to the hard one: thousands of
/// connections take two descriptors each in this process (both ends).
fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur >= need,
        "RLIMIT_NOFILE hard limit {} below the {need} descriptors this test needs",
        lim.rlim_cur
    );
}

/// Thousands of idle connections (3000 on JT/T 1078, half of them sending
/// one byte, 300 on JT/T 808) against a connection limit of 3200, while a
/// control device streams: the ones over the limit are refused and counted,
/// the rest are closed at the handshake timeout and counted, memory stays
/// bounded, and the control stream keeps publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_connections_time_out_while_the_control_stream_runs() {
    const ON_1078: usize = 3000;
    const ON_808: usize = 300;
    const LIMIT: usize = 3200;
    raise_nofile(2 * (ON_1078 + ON_808) as u64 + 512);
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::for_tests(dir.path());
    cfg.handshake_timeout = HANDSHAKE;
    cfg.idle_timeout = Duration::from_secs(4);
    cfg.max_connections = LIMIT;
    let stream_cfg = streamcore::StreamConfig {
        keep_segments: true,
        ..Default::default()
    };
    let app = ingestd::app::start(cfg, stream_cfg).await.unwrap();
    let (a1078, a808) = (app.running.jt1078_addr, app.running.jt808_addr);
    let m = app.running.ctx.metrics.clone();
    let data = dir.path().to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    // Four times real time: a 4 s segment every second.
    let control = tokio::spawn(control_device(
        a1078,
        CONTROL_SIM,
        4,
        device_video_frames(),
        stop.clone(),
    ));
    wait_until("control stream publishes", 15, || control_segments(&m) >= 1).await;
    let listed = last_listed(&data);

    let rss0 = rss_kib();
    let (rejected0, timed_out0) = (
        m.connections_rejected.load(Relaxed),
        m.connections_timed_out.load(Relaxed),
    );
    let t_open = Instant::now();
    let mut idle = Vec::with_capacity(ON_1078 + ON_808);
    for i in 0..ON_1078 + ON_808 {
        let addr = if i < ON_1078 { a1078 } else { a808 };
        let mut s = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            // One byte: the start of a packet or frame that never completes.
            let _ = s.write_all(if i < ON_1078 { b"0" } else { b"~" }).await;
        }
        idle.push(s);
    }
    let opened_in = t_open.elapsed();
    let over = (ON_1078 + ON_808 - LIMIT) as u64;
    wait_until("connections over the limit refused", 10, || {
        m.connections_rejected.load(Relaxed) >= rejected0 + over
    })
    .await;
    let open_peak = m.connections_open_1078.load(Relaxed) + m.connections_open_808.load(Relaxed);
    assert!(open_peak <= LIMIT as u64, "{open_peak} open");
    let rss_peak = rss_kib();
    let advanced = control_advances(&data, listed, "with thousands of idle connections").await;
    // Every idle connection is either refused or timed out (the one free
    // slot is the control device's).
    wait_until("idle connections timed out", 15, || {
        m.connections_timed_out.load(Relaxed) - timed_out0 + m.connections_rejected.load(Relaxed)
            - rejected0
            >= (ON_1078 + ON_808) as u64
    })
    .await;
    let timed_out = m.connections_timed_out.load(Relaxed) - timed_out0;
    let rejected = m.connections_rejected.load(Relaxed) - rejected0;
    let closed_at = t_open.elapsed();
    let mut closed = 0;
    for mut s in idle {
        if closed_by_peer(&mut s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, ON_1078 + ON_808, "every idle connection closed");
    assert_eq!(rejected + timed_out, (ON_1078 + ON_808) as u64);
    assert_eq!(timed_out, (LIMIT - 1) as u64, "all accepted ones timed out");
    control_advances(&data, advanced, "after the idle connections").await;
    let rss_grown_kib = rss_peak.saturating_sub(rss0);
    assert!(
        rss_grown_kib < 64 * 1024,
        "RSS grew by {rss_grown_kib} KiB for {LIMIT} idle connections"
    );
    stop.store(true, Relaxed);
    control.await.unwrap();
    let control_st = stream_stat(&m, CONTROL);
    app.shutdown().await;
    assert_eq!(control_st.dropped_frames, 0, "{control_st:?}");
    eprintln!(
        "idle connections: {} opened in {opened_in:?}, {rejected} refused, {timed_out} timed out, \
         all closed {closed_at:?} after the first connect, RSS +{rss_grown_kib} KiB at the peak \
         ({} bytes per connection), control segments {}, test {:?}",
        ON_1078 + ON_808,
        rss_grown_kib * 1024 / LIMIT as u64,
        control_st.remux.segments,
        started.elapsed()
    );
}
