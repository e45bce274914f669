//! Crash safety of the real binary: heavy ingest from several devices (the
//! real capture, looped flat out), `kill -9` at pseudo-random moments 20
//! times in a row, restart each time, then a clean SIGTERM run. After every
//! kill and at the end: each playlist parses, names only complete segments
//! (whole TS packets, decoded by ffmpeg without an error), never a `.part`
//! file; every catalog segment row points to an existing file; streams
//! resume after a restart with a DISCONTINUITY; and after the clean run
//! every segment it published has its catalog row.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ingestd::jt1078::{packetize, PacketizeParams, Sim};
use streamcore::catalog::Catalog;

mod common;

const DEVICES: [&str; 3] = ["014000000001", "014000000002", "014000000003"];
const KILLS: usize = 20;

/// One device: connects (retrying while the daemon is down) and sends the
/// capture looped flat out, its clock carried on across laps and reconnects.
fn device(sim: &'static str, addr: SocketAddr, stop: Arc<AtomicBool>) {
    let frames = common::device_video_frames();
    let span = frames.last().unwrap().ts - frames[0].ts + 40;
    let (mut lap, mut i, mut seq) = (0u64, 0usize, 0u16);
    while !stop.load(Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        while !stop.load(Relaxed) {
            let common::CaptureFrame {
                data_type: dt,
                ts,
                data,
            } = &frames[i];
            let p = PacketizeParams {
                sim: Sim::parse(sim).unwrap(),
                channel: 1,
                data_type: *dt,
                payload_type: 98,
                timestamp_ms: 1_700_000_000_000 + lap * span + (ts - frames[0].ts),
                last_i_interval_ms: 0,
                last_frame_interval_ms: 40,
                max_body: 950,
            };
            let mut out = BytesMut::new();
            packetize(&p, &mut seq, data, &mut out);
            i += 1;
            if i == frames.len() {
                (i, lap) = (0, lap + 1);
            }
            if s.write_all(&out).is_err() {
                break;
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Ports {
    jt808: u16,
    jt1078: u16,
    raw: u16,
    http: u16,
}

fn spawn(data: &Path, ports: &Ports, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let a = |p: u16| format!("127.0.0.1:{p}");
    let child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--data-dir")
        .arg(data)
        .args(["--jt808-listen", &a(ports.jt808)])
        .args(["--jt1078-listen", &a(ports.jt1078)])
        .args(["--raw-listen", &a(ports.raw)])
        .args(["--http-listen", &a(ports.http)])
        // The simulated devices send media without a JT/T 808 login.
        .args(["--device-auth", "off"])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", ports.http)).is_err() {
        assert!(Instant::now() < end, "ingestd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A playlist entry: sequence, preceded by DISCONTINUITY, URI.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    discontinuity: bool,
    uri: String,
}

/// Parses a live playlist strictly enough to catch a torn or malformed file.
fn parse_playlist(text: &str) -> Vec<Entry> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "{text}");
    let mut seq = None;
    let mut target = None;
    let mut entries = Vec::new();
    let (mut disc, mut extinf) = (false, None::<f64>);
    for l in lines {
        if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            seq = Some(v.parse::<u64>().unwrap());
        } else if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(v.parse::<u64>().unwrap());
        } else if l == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse().unwrap());
        } else if !l.starts_with('#') && !l.is_empty() {
            let d = extinf
                .take()
                .unwrap_or_else(|| panic!("URI without EXTINF\n{text}"));
            assert!(
                d.round() as u64 <= target.unwrap(),
                "EXTINF {d} > TARGETDURATION\n{text}"
            );
            let s = seq.expect("MEDIA-SEQUENCE before segments") + entries.len() as u64;
            assert_eq!(l, format!("{s}.ts"), "{text}");
            entries.push(Entry {
                seq: s,
                discontinuity: std::mem::take(&mut disc),
                uri: l.to_string(),
            });
        }
    }
    assert!(extinf.is_none(), "EXTINF without URI\n{text}");
    entries
}

/// State of the data dir after a run.
struct Check {
    /// Last listed sequence per stream.
    last: BTreeMap<String, u64>,
    /// Segment files on disk (relative paths) without a catalog row.
    rowless: BTreeSet<String>,
    segment_files: BTreeSet<String>,
}

