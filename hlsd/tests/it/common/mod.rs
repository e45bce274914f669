//! Shared test fixtures: real H.264/MPEG-TS segments encoded by the ffmpeg CLI (tests only),
//! laid out in a temporary data dir the way ingestd writes them, the catalog rows ingestd
//! would have written for them (SQLite in the data dir, or a PostgreSQL database of the test's
//! own), and an in-process hlsd. Simulated dashcams: what they all share in [`dashcam`], and a
//! dashcam with recordings on its SD card in [`sd_card`].
#![allow(dead_code)]

pub mod dashcam;
pub mod sd_card;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use streamcore::catalog::{Catalog, Record, SessionKind};
use streamcore::layout::{self, StreamName};
use streamcore::playlist::{format_pdt, MediaPlaylist};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One encoded segment file.
#[derive(Debug, Clone)]
pub struct Seg {
    pub seq: u64,
    pub duration: f64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Two encodes: `a` (testsrc2) then `b` (a different picture, timestamps far ahead) whose first
/// segment follows a real discontinuity (new encoder, new timestamps, counters restarted).
pub struct Clips {
    _dir: tempfile::TempDir,
    pub a: Vec<Seg>,
    pub b: Vec<Seg>,
}

impl Clips {
    pub fn make(a_secs: u32, b_secs: u32) -> Clips {
        let dir = tempfile::tempdir().unwrap();
        let a = encode(
            &dir.path().join("a"),
            "testsrc2=size=640x360:rate=25",
            a_secs,
            0,
            0,
        );
        let next = a.last().map_or(0, |s| s.seq + 1);
        let b = encode(
            &dir.path().join("b"),
            "testsrc=size=640x360:rate=25",
            b_secs,
            next,
            1000,
        );
        Clips { _dir: dir, a, b }
    }

    pub fn all(&self) -> Vec<Seg> {
        self.a.iter().chain(&self.b).cloned().collect()
    }
}

fn encode(out: &Path, src: &str, secs: u32, start: u64, ts_offset: u32) -> Vec<Seg> {
    std::fs::create_dir_all(out).unwrap();
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            src,
            "-t",
            &secs.to_string(),
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-profile:v",
            "main",
            "-pix_fmt",
            "yuv420p",
        ])
        .args([
            "-g",
            "50",
            "-keyint_min",
            "50",
            "-sc_threshold",
            "0",
            "-output_ts_offset",
            &ts_offset.to_string(),
        ])
        .args([
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_list_size",
            "0",
            "-start_number",
            &start.to_string(),
        ])
        .arg("-hls_segment_filename")
        .arg(out.join("%d.ts"))
        .arg(out.join("ffmpeg.m3u8"))
        .status()
        .expect("ffmpeg CLI (Debian package ffmpeg) is needed to make test fixtures");
    assert!(status.success(), "ffmpeg failed making fixture");
    let text = std::fs::read_to_string(out.join("ffmpeg.m3u8")).unwrap();
    let pl = MediaPlaylist::parse_any(&text).unwrap();
    pl.segments()
        .map(|s| {
            let path = out.join(&s.uri);
            Seg {
                seq: layout::segment_sequence(&s.uri).unwrap(),
                duration: s.duration.as_secs_f64(),
                bytes: std::fs::metadata(&path).unwrap().len(),
                path,
            }
        })
        .collect()
}

/// Copies segments into `DATA/live/<stream>/` (as ingestd would have written them).
pub fn install(data: &Path, stream: &str, segs: &[Seg]) -> PathBuf {
    let dir = data.join("live").join(stream);
    std::fs::create_dir_all(&dir).unwrap();
    for s in segs {
        let dst = dir.join(format!("{}.ts", s.seq));
        if !dst.exists() {
            std::fs::copy(&s.path, &dst).unwrap();
        }
    }
    dir
}

