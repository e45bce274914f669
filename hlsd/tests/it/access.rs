//! Who may see and command what, on every backend: every route without credentials, with a
//! viewer's login for another vehicle, with an expired token, with one incident's token
//! against the stream's live playlist and another session; all refused with 401/403/404 and
//! none leaks a byte of media or a position. Then what each role may do, API keys, player
//! tokens (a recording's token opens exactly its segments), the audit log, and anonymous
//! access when the operator turns it on.

use std::sync::OnceLock;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};
use streamcore::catalog::{Catalog, Record, Role};

use crate::common::*;

const SIM_A: &str = "013800000001";
const SIM_B: &str = "013800000002";

/// One encode shared by every backend's run (ffmpeg takes seconds).
fn clips() -> &'static Clips {
    static C: OnceLock<Clips> = OnceLock::new();
    C.get_or_init(|| Clips::make(6, 2))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Two vehicles with a live stream, a recorded session and positions each, an incident on A,
/// three accounts, and hlsd on `url` without anonymous access.
struct Fleet {
    _data: tempfile::TempDir,
    srv: hlsd::Running,
    base: String,
    cat: Catalog,
    session_a: String,
    session_b: String,
    incident_a: i64,
}

impl Fleet {
    async fn new(url: String) -> Fleet {
        let data = tempfile::tempdir().unwrap();
        let segs = clips().a.clone();
        let pdt0 = now_ms() - 60_000;
        let mut records = Vec::new();
        for sim in [SIM_A, SIM_B] {
            let stream = format!("{sim}_1");
            let dir = install(data.path(), &stream, &segs);
            write_playlist(&dir, &segs, &[], 0, pdt0, false);
            records.extend(device_records(sim, now_ms(), pdt0, 5));
            records.extend(session_records(
                &format!("{stream}-s"),
                &stream,
                &segs,
                &[],
                pdt0,
                true,
            ));
        }
        records.push(Record::Incident {
            sim: SIM_A.into(),
            channel: Some(1),
            from_ms: pdt0,
            to_ms: pdt0 + 2000,
            kind: "overspeed".into(),
            source: "test".into(),
            session_id: None,
            open: false,
            alarm: 0,
            lat: None,
            lon: None,
            video_state: None,
            video_reason: None,
        });
        let cat = write_catalog(&url, &records);
        let incident_a = cat.incidents(SIM_A, i64::MIN, i64::MAX).unwrap()[0].id;
        let hash = hlsd::auth::hash_password("password-1");
        cat.add_user("root", Role::Admin, &hash).unwrap();
        cat.add_user("viewer-a", Role::Viewer, &hash).unwrap();
        cat.grant("viewer-a", SIM_A).unwrap();
        cat.add_user("operator-b", Role::Operator, &hash).unwrap();
        cat.grant("operator-b", "group:north").unwrap();
        cat.add_to_group(SIM_B, "north").unwrap();
        let srv = start(data.path(), |c| {
            c.database_url = Some(url.clone());
            c.allow_anonymous = false;
            // Nothing listens there: a command that passes the checks gets a 502.
            c.ingestd_url = "http://127.0.0.1:9".into();
        })
        .await;
        Fleet {
            base: format!("http://{}", srv.addr),
            srv,
            _data: data,
            cat,
            session_a: format!("{SIM_A}_1-s"),
            session_b: format!("{SIM_B}_1-s"),
            incident_a,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs in; returns the Cookie header value.
    async fn login(&self, name: &str) -> String {
        let r = client()
            .post(self.url("/api/login"))
            .json(&json!({"name": name, "password": "password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login {name}");
        let set = r.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        set.split(';').next().unwrap().to_string()
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, Vec<u8>) {
        self.call(Method::GET, path, cookie, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        bearer: Option<&str>,
    ) -> (StatusCode, Vec<u8>) {
        let mut rq = client().request(method.clone(), self.url(path));
        if let Some(c) = cookie {
            rq = rq.header(header::COOKIE, c);
        }
        if let Some(k) = bearer {
            rq = rq.bearer_auth(k);
        }
        if method == Method::POST {
            rq = rq.json(&json!({}));
        }
        let r = rq.send().await.unwrap();
        let status = r.status();
        (status, r.bytes().await.unwrap().to_vec())
    }

    /// Every route that serves media, positions or commands.
    fn guarded_routes(&self) -> Vec<(Method, String)> {
        let a = format!("{SIM_A}_1");
        let seg = clips().a[0].seq;
        let (from, to) = (now_ms() - 60_000, now_ms());
        let get = |p: String| (Method::GET, p);
        let post = |p: String| (Method::POST, p);
        vec![
            get(format!("/live/{a}/index.m3u8")),
            get(format!("/live/{a}/{seg}.ts")),
            get(format!("/live/{a}/ll.m3u8")),
            get(format!("/live/{a}/ll-0.0.m4s")),
            get(format!("/vod/session/{}/index.m3u8", self.session_a)),
            get(format!("/vod/session/{}/video.mp4", self.session_a)),
            get(format!("/vod/incident/{}/index.m3u8", self.incident_a)),
            get(format!("/api/streams/{a}/clip.mp4?from={from}&to={to}")),
            get("/api/streams".into()),
            get("/api/streams?all=1".into()),
            get("/api/devices".into()),
            get(format!("/api/devices/{SIM_A}/positions")),
            get(format!("/api/devices/{SIM_A}/sessions")),
            get(format!("/api/devices/{SIM_A}/incidents")),
            get(format!("/api/devices/{SIM_A}/playbacks")),
            get(format!("/api/devices/{SIM_A}/recordings")),
            post(format!("/api/devices/{SIM_A}/channels/1/watch")),
            post(format!("/api/devices/{SIM_A}/channels/1/stop")),
            post(format!("/api/devices/{SIM_A}/channels/1/playback")),
            post(format!("/api/devices/{SIM_A}/channels/1/playback/control")),
            post("/api/tokens".into()),
            get("/api/me".into()),
            get("/api/keys".into()),
            post("/api/keys".into()),
            get("/api/users".into()),
            post("/api/users".into()),
            get("/api/audit".into()),
        ]
    }
}

/// No media (MPEG-TS sync byte pattern, MP4 box) and no position in a refused answer.
fn assert_no_leak(what: &str, body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(body.len() < 512, "{what}: {} bytes refused?", body.len());
    assert!(!text.contains("#EXTM3U"), "{what}: playlist leaked");
    assert!(!text.contains("\"lat\""), "{what}: position leaked");
    assert!(!body.starts_with(&[0x47]), "{what}: TS leaked");
    assert!(!text.contains("ftyp"), "{what}: MP4 leaked");
}

async fn run(url: String) {
    let f = Fleet::new(url).await;
    let a = format!("{SIM_A}_1");
    let b = format!("{SIM_B}_1");
    let seg = clips().a[0].seq;

    // The page and its assets are public (the page is the login form).
    assert_eq!(f.get("/", None).await.0, 200);
    assert_eq!(f.get("/static/app.js", None).await.0, 200);

    // 1. No credentials: 401 on every route, nothing leaked.
    for (m, p) in f.guarded_routes() {
        let (status, body) = f.call(m.clone(), &p, None, None).await;
        assert_eq!(status, 401, "{m} {p}: {}", String::from_utf8_lossy(&body));
        assert_no_leak(&p, &body);
    }
    // A made-up cookie or key is no better.
    let (s, _) = f
        .get("/api/devices", Some("fleet_session=root:forged"))
        .await;
    assert_eq!(s, 401);
    let (s, _) = f
        .call(Method::GET, "/api/devices", None, Some("fk_0000_nothing"))
        .await;
    assert_eq!(s, 401);

    // 2. A viewer of vehicle A: A's video and data, nothing of B, no commands.
    let va = f.login("viewer-a").await;
    let (s, body) = f.get(&format!("/live/{a}/index.m3u8"), Some(&va)).await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&body).contains("#EXTM3U"));
    assert_eq!(
        f.get(&format!("/live/{a}/{seg}.ts"), Some(&va)).await.0,
        200
    );
    for p in [
        format!("/live/{b}/index.m3u8"),
        format!("/live/{b}/{seg}.ts"),
        format!("/vod/session/{}/index.m3u8", f.session_b),
        format!("/vod/session/{}/video.mp4", f.session_b),
        format!("/api/streams/{b}/clip.mp4?from=0&to=1000"),
    ] {
        let (s, body) = f.get(&p, Some(&va)).await;
        assert_eq!(s, 403, "{p}");
        assert_no_leak(&p, &body);
    }
    for p in [
        format!("/api/devices/{SIM_B}/positions"),
        format!("/api/devices/{SIM_B}/incidents"),
    ] {
        let (s, body) = f.get(&p, Some(&va)).await;
        assert_eq!(s, 404, "{p}: a device one may not see does not exist");
        assert_no_leak(&p, &body);
    }
    let (s, body) = f.get("/api/devices", Some(&va)).await;
    assert_eq!(s, 200);
    let devices: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let sims: Vec<&str> = devices.iter().map(|d| d["sim"].as_str().unwrap()).collect();
    assert_eq!(sims, [SIM_A]);
    let (_, body) = f.get("/api/streams?all=1", Some(&va)).await;
    let streams: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert!(streams.iter().all(|s| s["sim"] == SIM_A), "{streams:?}");
    assert!(!streams.is_empty());
    let (s, _) = f
        .call(
            Method::POST,
            &format!("/api/devices/{SIM_A}/channels/1/watch"),
            Some(&va),
            None,
        )
        .await;
    assert_eq!(s, 403, "a viewer does not command");
    assert_eq!(f.get("/api/users", Some(&va)).await.0, 403);
    assert_eq!(f.get("/api/audit", Some(&va)).await.0, 403);

    // 3. Player tokens. One incident's token opens its playlist and exactly its segments.
    let r = client()
        .post(f.url("/api/tokens"))
        .header(header::COOKIE, &va)
        .json(&json!({"incident": f.incident_a, "ttl_secs": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let minted: Value = r.json().await.unwrap();
    let tok = minted["token"].as_str().unwrap().to_string();
    let (s, pl) = f
        .get(
            &format!("/vod/incident/{}/index.m3u8?token={tok}", f.incident_a),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let pl = String::from_utf8(pl).unwrap();
    let uris: Vec<&str> = pl.lines().filter(|l| l.starts_with("/live/")).collect();
    assert!(!uris.is_empty(), "{pl}");
    for u in &uris {
        assert!(!u.contains(&tok), "segments carry their own tokens: {u}");
        assert_eq!(f.get(u, None).await.0, 200, "{u}");
    }
    // A segment's token opens only that segment.
    let seg_tok = uris[0].split("token=").nth(1).unwrap();
    let other = clips().a.last().unwrap().seq;
    for p in [
        format!("/live/{a}/{other}.ts?token={seg_tok}"),
        format!("/live/{a}/index.m3u8?token={seg_tok}"),
    ] {
        let (s, body) = f.get(&p, None).await;
        assert_eq!(s, 403, "{p}");
        assert_no_leak(&p, &body);
    }
    // The incident's token against the live stream and another session.
    for p in [
        format!("/live/{a}/index.m3u8?token={tok}"),
        format!("/live/{a}/{seg}.ts?token={tok}"),
        format!("/live/{a}/t/{tok}/index.m3u8"),
        format!("/vod/session/{}/index.m3u8?token={tok}", f.session_a),
        format!("/vod/session/{}/index.m3u8?token={tok}", f.session_b),
        format!("/vod/session/{}/video.mp4?token={tok}", f.session_b),
    ] {
        let (s, body) = f.get(&p, None).await;
        assert_eq!(s, 403, "{p}");
        assert_no_leak(&p, &body);
    }
    // An expired token (signed with the server's key, an hour ago).
    let key = f
        .cat
        .setting(hlsd::auth::SIGNING_KEY_SETTING)
        .unwrap()
        .expect("hlsd made its key");
    let expired = hlsd::TokenSigner::new(&key).sign(&a, hlsd::token::now_unix() - 3600);
    let (s, body) = f
        .get(&format!("/live/{a}/index.m3u8?token={expired}"), None)
        .await;
    assert_eq!(s, 403);
    assert!(String::from_utf8_lossy(&body).contains("expired"));
    // A viewer cannot mint a token for what it may not see.
    let r = client()
        .post(f.url("/api/tokens"))
        .header(header::COOKIE, &va)
        .json(&json!({"stream": b}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // 4. An operator of group north: commands B (passes the checks: ingestd is down, 502),
    // never A.
    let ob = f.login("operator-b").await;
    let (s, _) = f
        .call(
            Method::POST,
            &format!("/api/devices/{SIM_B}/channels/1/watch"),
            Some(&ob),
            None,
        )
        .await;
    assert_eq!(s, 502, "allowed, then ingestd unreachable");
    let (s, _) = f
        .call(
            Method::POST,
            &format!("/api/devices/{SIM_A}/channels/1/watch"),
            Some(&ob),
            None,
        )
        .await;
    assert_eq!(s, 404);
    assert_eq!(
        f.get(&format!("/live/{b}/index.m3u8"), Some(&ob)).await.0,
        200
    );

    // 5. API keys act as their account until revoked.
    let r = client()
        .post(f.url("/api/keys"))
        .header(header::COOKIE, &ob)
        .json(&json!({"label": "script"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let k: Value = r.json().await.unwrap();
    let key = k["key"].as_str().unwrap().to_string();
    let (s, body) = f.call(Method::GET, "/api/devices", None, Some(&key)).await;
    assert_eq!(s, 200);
    let devices: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["sim"], SIM_B);
    let (s, _) = f
        .call(
            Method::DELETE,
            &format!("/api/keys/{}", k["id"].as_str().unwrap()),
            Some(&ob),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = f.call(Method::GET, "/api/devices", None, Some(&key)).await;
    assert_eq!(s, 401, "a revoked key opens nothing");

    // 6. The admin sees everything, and the audit log says who did what.
    let root = f.login("root").await;
    let (_, body) = f.get("/api/devices", Some(&root)).await;
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&body).unwrap().len(),
        2
    );
    let (s, body) = f.get("/api/audit?limit=100", Some(&root)).await;
    assert_eq!(s, 200);
    let log: Vec<Value> = serde_json::from_slice(&body).unwrap();
    let has = |actor: &str, action: &str, target: &str| {
        log.iter()
            .any(|e| e["actor"] == actor && e["action"] == action && e["target"] == target)
    };
    assert!(has("operator-b", "live.start", &b), "{log:?}");
    assert!(has(
        "viewer-a",
        "token.mint",
        &format!("vod/incident/{}", f.incident_a)
    ));
    assert!(has("viewer-a", "login", "viewer-a"));
    // Settings: what the daemons run with, never a secret; admins only.
    f.cat.set_setting("ingestd.retention_days", "7").unwrap();
    let (s, body) = f.get("/api/settings", Some(&root)).await;
    assert_eq!(s, 200);
    let text = String::from_utf8(body).unwrap();
    let key = f
        .cat
        .setting(hlsd::auth::SIGNING_KEY_SETTING)
        .unwrap()
        .unwrap();
    assert!(
        !text.contains(&key) && !text.contains("hlsd_signing_key"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(v["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "ingestd.retention_days" && r["value"] == "7"));
    assert_eq!(v["hlsd"]["allow_anonymous"], false);
    assert_eq!(f.get("/api/settings", Some(&ob)).await.0, 403);
    // A failed login is logged too.
    let r = client()
        .post(f.url("/api/login"))
        .json(&json!({"name": "root", "password": "wrong-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get(header::SET_COOKIE).is_none());
    let log = f.cat.audit_log(5, None).unwrap();
    assert!(log
        .iter()
        .any(|e| e.action == "login.failed" && e.actor == "root"));

    // 7. A disabled account's cookie stops working (within the cache's few seconds).
    f.cat
        .update_user("viewer-a", None, None, Some(true))
        .unwrap();
    let fleet = &f;
    eventually("disabled account refused", 10, || {
        let va = va.clone();
        async move { (fleet.get("/api/devices", Some(&va)).await.0 == 401).then_some(()) }
    })
    .await;
    f.srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path().join("catalog.sqlite").display().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_on_postgresql() {
    let db = ServerDb::postgres();
    run(db.url.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_on_mysql() {
    let db = ServerDb::mysql();
    run(db.url.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_access_only_when_allowed() {
    let data = tempfile::tempdir().unwrap();
    let segs = clips().a.clone();
    let stream = format!("{SIM_A}_1");
    let dir = install(data.path(), &stream, &segs);
    write_playlist(&dir, &segs, &[], 0, now_ms(), false);
    let srv = start(data.path(), |c| c.allow_anonymous = true).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c
        .get(format!("{base}/live/{stream}/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let me: Value = c
        .get(format!("{base}/api/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["anonymous"], true);
    assert_eq!(me["role"], "operator");
    // Admin routes still need a login.
    let r = c.get(format!("{base}/api/users")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    srv.shutdown().await;
}

/// `--tls-cert`/`--tls-key`: HTTPS with HTTP/2 by ALPN, checked with curl (an independent
/// client) against a certificate made by the openssl CLI; the session cookie gets `Secure`;
/// plain HTTP on the port gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http2_and_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI (Debian package openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let data = tempfile::tempdir().unwrap();
    let segs = clips().a.clone();
    let stream = format!("{SIM_A}_1");
    let sdir = install(data.path(), &stream, &segs);
    write_playlist(&sdir, &segs, &[], 0, now_ms(), false);
    let cat = Catalog::open(&default_url(data.path())).unwrap();
    cat.add_user(
        "tls-user",
        Role::Viewer,
        &hlsd::auth::hash_password("password-1"),
    )
    .unwrap();
    cat.grant("tls-user", "*").unwrap();
    let srv = start(data.path(), |c| {
        c.allow_anonymous = false;
        c.tls = Some(hlsd::config::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    let base = format!("https://127.0.0.1:{}", srv.addr.port());
    let jar = dir.path().join("cookies.txt");
    let curl = |args: Vec<String>| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--cacert"])
            .arg(&cert)
            .args(args)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // HTTP/2, and a login required.
    let got = curl(vec![
        "--http2".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version} %{http_code}".into(),
        format!("{base}/api/me"),
    ]);
    assert_eq!(got, "2 401");
    // The login's cookie is Secure, and opens the playlist over HTTP/2.
    let headers = curl(vec![
        "--http2".into(),
        "-D".into(),
        "-".into(),
        "-o".into(),
        "/dev/null".into(),
        "-c".into(),
        jar.display().to_string(),
        "-H".into(),
        "content-type: application/json".into(),
        "--data".into(),
        r#"{"name":"tls-user","password":"password-1"}"#.into(),
        format!("{base}/api/login"),
    ]);
    let cookie = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_else(|| panic!("{headers}"));
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let body = curl(vec![
        "--http2".into(),
        "-b".into(),
        jar.display().to_string(),
        format!("{base}/live/{stream}/index.m3u8"),
    ]);
    assert!(body.starts_with("#EXTM3U"), "{body}");
    // Plain HTTP to the TLS port: no answer.
    let plain = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/api/me", srv.addr.port()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&plain.stdout), "000");
    srv.shutdown().await;
}
