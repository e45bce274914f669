//! Who may connect, byte for byte: with `--device-auth required` a terminal that has not
//! authenticated (0x0102) gets 0x8001 result 1 for everything but registration and
//! authentication and its JT/T 1078 connections are closed; the auth secret lives in the
//! catalog so a restart changes no device's code; the SIM allow-list refuses registration
//! (0x8100 result 4); what 0x0100 said is stored; and live video started through the control
//! API is stopped (0x9102) once nobody watches it.

use std::time::Duration;

use crate::common;

use bytes::BytesMut;
use common::*;
use ingestd::jt808::auth_code;
use ingestd::server::Hooks;
use ingestd::sessions::IngestEvent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PHONE: [u8; 6] = [0x01, 0x38, 0x00, 0x00, 0x00, 0x07];
const SIM: &str = "013800000007";
const OTHER_SIM: &str = "013800000008";

fn register_body() -> Vec<u8> {
    let mut b = vec![0x00, 0x2c, 0x03, 0x00];
    b.extend_from_slice(b"ABCDE");
    let mut model = b"DASHCAM-X1".to_vec();
    model.resize(20, 0);
    b.extend_from_slice(&model);
    b.extend_from_slice(b"T000007");
    b.push(2);
    b.extend_from_slice(b"TEST777");
    b
}

fn location() -> Vec<u8> {
    let mut b = vec![];
    b.extend_from_slice(&0u32.to_be_bytes());
    b.extend_from_slice(&3u32.to_be_bytes());
    b.extend_from_slice(&22_543_096u32.to_be_bytes());
    b.extend_from_slice(&114_057_865u32.to_be_bytes());
    b.extend_from_slice(&45u16.to_be_bytes());
    b.extend_from_slice(&605u16.to_be_bytes());
    b.extend_from_slice(&90u16.to_be_bytes());
    b.extend_from_slice(&[0x24, 0x03, 0x01, 0x12, 0x34, 0x56]);
    b
}

/// The 0x8100 body: the device's serial, the result, the code on success.
fn register_reply(serial: u16, result: u8, code: &str) -> Vec<u8> {
    let mut b = serial.to_be_bytes().to_vec();
    b.push(result);
    if result == 0 {
        b.extend_from_slice(code.as_bytes());
    }
    b
}

