//! devsim against an in-process ingestd: N devices log in over JT/T 808,
//! report positions and send the real capture over JT/T 1078.

use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devsim_devices_reach_ingestd() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let hooks = ingestd::server::Hooks {
        media: None,
        events: Some(tx),
        metrics: None,
    };
    let d = ingestd::server::start(ingestd::config::Config::for_tests(dir.path()), hooks)
        .await
        .unwrap();
    let input = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/jt1078_capture_24s.bin"
    );
    let (a808, a1078) = (d.jt808_addr.to_string(), d.jt1078_addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_devsim"))
            .args([
                "--jt808",
                &a808,
                "--jt1078",
                &a1078,
                "--devices",
                "3",
                "--input",
                input,
            ])
            .args(["--flat-out", "--sim-base", "13900000000", "--channel", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("013900000001_2: frames 631 packets 1634 bytes 1264716"),
        "{stdout}"
    );
    // Media reached the workers once per device (wait for the drain).
    for _ in 0..500 {
        let s = d.ctx.metrics.streams();
        if (0..3).all(|i| {
            s.get(&format!("01390000000{i}_2"))
                .is_some_and(|s| s.worker_frames == 631)
        }) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for i in 0..3 {
        let s = d.ctx.metrics.stream(&format!("01390000000{i}_2")).unwrap();
        assert_eq!(
            (s.frames, s.i_frames, s.worker_frames, s.dropped_frames),
            (631, 22, 631, 0)
        );
    }
    // Each device registered, authenticated and sent at least one position.
    let devices = d.ctx.registry.devices();
    assert_eq!(devices.len(), 3);
    assert!(devices.iter().all(|d| d.authenticated));
    let mut sims = std::collections::BTreeSet::new();
    while sims.len() < 3 {
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
}
