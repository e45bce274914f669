//! hlsd under abuse, over real sockets: oversized request heads, thousands
//! of slowloris connections, clients that stop reading a segment or read it
//! extremely slowly, while a normal viewer fetches the playlist and every
//! segment within a bound; and the connection slots those clients held
//! come back.

use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const STREAM: &str = "cam-abuse";
/// The large segment (repeated real TS bytes): bigger than any socket
/// buffer pair on loopback (tcp_wmem max 4 MiB + a small receive window),
/// so a client that stops reading really blocks the server's writes.
const BIG: &str = "big-seg";
const BIG_BYTES: usize = 24 * 1024 * 1024;

/// A data dir with a live stream of three real 2 s segments and a stream
/// whose one segment is `BIG_BYTES` long.
fn data_dir() -> (tempfile::TempDir, PathBuf, Vec<Seg>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let clips = Clips::make(6, 0);
    let segs = clips.a.clone();
    let dir = install(&data, STREAM, &segs);
    write_playlist(&dir, &segs, &[], 0, now_ms() - 10_000, false);
    let big = data.join("live").join(BIG);
    std::fs::create_dir_all(&big).unwrap();
    let one = std::fs::read(&segs[0].path).unwrap();
    let mut bytes = Vec::with_capacity(BIG_BYTES + one.len());
    while bytes.len() < BIG_BYTES {
        bytes.extend_from_slice(&one);
    }
    std::fs::write(big.join("0.ts"), &bytes).unwrap();
    let big_seg = Seg {
        seq: 0,
        duration: 2.0,
        path: big.join("0.ts"),
        bytes: bytes.len() as u64,
    };
    write_playlist(&big, &[big_seg], &[], 0, now_ms() - 10_000, false);
    (tmp, data, segs)
}

/// Sends `head` (errors ignored: the server may close first) and returns
/// the status and whether the server closed the connection afterwards.
async fn exchange(addr: SocketAddr, head: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(head).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .unwrap_or(false);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_heads_are_refused_and_closed() {
    let (_tmp, data, _) = data_dir();
    let srv = start(&data, |_| {}).await;
    let req = |extra: &str| {
        format!("GET /live/{STREAM}/index.m3u8 HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
    };
    // A 16 KiB cookie still passes (browsers send a few KiB at most).
    let cookie = format!(
        "Cookie: c={}\r\nConnection: close\r\n",
        "x".repeat(16 * 1024)
    );
    assert_eq!(exchange(srv.addr, &req(&cookie)).await, (200, true));
    // One 64 KiB header, a 1 MiB one, and 300 small ones.
    for (what, extra) in [
        (
            "64 KiB header",
            format!("X-Big: {}\r\n", "a".repeat(64 * 1024)),
        ),
        (
            "1 MiB header",
            format!("X-Big: {}\r\n", "a".repeat(1 << 20)),
        ),
        (
            "300 headers",
            (0..300).map(|i| format!("X-H{i}: v\r\n")).collect(),
        ),
    ] {
        let t = Instant::now();
        let (status, closed) = exchange(srv.addr, &req(&extra)).await;
        assert_eq!(status, 431, "{what}");
        assert!(closed, "{what}: connection left open");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{what}: {:?}",
            t.elapsed()
        );
    }
    // A request line beyond the buffer: refused too (414/431/400).
    let line = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(64 * 1024));
    let (status, closed) = exchange(srv.addr, line.as_bytes()).await;
    assert!(
        [400, 414, 431].contains(&status),
        "long request line: {status}"
    );
    assert!(closed);
    // The server still serves.
    assert_eq!(
        raw(srv.addr, &format!("GET /live/{STREAM}/index.m3u8 HTTP/1.1"))
            .await
            .0,
        200
    );
    srv.shutdown().await;
}

