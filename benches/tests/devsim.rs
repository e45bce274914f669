//! devsim against an in-process ingestd: N devices log in over JT/T 808,
//! report positions and send video over JT/T 1078: the project's own
//! fixture (always) and a real device capture (when present, see
//! `docs/captures.md`).

use std::path::Path;
use std::process::Command;

#[path = "../../fixtures/captures.rs"]
mod captures;

/// Runs devsim's `devices` devices with `input` against a fresh in-process
/// ingestd on `channel`; checks every frame reached a media worker, each
/// device logged in and reported positions round Shenzhen. Returns devsim's
/// report and the stream counters of each device.
async fn run_devsim(
    input: &Path,
    devices: u32,
    channel: u8,
) -> (String, Vec<ingestd::metrics::StreamStats>) {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let hooks = ingestd::server::Hooks {
        media: None,
        events: Some(tx),
        ..Default::default()
    };
    let d = ingestd::server::start(ingestd::config::Config::for_tests(dir.path()), hooks)
        .await
        .unwrap();
    let (a808, a1078) = (d.jt808_addr.to_string(), d.jt1078_addr.to_string());
    let (input, n, ch) = (input.to_owned(), devices.to_string(), channel.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_devsim"))
            .args(["--jt808", &a808, "--jt1078", &a1078, "--devices", &n])
            .arg("--input")
            .arg(&input)
            .args(["--flat-out", "--sim-base", "13900000000", "--channel", &ch])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = (0..devices)
        .map(|i| format!("{:012}_{channel}", 13_900_000_000u64 + i as u64))
        .collect();
    let sent_frames = |name: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {stdout}"));
        line.split(" frames ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // Media reached the workers (wait for the drain).
    for _ in 0..500 {
        let s = d.ctx.metrics.streams();
        if names
            .iter()
            .all(|n| s.get(n).is_some_and(|s| s.worker_frames == sent_frames(n)))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let stats: Vec<_> = names
        .iter()
        .map(|n| {
            let s = d.ctx.metrics.stream(n).unwrap();
            assert_eq!(
                (s.frames, s.worker_frames, s.dropped_frames),
                (sent_frames(n), sent_frames(n), 0),
                "{n}"
            );
            s
        })
        .collect();
    // Each device registered, authenticated and sent at least one position.
    let registered = d.ctx.registry.devices();
    assert_eq!(registered.len(), devices as usize);
    assert!(registered.iter().all(|d| d.authenticated));
    let mut sims = std::collections::BTreeSet::new();
    while sims.len() < devices as usize {
        match rx.recv_timeout(std::time::Duration::from_secs(5)) {
            Ok(ingestd::sessions::IngestEvent::Position(p)) => {
                // Round Shenzhen, within about 2 km.
                assert!((p.location.lat() - 22.543).abs() < 0.03, "{p:?}");
                assert!((p.location.lon() - 114.058).abs() < 0.03, "{p:?}");
                sims.insert(p.sim);
            }
            Ok(_) => {}
            Err(e) => panic!("positions from {sims:?} only: {e}"),
        }
    }
    d.shutdown().await;
    (stdout, stats)
}

/// The demo's dashcam: a fixture with B-frames, every access unit a frame,
/// typed as a device types them, cut into sub-packages, remuxed without a
/// refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devsim_sends_the_fixture_as_a_dashcam() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/high_b2.h264");
    let aus = streamcore::access_unit::split_access_units(&std::fs::read(&input).unwrap());
    let keyframes = aus.iter().filter(|a| a.keyframe).count() as u64;
    let (stdout, stats) = run_devsim(&input, 2, 1).await;
    for s in &stats {
        assert_eq!(
            (s.frames, s.i_frames, s.rejected_frames),
            (aus.len() as u64, keyframes, 0)
        );
        // More packets than frames: large frames went out as sub-packages.
        assert!(s.packets > s.frames, "{s:?}");
    }
    assert!(stdout.contains("total: 2 devices"), "{stdout}");
}

/// A real device capture, re-addressed per device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devsim_replays_a_device_capture() {
    let Some(input) =
        captures::capture("jt1078_capture_24s.bin", "devsim_replays_a_device_capture")
    else {
        return;
    };
    let (stdout, stats) = run_devsim(&input, 3, 2).await;
    assert!(
        stdout.contains("013900000001_2: frames 631 packets 1634 bytes 1264716"),
        "{stdout}"
    );
    for s in &stats {
        assert_eq!((s.frames, s.i_frames), (631, 22));
    }
}

/// `--burst`: every device holds its media for the hold time of each period, then all send
/// what piled up together. Three raw-mode devices against a plain TCP listener that notes when
/// bytes arrive: every connection goes silent at once for about the hold time, and after each
/// silence every connection's bytes resume together.
#[test]
fn burst_holds_every_device_and_releases_them_together() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    const DEVICES: usize = 3;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/baseline.h264");
    let mut devsim = Command::new(env!("CARGO_BIN_EXE_devsim"))
        .arg("--raw")
        .arg(listener.local_addr().unwrap().to_string())
        .args([
            "--devices",
            &DEVICES.to_string(),
            "--loop",
            "--duration",
            "5",
        ])
        .args(["--burst", "2", "--burst-hold", "800", "--input"])
        .arg(&fixture)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let readers: Vec<_> = (0..DEVICES)
        .map(|_| {
            let (mut conn, _) = listener.accept().unwrap();
            std::thread::spawn(move || {
                let mut arrivals = Vec::new();
                let mut buf = [0u8; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    arrivals.push(t0.elapsed());
                }
                arrivals
            })
        })
        .collect();
    assert!(devsim.wait().unwrap().success());
    let arrivals: Vec<Vec<Duration>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // Silences: gaps over 500 ms between consecutive reads of one connection (at 25 fps a
    // device sends every 40 ms otherwise), as (start, end).
    let silences = |a: &[Duration]| -> Vec<(Duration, Duration)> {
        a.windows(2)
            .filter(|w| w[1] - w[0] > Duration::from_millis(500))
            .map(|w| (w[0], w[1]))
            .collect()
    };
    let per_device: Vec<_> = arrivals.iter().map(|a| silences(a)).collect();
    // Over 5 s with a 2 s period, the holds at 2 s and 4 s come after the devices started.
    assert!(
        per_device.iter().all(|s| s.len() >= 2),
        "every device paused at each burst: {per_device:?}"
    );
    for (i, (start, end)) in per_device[0].iter().enumerate() {
        assert!(
            *end - *start >= Duration::from_millis(600),
            "about the hold time: {per_device:?}"
        );
        for other in &per_device[1..] {
            let (s2, e2) = other[i];
            // Together: the same silence, released within a few frames of each other.
            assert!(
                e2.abs_diff(*end) < Duration::from_millis(250) && s2 < *end && *start < e2,
                "released together: {per_device:?}"
            );
        }
    }
}
