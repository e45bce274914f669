//! The ingestd binary: configuration precedence and SIGTERM handling.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn env_over_file_flags_over_env_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ingestd.toml");
    // The file's jt1078 address is invalid: the environment must win over it.
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\njt808_listen = \"127.0.0.1:0\"\njt1078_listen = \"not-an-address\"\nhttp_listen = \"127.0.0.1:0\"\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--raw-listen")
        .arg("127.0.0.1:0")
        .env("INGESTD_JT1078_LISTEN", "127.0.0.1:0")
        // The flag must win over this invalid value.
        .env("INGESTD_RAW_LISTEN", "also-not-an-address")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = out.lines();
    let listening = lines
        .by_ref()
        .map(|l| l.unwrap())
        .find(|l| l.contains("ingestd listening"))
        .expect("daemon started");
    assert!(listening.contains("127.0.0.1:"), "{listening}");
    assert!(dir.path().join("data/live").is_dir());
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}");
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:?}"
    );
}

#[test]
fn unknown_config_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "data_dir = \"/tmp/x\"\njt808_lisen = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jt808_lisen"), "{err}");
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_ingestd"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--database-url",
        "--jt808-listen",
        "--jt1078-listen",
        "--raw-listen",
        "--http-listen",
        "--config",
        "INGESTD_DATA_DIR",
        "0.0.0.0:6808",
        "0.0.0.0:6809",
        "127.0.0.1:6810",
        "127.0.0.1:6811",
        "--device-auth",
        "INGESTD_DEVICE_AUTH",
        "--allowed-sims",
        "--auto-stop-secs",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
