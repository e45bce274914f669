//! The `hlsd` binary: documented flags, precedence flags > environment > config file >
//! defaults, clear start-up errors, and a clean exit on SIGTERM.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hlsd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hlsd"));
    // The test environment must not leak HLSD_* settings into these runs.
    for (k, _) in std::env::vars() {
        if k.starts_with("HLSD_") {
            c.env_remove(k);
        }
    }
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(child: &mut Child, addr: SocketAddr) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn stop(mut child: Child) -> std::process::ExitStatus {
    // kill(1) with SIGTERM, as a service manager would stop it.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "hlsd did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_documents_every_flag_and_variable() {
    let out = hlsd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--data-dir",
        "--database-url",
        "--listen",
        "--ingestd-url",
        "--config",
        "--token-secret",
        "--max-connections",
        "--watch-timeout-secs",
        "--live-timeout-secs",
        "--header-timeout-secs",
        "HLSD_DATA_DIR",
        "HLSD_DATABASE_URL",
        "HLSD_LISTEN",
        "HLSD_INGESTD_URL",
        "HLSD_TOKEN_SECRET",
        "HLSD_MAX_CONNECTIONS",
        "0.0.0.0:8080",
        "http://127.0.0.1:6811",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn flags_beat_env_beat_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("live")).unwrap();
    let (p_file, p_env, p_flag) = (free_port(), free_port(), free_port());
    let conf = dir.path().join("hlsd.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:{p_file}\"\nmax_connections = 8\n",
            data
        ),
    )
    .unwrap();
    let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };

    // File alone.
    let mut child = hlsd().arg("--config").arg(&conf).spawn().unwrap();
    assert!(
        wait_listening(&mut child, addr(p_file)),
        "listens where the file says"
    );
    assert!(stop(child).success(), "exit 0 on SIGTERM");

    // Environment over file.
    let mut child = hlsd()
        .env("HLSD_CONFIG", &conf)
        .env("HLSD_LISTEN", format!("127.0.0.1:{p_env}"))
        .spawn()
        .unwrap();
    assert!(
        wait_listening(&mut child, addr(p_env)),
        "listens where the environment says"
    );
    assert!(TcpStream::connect(addr(p_file)).is_err());
    assert!(stop(child).success());

    // Flag over environment.
    let mut child = hlsd()
        .arg("--config")
        .arg(&conf)
        .env("HLSD_LISTEN", format!("127.0.0.1:{p_env}"))
        .args(["--listen", &format!("127.0.0.1:{p_flag}")])
        .spawn()
        .unwrap();
    assert!(
        wait_listening(&mut child, addr(p_flag)),
        "listens where the flag says"
    );
    assert!(TcpStream::connect(addr(p_env)).is_err());
    assert!(stop(child).success());
}

#[test]
fn clear_startup_errors() {
    let out = hlsd().output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--data-dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("bad.toml");
    std::fs::write(&conf, "data_dir = \"/tmp\"\nlisen = \"127.0.0.1:1\"\n").unwrap();
    let out = hlsd().arg("--config").arg(&conf).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lisen"),
        "names the unknown key"
    );

    let out = hlsd()
        .args([
            "--data-dir",
            "/nonexistent/hlsd-data",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hlsd-data"));
}
