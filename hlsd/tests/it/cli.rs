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
        "--allow-anonymous",
        "HLSD_ALLOW_ANONYMOUS",
        "--session-hours",
        "--max-token-ttl-secs",
        "--instance-id",
        "user",
        "device",
        "0.0.0.0:8080",
        "http://127.0.0.1:6811",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

/// `hlsd user ...` on the daemon's own catalog (same --data-dir): an account made on the
/// command line logs in to a running hlsd, its API key opens the API, and a SIM grant limits
/// what it sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_commands_make_accounts_the_daemon_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let run = |args: &[&str], stdin: Option<&str>| {
        use std::io::Write as _;
        let mut c = hlsd();
        c.args(["--data-dir", &data]).args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The password from stdin (not on the command line, where `ps` shows it).
    let (ok, _, err) = run(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "viewer",
            "--grant",
            "013800000001",
        ],
        Some("alice-password\n"),
    );
    assert!(ok, "{err}");
    let (ok, _, err) = run(
        &[
            "user",
            "add",
            "alice",
            "--role",
            "admin",
            "--password",
            "x-password",
        ],
        None,
    );
    assert!(
        !ok && err.contains("exists"),
        "a taken name is refused: {err}"
    );
    let (ok, _, err) = run(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "viewer",
            "--password",
            "short",
        ],
        None,
    );
    assert!(!ok && err.contains("8 characters"), "{err}");
    let (ok, _, err) = run(
        &[
            "user",
            "add",
            "bob",
            "--role",
            "chief",
            "--password",
            "long-enough",
        ],
        None,
    );
    assert!(!ok && err.contains("viewer, operator or admin"), "{err}");
    let (ok, list, _) = run(&["user", "list"], None);
    assert!(ok);
    assert!(
        list.contains("alice\tviewer\tenabled\t013800000001"),
        "{list}"
    );
    let (ok, key, err) = run(&["user", "key", "alice", "--label", "test"], None);
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    assert!(key.starts_with("fk_"), "{key}");

    let mut cfg = hlsd::Config::new(dir.path());
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    let srv = hlsd::serve(cfg).await.unwrap();
    let base = format!("http://{}", srv.addr);
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = c
        .post(format!("{base}/api/login"))
        .json(&serde_json::json!({"name": "alice", "password": "alice-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(format!("{base}/api/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (me["name"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("viewer"))
    );
    // Deleted on the command line: the key stops working within the cache's few seconds.
    let (ok, _, err) = run(&["user", "delete", "alice"], None);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = c
            .get(format!("{base}/api/me"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted account's key still opens the API"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    srv.shutdown().await;
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
