//! Two ingestd on one catalog (the node registry) and one hlsd whose `--ingestd-url` names only
//! the first: a dashcam whose JT/T 808 session moved to the second node (it reconnected through
//! the balancer while its old connection lingers) gets the operator's 0x9101 there, and its
//! video is ingested there, because hlsd asks the registry which node holds the device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use streamcore::catalog::Catalog;

use super::terminal::{Command, Terminal};
use super::{client, stream_live};
use crate::common::eventually;

const SIM: &str = "013900139000";

async fn node(dir: &std::path::Path, catalog_url: &str, id: &str) -> ingestd::app::App {
    let mut cfg = ingestd::config::Config::for_tests(dir);
    cfg.database_url = catalog_url.to_owned();
    cfg.instance_id = Some(id.to_owned());
    ingestd::app::start(
        cfg,
        streamcore::StreamConfig {
            keep_segments: true,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// The registry's holder of `sim` (ids of live nodes only).
async fn holder(catalog: &Catalog, sim: &str) -> Option<String> {
    let (cat, sim) = (catalog.clone(), sim.to_owned());
    tokio::task::spawn_blocking(move || {
        cat.device_node(&sim, streamcore::catalog::now_ms() - 15_000)
            .unwrap()
            .map(|n| n.id)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn control_reaches_the_node_that_holds_the_device() {
    // B and hlsd share a data dir (without an object store, that is how hlsd sees B's
    // segments); A has its own.
    let (dir_a, dir_h) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let catalog_url = format!("sqlite://{}", dir_h.path().join("catalog.sqlite").display());
    let a = node(dir_a.path(), &catalog_url, "node-a").await;
    let b = node(dir_h.path(), &catalog_url, "node-b").await;
    let catalog = a.catalog.clone();

    // Both nodes registered themselves, with the control URLs they are reached at.
    let nodes = eventually("both nodes in the registry", 10, || async {
        let cat = catalog.clone();
        let nodes = tokio::task::spawn_blocking(move || cat.live_nodes(0).unwrap())
            .await
            .unwrap();
        (nodes.len() == 2).then_some(nodes)
    })
    .await;
    assert_eq!(nodes[0].id, "node-a");
    assert_eq!(
        nodes[0].control_url,
        format!("http://{}", a.running.http_addr)
    );
    assert_eq!(
        nodes[1].control_url,
        format!("http://{}", b.running.http_addr)
    );

    let mut cfg = hlsd::Config::new(dir_h.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.database_url = Some(catalog_url.clone());
    cfg.ingestd_url = format!("http://{}", a.running.http_addr);
    cfg.watch_timeout = Duration::from_secs(30);
    cfg.allow_anonymous = true;
    let hls = hlsd::serve(cfg).await.unwrap();
    let base = format!("http://{}", hls.addr);

    // The dashcam logs in on A, then again on B (the newer connection), A's still open.
    let mut on_a = Terminal::connect(a.running.jt808_addr, SIM).await;
    on_a.send_position(0);
    eventually("A holding the device", 10, || async {
        (holder(&catalog, SIM).await.as_deref() == Some("node-a")).then_some(())
    })
    .await;
    let mut on_b = Terminal::connect(b.running.jt808_addr, SIM).await;
    on_b.send_position(0);
    eventually("B holding the device", 10, || async {
        (holder(&catalog, SIM).await.as_deref() == Some("node-b")).then_some(())
    })
    .await;

    // The operator asks hlsd, which was only told about A.
    let watch = tokio::spawn({
        let url = format!("{base}/api/devices/{SIM}/channels/1/watch");
        async move { client().post(url).send().await.unwrap() }
    });
    match on_b.next_command(Duration::from_secs(20)).await {
        Command::Live { channel, addr } => {
            assert_eq!(channel, 1);
            assert_eq!(addr.port(), b.running.jt1078_addr.port(), "video goes to B");
        }
        other => panic!("expected 0x9101 on B, got {other:?}"),
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sender = stream_live(b.running.jt1078_addr, SIM, 1, stop.clone());
    let answer = watch.await.unwrap();
    let status = answer.status();
    assert_eq!(status, StatusCode::OK, "{}", answer.text().await.unwrap());
    // Nothing reached the stale connection on A.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            on_a.next_command(Duration::from_secs(1))
        )
        .await
        .is_err(),
        "A's stale connection got a command"
    );
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();

    // A node that stops leaves the registry with its devices.
    b.shutdown().await;
    assert_eq!(holder(&catalog, SIM).await, None);
    let left = tokio::task::spawn_blocking({
        let cat = catalog.clone();
        move || cat.live_nodes(0).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, "node-a");
    hls.shutdown().await;
    a.shutdown().await;
}
