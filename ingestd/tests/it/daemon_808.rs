//! JT/T 808 conversations over real sockets against the running daemon;
//! replies are checked byte for byte against frames built by hand in
//! `common::frame` from the spec.

use crate::common;

use common::*;
use ingestd::jt808::{auth_code, Location};
use ingestd::media::SessionKind;
use ingestd::server::Hooks;
use ingestd::sessions::IngestEvent;
use tokio::net::TcpStream;

const PHONE: [u8; 6] = [0x01, 0x38, 0x00, 0x13, 0x80, 0x00];
const SIM: &str = "013800138000";

fn register_body_2013() -> Vec<u8> {
    let mut b = vec![0x00, 0x2c, 0x03, 0x00];
    b.extend_from_slice(b"ABCDE");
    let mut model = b"DASHCAM-X1".to_vec();
    model.resize(20, 0);
    b.extend_from_slice(&model);
    b.extend_from_slice(b"T000001");
    b.push(1);
    b.extend_from_slice(b"TEST123");
    b
}

/// North-east point with one extra item (mileage).
fn location_ne() -> Vec<u8> {
    let mut b = vec![];
    b.extend_from_slice(&0u32.to_be_bytes()); // alarm
    b.extend_from_slice(&3u32.to_be_bytes()); // ACC on, positioned
    b.extend_from_slice(&22_543_096u32.to_be_bytes());
    b.extend_from_slice(&114_057_865u32.to_be_bytes());
    b.extend_from_slice(&45u16.to_be_bytes());
    b.extend_from_slice(&605u16.to_be_bytes());
    b.extend_from_slice(&90u16.to_be_bytes());
    b.extend_from_slice(&[0x24, 0x03, 0x01, 0x12, 0x34, 0x56]);
    b.extend_from_slice(&[0x01, 0x04, 0x00, 0x00, 0x12, 0x34]);
    b
}