/// A client with a tiny receive window that asks for the big segment.
async fn stalled_reader(addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(format!("GET /live/{BIG}/0.ts HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    s
}

/// Regression: hyper has no write timeout, so clients that asked for a
/// segment and stopped reading held their connection slots for ever and
/// the server answered everyone else 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_release_their_slots() {
    let (_tmp, data, _) = data_dir();
    let srv = start(&data, |c| {
        c.max_connections = 4;
        c.header_timeout = Duration::from_secs(1);
        c.send_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_reader(srv.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("GET /live/{STREAM}/index.m3u8 HTTP/1.1");
    assert_eq!(raw(srv.addr, &path).await.0, 503, "all slots held");
    let t = Instant::now();
    loop {
        if raw(srv.addr, &path).await.0 == 200 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "slots never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let released = t.elapsed();
    // The server cut them: what they can still read ends well short of the
    // segment.
    for mut s in stalled {
        let mut n = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while let Ok(k @ 1..) = s.read(&mut chunk).await {
                n += k;
            }
        })
        .await;
        assert!(n < BIG_BYTES, "read the whole segment ({n} bytes)");
    }
    eprintln!("stalled readers: slots back {released:?} after the first 503");
    srv.shutdown().await;
}

/// Raises the soft open-file limit to the hard one (both ends of every
/// connection live in this process).
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
        "RLIMIT_NOFILE {} < {need}",
        lim.rlim_cur
    );
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Fetches the playlist and every listed segment like a player; returns the
/// longest single fetch.
async fn view(addr: SocketAddr, data: &Path) -> Duration {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{addr}/live/{STREAM}/");
    let mut longest = Duration::ZERO;
    let t = Instant::now();
    let r = client
        .get(format!("{base}index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    longest = longest.max(t.elapsed());
    let uris: Vec<&str> = text.lines().filter(|l| l.ends_with(".ts")).collect();
    assert_eq!(uris.len(), 3, "{text}");
    for uri in uris {
        let t = Instant::now();
        let r = client.get(format!("{base}{uri}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{uri}");
        let body = r.bytes().await.unwrap();
        let want = std::fs::read(data.join("live").join(STREAM).join(uri)).unwrap();
        assert!(body == want, "{uri}: body differs");
        longest = longest.max(t.elapsed());
    }
    longest
}

/// 2000 slowloris connections (half a request line, then nothing), 50
/// clients that stop reading the big segment and 20 that read it at 5 KiB/s,
/// against a limit of 2100: a viewer keeps fetching the playlist and every
/// segment within a second per request; the slowloris connections are closed
/// at the header timeout, the stopped readers at the send timeout (a
/// trickle reader is cut only when its trickle leaves the server's write
/// blocked for the whole send timeout; the figure is printed); afterwards
/// the whole limit is available again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_slow_clients_do_not_stop_a_viewer() {
    const SLOWLORIS: usize = 2000;
    const STOPPED: usize = 50;
    const TRICKLE: usize = 20;
    const LIMIT: usize = 2100;
    raise_nofile(2 * (LIMIT as u64) + 512);
    let started = Instant::now();
    let (_tmp, data, _) = data_dir();
    let srv = start(&data, |c| {
        c.max_connections = LIMIT;
        c.header_timeout = Duration::from_secs(2);
        c.send_timeout = Duration::from_secs(2);
    })
    .await;
    let addr = srv.addr;
    let rss0 = rss_kib();
    let t_open = Instant::now();
    let mut slow = Vec::with_capacity(SLOWLORIS);
    for _ in 0..SLOWLORIS {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /live/cam-abuse/index.m3u8 HT")
            .await
            .unwrap();
        slow.push(s);
    }
    let mut stopped = Vec::new();
    for _ in 0..STOPPED {
        stopped.push(stalled_reader(addr).await);
    }
    let trickle: Vec<_> = (0..TRICKLE)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = stalled_reader(addr).await;
                let mut n = 0usize;
                let mut chunk = [0u8; 1024];
                let t = Instant::now();
                // Reads 1 KiB every 200 ms for up to 8 s; `cut` if the
                // server ended the response first.
                let cut = loop {
                    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
                        Ok(Ok(k @ 1..)) => n += k,
                        _ => break true,
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if t.elapsed() > Duration::from_secs(8) {
                        break false;
                    }
                };
                (n, t.elapsed(), cut)
            })
        })
        .collect();
    let opened_in = t_open.elapsed();
    let rss_held = rss_kib().saturating_sub(rss0);

    // The viewer, while every one of them is connected.
    let longest = view(addr, &data).await;
    assert!(longest < Duration::from_secs(1), "a fetch took {longest:?}");

    // Slowloris: closed at the header timeout.
    let t = Instant::now();
    for mut s in slow {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            r.is_ok(),
            "slowloris connection still open after {:?}",
            t.elapsed()
        );
    }
    let slowloris_closed = t_open.elapsed();
    // Readers: cut at the send timeout, short of the whole segment.
    let mut trickle_cut = 0;
    let mut trickle_bytes = 0;
    for h in trickle {
        let (n, took, cut) = h.await.unwrap();
        assert!(
            n < BIG_BYTES,
            "a 5 KiB/s reader got all {n} bytes in {took:?}"
        );
        trickle_cut += cut as usize;
        trickle_bytes += n;
    }
    drop(stopped);
    // The whole limit is available again: LIMIT connections that complete
    // a request each are all served (none answered 503).
    let mut held = Vec::new();
    let mut busy = 0;
    for i in 0..LIMIT {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /api/streams HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        if &head[9..12] == b"503" {
            busy += 1;
        }
        if i % 10 == 0 {
            held.push(s);
        } else {
            drop(s);
        }
    }
    assert_eq!(busy, 0, "slots still held after the abuse");
    drop(held);
    let longest_after = view(addr, &data).await;
    srv.shutdown().await;
    eprintln!(
        "hlsd abuse: {} connections opened in {opened_in:?}, RSS +{rss_held} KiB while held \
         ({} bytes per connection); viewer's longest fetch {longest:?} during, \
         {longest_after:?} after; slowloris all closed {slowloris_closed:?} after the first \
         connect; {trickle_cut} of {TRICKLE} trickle readers cut by the server ({trickle_bytes} \
         bytes read in all); test {:?}",
        SLOWLORIS + STOPPED + TRICKLE,
        rss_held * 1024 / (SLOWLORIS + STOPPED + TRICKLE) as u64,
        started.elapsed()
    );
}
