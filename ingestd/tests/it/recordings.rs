//! The device's recordings over real sockets: the control API's 0x9205
//! query answered by a 0x1205 list (built here byte by byte from the spec,
//! sub-packaged as devices send long lists), the 0x9202 playback controls,
//! and what happens when a device refuses, stays silent or sends garbage.

use crate::common::*;
use ingestd::jt808::auth_code;
use ingestd::server::Hooks;
use tokio::net::TcpStream;

const PHONE: [u8; 6] = [0x01, 0x39, 0x00, 0x13, 0x90, 0x00];
const SIM: &str = "013900139000";
/// 2024-03-01 00:00:00 UTC+8.
const DAY0: i64 = 1_709_222_400_000;

/// BCD `YYMMDDhhmmss` of a Unix ms time in UTC+8, written from the spec.
fn bcd(ms: i64) -> [u8; 6] {
    let t = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000)
        .unwrap()
        .naive_utc();
    use chrono::{Datelike, Timelike};
    let b = |v: u32| ((v / 10) << 4 | (v % 10)) as u8;
    [
        b(t.year() as u32 % 100),
        b(t.month()),
        b(t.day()),
        b(t.hour()),
        b(t.minute()),
        b(t.second()),
    ]
}

/// One recording entry as the device holds it.
#[derive(Clone, Debug, PartialEq)]
struct Entry {
    channel: u8,
    start_ms: i64,
    end_ms: i64,
    alarm: u64,
    size: u32,
}

fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|i| Entry {
            channel: (i % 4) as u8 + 1,
            start_ms: DAY0 + i as i64 * 120_000,
            end_ms: DAY0 + i as i64 * 120_000 + 60_000,
            alarm: if i % 9 == 0 { 1 << 1 | 1 << 32 } else { 0 },
            size: 4_000_000 + i as u32,
        })
        .collect()
}

/// A 0x1205 body: serial, count, 28-byte entries (JT/T 1078-2016 table 29).
fn list_body(serial: u16, items: &[Entry]) -> Vec<u8> {
    let mut b = serial.to_be_bytes().to_vec();
    b.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for e in items {
        b.push(e.channel);
        b.extend_from_slice(&bcd(e.start_ms));
        b.extend_from_slice(&bcd(e.end_ms));
        b.extend_from_slice(&e.alarm.to_be_bytes());
        b.extend_from_slice(&[0, 1, 1]);
        b.extend_from_slice(&e.size.to_be_bytes());
    }
    b
}

/// The body of a frame read off the wire (unescaped, 2013 header, no
/// sub-package), and its message id and serial.
fn parse(frame: &[u8]) -> (u16, u16, Vec<u8>) {
    let raw = ingestd::jt808::unescape(&frame[1..frame.len() - 1]).unwrap();
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    let serial = u16::from_be_bytes([raw[10], raw[11]]);
    (id, serial, raw[12..raw.len() - 1].to_vec())
}

async fn login(sock: &mut TcpStream) {
    let mut reg = vec![0x00, 0x2c, 0x03, 0x00];
    reg.extend_from_slice(b"ABCDE");
    reg.extend_from_slice(&[0; 20]);
    reg.extend_from_slice(b"T000001");
    reg.push(1);
    reg.extend_from_slice(b"REC123");
    send(sock, &frame(0x0100, &PHONE, 1, None, None, &reg)).await;
    let _ = read_frame(sock).await;
    let code = auth_code(SECRET, SIM);
    send(sock, &frame(0x0102, &PHONE, 2, None, None, code.as_bytes())).await;
    let _ = read_frame(sock).await;
}

/// The device's 0x0001 (with its own `serial`) answering the platform's `to`.
async fn answer(s: &mut TcpStream, serial: u16, to: u16, msg_id: u16, result: u8) {
    let body = general_reply(to, msg_id, result);
    send(s, &frame(0x0001, &PHONE, serial, None, None, &body)).await;
}

/// Starts `POST path` with `body` on the control API; the pending answer.
fn post(
    addr: std::net::SocketAddr,
    path: String,
    body: String,
) -> tokio::task::JoinHandle<(u16, String)> {
    tokio::spawn(async move { http(addr, "POST", &path, &body).await })
}

/// Starts `GET path` on the control API and returns the pending answer.
fn get(
    addr: std::net::SocketAddr,
    path: String,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    tokio::spawn(async move {
        let (status, body) = http(addr, "GET", &path, "").await;
        let v = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, v)
    })
}

fn check_listed(v: &serde_json::Value, want: &[Entry]) {
    let got: Vec<Entry> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|o| {
            assert_eq!(
                (
                    o["av_type"].as_u64(),
                    o["stream_type"].as_u64(),
                    o["storage_type"].as_u64()
                ),
                (Some(0), Some(1), Some(1))
            );
            Entry {
                channel: o["channel"].as_u64().unwrap() as u8,
                start_ms: o["start_ms"].as_i64().unwrap(),
                end_ms: o["end_ms"].as_i64().unwrap(),
                alarm: o["alarm"].as_u64().unwrap(),
                size: o["size"].as_u64().unwrap() as u32,
            }
        })
        .collect();
    assert_eq!(got, want);
}