/// South-west point with an alarm flag.
fn location_sw() -> Vec<u8> {
    let mut b = vec![];
    b.extend_from_slice(&1u32.to_be_bytes()); // emergency alarm
    b.extend_from_slice(&0x0fu32.to_be_bytes()); // + south, west
    b.extend_from_slice(&33_856_784u32.to_be_bytes());
    b.extend_from_slice(&70_651_234u32.to_be_bytes());
    b.extend_from_slice(&500u16.to_be_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b.extend_from_slice(&359u16.to_be_bytes());
    b.extend_from_slice(&[0x23, 0x12, 0x31, 0x23, 0x59, 0x59]);
    b
}

fn batch_body() -> Vec<u8> {
    let (a, b) = (location_ne(), location_sw());
    let mut out = vec![0x00, 0x02, 0x01];
    out.extend_from_slice(&(a.len() as u16).to_be_bytes());
    out.extend_from_slice(&a);
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(&b);
    out
}

fn check_ne(l: &Location) {
    assert_eq!((l.alarm, l.status), (0, 3));
    assert_eq!((l.lat_e6, l.lon_e6), (22_543_096, 114_057_865));
    assert_eq!((l.lat(), l.lon()), (22.543096, 114.057865));
    assert_eq!((l.altitude_m, l.speed_dkmh, l.heading), (45, 605, 90));
    assert_eq!(l.speed_kmh(), 60.5);
    // 2024-03-01 12:34:56 UTC+8.
    assert_eq!(l.time_ms, Some(1_709_267_696_000));
    assert_eq!(l.extras.len(), 1);
    assert_eq!(
        (l.extras[0].0, &l.extras[0].1[..]),
        (1, &[0, 0, 0x12, 0x34][..])
    );
}

fn check_sw(l: &Location) {
    assert_eq!(l.alarm, 1);
    assert_eq!((l.lat_e6, l.lon_e6), (-33_856_784, -70_651_234));
    assert_eq!((l.altitude_m, l.speed_dkmh, l.heading), (500, 0, 359));
    // 2023-12-31 23:59:59 UTC+8.
    assert_eq!(l.time_ms, Some(1_704_038_399_000));
}

fn positions(evs: Vec<IngestEvent>) -> Vec<Location> {
    evs.into_iter()
        .map(|e| match e {
            IngestEvent::Position(p) => {
                assert_eq!(p.sim, SIM);
                p.location
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

fn is_position(e: &IngestEvent) -> bool {
    matches!(e, IngestEvent::Position(_))
}

/// Registers and authenticates; returns the next platform serial.
async fn login(sock: &mut TcpStream) -> u16 {
    send(
        sock,
        &frame(0x0100, &PHONE, 1, None, None, &register_body_2013()),
    )
    .await;
    let _ = read_frame(sock).await;
    let code = auth_code(SECRET, SIM);
    send(sock, &frame(0x0102, &PHONE, 2, None, None, code.as_bytes())).await;
    let r = read_frame(sock).await;
    assert_eq!(
        r,
        frame(0x8001, &PHONE, 1, None, None, &general_reply(2, 0x0102, 0))
    );
    2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_conversation_2013() {
    let d = start(Hooks::default()).await;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();

    // Register with serial 0x7e7d: the echoed serial must be escaped.
    send(
        &mut s,
        &frame(0x0100, &PHONE, 0x7e7d, None, None, &register_body_2013()),
    )
    .await;
    let code = auth_code(SECRET, SIM);
    assert_eq!(code.len(), 32);
    let mut body = vec![0x7e, 0x7d, 0x00];
    body.extend_from_slice(code.as_bytes());
    let expect = frame(0x8100, &PHONE, 0, None, None, &body);
    assert!(expect.windows(4).any(|w| w == [0x7d, 0x02, 0x7d, 0x01]));
    assert_eq!(read_frame(&mut s).await, expect);

    // Wrong code first: failure; then the right one.
    send(&mut s, &frame(0x0102, &PHONE, 1, None, None, b"nope")).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 1, None, None, &general_reply(1, 0x0102, 1))
    );
    send(
        &mut s,
        &frame(0x0102, &PHONE, 2, None, None, code.as_bytes()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 2, None, None, &general_reply(2, 0x0102, 0))
    );

    send(&mut s, &frame(0x0002, &PHONE, 3, None, None, &[])).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 3, None, None, &general_reply(3, 0x0002, 0))
    );

    send(
        &mut s,
        &frame(0x0200, &PHONE, 4, None, None, &location_ne()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 4, None, None, &general_reply(4, 0x0200, 0))
    );
    let p = positions(wait_events(&d.events, 1, is_position));
    check_ne(&p[0]);

    send(&mut s, &frame(0x0704, &PHONE, 5, None, None, &batch_body())).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 5, None, None, &general_reply(5, 0x0704, 0))
    );
    let p = positions(wait_events(&d.events, 2, is_position));
    check_ne(&p[0]);
    check_sw(&p[1]);

    // Unknown message id: 'unsupported' (3).
    send(&mut s, &frame(0x0f00, &PHONE, 6, None, None, &[1, 2, 3])).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 6, None, None, &general_reply(6, 0x0f00, 3))
    );

    // Bad checksum: dropped silently, counted, connection survives, and no
    // platform serial is consumed.
    let mut bad = frame(0x0002, &PHONE, 7, None, None, &[]);
    let n = bad.len();
    bad[n - 2] ^= 0x01;
    send(&mut s, &bad).await;
    expect_silence(&mut s).await;
    send(&mut s, &frame(0x0002, &PHONE, 8, None, None, &[])).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8001, &PHONE, 7, None, None, &general_reply(8, 0x0002, 0))
    );

    let (status, metrics) = http(d.running.http_addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ingestd_jt808_bad_checksum_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ingestd_positions_total 3"), "{metrics}");
    assert!(
        metrics.contains("ingestd_jt808_unsupported_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("ingestd_devices_online 1"), "{metrics}");

    let (status, devices) = http(d.running.http_addr, "GET", "/api/devices", "").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&devices).unwrap();
    assert_eq!(v[0]["sim"], SIM);
    assert_eq!(v[0]["online"], true);
    assert_eq!(v[0]["authenticated"], true);

    // Disconnect: the device goes offline.
    drop(s);
    wait_events(
        &d.events,
        1,
        |e| matches!(e, IngestEvent::DeviceOffline { sim, .. } if sim == SIM),
    );
    let (_, devices) = http(d.running.http_addr, "GET", "/api/devices", "").await;
    let v: serde_json::Value = serde_json::from_str(&devices).unwrap();
    assert_eq!(v[0]["online"], false);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_2019_variant() {
    let d = start(Hooks::default()).await;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    let phone19 = [0x00, 0x00, 0x00, 0x00, 0x01, 0x38, 0x00, 0x13, 0x80, 0x01];
    let sim = "013800138001";
    let mut reg = vec![0x00, 0x2c, 0x03, 0x00];
    for (text, width) in [
        (&b"MAKER2019"[..], 11),
        (b"MODEL-2019", 30),
        (b"TERMINAL-ID-2019", 30),
    ] {
        let mut f = text.to_vec();
        f.resize(width, 0);
        reg.extend_from_slice(&f);
    }
    reg.push(2);
    reg.extend_from_slice(b"PLATE19");
    send(&mut s, &frame(0x0100, &phone19, 10, Some(1), None, &reg)).await;
    let code = auth_code(SECRET, sim);
    let mut body = vec![0x00, 0x0a, 0x00];
    body.extend_from_slice(code.as_bytes());
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x8100, &phone19, 0, Some(1), None, &body)
    );

    let mut auth = vec![code.len() as u8];
    auth.extend_from_slice(code.as_bytes());
    auth.extend_from_slice(b"860000000000001");
    let mut ver = b"SW-1.2.3".to_vec();
    ver.resize(20, 0);
    auth.extend_from_slice(&ver);
    send(&mut s, &frame(0x0102, &phone19, 11, Some(1), None, &auth)).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(
            0x8001,
            &phone19,
            1,
            Some(1),
            None,
            &general_reply(11, 0x0102, 0)
        )
    );

    send(
        &mut s,
        &frame(0x0200, &phone19, 12, Some(1), None, &location_ne()),
    )
    .await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(
            0x8001,
            &phone19,
            2,
            Some(1),
            None,
            &general_reply(12, 0x0200, 0)
        )
    );
    let ev = wait_events(&d.events, 1, is_position);
    let IngestEvent::Position(p) = &ev[0] else {
        unreachable!()
    };
    assert_eq!(p.sim, sim);
    check_ne(&p.location);
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_packaged_batch() {
    let d = start(Hooks::default()).await;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    let next = login(&mut s).await;
    let body = batch_body();
    let (a, b) = body.split_at(30);
    // Both parts in one write, plus the chunk boundary inside the 2nd frame.
    let mut wire = frame(0x0704, &PHONE, 20, None, Some((2, 1)), a);
    wire.extend_from_slice(&frame(0x0704, &PHONE, 21, None, Some((2, 2)), b));
    send(&mut s, &wire).await;
    assert_eq!(
        read_frame(&mut s).await,
        frame(
            0x8001,
            &PHONE,
            next,
            None,
            None,
            &general_reply(20, 0x0704, 0)
        )
    );
    assert_eq!(
        read_frame(&mut s).await,
        frame(
            0x8001,
            &PHONE,
            next + 1,
            None,
            None,
            &general_reply(21, 0x0704, 0)
        )
    );
    let p = positions(wait_events(&d.events, 2, is_position));
    check_ne(&p[0]);
    check_sw(&p[1]);
    d.running.shutdown().await;
}

