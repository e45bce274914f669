//! recvfloor, the load benchmark's floor, really stores what it receives:
//! two devsim devices send the project's fixture over JT/T 1078 and each
//! connection's files hold exactly the bytes sent, in order.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn stored(dir: &Path) -> Vec<u8> {
    let mut files: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().path())
                .map(|p| {
                    let n = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                    (n, p)
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .flat_map(|(_, p)| std::fs::read(p).unwrap())
        .collect()
}

#[test]
fn recvfloor_stores_every_byte_devsim_sends() {
    let out = tempfile::tempdir().unwrap();
    let mut floor = Command::new(env!("CARGO_BIN_EXE_recvfloor"))
        .args(["--listen", "127.0.0.1:0", "--file-bytes", "100000", "--out"])
        .arg(out.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(floor.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first.strip_prefix("listening ").expect(&first).to_string();
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/high_b2.h264");
    let sent = Command::new(env!("CARGO_BIN_EXE_devsim"))
        .args([
            "--jt1078",
            &addr,
            "--devices",
            "2",
            "--flat-out",
            "--input",
            input,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{stdout}");
    // Per device: "<name>: frames F packets P bytes B ...".
    let per_device: Vec<usize> = stdout
        .lines()
        .filter(|l| !l.starts_with("total:"))
        .filter_map(|l| l.split(" bytes ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(per_device.len(), 2, "{stdout}");
    // The connections end at devsim's exit; their last bytes may still be
    // on the way to the files.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (a, b) = loop {
        let (a, b) = (
            stored(&out.path().join("c0")),
            stored(&out.path().join("c1")),
        );
        if a.len() + b.len() == per_device.iter().sum::<usize>() || Instant::now() > deadline {
            break (a, b);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for data in [&a, &b] {
        assert_eq!(data.len(), per_device[0], "a device's bytes, all stored");
        assert_eq!(&data[..4], b"01cd", "starts with a JT/T 1078 packet");
    }
    // One device per connection (in accept order): the SIM of the first
    // packet (BCD, bytes 8..14) is device 0's in one, device 1's in the other.
    let mut sims = [a[8..14].to_vec(), b[8..14].to_vec()];
    sims.sort();
    assert_eq!(
        sims,
        [
            vec![0x01, 0x38, 0, 0, 0, 0x00],
            vec![0x01, 0x38, 0, 0, 0, 0x01]
        ]
    );
    assert!(
        a.len() > 200_000,
        "files rotate at 100 kB: several files each"
    );
    assert!(std::fs::read_dir(out.path().join("c0")).unwrap().count() >= 2);
    Command::new("kill")
        .arg(floor.id().to_string())
        .status()
        .unwrap();
    let total = lines.next().unwrap().unwrap();
    assert!(total.starts_with("total: connections 2 bytes "), "{total}");
    let bytes: usize = total.split_whitespace().nth(4).unwrap().parse().unwrap();
    assert_eq!(bytes, a.len() + b.len());
    assert!(floor.wait().unwrap().success());
}