/// 500 recordings come back in 15 sub-packages of at most 1,000 bytes,
/// after the device's 0x0001; the query went out with the asked channel,
/// times in UTC+8 BCD and filters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_packaged_list_of_500_recordings_is_answered_as_json() {
    let d = start(Hooks::default()).await;
    let api = d.running.http_addr;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    let pending = get(
        api,
        format!(
            "/api/devices/{SIM}/recordings?channel=0&from={DAY0}&to={}&alarm_mask=2&av_type=3&storage_type=1",
            DAY0 + 86_400_000
        ),
    );
    let (id, serial, body) = parse(&read_frame(&mut s).await);
    assert_eq!(id, 0x9205);
    let mut want = vec![0];
    want.extend_from_slice(&[0x24, 0x03, 0x01, 0, 0, 0]);
    want.extend_from_slice(&[0x24, 0x03, 0x02, 0, 0, 0]);
    want.extend_from_slice(&2u64.to_be_bytes());
    want.extend_from_slice(&[3, 0, 1]);
    assert_eq!(body, want);
    // The device acknowledges the query first, as many do.
    answer(&mut s, 10, serial, 0x9205, 0).await;
    let items = entries(500);
    let body = list_body(serial, &items);
    let parts: Vec<&[u8]> = body.chunks(1000).collect();
    assert_eq!(parts.len(), 15);
    let mut wire = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let sub = Some((parts.len() as u16, i as u16 + 1));
        wire.extend_from_slice(&frame(0x1205, &PHONE, 20 + i as u16, None, sub, p));
    }
    send(&mut s, &wire).await;
    let (status, v) = pending.await.unwrap();
    assert_eq!(status, 200, "{v}");
    check_listed(&v, &items);
    // Every part got its 0x8001.
    for i in 0..parts.len() as u16 {
        let (id, _, body) = parse(&read_frame(&mut s).await);
        assert_eq!(
            (id, &body[..4]),
            (0x8001, &[0, 20 + i as u8, 0x12, 0x05][..])
        );
    }
    d.running.shutdown().await;
}

/// A list whose count disagrees with its length is refused with 0x8001
/// "message error", the request times out (504), and the connection goes
/// on: the next query is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_list_is_refused_and_the_connection_survives() {
    let d = start(Hooks::default()).await;
    let api = d.running.http_addr;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    let path = format!("/api/devices/{SIM}/recordings?channel=2&timeout_ms=800");
    let pending = get(api, path.clone());
    let (id, serial, body) = parse(&read_frame(&mut s).await);
    assert_eq!(id, 0x9205);
    assert_eq!(body[0], 2);
    assert_eq!(&body[1..13], &[0; 12], "no time bounds: zeros");
    let mut bad = list_body(serial, &entries(3));
    bad[5] = 4; // says 4 entries, holds 3
    send(&mut s, &frame(0x1205, &PHONE, 30, None, None, &bad)).await;
    let (id, _, body) = parse(&read_frame(&mut s).await);
    assert_eq!((id, body), (0x8001, general_reply(30, 0x1205, 2)));
    let (status, v) = pending.await.unwrap();
    assert_eq!(status, 504, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("did not answer"),
        "{v}"
    );

    let pending = get(api, path);
    let (_, serial, _) = parse(&read_frame(&mut s).await);
    let items = entries(2);
    send(
        &mut s,
        &frame(0x1205, &PHONE, 31, None, None, &list_body(serial, &items)),
    )
    .await;
    let (status, v) = pending.await.unwrap();
    assert_eq!(status, 200, "{v}");
    check_listed(&v, &items);
    d.running.shutdown().await;
}

/// An answer to another query is not taken for this one; a refusal is 502
/// with the device's result; an offline device is 404; a bad query is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_their_query_and_failures_say_why() {
    let d = start(Hooks::default()).await;
    let api = d.running.http_addr;
    let (status, v) = get(api, format!("/api/devices/{SIM}/recordings"))
        .await
        .unwrap();
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"], "device not connected");
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    for bad in ["channel=x", "from=1&bogus=2", "from=4102444800000"] {
        let (status, v) = get(api, format!("/api/devices/{SIM}/recordings?{bad}"))
            .await
            .unwrap();
        assert_eq!(status, 400, "{bad}: {v}");
    }
    expect_silence(&mut s).await;

    let pending = get(
        api,
        format!("/api/devices/{SIM}/recordings?timeout_ms=1500"),
    );
    let (_, serial, _) = parse(&read_frame(&mut s).await);
    // A list for another serial, then the right one.
    let stale = list_body(serial.wrapping_add(100), &entries(1));
    send(&mut s, &frame(0x1205, &PHONE, 40, None, None, &stale)).await;
    let items = entries(3);
    send(
        &mut s,
        &frame(0x1205, &PHONE, 41, None, None, &list_body(serial, &items)),
    )
    .await;
    let (status, v) = pending.await.unwrap();
    assert_eq!(status, 200, "{v}");
    check_listed(&v, &items);
    for _ in 0..2 {
        read_frame(&mut s).await;
    }

    let pending = get(api, format!("/api/devices/{SIM}/recordings"));
    let (_, serial, _) = parse(&read_frame(&mut s).await);
    answer(&mut s, 42, serial, 0x9205, 3).await;
    let (status, v) = pending.await.unwrap();
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["result"], 3);
    d.running.shutdown().await;
}