/// A POST with no body needs no Content-Length (hlsd's forwarding, `curl -X
/// POST`): it used to be answered 411, so no command ever reached a device.
/// Bodies stay bounded: over 16 KiB is 413 before anything is read, and a
/// chunked body (no length to check first) is 411.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_bodies_are_optional_and_bounded() {
    let d = start(Hooks::default()).await;
    let addr = d.running.http_addr;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    let path = "/api/devices/013800138000/channels/1";
    let head = |extra: &str| {
        format!("POST {path}/live HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
    };
    let (status, body) = raw_http(addr, &head("")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(read_frame(&mut s).await[1..3], [0x91, 0x01]);
    let (status, body) = raw_http(addr, &head("Content-Length: 20000\r\n")).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("16 KiB"), "{body}");
    let chunked = head("Transfer-Encoding: chunked\r\n") + "2\r\n{}\r\n0\r\n\r\n";
    let (status, body) = raw_http(addr, &chunked).await;
    assert_eq!(status, 411, "{body}");
    // Nothing else reached the device.
    expect_silence(&mut s).await;
    d.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_api_sends_commands_to_device() {
    let d = start(Hooks::default()).await;
    let http_addr = d.running.http_addr;
    let port = d.running.jt1078_addr.port();

    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/1/live",
        "",
    )
    .await;
    assert_eq!(status, 404, "device not connected yet");

    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    let mut serial = login(&mut s).await;

    // 0x9101 live request: IP of the 808 connection, our 1078 port.
    let (status, resp) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/1/live",
        "",
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["serial"], serial);
    assert_eq!(v["msg_id"], 0x9101);
    let mut body = vec![9];
    body.extend_from_slice(b"127.0.0.1");
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&[0, 0, 1, 0, 0]);
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x9101, &PHONE, serial, None, None, &body)
    );
    serial += 1;

    // Options in the body.
    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/3/live",
        r#"{"data_type":1,"stream_type":1}"#,
    )
    .await;
    assert_eq!(status, 200);
    let mut body = vec![9];
    body.extend_from_slice(b"127.0.0.1");
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&[0, 0, 3, 1, 1]);
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x9101, &PHONE, serial, None, None, &body)
    );
    serial += 1;

    // 0x9102 stop: close audio and video on channel 1.
    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/1/stop",
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x9102, &PHONE, serial, None, None, &[1, 0, 0, 0])
    );
    serial += 1;

    // 0x9201 playback of 2024-03-01 12:34:56..12:35:56 UTC+8.
    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/2/playback",
        r#"{"start_ms":1709267696000,"end_ms":1709267756000}"#,
    )
    .await;
    assert_eq!(status, 200);
    let mut body = vec![9];
    body.extend_from_slice(b"127.0.0.1");
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&[0, 0, 2, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&[0x24, 0x03, 0x01, 0x12, 0x34, 0x56]);
    body.extend_from_slice(&[0x24, 0x03, 0x01, 0x12, 0x35, 0x56]);
    assert_eq!(
        read_frame(&mut s).await,
        frame(0x9201, &PHONE, serial, None, None, &body)
    );

    // Bad requests.
    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/2/playback",
        "{}",
    )
    .await;
    assert_eq!(status, 400);
    // Regression: a time near i64::MAX overflowed the UTC+8 offset (a
    // panic in debug builds); times outside 2000-2099 are refused, and
    // nothing reaches the device.
    for body in [
        r#"{"start_ms":9223372036854775807,"end_ms":9223372036854775807}"#,
        r#"{"start_ms":1709267696000,"end_ms":9223372036854775000}"#,
        r#"{"start_ms":-9223372036854775808,"end_ms":1709267756000}"#,
        r#"{"start_ms":4102444800000,"end_ms":4102444900000}"#,
    ] {
        let (status, text) = http(
            http_addr,
            "POST",
            "/api/devices/013800138000/channels/2/playback",
            body,
        )
        .await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(text.contains("2000-2099"), "{text}");
    }
    expect_silence(&mut s).await;
    let (status, _) = http(
        http_addr,
        "POST",
        "/api/devices/013800138000/channels/2/rewind",
        "",
    )
    .await;
    assert_eq!(status, 400);

    // The media connection that answers the playback request is a playback
    // session; another channel is live.
    let mut media = TcpStream::connect(d.running.jt1078_addr).await.unwrap();
    let mut wire = bytes::BytesMut::new();
    let mut seq = 0;
    for ch in [2u8, 1] {
        let p = ingestd::jt1078::PacketizeParams {
            sim: ingestd::jt1078::Sim::parse(SIM).unwrap(),
            channel: ch,
            data_type: ingestd::jt1078::DataType::IFrame,
            payload_type: 98,
            timestamp_ms: 0,
            last_i_interval_ms: 0,
            last_frame_interval_ms: 0,
            max_body: 950,
        };
        ingestd::jt1078::packetize(&p, &mut seq, &[0, 0, 0, 1, 0x65, 0x88], &mut wire);
    }
    send(&mut media, &wire).await;
    let ev = wait_events(&d.events, 2, |e| {
        matches!(e, IngestEvent::MediaSessionStarted(_))
    });
    let kinds: Vec<(String, SessionKind)> = ev
        .iter()
        .map(|e| match e {
            IngestEvent::MediaSessionStarted(r) => (r.stream.clone(), r.kind),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            (format!("{SIM}_2_pb"), SessionKind::Playback),
            (format!("{SIM}_1"), SessionKind::Live)
        ]
    );
    d.running.shutdown().await;
}