/// Writes `index.m3u8` atomically (temp + rename) for `window`; a segment whose seq is in
/// `disc_before` gets `#EXT-X-DISCONTINUITY`. PROGRAM-DATE-TIME from `pdt0_ms` onwards.
pub fn write_playlist(
    dir: &Path,
    window: &[Seg],
    disc_before: &[u64],
    disc_seq: u64,
    pdt0_ms: i64,
    end: bool,
) {
    let target = window
        .iter()
        .map(|s| s.duration.round() as u64)
        .max()
        .unwrap_or(2);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}\n",
        window.first().map_or(0, |s| s.seq)
    );
    for (i, s) in window.iter().enumerate() {
        let disc = disc_before.contains(&s.seq) && i > 0;
        if disc {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let pdt = pdt0_ms + (s.seq as f64 * 2000.0) as i64;
        out.push_str(&format!("#EXT-X-PROGRAM-DATE-TIME:{}\n", format_pdt(pdt)));
        out.push_str(&format!("#EXTINF:{:.6},\n{}.ts\n", s.duration, s.seq));
    }
    if end {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    let tmp = dir.join(".index.m3u8.tmp");
    std::fs::write(&tmp, out).unwrap();
    std::fs::rename(&tmp, dir.join("index.m3u8")).unwrap();
}

pub async fn start(data: &Path, tweak: impl FnOnce(&mut hlsd::Config)) -> hlsd::Running {
    let mut cfg = hlsd::Config::new(data);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    // These suites are about delivery; `access` is about logins and grants.
    cfg.allow_anonymous = true;
    tweak(&mut cfg);
    hlsd::serve(cfg).await.unwrap()
}

/// A raw HTTP/1.1 exchange, so paths reach the server exactly as written (HTTP clients
/// normalize `..` away before sending).
pub async fn raw(addr: SocketAddr, request_line: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{request_line}\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// PROGRAM-DATE-TIME of segment `seq` in these fixtures: 2 s per sequence number from `pdt0_ms`
/// (the same clock [`write_playlist`] writes).
pub fn seg_pdt(pdt0_ms: i64, seq: u64) -> i64 {
    pdt0_ms + seq as i64 * 2000
}

/// The catalog records ingestd would have written for one session of `stream` made of `segs`
/// (files under `live/<stream>/`): the session (ended at the last segment's end when `ended`),
/// then each segment, flagged as a discontinuity when its seq is in `disc_before`.
pub fn session_records(
    session_id: &str,
    stream: &str,
    segs: &[Seg],
    disc_before: &[u64],
    pdt0_ms: i64,
    ended: bool,
) -> Vec<Record> {
    let device = StreamName::parse(stream).unwrap();
    let started_ms = seg_pdt(pdt0_ms, segs[0].seq);
    let mut out = vec![Record::SessionStarted {
        session_id: session_id.into(),
        stream: stream.into(),
        sim: device.sim().map(str::to_owned),
        channel: device.channel(),
        kind: SessionKind::Live,
        started_ms,
        host: "test".into(),
    }];
    let mut pts = 0i64;
    for (i, s) in segs.iter().enumerate() {
        let duration_90k = (s.duration * 90_000.0).round() as i64;
        out.push(Record::Segment {
            session_id: session_id.into(),
            stream: stream.into(),
            sequence: s.seq,
            start_pts: pts,
            duration_90k,
            bytes: s.bytes,
            path: format!("live/{stream}/{}.ts", s.seq),
            program_date_time_ms: seg_pdt(pdt0_ms, s.seq),
            discontinuity: i > 0 && disc_before.contains(&s.seq),
        });
        pts += duration_90k;
    }
    if ended {
        let last = segs.last().unwrap();
        out.push(Record::SessionEnded {
            session_id: session_id.into(),
            ended_ms: seg_pdt(pdt0_ms, last.seq) + (last.duration * 1000.0).round() as i64,
        });
    }
    out
}

/// A device seen at `seen_ms` with `n` GPS fixes one second apart from `t0_ms`.
pub fn device_records(sim: &str, seen_ms: i64, t0_ms: i64, n: i64) -> Vec<Record> {
    let mut out = vec![Record::DeviceSeen {
        sim: sim.into(),
        plate: Some("沪A12345".into()),
        auth_code: None,
        at: seen_ms,
    }];
    for i in 0..n {
        let a = i as f64 / 25.0;
        out.push(Record::Position {
            sim: sim.into(),
            device_time_ms: t0_ms + i * 1000,
            lat: 31.2304 + 0.004 * a.sin() + 0.0008 * a,
            lon: 121.4737 + 0.006 * a,
            speed: 42.5,
            heading: 90,
            altitude: 12,
            alarm: 0,
            status: 3,
        });
    }
    out
}

/// Opens (creating and migrating) the catalog at `url` and writes `records` in one transaction.
pub fn write_catalog(url: &str, records: &[Record]) -> Catalog {
    let cat = Catalog::open(url).unwrap();
    cat.write(records).unwrap();
    cat
}

/// The default catalog URL of a data dir, as hlsd opens it without `--database-url`.
pub fn default_url(data: &Path) -> String {
    streamcore::catalog::default_database_url(data)
}

/// A database of the test's own on the machine's PostgreSQL or MySQL/MariaDB server
/// (`CREATE DATABASE <unique>`, dropped on drop), as streamcore's catalog suite does it.
/// `HLSD_TEST_PG_URL` / `HLSD_TEST_MYSQL_URL` override the admin URLs. A server that is not
/// running fails the test: a silent pass would hide it.
pub struct ServerDb {
    admin: String,
    postgres: bool,
    pub name: String,
    pub url: String,
}

impl ServerDb {
    pub fn postgres() -> ServerDb {
        let admin = std::env::var("HLSD_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        ServerDb::create(admin, true)
    }

    pub fn mysql() -> ServerDb {
        let admin = std::env::var("HLSD_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
        ServerDb::create(admin, false)
    }

    fn execute(admin: &str, postgres: bool, sql: &str) -> Result<(), String> {
        use diesel::connection::SimpleConnection as _;
        use diesel::Connection as _;
        let r = if postgres {
            diesel::PgConnection::establish(admin)
                .map_err(|e| e.to_string())?
                .batch_execute(sql)
        } else {
            diesel::MysqlConnection::establish(admin)
                .map_err(|e| e.to_string())?
                .batch_execute(sql)
        };
        r.map_err(|e| e.to_string())
    }

    fn create(admin: String, postgres: bool) -> ServerDb {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "hlsd_{}_{}_{}",
            std::process::id(),
            now_ms() % 1_000_000_000,
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        ServerDb::execute(&admin, postgres, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| {
            panic!("cannot create a database at {admin}: {e} (CI starts the servers: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start; start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd)")
        });
        let base = admin.rsplit_once('/').expect("url with /database").0;
        ServerDb {
            url: format!("{base}/{name}"),
            admin,
            postgres,
            name,
        }
    }
}

impl Drop for ServerDb {
    fn drop(&mut self) {
        let force = if self.postgres { " WITH (FORCE)" } else { "" };
        let _ = ServerDb::execute(
            &self.admin,
            self.postgres,
            &format!("DROP DATABASE IF EXISTS {}{force}", self.name),
        );
    }
}

/// Polls `probe` until it gives a value, for at most `secs`.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