/// Each 0x9202 action as its bytes (channel, control, speed code, seek time
/// in UTC+8 BCD); a playback of a channel that is uploading is refused
/// with 409 unless it replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playback_controls_and_one_playback_per_channel() {
    let d = start(Hooks::default()).await;
    let api = d.running.http_addr;
    let mut s = TcpStream::connect(d.running.jt808_addr).await.unwrap();
    login(&mut s).await;
    let path = format!("/api/devices/{SIM}/channels/2/playback/control");
    let seek = DAY0 + 3_600_000 + 5_000;
    for (body, want) in [
        (r#"{"action":"pause"}"#.to_string(), [2, 1, 0]),
        (r#"{"action":"resume"}"#.to_string(), [2, 0, 0]),
        (r#"{"action":"speed","speed":4}"#.to_string(), [2, 3, 3]),
        (r#"{"action":"rewind","speed":16}"#.to_string(), [2, 4, 5]),
        (r#"{"action":"keyframes"}"#.to_string(), [2, 6, 0]),
        (
            format!(r#"{{"action":"seek","seek_ms":{seek}}}"#),
            [2, 5, 0],
        ),
        (r#"{"action":"stop"}"#.to_string(), [2, 2, 0]),
    ] {
        let pending = post(api, path.clone(), body.clone());
        let (id, serial, got) = parse(&read_frame(&mut s).await);
        assert_eq!(id, 0x9202, "{body}");
        assert_eq!(&got[..3], &want, "{body}");
        let time = if want[1] == 5 { bcd(seek) } else { [0; 6] };
        assert_eq!(&got[3..], &time, "{body}");
        answer(&mut s, serial, serial, 0x9202, 0).await;
        let (status, text) = pending.await.unwrap();
        assert_eq!(status, 200, "{body}: {text}");
    }
    for bad in [
        r#"{"action":"fly"}"#,
        r#"{"action":"speed"}"#,
        r#"{"action":"speed","speed":3}"#,
        r#"{"action":"seek"}"#,
    ] {
        let (status, text) = http(api, "POST", &path, bad).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
    expect_silence(&mut s).await;

    // A playback is awaited on channel 2: a second one is refused.
    let playback = format!("/api/devices/{SIM}/channels/2/playback");
    let span = format!(r#""start_ms":{},"end_ms":{}"#, DAY0, DAY0 + 60_000);
    let first = post(
        api,
        playback.clone(),
        format!(r#"{{{span},"mode":1,"speed":4}}"#),
    );
    let (id, serial, body) = parse(&read_frame(&mut s).await);
    assert_eq!(id, 0x9201);
    let n = body[0] as usize;
    assert_eq!(
        &body[1 + n + 4..1 + n + 10],
        &[2, 0, 0, 0, 1, 3],
        "mode fast forward, 4x"
    );
    answer(&mut s, serial, serial, 0x9201, 0).await;
    let (status, text) = first.await.unwrap();
    assert_eq!(status, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stream"], format!("{SIM}_2_pb"));
    assert_eq!(v["acknowledged"], true);
    let (status, text) = http(api, "POST", &playback, &format!("{{{span}}}")).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains(v["playback_id"].as_str().unwrap()), "{text}");
    // Replacing stops the old one (0x9202 stop) and asks again.
    let again = post(
        api,
        playback.clone(),
        format!(r#"{{{span},"replace":true}}"#),
    );
    let (id, serial, body) = parse(&read_frame(&mut s).await);
    assert_eq!((id, &body[..3]), (0x9202, &[2, 2, 0][..]));
    answer(&mut s, serial, serial, 0x9202, 0).await;
    let (id, serial, _) = parse(&read_frame(&mut s).await);
    assert_eq!(id, 0x9201);
    // A device refusing the playback: 502, and the channel is free again.
    answer(&mut s, serial, serial, 0x9201, 1).await;
    let (status, text) = again.await.unwrap();
    assert_eq!(status, 502, "{text}");
    let retry = post(api, playback.clone(), format!("{{{span}}}"));
    let (id, serial, _) = parse(&read_frame(&mut s).await);
    assert_eq!(id, 0x9201);
    answer(&mut s, serial, serial, 0x9201, 0).await;
    assert_eq!(retry.await.unwrap().0, 200);
    d.running.shutdown().await;
}