/// The whole daemon with its SQLite catalog: positions land as rows, and a
/// lasting alarm becomes one incident (per configured channel) whose end
/// follows the reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_and_alarms_reach_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ingestd::config::Config::for_tests(dir.path());
    cfg.auth_secret = Some(SECRET.into());
    let app = ingestd::app::start(cfg, streamcore::StreamConfig::default())
        .await
        .unwrap();
    let mut s = TcpStream::connect(app.running.jt808_addr).await.unwrap();
    send(
        &mut s,
        &frame(0x0100, &PHONE, 0, None, None, &register_body_2013()),
    )
    .await;
    read_frame(&mut s).await;
    let code = auth_code(SECRET, SIM);
    send(
        &mut s,
        &frame(0x0102, &PHONE, 1, None, None, code.as_bytes()),
    )
    .await;
    read_frame(&mut s).await;
    send(
        &mut s,
        &frame(0x0200, &PHONE, 2, None, None, &location_ne()),
    )
    .await;
    read_frame(&mut s).await;
    // The same alarm reported twice, a minute apart (23:59:59 and 00:00:59+1d).
    let mut later = location_sw();
    let n = later.len();
    later[n - 6..].copy_from_slice(&[0x24, 0x01, 0x01, 0x00, 0x00, 0x59]);
    for (serial, body) in [(3, location_sw()), (4, later)] {
        send(&mut s, &frame(0x0200, &PHONE, serial, None, None, &body)).await;
        read_frame(&mut s).await;
    }
    drop(s);
    // The incident closes when the device's connection does.
    let catalog = app.catalog.clone();
    let closed = || {
        app.flush_catalog(std::time::Duration::from_secs(10))
            && catalog
                .incidents(SIM, 0, i64::MAX)
                .is_ok_and(|v| v.iter().any(|i| !i.open))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !closed() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.shutdown().await;

    let positions = catalog.positions(SIM, 0, i64::MAX, 10).unwrap();
    assert_eq!(positions.len(), 3, "{positions:?}");
    assert_eq!(
        (positions[0].lat, positions[0].lon),
        (-33.856784, -70.651234)
    );
    assert_eq!(positions[0].alarm, 1);
    let incidents = catalog.incidents(SIM, 0, i64::MAX).unwrap();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    // 2023-12-31 23:59:59 and 2024-01-01 00:00:59 in UTC+8, 15 s either
    // side, on channel 1 (the defaults); closed when the device went away.
    let i = &incidents[0];
    assert_eq!(i.from_ms, 1_704_038_399_000 - 15_000);
    assert_eq!(i.to_ms, 1_704_038_459_000 + 15_000);
    assert_eq!(
        (i.channel, i.kind.as_str(), i.alarm),
        (1, "alarm:emergency", 1)
    );
    assert!(!i.open, "{i:?}");
    assert_eq!((i.lat, i.lon), (Some(-33.856784), Some(-70.651234)));
    let devices = catalog.devices().unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].sim, SIM);
}