fn ffmpeg_errors(files: &[PathBuf]) -> String {
    let concat = files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("|");
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(format!("concat:{concat}"))
        // Decode every frame; a 90 kHz time base and passthrough keep the
        // null muxer from rounding jittery device clocks onto equal DTS.
        .args(["-enc_time_base:v", "1:90000", "-fps_mode", "passthrough"])
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg installed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn check(data: &Path, prev: Option<&Check>, resumed: &mut BTreeMap<String, usize>) -> Check {
    let mut last = BTreeMap::new();
    let mut segment_files = BTreeSet::new();
    for d in std::fs::read_dir(data.join("live")).unwrap() {
        let d = d.unwrap().path();
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().file_name().to_string_lossy().into_owned();
            if f.ends_with(".ts") {
                segment_files.insert(format!("live/{name}/{f}"));
            }
        }
        let Ok(text) = std::fs::read_to_string(d.join("index.m3u8")) else {
            continue;
        };
        let entries = parse_playlist(&text);
        let mut files = Vec::new();
        for e in &entries {
            assert!(!e.uri.contains(".part"), "{text}");
            let p = d.join(&e.uri);
            let len = std::fs::metadata(&p)
                .unwrap_or_else(|_| panic!("{name}: {} listed but missing", e.uri))
                .len();
            assert!(
                len > 0 && len.is_multiple_of(188),
                "{name}/{}: {len} bytes",
                e.uri
            );
            files.push(p);
        }
        if !files.is_empty() {
            let errors = ffmpeg_errors(&files);
            assert_eq!(errors, "", "{name}: segments do not decode\n{text}");
        }
        if let Some(e) = entries.last() {
            last.insert(name.clone(), e.seq);
        }
        // Resumed after the restart: the first segment of this run follows
        // a DISCONTINUITY (a kill -9 loses the tail of the previous run).
        if let Some(before) = prev.and_then(|p| p.last.get(&name)) {
            if let Some(first_new) = entries.iter().find(|e| e.seq == before + 1) {
                assert!(first_new.discontinuity, "{name}: no DISCONTINUITY\n{text}");
            }
            if entries.last().is_some_and(|e| e.seq > *before) {
                *resumed.entry(name.clone()).or_default() += 1;
            }
        }
    }
    let catalog = Catalog::open(&format!(
        "sqlite://{}",
        data.join("catalog.sqlite").display()
    ))
    .unwrap();
    let mut rows = BTreeSet::new();
    for name in last.keys() {
        for row in catalog.segments_in_range(name, i64::MIN, i64::MAX).unwrap() {
            assert!(
                data.join(&row.path).is_file(),
                "catalog row for a missing file: {}",
                row.path
            );
            rows.insert(row.path);
        }
    }
    let rowless = segment_files.difference(&rows).cloned().collect();
    Check {
        last,
        rowless,
        segment_files,
    }
}

#[test]
fn kill_9_during_heavy_ingest_twenty_times() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("ingestd.log");
    let ports = Ports {
        jt808: free_port(),
        jt1078: free_port(),
        raw: free_port(),
        http: free_port(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let addr: SocketAddr = ([127, 0, 0, 1], ports.jt1078).into();
    let devices: Vec<_> = DEVICES
        .iter()
        .map(|sim| {
            let stop = stop.clone();
            std::thread::spawn(move || device(sim, addr, stop))
        })
        .collect();

    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut prev: Option<Check> = None;
    let mut resumed = BTreeMap::new();
    let mut runs_ms = Vec::new();
    for _ in 0..KILLS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let run = Duration::from_millis(500 + x % 1500);
        let mut child = spawn(&data, &ports, &log);
        std::thread::sleep(run);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        runs_ms.push(run.as_millis());
        prev = Some(check(&data, prev.as_ref(), &mut resumed));
    }
    let after_kills = prev.unwrap();
    assert_eq!(
        after_kills.last.len(),
        DEVICES.len(),
        "{:?}",
        after_kills.last
    );

    // A clean run, long enough for every device to come back, then SIGTERM.
    let mut child = spawn(&data, &ports, &log);
    std::thread::sleep(Duration::from_secs(3));
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    stop.store(true, Relaxed);
    for d in devices {
        d.join().unwrap();
    }
    assert!(status.success(), "clean shutdown exit {status:?}");
    let mut clean_resumed = BTreeMap::new();
    let end = check(&data, Some(&after_kills), &mut clean_resumed);
    for sim in DEVICES {
        let name = format!("{sim}_1");
        assert_eq!(clean_resumed.get(&name), Some(&1), "{name} did not resume");
        let text =
            std::fs::read_to_string(data.join("live").join(&name).join("index.m3u8")).unwrap();
        assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    }
    // Every segment the clean run published has its row; the rows the
    // killed runs lost (written asynchronously) stay missing.
    let clean_files: BTreeSet<&String> = end
        .segment_files
        .difference(&after_kills.segment_files)
        .collect();
    assert!(!clean_files.is_empty());
    let clean_rowless: Vec<&&String> = clean_files
        .iter()
        .filter(|f| end.rowless.contains(**f))
        .collect();
    assert!(
        clean_rowless.is_empty(),
        "segments of the clean run without a catalog row: {clean_rowless:?}"
    );
    // Every session a killed run left open was closed by the next start,
    // and the clean run closed its own.
    let catalog = Catalog::open(&format!(
        "sqlite://{}",
        data.join("catalog.sqlite").display()
    ))
    .unwrap();
    let mut sessions = 0;
    for name in end.last.keys() {
        for s in catalog.sessions_of_stream(name, 0, i64::MAX).unwrap() {
            assert!(s.ended_ms.is_some(), "session left open: {s:?}");
            sessions += 1;
        }
    }
    eprintln!(
        "crash_safety: {:?} total, runs {runs_ms:?} ms, resumed per stream {resumed:?}, \
         segment files {}, files without rows after the kills {}, sessions {sessions}",
        started.elapsed(),
        end.segment_files.len(),
        end.rowless.len(),
    );
    for (name, n) in &resumed {
        assert!(
            *n >= KILLS / 2,
            "{name} resumed in only {n} of {} restarts",
            KILLS - 1
        );
    }
}