async fn start_enforcing() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut cfg = ingestd::config::Config::for_tests(dir.path());
    cfg.auth_secret = Some(SECRET.into());
    cfg.device_auth = true;
    let running = ingestd::server::start(
        cfg,
        Hooks {
            events: Some(tx),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Daemon {
        running,
        events: rx,
        dir,
    }
}

/// A few JT/T 1078 packets of `sim`'s channel 1 (a tiny keyframe).
fn media(sim: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let f = CaptureFrame {
        data_type: ingestd::jt1078::DataType::IFrame,
        ts: 0,
        data: vec![0, 0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x10],
    };
    let mut seq = 0;
    packets(sim, &f, 1_700_000_000_000, &mut seq, &mut out);
    out
}

/// Whether the server closes `s` within `secs`.
async fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    let mut buf = [0u8; 64];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_terminal_gets_failures_and_no_media() {
    let d = start_enforcing().await;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    // Before any login: a position, a heartbeat and a terminal reply. The first two are
    // answered with result 1 (failure); a terminal's own reply is never answered.
    send(&mut s, &frame(0x0200, &PHONE, 10, None, None, &location())).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 0, None, None, &general_reply(10, 0x0200, 1))
    );
    send(&mut s, &frame(0x0002, &PHONE, 11, None, None, &[])).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 1, None, None, &general_reply(11, 0x0002, 1))
    );
    send(
        &mut s,
        &frame(0x0001, &PHONE, 12, None, None, &general_reply(0, 0x9101, 0)),
    )
    .await;
    expect_silence(&mut s).await;

    // Its media is refused while it is not logged in: the connection is closed.
    let mut m = TcpStream::connect(d.running.jt1078_addr).await.unwrap();
    m.write_all(&media(SIM)).await.unwrap();
    assert!(
        closed_within(&mut m, 5).await,
        "media of an unauthenticated SIM closed"
    );

    // Registered, with a wrong code: still refused.
    send(
        &mut s,
        &frame(0x0100, &PHONE, 13, None, None, &register_body()),
    )
    .await;
    let code = auth_code(SECRET, SIM);
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8100, &PHONE, 2, None, None, &register_reply(13, 0, &code))
    );
    send(
        &mut s,
        &frame(0x0102, &PHONE, 14, None, None, b"not-the-code"),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 3, None, None, &general_reply(14, 0x0102, 1))
    );
    send(&mut s, &frame(0x0200, &PHONE, 15, None, None, &location())).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 4, None, None, &general_reply(15, 0x0200, 1))
    );

    // The right code: positions are accepted, and its media too.
    send(
        &mut s,
        &frame(0x0102, &PHONE, 16, None, None, code.as_bytes()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 5, None, None, &general_reply(16, 0x0102, 0))
    );
    send(&mut s, &frame(0x0200, &PHONE, 17, None, None, &location())).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 6, None, None, &general_reply(17, 0x0200, 0))
    );
    let got = wait_events(&d.events, 1, |e| matches!(e, IngestEvent::Position(_)));
    assert_eq!(got.len(), 1, "only the accepted position is reported");

    // Messages in another SIM's name on this connection are not covered by its login.
    let other_phone = [0x01, 0x38, 0x00, 0x00, 0x00, 0x08];
    send(
        &mut s,
        &frame(0x0200, &other_phone, 18, None, None, &location()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(
            0x8001,
            &other_phone,
            7,
            None,
            None,
            &general_reply(18, 0x0200, 1)
        )
    );

    let mut m = TcpStream::connect(d.running.jt1078_addr).await.unwrap();
    m.write_all(&media(SIM)).await.unwrap();
    wait_events(
        &d.events,
        1,
        |e| matches!(e, IngestEvent::MediaSessionStarted(r) if r.sim.as_deref() == Some(SIM)),
    );
    assert!(
        !closed_within(&mut m, 1).await,
        "media of the logged-in SIM stays open"
    );
    let mut other = TcpStream::connect(d.running.jt1078_addr).await.unwrap();
    other.write_all(&media(OTHER_SIM)).await.unwrap();
    assert!(closed_within(&mut other, 5).await);

    let (status, metrics) = http(d.running.http_addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    for line in [
        "ingestd_devices_refused_total{protocol=\"jt808\",reason=\"unauthenticated\"} 5",
        "ingestd_devices_refused_total{protocol=\"jt1078\",reason=\"unauthenticated\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    d.running.shutdown().await;
}

/// Registers `sim` (phone `phone`) and returns the 0x8100 frame it got.
async fn register(addr: std::net::SocketAddr, phone: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(
        &mut s,
        &frame(0x0100, phone, 1, None, None, &register_body()),
    )
    .await;
    let reply = read_frame(&mut s).await;
    (s, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_secret_survives_a_restart_and_the_allow_list_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = ingestd::config::Config::for_tests(dir.path());
        // As deployed: no secret configured (the catalog keeps one), authentication required.
        c.auth_secret = None;
        c.device_auth = true;
        c
    };
    let app = ingestd::app::start(config(), streamcore::StreamConfig::default())
        .await
        .unwrap();
    let (_s, reply) = register(app.running.jt808_addr, &PHONE).await;
    // 0x8100 unescaped: header (12 bytes), serial (2), result (1), the code, checksum.
    let reply = ingestd::jt808::unescape(&reply[1..reply.len() - 1]).unwrap();
    let code = String::from_utf8(reply[15..reply.len() - 1].to_vec()).unwrap();
    assert_eq!(reply[14], 0, "registered");
    assert_eq!(code.len(), 32);
    let secret = app
        .catalog
        .setting(ingestd::access::AUTH_SECRET_SETTING)
        .unwrap()
        .expect("the secret is kept in the catalog");
    assert_eq!(code, auth_code(&secret, SIM));
    // What it runs with, for hlsd's admin view.
    let setting = |n: &str| app.catalog.setting(n).unwrap();
    assert_eq!(setting("ingestd.segment_target_secs").as_deref(), Some("4"));
    assert_eq!(setting("ingestd.device_auth").as_deref(), Some("required"));
    assert_eq!(setting("ingestd.retention_days").as_deref(), Some("7"));
    // What the terminal said about itself is stored.
    assert!(app.flush_catalog(Duration::from_secs(10)));
    let device = app
        .catalog
        .devices()
        .unwrap()
        .into_iter()
        .find(|d| d.sim == SIM)
        .expect("device row");
    assert_eq!(device.plate.as_deref(), Some("TEST777"));
    let t = device.terminal.expect("terminal row");
    assert_eq!(
        (
            t.maker_id.as_str(),
            t.model.as_str(),
            t.terminal_id.as_str(),
            t.plate_color
        ),
        ("ABCDE", "DASHCAM-X1", "T000007", 2)
    );
    app.shutdown().await;

    // After a restart the code the device kept still opens its session.
    let app = ingestd::app::start(config(), streamcore::StreamConfig::default())
        .await
        .unwrap();
    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    send(
        &mut s,
        &frame(0x0102, &PHONE, 2, None, None, code.as_bytes()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 0, None, None, &general_reply(2, 0x0102, 0))
    );
    // The allow-list in the catalog: once it names a SIM, every other is refused.
    app.catalog.allow_sim("013800000099", Some("test")).unwrap();
    app.shutdown().await;

    let app = ingestd::app::start(config(), streamcore::StreamConfig::default())
        .await
        .unwrap();
    // The list is read right after start; give the first read a moment.
    let refused = common_eventually(|| async {
        let (_s, reply) = register(app.running.jt808_addr, &PHONE).await;
        (reply == frame(0x8100, &PHONE, 0, None, None, &register_reply(1, 4, ""))).then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "registration refused with 0x8100 result 4"
    );
    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    send(
        &mut s,
        &frame(0x0102, &PHONE, 2, None, None, code.as_bytes()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 0, None, None, &general_reply(2, 0x0102, 1)),
        "a SIM off the list cannot authenticate either"
    );
    let (_, metrics) = http(app.running.http_addr, "GET", "/metrics", "").await;
    assert!(
        metrics
            .contains("ingestd_devices_refused_total{protocol=\"jt808\",reason=\"not_allowed\"}"),
        "{metrics}"
    );
    // The SIM on the list registers.
    let listed = [0x01, 0x38, 0x00, 0x00, 0x00, 0x99];
    let (_s, reply) = register(app.running.jt808_addr, &listed).await;
    let reply = ingestd::jt808::unescape(&reply[1..reply.len() - 1]).unwrap();
    assert_eq!(reply[14], 0, "the allowed SIM registers");
    app.shutdown().await;
}

async fn common_eventually<F: std::future::Future<Output = Option<()>>>(
    mut probe: impl FnMut() -> F,
) -> Option<()> {
    for _ in 0..50 {
        if probe().await.is_some() {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Reads frames until one with `msg_id` arrives (other platform messages are skipped), or
/// `secs` pass.
async fn next_command(s: &mut TcpStream, msg_id: u16, secs: u64) -> Option<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let f = tokio::time::timeout_at(deadline, read_frame(s))
            .await
            .ok()?;
        if u16::from_be_bytes([f[1], f[2]]) == msg_id {
            return Some(f);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_video_nobody_watches_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ingestd::config::Config::for_tests(dir.path());
    cfg.auth_secret = Some(SECRET.into());
    cfg.device_auth = true;
    cfg.auto_stop = Some(Duration::from_secs(2));
    let app = ingestd::app::start(cfg, streamcore::StreamConfig::default())
        .await
        .unwrap();
    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    send(
        &mut s,
        &frame(0x0100, &PHONE, 1, None, None, &register_body()),
    )
    .await;
    read_frame(&mut s).await;
    let code = auth_code(SECRET, SIM);
    send(
        &mut s,
        &frame(0x0102, &PHONE, 2, None, None, code.as_bytes()),
    )
    .await;
    read_frame(&mut s).await;

    let (status, body) = http(
        app.running.http_addr,
        "POST",
        &format!("/api/devices/{SIM}/channels/1/live"),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        next_command(&mut s, 0x9101, 5).await.is_some(),
        "0x9101 sent"
    );

    // A viewer (any hlsd writes this row) keeps it running past the idle limit.
    let stream = format!("{SIM}_1");
    let watched_until = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < watched_until {
        app.catalog
            .touch_viewer(&stream, "hlsd-test", streamcore::catalog::now_ms())
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(10), s.peek(&mut b)).await;
        assert!(r.is_err(), "nothing is sent while someone watches");
    }
    // The viewer leaves: 0x9102 close audio and video of channel 1 within the limit + a tick.
    let left = std::time::Instant::now();
    let stop = next_command(&mut s, 0x9102, 6).await.expect("0x9102 sent");
    let stop = ingestd::jt808::unescape(&stop[1..stop.len() - 1]).unwrap();
    // Body after the 12-byte header: channel, command 0 (close), close type 0 (audio and
    // video), stream type 0.
    assert_eq!(&stop[12..16], &[1, 0, 0, 0], "{stop:02x?}");
    assert!(
        left.elapsed() >= Duration::from_millis(1500),
        "not before the idle limit"
    );

    // The audit entry is written right after the command.
    let audited = common_eventually(|| async {
        let audit = app.catalog.audit_log(10, None).unwrap();
        audit
            .iter()
            .any(|e| e.action == "live.auto_stop" && e.target == stream && e.actor == "system")
            .then_some(())
    })
    .await;
    assert!(audited.is_some(), "live.auto_stop in the audit log");
    let (_, metrics) = http(app.running.http_addr, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("ingestd_live_auto_stops_total 1"),
        "{metrics}"
    );
    app.shutdown().await;
}
