//! The catalog suite, run against real databases: SQLite in a temp dir, the
//! machine's PostgreSQL and MariaDB/MySQL. Every test gets its own database
//! (`CREATE DATABASE t_<unique>`, dropped at the end) so parallel runs do
//! not collide. Server URLs can be overridden with `CATALOG_TEST_PG_URL` /
//! `CATALOG_TEST_MYSQL_URL` (an admin URL whose database part is replaced).
//! A server that is not running fails the test with a clear message: CI
//! starts the servers, and a silent pass would hide a missing backend.

use std::collections::HashSet;
use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use streamcore::catalog::{
    new_session_id, now_ms, Backend, Catalog, CatalogWriter, Incident, Playback, PlaybackState,
    Record, RetentionPolicy, SessionKind, WriterConfig, INCIDENT_KIND_PLAYBACK,
};
use streamcore::FsStorage;

const DEFAULT_PG: &str = "postgres://root@127.0.0.1:5432/test";
const DEFAULT_MYSQL: &str = "mysql://root@127.0.0.1:3306/test";

// ---------------------------------------------------------------- fixture

/// A fresh, empty database of one backend plus a data dir, removed on drop.
struct TestDb {
    backend: Backend,
    /// URL of the per-test database.
    url: String,
    /// Admin URL used to create/drop it (servers only).
    admin: Option<String>,
    name: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    data: tempfile::TempDir,
}

fn unique_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "t_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("url with /database");
    format!("{base}/{db}")
}

impl TestDb {
    fn new(backend: Backend) -> TestDb {
        let name = unique_name();
        let data = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = dir.path().join("catalog.sqlite").display().to_string();
                TestDb {
                    backend,
                    url,
                    admin: None,
                    name,
                    _sqlite_dir: Some(dir),
                    data,
                }
            }
            Backend::Postgres => {
                let admin = std::env::var("CATALOG_TEST_PG_URL").unwrap_or(DEFAULT_PG.into());
                let mut c = PgConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin}: {e}\nThe catalog suite needs a \
                         running server (CI starts it: pg_ctlcluster --skip-systemctl-redirect \
                         $(ls /etc/postgresql) main start)"
                    )
                });
                c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
                TestDb {
                    backend,
                    url: replace_db(&admin, &name),
                    admin: Some(admin),
                    name,
                    _sqlite_dir: None,
                    data,
                }
            }
            Backend::Mysql => {
                let admin = std::env::var("CATALOG_TEST_MYSQL_URL").unwrap_or(DEFAULT_MYSQL.into());
                let mut c = MysqlConnection::establish(&admin).unwrap_or_else(|e| {
                    panic!(
                        "MariaDB/MySQL is not reachable at {admin}: {e}\nThe catalog suite needs \
                         a running server (CI starts it: start-stop-daemon --start --oknodo \
                         --background --exec /usr/sbin/mariadbd)"
                    )
                });
                c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
                TestDb {
                    backend,
                    url: replace_db(&admin, &name),
                    admin: Some(admin),
                    name,
                    _sqlite_dir: None,
                    data,
                }
            }
        }
    }

    fn open(&self) -> Catalog {
        let cat = Catalog::open(&self.url).unwrap();
        assert_eq!(cat.backend(), self.backend);
        cat
    }

    fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Runs a query returning (text, text) pairs on a fresh raw connection.
    fn pairs(&self, sql: &str) -> Vec<(String, String)> {
        #[derive(QueryableByName)]
        struct Pair {
            #[diesel(sql_type = Text)]
            a: String,
            #[diesel(sql_type = Text)]
            b: String,
        }
        let rows: Vec<Pair> = match self.backend {
            Backend::Sqlite => diesel::sql_query(sql)
                .load(&mut SqliteConnection::establish(&self.url).unwrap())
                .unwrap(),
            Backend::Postgres => diesel::sql_query(sql)
                .load(&mut PgConnection::establish(&self.url).unwrap())
                .unwrap(),
            Backend::Mysql => diesel::sql_query(sql)
                .load(&mut MysqlConnection::establish(&self.url).unwrap())
                .unwrap(),
        };
        rows.into_iter().map(|p| (p.a, p.b)).collect()
    }

    fn count(&self, table: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let sql = format!("SELECT COUNT(*) AS n FROM {table}");
        let rows: Vec<N> = match self.backend {
            Backend::Sqlite => diesel::sql_query(sql)
                .load(&mut SqliteConnection::establish(&self.url).unwrap())
                .unwrap(),
            Backend::Postgres => diesel::sql_query(sql)
                .load(&mut PgConnection::establish(&self.url).unwrap())
                .unwrap(),
            Backend::Mysql => diesel::sql_query(sql)
                .load(&mut MysqlConnection::establish(&self.url).unwrap())
                .unwrap(),
        };
        rows[0].n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(admin) = &self.admin else { return };
        let r = match self.backend {
            Backend::Postgres => PgConnection::establish(admin).map(|mut c| {
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
            }),
            Backend::Mysql => MysqlConnection::establish(admin)
                .map(|mut c| c.batch_execute(&format!("DROP DATABASE IF EXISTS {}", self.name))),
            Backend::Sqlite => return,
        };
        if !matches!(r, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// Generates one `#[test]` per backend for each suite function.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(super::TestDb::new(super::Backend::Sqlite)) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(super::TestDb::new(super::Backend::Postgres)) } )*
        }
        mod mysql {
            $( #[test] fn $name() { super::$name(super::TestDb::new(super::Backend::Mysql)) } )*
        }
    };
}

suite!(
    migrations_apply_once_with_a_comment_on_every_column,
    concurrent_opens_migrate_once,
    devices_and_positions,
    sessions_segments_and_live_streams,
    segments_covering_a_time_range,
    incidents_in_a_time_range,
    racing_writers_do_not_duplicate,
    writer_with_concurrent_readers,
    retention_deletes_rows_then_files_and_sweeps_orphans,
    invalid_records_are_rejected_not_fatal,
    flush_under_load_waits_only_for_earlier_records,
    playback_stream_beside_the_live_stream_of_its_channel,
    upgrade_from_the_first_schema_keeps_rows_and_admits_playback_streams,
    playback_requests_round_trip_and_never_move_back,
    playbacks_of_a_device_overlap_the_span_oldest_first,
    alarm_incident_opens_extends_closes_and_tracks_its_video,
    live_and_playback_of_one_channel_at_once_through_the_writer,
    upgrade_from_step_2_keeps_incidents_and_adds_playbacks,
    stale_open_incidents_are_closed,
    nodes_register_beat_and_hold_devices_newest_first,
    stream_leases_go_to_the_newest_source_and_fence_the_old_writer,
);

// ------------------------------------------------------------ helpers

const SIM_A: &str = "132570034500";
const SIM_B: &str = "013800138000";
const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z

fn position(sim: &str, t: i64) -> Record {
    Record::Position {
        sim: sim.into(),
        device_time_ms: t,
        lat: 22.5 + (t - T0) as f64 * 1e-7,
        lon: 114.0 - (t - T0) as f64 * 1e-7,
        speed: 42.5,
        heading: 270,
        altitude: -12,
        alarm: 0x8000_0001,
        status: 0x0000_0003,
    }
}

fn session_started(id: &str, stream: &str, sim: Option<&str>, ch: Option<u8>, at: i64) -> Record {
    Record::SessionStarted {
        session_id: id.into(),
        stream: stream.into(),
        sim: sim.map(Into::into),
        channel: ch,
        kind: SessionKind::Live,
        started_ms: at,
        host: "ingest-1".into(),
    }
}

fn playback_started(id: &str, sim: &str, ch: u8, at: i64) -> Record {
    Record::SessionStarted {
        session_id: id.into(),
        stream: format!("{sim}_{ch}_pb"),
        sim: Some(sim.into()),
        channel: Some(ch),
        kind: SessionKind::Playback,
        started_ms: at,
        host: "ingest-1".into(),
    }
}

fn segment(session: &str, stream: &str, seq: u64, pdt: i64) -> Record {
    Record::Segment {
        session_id: session.into(),
        stream: stream.into(),
        sequence: seq,
        start_pts: 90_000 + seq as i64 * 360_000,
        duration_90k: 360_000, // 4 s
        bytes: 1000 + seq,
        path: format!("live/{stream}/{seq}.ts"),
        program_date_time_ms: pdt,
        discontinuity: matches!(seq % 5, 0),
    }
}

/// Migration versions (diesel's: the step directory's date and number).
const STEP_1: &str = "20261125000001";
const STEP_2: &str = "20261204000001";

/// Takes a migrated catalog back to the schema of step `version`, as an
/// older release left it: every later step's own down.sql, newest first,
/// and their versions forgotten, so the next open applies them again.
fn roll_back_to(cat: &Catalog, backend: Backend, version: &str) {
    let mut steps: Vec<(String, PathBuf)> = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(backend.to_string()),
    )
    .unwrap()
    .map(|e| e.unwrap().path())
    .filter(|p| p.is_dir())
    .map(|p| {
        let name = p.file_name().unwrap().to_str().unwrap();
        (name.split('_').next().unwrap().replace('-', ""), p)
    })
    .filter(|(v, _)| v.as_str() > version)
    .collect();
    assert!(!steps.is_empty(), "no step after {version}");
    steps.sort();
    for (v, dir) in steps.iter().rev() {
        cat.execute_sql(&std::fs::read_to_string(dir.join("down.sql")).unwrap())
            .unwrap_or_else(|e| panic!("down.sql of {v}: {e}"));
        cat.execute_sql(&format!(
            "DELETE FROM __diesel_schema_migrations WHERE version = '{v}'"
        ))
        .unwrap();
    }
}

/// Stops looping helper threads even when an assertion panics, so a
/// `thread::scope` ends and the failure is reported instead of hanging.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// -------------------------------------------------------------- tests

fn migrations_apply_once_with_a_comment_on_every_column(db: TestDb) {
    let cat = db.open();
    // A second open finds nothing to apply and the schema still works.
    let again = db.open();
    drop(again);
    assert!(cat.devices().unwrap().is_empty());
    let missing: Vec<(String, String)> = match db.backend {
        Backend::Postgres => db.pairs(
            "SELECT c.relname::text AS a, a.attname::text AS b FROM pg_attribute a \
             JOIN pg_class c ON a.attrelid = c.oid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped \
             AND c.relname <> '__diesel_schema_migrations' \
             AND col_description(c.oid, a.attnum) IS NULL",
        ),
        Backend::Mysql => db.pairs(
            "SELECT table_name AS a, column_name AS b FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name <> '__diesel_schema_migrations' \
             AND column_comment = ''",
        ),
        Backend::Sqlite => {
            // SQLite keeps the CREATE TABLE text: every column's line must carry a comment.
            let tables = db.pairs(
                "SELECT name AS a, sql AS b FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name <> '__diesel_schema_migrations'",
            );
            assert_eq!(tables.len(), 20, "{tables:?}");
            let mut missing = Vec::new();
            for (table, sql) in tables {
                let cols = db.pairs(&format!(
                    "SELECT name AS a, type AS b FROM pragma_table_info('{table}')"
                ));
                assert!(!cols.is_empty());
                for (col, _) in cols {
                    let line = sql
                        .lines()
                        .find(|l| l.trim_start().starts_with(&format!("{col} ")))
                        .unwrap_or_else(|| panic!("{table}.{col} not found in {sql}"));
                    let comment = line.split_once("-- ").map(|x| x.1.trim()).unwrap_or("");
                    if comment.len() < 10 {
                        missing.push((table.clone(), col));
                    }
                }
            }
            missing
        }
    };
    assert!(missing.is_empty(), "columns without a comment: {missing:?}");
    // Every table exists and the count of commented columns matches the schema.
    let expected = [
        ("devices", 6),
        ("positions", 9),
        ("streams", 4),
        ("sessions", 8),
        ("segments", 11),
        ("incidents", 15),
        ("playbacks", 16),
        ("pending_deletions", 2),
        ("terminals", 8),
        ("settings", 3),
        ("allowed_sims", 3),
        ("users", 5),
        ("api_keys", 5),
        ("grants", 2),
        ("device_groups", 2),
        ("audit_log", 7),
        ("viewers", 3),
        ("ingest_nodes", 5),
        ("device_nodes", 3),
        ("stream_leases", 6),
    ];
    for (t, _) in expected {
        assert_eq!(db.count(t), 0, "{t}");
    }
    if db.backend == Backend::Mysql {
        let n = db.pairs(
            "SELECT table_name AS a, CAST(COUNT(*) AS CHAR) AS b FROM information_schema.columns \
             WHERE table_schema = DATABASE() GROUP BY table_name",
        );
        for (t, cols) in expected {
            let got = n.iter().find(|(a, _)| a == t).map(|(_, b)| b.clone());
            assert_eq!(got, Some(cols.to_string()), "{t}");
        }
    }
}

/// Eight opens of `url` at once, as processes starting together; each must succeed.
fn open_concurrently(url: &str) {
    let url = Arc::new(url.to_owned());
    let opens: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || Catalog::open(&url).map(|_| ()))
        })
        .collect();
    for o in opens {
        o.join().unwrap().expect("concurrent open must succeed");
    }
}

fn concurrent_opens_migrate_once(db: TestDb) {
    // Several processes starting at once against an empty database (the demo starts ingestd
    // and hlsd together). Each migration must run once: a table rebuild run twice puts the old
    // table back, which a count of applied versions would not show, so the newest columns are
    // checked too.
    open_concurrently(&db.url);
    let steps = std::fs::read_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(db.backend.to_string()),
    )
    .unwrap()
    .count();
    assert_eq!(db.count("__diesel_schema_migrations"), steps as i64);
    // The last rebuild of incidents (step 3) is the one in place: its columns exist.
    let newest =
        "SELECT kind AS a, video_state AS b FROM incidents WHERE open = false AND alarm = 0";
    assert!(db.pairs(newest).is_empty());
    if db.backend == Backend::Sqlite {
        // The race is a matter of timing: more rounds on fresh files.
        let dir = tempfile::tempdir().unwrap();
        for round in 0..10 {
            let file = dir.path().join(format!("round{round}.sqlite"));
            let url = file.display().to_string();
            open_concurrently(&url);
            let rows: Vec<TextPair> = diesel::sql_query(newest)
                .load(&mut SqliteConnection::establish(&url).unwrap())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(rows.is_empty());
        }
    }
}

#[derive(QueryableByName)]
struct TextPair {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)]
    a: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    #[allow(dead_code)]
    b: Option<String>,
}

fn devices_and_positions(db: TestDb) {
    let cat = db.open();
    cat.write(&[
        Record::DeviceSeen {
            sim: SIM_A.into(),
            plate: Some("粤B12345".into()),
            auth_code: Some("AUTH-A".into()),
            at: T0,
        },
        Record::DeviceSeen {
            sim: SIM_A.into(),
            plate: None,
            auth_code: None,
            at: T0 + 5_000,
        },
        // A late, older report must not move last_seen backwards.
        Record::DeviceSeen {
            sim: SIM_A.into(),
            plate: None,
            auth_code: None,
            at: T0 + 1_000,
        },
    ])
    .unwrap();
    // Positions out of order, with a duplicate (a re-sent 0x0704 batch), and
    // one for a device never announced with DeviceSeen.
    let mut recs: Vec<Record> = (0..50)
        .rev()
        .map(|i| position(SIM_A, T0 + i * 1000))
        .collect();
    recs.push(position(SIM_A, T0 + 7_000));
    recs.push(position(SIM_B, T0 + 123));
    cat.write(&recs).unwrap();
    cat.write(&recs[..10]).unwrap(); // whole batch again: idempotent

    let devices = cat.devices().unwrap();
    assert_eq!(devices.len(), 2);
    let b = &devices[0];
    let a = &devices[1];
    assert_eq!((a.sim.as_str(), b.sim.as_str()), (SIM_A, SIM_B));
    assert_eq!(a.plate.as_deref(), Some("粤B12345"));
    assert_eq!(a.auth_code.as_deref(), Some("AUTH-A"));
    assert_eq!(a.registered_ms, Some(T0));
    assert_eq!(a.first_seen_ms, T0);
    assert_eq!(a.last_seen_ms, T0 + 5_000);
    let last = a.last_position.as_ref().expect("device A has positions");
    assert_eq!(
        last.device_time_ms,
        T0 + 49_000,
        "latest by device time, not by insert order"
    );
    assert_eq!(last.heading, 270);
    assert_eq!(last.altitude, -12);
    assert_eq!(last.alarm, 0x8000_0001);
    assert_eq!(last.status, 3);
    assert!((last.speed - 42.5).abs() < 1e-6);
    assert!((last.lat - (22.5 + 49_000.0 * 1e-7)).abs() < 1e-9);
    assert_eq!(b.plate, None);
    assert_eq!(
        b.last_position.as_ref().map(|p| p.device_time_ms),
        Some(T0 + 123)
    );

    // Range is half-open and ordered; the limit applies from the oldest.
    let p = cat
        .positions(SIM_A, T0 + 10_000, T0 + 20_000, 1000)
        .unwrap();
    let times: Vec<i64> = p.iter().map(|p| p.device_time_ms - T0).collect();
    assert_eq!(times, (10..20).map(|i| i * 1000).collect::<Vec<_>>());
    let p = cat.positions(SIM_A, T0, T0 + 1_000_000, 5).unwrap();
    assert_eq!(p.len(), 5);
    assert_eq!(p[0].device_time_ms, T0);
    assert_eq!(
        cat.positions(SIM_A, 0, i64::MAX, usize::MAX).unwrap().len(),
        50
    );
    assert!(cat
        .positions("999999999999", 0, i64::MAX, 10)
        .unwrap()
        .is_empty());
    assert_eq!(db.count("positions"), 51);
}

fn sessions_segments_and_live_streams(db: TestDb) {
    let cat = db.open();
    let s1 = new_session_id("132570034500_1", T0);
    let s2 = new_session_id("132570034500_2", T0 + 1000);
    let raw = new_session_id("cam-lobby", T0 + 2000);
    assert_ne!(
        s1,
        new_session_id("132570034500_1", T0),
        "ids are unique per call"
    );
    assert!(s1.starts_with("132570034500_1-1764000000000-"));

    let mut recs = vec![
        session_started(&s1, "132570034500_1", Some(SIM_A), Some(1), T0),
        session_started(&s2, "132570034500_2", Some(SIM_A), Some(2), T0 + 1000),
        Record::SessionStarted {
            session_id: raw.clone(),
            stream: "cam-lobby".into(),
            sim: None,
            channel: None,
            kind: SessionKind::Playback,
            started_ms: T0 + 2000,
            host: "ingest-2".into(),
        },
    ];
    // Segments arrive out of order; one is re-sent with new facts (the file
    // was rewritten) and must replace, not duplicate, the row.
    for seq in [3u64, 1, 2, 0] {
        recs.push(segment(&s1, "132570034500_1", seq, T0 + seq as i64 * 4000));
    }
    recs.push(segment(&s2, "132570034500_2", 7, T0 + 1000));
    cat.write(&recs).unwrap();
    let mut again = segment(&s1, "132570034500_1", 2, T0 + 8000);
    if let Record::Segment { bytes, .. } = &mut again {
        *bytes = 4242;
    }
    cat.write(&[again]).unwrap();

    let segs = cat.segments_of_session(&s1).unwrap();
    assert_eq!(
        segs.iter().map(|s| s.sequence).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(segs[2].bytes, 4242);
    assert_eq!(segs[0].path, "live/132570034500_1/0.ts");
    assert!(segs[0].discontinuity && !segs[1].discontinuity);
    assert_eq!(segs[1].start_pts, 90_000 + 360_000);
    assert_eq!(segs[1].duration_90k, 360_000);
    assert_eq!(segs[1].program_date_time_ms, T0 + 4000);
    assert_eq!(segs[1].end_ms, T0 + 8000);
    assert_eq!(db.count("segments"), 5);

    let live = cat.live_sessions().unwrap();
    assert_eq!(
        live.iter().map(|s| s.stream.as_str()).collect::<Vec<_>>(),
        vec!["132570034500_1", "132570034500_2", "cam-lobby"]
    );
    assert_eq!(live[2].kind(), SessionKind::Playback);
    assert_eq!(live[0].sim.as_deref(), Some(SIM_A));
    assert_eq!(live[0].channel, Some(1));
    assert_eq!(live[0].host, "ingest-1");

    cat.write(&[Record::SessionEnded {
        session_id: s1.clone(),
        ended_ms: T0 + 16_000,
    }])
    .unwrap();
    // A second end (another process, a retry) does not move it.
    cat.write(&[Record::SessionEnded {
        session_id: s1.clone(),
        ended_ms: T0 + 99_000,
    }])
    .unwrap();
    let live: Vec<String> = cat
        .live_sessions()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![s2.clone(), raw.clone()]);
    let ended = cat.session(&s1).unwrap().unwrap();
    assert_eq!(ended.ended_ms, Some(T0 + 16_000));
    assert!(cat.session("nope").unwrap().is_none());

    // Device sessions: overlap with [from, to).
    let ids =
        |v: Vec<streamcore::catalog::Session>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(cat.sessions_of_device(SIM_A, 0, i64::MAX).unwrap()),
        vec![s1.clone(), s2.clone()]
    );
    assert_eq!(
        ids(cat
            .sessions_of_device(SIM_A, T0 + 17_000, T0 + 20_000)
            .unwrap()),
        vec![s2.clone()]
    );
    assert_eq!(
        ids(cat.sessions_of_device(SIM_A, T0 - 5000, T0 + 500).unwrap()),
        vec![s1.clone()]
    );
    assert!(cat
        .sessions_of_device(SIM_B, 0, i64::MAX)
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(cat
            .sessions_of_stream("cam-lobby", T0, T0 + 1_000_000)
            .unwrap()),
        vec![raw.clone()]
    );
    assert!(cat
        .sessions_of_stream("cam-lobby", 0, T0)
        .unwrap()
        .is_empty());

    let streams = cat.streams().unwrap();
    assert_eq!(streams.len(), 3);
    assert_eq!(streams[0].name, "132570034500_1");
    assert_eq!(streams[0].sim.as_deref(), Some(SIM_A));
    assert_eq!(streams[2].sim, None);

    // A segment whose SessionStarted was lost still lands, under a
    // placeholder session that the late SessionStarted then fills in.
    let lost = new_session_id("132570034500_3", T0 + 50_000);
    cat.write(&[segment(&lost, "132570034500_3", 0, T0 + 50_000)])
        .unwrap();
    let ph = cat.session(&lost).unwrap().unwrap();
    assert_eq!(ph.host, "");
    // A placeholder on a known device stream is listed under that device.
    let lost2 = new_session_id("132570034500_2", T0 + 70_000);
    cat.write(&[segment(&lost2, "132570034500_2", 8, T0 + 70_000)])
        .unwrap();
    let ph2 = cat.session(&lost2).unwrap().unwrap();
    assert_eq!((ph2.sim.as_deref(), ph2.channel), (Some(SIM_A), Some(2)));
    assert!(ids(cat
        .sessions_of_device(SIM_A, T0 + 70_000, T0 + 70_001)
        .unwrap())
    .contains(&lost2));
    cat.write(&[session_started(
        &lost,
        "132570034500_3",
        Some(SIM_A),
        Some(3),
        T0 + 49_000,
    )])
    .unwrap();
    let filled = cat.session(&lost).unwrap().unwrap();
    assert_eq!(
        (filled.host.as_str(), filled.started_ms, filled.channel),
        ("ingest-1", T0 + 49_000, Some(3))
    );
    let st = cat.streams().unwrap();
    let s3 = st.iter().find(|s| s.name == "132570034500_3").unwrap();
    assert_eq!((s3.sim.as_deref(), s3.channel), (Some(SIM_A), Some(3)));

    // Crash recovery: an instance closes the sessions it left open (not the
    // other instance's, nor the placeholder whose owner is unknown).
    assert_eq!(cat.end_open_sessions("ingest-1", T0 + 60_000).unwrap(), 2);
    let live: Vec<String> = cat
        .live_sessions()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![lost2, raw]);
}

fn segments_covering_a_time_range(db: TestDb) {
    let cat = db.open();
    let s = new_session_id("132570034500_1", T0);
    let mut recs = vec![session_started(
        &s,
        "132570034500_1",
        Some(SIM_A),
        Some(1),
        T0,
    )];
    // 10 segments of 4 s from T0: [T0+4k*i, T0+4k*(i+1)).
    for seq in 0..10u64 {
        recs.push(segment(&s, "132570034500_1", seq, T0 + seq as i64 * 4000));
    }
    // Another stream at the same times must not leak in.
    let other = new_session_id("132570034500_2", T0);
    recs.push(session_started(
        &other,
        "132570034500_2",
        Some(SIM_A),
        Some(2),
        T0,
    ));
    recs.push(segment(&other, "132570034500_2", 0, T0));
    cat.write(&recs).unwrap();
    let seqs = |from: i64, to: i64| {
        cat.segments_in_range("132570034500_1", from, to)
            .unwrap()
            .into_iter()
            .map(|s| s.sequence)
            .collect::<Vec<_>>()
    };
    // An incident from 10 s to 17 s is covered by segments 2, 3 and 4.
    assert_eq!(seqs(T0 + 10_000, T0 + 17_000), vec![2, 3, 4]);
    // Exactly on boundaries: [8 s, 12 s) is segment 2 only.
    assert_eq!(seqs(T0 + 8_000, T0 + 12_000), vec![2]);
    assert_eq!(seqs(T0 + 39_999, T0 + 100_000), vec![9]);
    assert!(seqs(T0 + 40_000, T0 + 100_000).is_empty());
    assert!(seqs(0, T0).is_empty());
    assert_eq!(seqs(0, i64::MAX).len(), 10);
}

fn incidents_in_a_time_range(db: TestDb) {
    let cat = db.open();
    let inc = |from: i64, to: i64, kind: &str, ch: Option<u8>| Record::Incident {
        sim: SIM_A.into(),
        channel: ch,
        from_ms: from,
        to_ms: to,
        kind: kind.into(),
        source: "808-alarm".into(),
        session_id: None,
        open: false,
        alarm: 0,
        lat: None,
        lon: None,
        video_state: None,
        video_reason: None,
    };
    cat.write(&[
        inc(T0, T0 + 1000, "emergency", None),
        inc(T0 + 60_000, T0 + 61_000, "overspeed", Some(1)),
        inc(T0 + 120_000, T0 + 130_000, "playback", Some(2)),
    ])
    .unwrap();
    // The alarm lasted longer: same key, later end -> extended, not duplicated.
    cat.write(&[inc(T0, T0 + 9000, "emergency", None)]).unwrap();
    assert_eq!(db.count("incidents"), 3);
    let all = cat.incidents(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        (all[0].kind.as_str(), all[0].channel, all[0].to_ms),
        ("emergency", 0, T0 + 9000)
    );
    assert_eq!(all[1].channel, 1);
    assert_eq!(all[1].stream_name(), Some(format!("{SIM_A}_1")));
    assert_eq!(all[0].stream_name(), None, "whole-device incident");
    let ids: HashSet<i64> = all.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 3, "database-generated ids are distinct");
    let mid = cat.incidents(SIM_A, T0 + 5000, T0 + 100_000).unwrap();
    assert_eq!(
        mid.iter().map(|i| i.kind.as_str()).collect::<Vec<_>>(),
        vec!["emergency", "overspeed"]
    );
    assert!(cat
        .incidents(SIM_A, T0 + 200_000, T0 + 300_000)
        .unwrap()
        .is_empty());
    assert!(cat.incidents(SIM_B, 0, i64::MAX).unwrap().is_empty());
    assert_eq!(cat.incident(all[2].id).unwrap().unwrap(), all[2]);
    assert!(cat.incident(-1).unwrap().is_none());
}

fn racing_writers_do_not_duplicate(db: TestDb) {
    // Two independent writers (as two processes would be) report the same
    // facts at the same time: nothing fails, nothing is duplicated.
    let cat = db.open();
    let s = "132570034500_1-1764000000000-00000000deadbeef".to_string();
    let mut recs = vec![Record::DeviceSeen {
        sim: SIM_A.into(),
        plate: Some("B1".into()),
        auth_code: None,
        at: T0,
    }];
    recs.push(session_started(
        &s,
        "132570034500_1",
        Some(SIM_A),
        Some(1),
        T0,
    ));
    for i in 0..300u64 {
        recs.push(position(SIM_A, T0 + i as i64 * 1000));
        if i % 10 == 0 {
            recs.push(segment(&s, "132570034500_1", i / 10, T0 + i as i64 * 400));
        }
    }
    recs.push(Record::Incident {
        sim: SIM_A.into(),
        channel: Some(1),
        from_ms: T0,
        to_ms: T0 + 5000,
        kind: "overspeed".into(),
        source: "808-alarm".into(),
        session_id: None,
        open: false,
        alarm: 0,
        lat: None,
        lon: None,
        video_state: None,
        video_reason: None,
    });
    let cfg = WriterConfig {
        batch_max: 37, // many small interleaved transactions
        linger: Duration::from_millis(1),
        ..WriterConfig::default()
    };
    let writers: Vec<CatalogWriter> = (0..3)
        .map(|_| CatalogWriter::spawn(&db.url, cfg.clone()).unwrap())
        .collect();
    std::thread::scope(|scope| {
        for w in &writers {
            let recs = &recs;
            scope.spawn(move || {
                for r in recs {
                    assert!(w.send(r.clone()));
                }
            });
        }
    });
    for w in writers {
        assert!(w.flush(Duration::from_secs(60)));
        let st = w.shutdown();
        assert_eq!(st.written, recs.len() as u64, "{st:?}");
        assert_eq!((st.rejected, st.dropped()), (0, 0), "{st:?}");
    }
    assert_eq!(db.count("devices"), 1);
    assert_eq!(db.count("positions"), 300);
    assert_eq!(db.count("sessions"), 1);
    assert_eq!(db.count("segments"), 30);
    assert_eq!(db.count("incidents"), 1);
    assert_eq!(cat.devices().unwrap()[0].plate.as_deref(), Some("B1"));
}

fn writer_with_concurrent_readers(db: TestDb) {
    let cat = db.open();
    let writer = CatalogWriter::spawn(&db.url, WriterConfig::default()).unwrap();
    const PRODUCERS: i64 = 4;
    const PER: i64 = 2500;
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let _guard = StopOnDrop(&stop);
        let mut readers = Vec::new();
        for _ in 0..2 {
            readers.push(scope.spawn(|| {
                let mut last_total = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let mut total = 0;
                    for d in 0..PRODUCERS {
                        let sim = format!("00000000000{d}");
                        total += cat.positions(&sim, 0, i64::MAX, usize::MAX).unwrap().len();
                    }
                    // Committed batches only ever add rows.
                    assert!(total >= last_total, "{total} < {last_total}");
                    last_total = total;
                    let devices = cat.devices().unwrap();
                    assert!(devices.len() <= PRODUCERS as usize);
                    cat.live_sessions().unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|d| {
                let writer = &writer;
                scope.spawn(move || {
                    let sim = format!("00000000000{d}");
                    let stream = format!("{sim}_1");
                    let sid = new_session_id(&stream, T0);
                    assert!(writer.send(session_started(&sid, &stream, Some(&sim), Some(1), T0)));
                    for i in 0..PER {
                        assert!(writer.send(position(&sim, T0 + i * 100)));
                        if i % 100 == 0 {
                            assert!(writer.send(segment(
                                &sid,
                                &stream,
                                (i / 100) as u64,
                                T0 + i * 40
                            )));
                        }
                    }
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        assert!(
            writer.flush(Duration::from_secs(120)),
            "writer did not drain"
        );
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    });
    let st = writer.shutdown();
    let expected = (PRODUCERS * (1 + PER + PER / 100)) as u64;
    assert_eq!(st.received, expected);
    assert_eq!(st.written, expected, "{st:?}");
    assert_eq!(
        (st.dropped(), st.rejected, st.buffered),
        (0, 0, 0),
        "{st:?}"
    );
    assert!(
        st.batches >= 2 && st.batches < st.written,
        "batched: {st:?}"
    );
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(db.count("positions"), PRODUCERS * PER);
    assert_eq!(db.count("segments"), PRODUCERS * PER / 100);
    assert_eq!(cat.devices().unwrap().len(), PRODUCERS as usize);
}

fn flush_under_load_waits_only_for_earlier_records(db: TestDb) {
    let cat = db.open();
    let writer = CatalogWriter::spawn(&db.url, WriterConfig::default()).unwrap();
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let _guard = StopOnDrop(&stop);
        // A steady load (about 20 records/ms, within what every backend
        // absorbs in a debug build), not a backlog.
        let producer = scope.spawn(|| {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    writer.send(position(SIM_B, T0 + i));
                    i += 1;
                }
                sent.store(i as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            i
        });
        // The load is on before the first flush (on a busy machine the
        // producer may start late).
        wait_until(
            "the producer's first records",
            Duration::from_secs(30),
            || sent.load(Ordering::Relaxed) > 0,
        );
        for k in 0..5 {
            assert!(writer.send(position(SIM_A, T0 + k)));
            // Records keep arriving behind ours; flush returns once the
            // records sent before it are in, whatever follows.
            assert!(
                writer.flush(Duration::from_secs(30)),
                "flush {k} under load"
            );
            let n = cat.positions(SIM_A, 0, i64::MAX, 100).unwrap().len() as i64;
            assert_eq!(n, k + 1);
        }
        stop.store(true, Ordering::Relaxed);
        let sent = producer.join().unwrap();
        assert!(sent > 0);
    });
    assert!(writer.flush(Duration::from_secs(60)));
    let st = writer.shutdown();
    assert_eq!(st.written + st.dropped(), st.received, "{st:?}");
    assert_eq!(st.rejected, 0);
}

fn write_file(root: &Path, rel: &str, age: Duration) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"\x47 fake ts").unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - age).unwrap();
    p
}

fn retention_deletes_rows_then_files_and_sweeps_orphans(db: TestDb) {
    let cat = db.open();
    let root = db.data_dir().to_path_buf();
    let hour = Duration::from_secs(3600);
    let stream = "132570034500_1";
    let old_s = new_session_id(stream, T0);
    let new_s = new_session_id(stream, T0 + 100_000);
    // Old recording: 5 segments, session ended.
    let mut recs = vec![session_started(&old_s, stream, Some(SIM_A), Some(1), T0)];
    for seq in 0..5u64 {
        recs.push(segment(&old_s, stream, seq, T0 + seq as i64 * 4000));
        write_file(&root, &format!("live/{stream}/{seq}.ts"), 2 * hour);
    }
    recs.push(Record::SessionEnded {
        session_id: old_s.clone(),
        ended_ms: now_ms() - 1,
    });
    cat.write(&recs).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let cut = now_ms();
    std::thread::sleep(Duration::from_millis(30));
    // New recording: 3 segments written after the cut.
    let mut recs = vec![session_started(
        &new_s,
        stream,
        Some(SIM_A),
        Some(1),
        T0 + 100_000,
    )];
    for seq in 5..8u64 {
        recs.push(segment(
            &new_s,
            stream,
            seq,
            T0 + 100_000 + seq as i64 * 4000,
        ));
        write_file(&root, &format!("live/{stream}/{seq}.ts"), 2 * hour);
    }
    // Positions: 10 old (device time far back), 10 recent.
    let now = now_ms();
    for i in 0..10 {
        recs.push(position(SIM_A, now - 40 * 24 * 3_600_000 + i));
        recs.push(position(SIM_A, now - 1000 + i));
    }
    cat.write(&recs).unwrap();

    // What a crash after step 1 of an earlier run leaves: a pending
    // deletion whose file still exists.
    let crashed = write_file(&root, "live/cam-x/41.ts", Duration::ZERO);
    cat.execute_sql(
        "INSERT INTO pending_deletions (path, queued_ms) VALUES ('live/cam-x/41.ts', 1)",
    )
    .unwrap();
    // ... and one whose file was already unlinked when the crash came.
    cat.execute_sql(
        "INSERT INTO pending_deletions (path, queued_ms) VALUES ('live/cam-x/42.ts', 1)",
    )
    .unwrap();
    // A hostile row must never make retention touch files outside the root.
    let outside_dir = tempfile::tempdir().unwrap();
    let outside = outside_dir.path().join("victim.ts");
    std::fs::write(&outside, b"keep me").unwrap();
    let rel_outside = format!(
        "../{}/victim.ts",
        outside_dir.path().file_name().unwrap().to_str().unwrap()
    );
    // Only reachable if the data dir and the victim share a parent (both in /tmp).
    assert!(root.join(&rel_outside).exists());
    cat.execute_sql(&format!(
        "INSERT INTO pending_deletions (path, queued_ms) VALUES ('{rel_outside}', 1)"
    ))
    .unwrap();
    // Orphans: an old file with no row goes, a fresh one (its row may still
    // be in a writer's buffer) stays; other files are not ours.
    let orphan_old = write_file(&root, "live/cam-y/9.ts", 3 * hour);
    // (written after `cut`, so younger than the grace at the simulated "now")
    let orphan_fresh = write_file(&root, "live/cam-y/10.ts", Duration::ZERO);
    let playlist = write_file(&root, "live/cam-y/index.m3u8", 3 * hour);

    let policy = RetentionPolicy {
        segment_max_age: Some(hour),
        position_max_age: Some(Duration::from_secs(30 * 24 * 3600)),
        orphan_grace: Some(hour),
        chunk: 2, // several transactions
    };
    // "now" is one hour after the cut: exactly the old recording is expired.
    let storage = FsStorage::open(&root, false).unwrap();
    let report = cat
        .run_retention(&storage, &policy, cut + 3_600_000)
        .unwrap();
    assert_eq!(report.segments_deleted, 5, "{report:?}");
    assert_eq!(
        report.files_deleted, 6,
        "5 expired + 1 left by the crash: {report:?}"
    );
    assert_eq!(report.files_missing, 1, "{report:?}");
    assert_eq!(report.unsafe_paths, 1, "{report:?}");
    assert_eq!(report.positions_deleted, 10, "{report:?}");
    assert_eq!(report.sessions_deleted, 1, "{report:?}");
    assert_eq!(report.orphans_deleted, 1, "{report:?}");

    assert!(outside.exists(), "never delete outside the data dir");
    assert!(!crashed.exists());
    assert!(!orphan_old.exists());
    assert!(orphan_fresh.exists());
    assert!(playlist.exists());
    for seq in 0..5 {
        assert!(
            !root.join(format!("live/{stream}/{seq}.ts")).exists(),
            "{seq}"
        );
    }
    assert_eq!(db.count("pending_deletions"), 0);
    assert!(cat.session(&old_s).unwrap().is_none());
    assert!(cat.session(&new_s).unwrap().is_some(), "live session kept");
    let kept = cat.segments_of_session(&new_s).unwrap();
    assert_eq!(kept.len(), 3);
    // The invariant: every remaining row names an existing file.
    for s in &kept {
        assert!(root.join(&s.path).exists(), "{}", s.path);
    }
    assert_eq!(cat.positions(SIM_A, 0, i64::MAX, 100).unwrap().len(), 10);

    // A second run finds nothing more to do.
    let again = cat
        .run_retention(&storage, &policy, cut + 3_600_000)
        .unwrap();
    assert_eq!(again, Default::default());
}

fn invalid_records_are_rejected_not_fatal(db: TestDb) {
    let cat = db.open();
    let bad_path = Record::Segment {
        session_id: "s".into(),
        stream: "x".into(),
        sequence: 1,
        start_pts: 0,
        duration_90k: 1,
        bytes: 1,
        path: "../../etc/passwd".into(),
        program_date_time_ms: 0,
        discontinuity: false,
    };
    assert!(matches!(
        cat.write(std::slice::from_ref(&bad_path)),
        Err(streamcore::catalog::Error::InvalidRecord(_))
    ));
    let writer = CatalogWriter::spawn(&db.url, WriterConfig::default()).unwrap();
    assert!(!writer.send(bad_path));
    assert!(!writer.send(position(&"9".repeat(21), T0)));
    // A record the database itself refuses (here a stream name the test
    // forbids with a constraint of its own) only costs that record.
    let refuse = match db.backend {
        Backend::Sqlite => {
            "CREATE TRIGGER test_refuse BEFORE INSERT ON streams WHEN NEW.name = 'refused_by_db' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        }
        Backend::Postgres | Backend::Mysql => {
            "ALTER TABLE streams ADD CONSTRAINT test_refuse CHECK (name <> 'refused_by_db')"
        }
    };
    cat.execute_sql(refuse).unwrap();
    assert!(writer.send(session_started("a", "dev_1", Some(SIM_A), Some(1), T0)));
    assert!(writer.flush(Duration::from_secs(30)));
    assert!(writer.send(position(SIM_A, T0)));
    assert!(writer.send(session_started(
        "b",
        "refused_by_db",
        Some(SIM_A),
        Some(2),
        T0
    )));
    assert!(writer.send(segment("b", "other_name", 0, T0)));
    assert!(writer.send(position(SIM_A, T0 + 1)));
    assert!(writer.flush(Duration::from_secs(30)));
    let st = writer.shutdown();
    assert_eq!(st.rejected, 2 + 1, "{st:?}");
    assert_eq!(st.written, 4, "{st:?}");
    assert_eq!(db.count("positions"), 2);
}

// ------------------------------------------------------------- outage

/// A TCP relay on 127.0.0.1 in front of a database server that the test
/// can take down (listener closed, open connections cut) and bring back on
/// the same port: the writer sees exactly what a server outage looks like.
struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let mut p = Proxy {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            accept: None,
        };
        p.up();
        p
    }

    fn up(&mut self) {
        let listener = TcpListener::bind(self.addr).expect("rebind proxy port");
        self.addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Ordering::SeqCst);
        let (stop, conns, target) = (self.stop.clone(), self.conns.clone(), self.target);
        self.accept = Some(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16 * 1024];
                                loop {
                                    match from.read(&mut buf) {
                                        Ok(0) | Err(_) => break,
                                        Ok(n) => {
                                            if std::io::Write::write_all(&mut to, &buf[..n])
                                                .is_err()
                                            {
                                                break;
                                            }
                                        }
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Both);
                                let _ = from.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => break,
                }
            }
        }));
    }

    /// The outage: refuse new connections and cut every open one.
    fn down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().unwrap();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn url(&self, db_url: &str) -> String {
        // scheme://user@127.0.0.1:PORT/db -> same with the proxy's port
        let (scheme, rest) = db_url.split_once("://").unwrap();
        let (auth_host, db) = rest.split_once('/').unwrap();
        let user = auth_host
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{user}{}/{db}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let host = rest.split_once('/').unwrap().0;
    let host = host.rsplit_once('@').map(|x| x.1).unwrap_or(host);
    host.parse()
        .expect("test server URL must use an IP:port host")
}

fn outage_is_buffered_then_written_and_overflow_counted(db: TestDb) {
    let cat = db.open();
    let mut proxy = Proxy::start(server_addr(&db.url));
    let writer = CatalogWriter::spawn(
        &proxy.url(&db.url),
        WriterConfig {
            buffer_max: 300,
            linger: Duration::from_millis(5),
            backoff_min: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for i in 0..100 {
        assert!(writer.send(position(SIM_A, T0 + i)));
    }
    assert!(writer.flush(Duration::from_secs(30)));
    assert_eq!(writer.stats().written, 100);
    assert!(writer.stats().connected);

    proxy.down();
    for i in 100..300 {
        assert!(
            writer.send(position(SIM_A, T0 + i)),
            "send never blocks or fails in an outage"
        );
    }
    wait_until(
        "the writer to notice the outage",
        Duration::from_secs(30),
        || {
            let st = writer.stats();
            st.retries >= 2 && st.buffered == 200 && !st.connected
        },
    );
    assert_eq!(
        db.count("positions"),
        100,
        "nothing written while the server is away"
    );
    // 150 more: 100 fit the 300-record buffer, 50 are dropped and counted.
    for i in 300..450 {
        assert!(writer.send(position(SIM_A, T0 + i)));
    }
    wait_until(
        "the overflow to be counted",
        Duration::from_secs(30),
        || {
            let st = writer.stats();
            st.buffered == 300 && st.dropped_buffer_full == 50
        },
    );
    assert!(
        !writer.flush(Duration::from_millis(100)),
        "cannot drain while down"
    );

    proxy.up();
    assert!(
        writer.flush(Duration::from_secs(60)),
        "drains once the server is back"
    );
    let st = writer.shutdown();
    assert_eq!(st.written, 400, "{st:?}");
    assert_eq!(st.dropped_buffer_full, 50, "{st:?}");
    assert_eq!((st.buffered, st.rejected), (0, 0), "{st:?}");
    assert!(st.reconnects >= 1, "{st:?}");
    let times: Vec<i64> = cat
        .positions(SIM_A, 0, i64::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|p| p.device_time_ms - T0)
        .collect();
    assert_eq!(
        times,
        (0..400).collect::<Vec<_>>(),
        "oldest kept, newest beyond the bound dropped"
    );
}

fn writer_starts_during_an_outage(db: TestDb) {
    let cat = db.open();
    let mut proxy = Proxy::start(server_addr(&db.url));
    proxy.down();
    let writer = CatalogWriter::spawn(
        &proxy.url(&db.url),
        WriterConfig {
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for i in 0..10 {
        assert!(writer.send(position(SIM_B, T0 + i)));
    }
    wait_until(
        "retries against a dead server",
        Duration::from_secs(30),
        || writer.stats().retries >= 3,
    );
    proxy.up();
    assert!(writer.flush(Duration::from_secs(30)));
    assert_eq!(writer.stats().written, 10);
    assert_eq!(cat.positions(SIM_B, 0, i64::MAX, 100).unwrap().len(), 10);
}

/// A server that accepts TCP connections and never answers (a hung host):
/// the writer thread is stuck in connect, so the channel fills up and
/// `send` must drop and count instead of blocking the producer.
fn full_queue_drops_instead_of_blocking(db: TestDb) {
    let _cat = db.open();
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hung.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for c in hung.incoming().flatten() {
            keep.lock().unwrap().push(c); // hold it open, say nothing
        }
    });
    let url = format!("postgres://root@{addr}/{}?connect_timeout=3", db.name);
    let writer = CatalogWriter::spawn(
        &url,
        WriterConfig {
            channel_capacity: 4,
            shutdown_timeout: Duration::from_millis(50),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    assert!(writer.send(position(SIM_A, T0)));
    wait_until(
        "the writer to be stuck connecting",
        Duration::from_secs(10),
        || !held.lock().unwrap().is_empty(),
    );
    let accepted = (1..200)
        .filter(|i| writer.send(position(SIM_A, T0 + i)))
        .count() as u64;
    let st = writer.stats();
    assert!(
        accepted <= 4,
        "channel capacity bounds what is accepted: {accepted}"
    );
    assert_eq!(st.dropped_queue_full, 199 - accepted, "{st:?}");
    assert_eq!(st.received, 1 + accepted);
    let st = writer.shutdown();
    assert_eq!(st.written, 0);
    assert_eq!(
        st.dropped_shutdown, st.received,
        "unwritten records are counted at shutdown: {st:?}"
    );
}

mod outage_postgres {
    #[test]
    fn full_queue_drops_instead_of_blocking() {
        super::full_queue_drops_instead_of_blocking(super::TestDb::new(super::Backend::Postgres))
    }
    #[test]
    fn outage_is_buffered_then_written_and_overflow_counted() {
        super::outage_is_buffered_then_written_and_overflow_counted(super::TestDb::new(
            super::Backend::Postgres,
        ))
    }
    #[test]
    fn writer_starts_during_an_outage() {
        super::writer_starts_during_an_outage(super::TestDb::new(super::Backend::Postgres))
    }
}

mod outage_mysql {
    #[test]
    fn outage_is_buffered_then_written_and_overflow_counted() {
        super::outage_is_buffered_then_written_and_overflow_counted(super::TestDb::new(
            super::Backend::Mysql,
        ))
    }
    #[test]
    fn writer_starts_during_an_outage() {
        super::writer_starts_during_an_outage(super::TestDb::new(super::Backend::Mysql))
    }
}

#[test]
fn sqlite_url_forms_and_wal() {
    assert_eq!(
        streamcore::catalog::default_database_url(Path::new("/data")),
        "/data/catalog.sqlite"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.sqlite");
    let cat = Catalog::open(&format!("sqlite://{}", path.display())).unwrap();
    cat.write(&[position(SIM_A, T0)]).unwrap();
    // Same file through the plain-path form.
    let cat2 = Catalog::open(path.to_str().unwrap()).unwrap();
    assert_eq!(cat2.positions(SIM_A, 0, i64::MAX, 10).unwrap().len(), 1);
    let mode: Vec<(String, String)> = {
        #[derive(QueryableByName)]
        struct M {
            #[diesel(sql_type = Text)]
            journal_mode: String,
        }
        let m: Vec<M> = diesel::sql_query("PRAGMA journal_mode")
            .load(&mut SqliteConnection::establish(path.to_str().unwrap()).unwrap())
            .unwrap();
        m.into_iter()
            .map(|m| (m.journal_mode, String::new()))
            .collect()
    };
    assert_eq!(mode[0].0, "wal");
    assert!(matches!(
        Catalog::open("redis://127.0.0.1/0"),
        Err(streamcore::catalog::Error::BadUrl(_))
    ));
    // A server that is not there fails open() with a clear error.
    let err = Catalog::open("postgres://root@127.0.0.1:1/none").unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot connect to the postgres catalog"),
        "{err}"
    );
}

/// A device channel has two streams: its live video and the recordings it
/// plays back to us (`_pb`). With `UNIQUE (sim, channel)` on streams, the
/// playback stream's insert-or-ignore dropped its row and the batch then
/// failed the sessions foreign key, losing the upload's catalog rows.
fn playback_stream_beside_the_live_stream_of_its_channel(db: TestDb) {
    let cat = db.open();
    let live = new_session_id("132570034500_1", T0);
    let upload = new_session_id("132570034500_1_pb", T0 + 10_000);
    cat.write(&[
        session_started(&live, "132570034500_1", Some(SIM_A), Some(1), T0),
        segment(&live, "132570034500_1", 0, T0),
    ])
    .unwrap();
    // The upload arrives while the live stream runs, in its own batch.
    cat.write(&[
        playback_started(&upload, SIM_A, 1, T0 + 10_000),
        segment(&upload, "132570034500_1_pb", 0, T0 - 3_600_000),
        segment(&upload, "132570034500_1_pb", 1, T0 - 3_596_000),
        Record::SessionEnded {
            session_id: upload.clone(),
            ended_ms: T0 + 20_000,
        },
        Record::Incident {
            sim: SIM_A.into(),
            channel: Some(1),
            from_ms: T0 - 3_600_000,
            to_ms: T0 - 3_592_000,
            kind: INCIDENT_KIND_PLAYBACK.into(),
            source: "jt1078".into(),
            session_id: Some(upload.clone()),
            open: false,
            alarm: 0,
            lat: None,
            lon: None,
            video_state: None,
            video_reason: None,
        },
    ])
    .unwrap();
    let streams = cat.streams().unwrap();
    let pb = streams
        .iter()
        .find(|s| s.name == "132570034500_1_pb")
        .expect("the playback stream has its own row");
    assert_eq!((pb.sim.as_deref(), pb.channel), (Some(SIM_A), Some(1)));
    let live_row = streams.iter().find(|s| s.name == "132570034500_1").unwrap();
    assert_eq!(
        (live_row.sim.as_deref(), live_row.channel),
        (Some(SIM_A), Some(1))
    );
    let session = cat.session(&upload).unwrap().expect("the upload's session");
    assert_eq!(session.kind(), SessionKind::Playback);
    assert_eq!(session.stream, "132570034500_1_pb");
    assert_eq!(session.ended_ms, Some(T0 + 20_000));
    assert_eq!(cat.segments_of_session(&upload).unwrap().len(), 2);
    assert_eq!(cat.segments_of_session(&live).unwrap().len(), 1);
    // One device, one channel, two sessions of two kinds.
    let sessions = cat.sessions_of_device(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(sessions.len(), 2);
    let devices = cat.devices().unwrap();
    assert_eq!(devices[0].channels, vec![1]);
    // The newest session of each stream, ended or not.
    let latest = cat.latest_sessions().unwrap();
    let latest: Vec<_> = latest
        .iter()
        .map(|s| (s.stream.as_str(), s.id.as_str()))
        .collect();
    assert_eq!(
        latest,
        [
            ("132570034500_1", live.as_str()),
            ("132570034500_1_pb", upload.as_str())
        ]
    );
    // The incident points at the upload's stream and session.
    let inc = &cat.incidents(SIM_A, 0, i64::MAX).unwrap()[0];
    assert_eq!(inc.stream_name().as_deref(), Some("132570034500_1_pb"));
    assert_eq!(inc.session_id.as_deref(), Some(upload.as_str()));
}

/// A catalog created by the first schema, holding rows, is upgraded in
/// place: nothing is lost, and a playback stream fits beside a live one.
fn upgrade_from_the_first_schema_keeps_rows_and_admits_playback_streams(db: TestDb) {
    let cat = db.open();
    let live = new_session_id("132570034500_1", T0);
    cat.write(&[
        session_started(&live, "132570034500_1", Some(SIM_A), Some(1), T0),
        segment(&live, "132570034500_1", 0, T0),
        Record::Incident {
            sim: SIM_A.into(),
            channel: Some(1),
            from_ms: T0,
            to_ms: T0 + 1000,
            kind: "overspeed".into(),
            source: "808-alarm".into(),
            session_id: None,
            open: false,
            alarm: 0,
            lat: None,
            lon: None,
            video_state: None,
            video_reason: None,
        },
    ])
    .unwrap();
    // Back to the first schema.
    roll_back_to(&cat, db.backend, STEP_1);
    drop(cat);
    // Opening migrates again.
    let cat = db.open();
    let upload = new_session_id("132570034500_1_pb", T0 + 10_000);
    cat.write(&[
        playback_started(&upload, SIM_A, 1, T0 + 10_000),
        segment(&upload, "132570034500_1_pb", 0, T0),
    ])
    .unwrap();
    assert_eq!(db.count("streams"), 2);
    assert_eq!(cat.segments_of_session(&live).unwrap().len(), 1);
    assert_eq!(cat.segments_of_session(&upload).unwrap().len(), 1);
    let incidents = cat.incidents(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(incidents.len(), 1);
    assert_eq!(incidents[0].kind, "overspeed");
    assert_eq!(incidents[0].session_id, None);
}

// ------------------------------------------------ playbacks and alarm incidents

/// A playback request of channel `ch` for `[from, to)` in `state`, with
/// the 0x9201 fields an operator might set (4x fast forward of video from
/// main storage).
fn playback(
    id: &str,
    sim: &str,
    ch: u8,
    (from, to): (i64, i64),
    state: PlaybackState,
    reason: Option<&str>,
    session_id: Option<&str>,
) -> Record {
    Record::Playback {
        id: id.into(),
        sim: sim.into(),
        channel: ch,
        stream: format!("{sim}_{ch}_pb"),
        from_ms: from,
        to_ms: to,
        av_type: 2,
        stream_type: 1,
        storage_type: 1,
        mode: 1,
        speed: 3,
        requested_ms: T0 + 100_000,
        state,
        reason: reason.map(Into::into),
        session_id: session_id.map(Into::into),
        incident_id: None,
    }
}

/// The alarm incident of bit 1 (overspeed) starting at T0 on channel `ch`.
fn alarm_incident(ch: Option<u8>, to: i64, open: bool, at: Option<(f64, f64)>) -> Record {
    Record::Incident {
        sim: SIM_A.into(),
        channel: ch,
        from_ms: T0,
        to_ms: to,
        kind: "overspeed".into(),
        source: "808-alarm".into(),
        session_id: None,
        open,
        alarm: 1 << 1,
        lat: at.map(|p| p.0),
        lon: at.map(|p| p.1),
        video_state: None,
        video_reason: None,
    }
}

/// An incident left open by a process that died is closed once its end
/// has passed; one whose alarm still reports (its end ahead) stays open.
fn stale_open_incidents_are_closed(db: TestDb) {
    let cat = db.open();
    cat.write(&[
        alarm_incident(Some(1), T0 + 5_000, true, None),
        alarm_incident(Some(2), T0 + 600_000, true, None),
    ])
    .unwrap();
    assert_eq!(cat.close_stale_incidents(T0 + 60_000).unwrap(), 1);
    let open: Vec<(i32, bool)> = cat
        .incidents(SIM_A, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|i| (i.channel, i.open))
        .collect();
    assert_eq!(open, [(1, false), (2, true)]);
    assert_eq!(cat.close_stale_incidents(T0 + 60_000).unwrap(), 0);
}

fn incident_video(
    ch: Option<u8>,
    state: &str,
    reason: Option<&str>,
    session: Option<&str>,
) -> Record {
    Record::IncidentVideo {
        sim: SIM_A.into(),
        channel: ch,
        from_ms: T0,
        kind: "overspeed".into(),
        source: "808-alarm".into(),
        video_state: state.into(),
        video_reason: reason.map(Into::into),
        session_id: session.map(Into::into),
    }
}

/// `r` (an incident or its video) with another kind, so another key.
fn rekind(mut r: Record, new: &str) -> Record {
    match &mut r {
        Record::Incident { kind, .. } | Record::IncidentVideo { kind, .. } => *kind = new.into(),
        other => panic!("not an incident: {other:?}"),
    }
    r
}

fn the_incident(cat: &Catalog) -> Incident {
    let all = cat.incidents(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn playback_row(cat: &Catalog, id: &str) -> Playback {
    cat.playback(id).unwrap().expect("the playback row")
}

fn playback_requests_round_trip_and_never_move_back(db: TestDb) {
    let cat = db.open();
    let id = new_session_id(&format!("{SIM_A}_2_pb"), T0 + 100_000);
    let span = (T0 - 3_600_000, T0 - 3_540_000);
    // Requested before the device (or the stream) has any row.
    let requested = playback(&id, SIM_A, 2, span, PlaybackState::Requested, None, None);
    cat.write(std::slice::from_ref(&requested)).unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(
        row,
        Playback {
            id: id.clone(),
            sim: SIM_A.into(),
            channel: 2,
            stream: format!("{SIM_A}_2_pb"),
            from_ms: span.0,
            to_ms: span.1,
            av_type: 2,
            stream_type: 1,
            storage_type: 1,
            mode: 1,
            speed: 3,
            requested_ms: T0 + 100_000,
            state: PlaybackState::Requested,
            reason: None,
            session_id: None,
            incident_id: None,
        }
    );
    // The same record again (a retry) changes nothing.
    cat.write(std::slice::from_ref(&requested)).unwrap();
    assert_eq!(db.count("playbacks"), 1);
    assert_eq!(playback_row(&cat, &id), row);
    assert!(cat.playback("no-such-playback").unwrap().is_none());

    // The device connects: the upload's session is linked.
    let session = new_session_id(&format!("{SIM_A}_2_pb"), T0 + 101_000);
    cat.write(&[playback(
        &id,
        SIM_A,
        2,
        span,
        PlaybackState::Uploading,
        None,
        Some(&session),
    )])
    .unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(row.state, PlaybackState::Uploading);
    assert_eq!(row.session_id.as_deref(), Some(session.as_str()));
    // A late Requested (another task catalogued it) neither moves the state
    // back nor forgets the session.
    cat.write(std::slice::from_ref(&requested)).unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(row.state, PlaybackState::Uploading);
    assert_eq!(row.session_id.as_deref(), Some(session.as_str()));

    // Complete with a note; the record does not repeat the session.
    cat.write(&[playback(
        &id,
        SIM_A,
        2,
        span,
        PlaybackState::Complete,
        Some("the device sent 50.0 s of the 60.0 s asked for"),
        None,
    )])
    .unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(row.state, PlaybackState::Complete);
    assert_eq!(
        row.reason.as_deref(),
        Some("the device sent 50.0 s of the 60.0 s asked for")
    );
    assert_eq!(row.session_id.as_deref(), Some(session.as_str()));
    // Neither an earlier state nor the first record undoes the end.
    cat.write(&[
        playback(
            &id,
            SIM_A,
            2,
            span,
            PlaybackState::Uploading,
            None,
            Some(&session),
        ),
        requested.clone(),
    ])
    .unwrap();
    let done = playback_row(&cat, &id);
    assert_eq!(done, row);

    // One end state may replace another, with its own reason.
    cat.write(&[playback(
        &id,
        SIM_A,
        2,
        span,
        PlaybackState::Stopped,
        Some("stopped by the operator"),
        None,
    )])
    .unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(
        (row.state, row.reason.as_deref()),
        (PlaybackState::Stopped, Some("stopped by the operator"))
    );

    // A known incident id is kept when a later record does not repeat it.
    let mut with_incident = playback(&id, SIM_A, 2, span, PlaybackState::Failed, None, None);
    if let Record::Playback { incident_id, .. } = &mut with_incident {
        *incident_id = Some(42);
    }
    cat.write(&[with_incident]).unwrap();
    cat.write(&[playback(
        &id,
        SIM_A,
        2,
        span,
        PlaybackState::Failed,
        Some("device refused (result 2)"),
        None,
    )])
    .unwrap();
    let row = playback_row(&cat, &id);
    assert_eq!(row.incident_id, Some(42));
    assert_eq!(row.session_id.as_deref(), Some(session.as_str()));
    assert_eq!(row.state, PlaybackState::Failed);
    assert_eq!(row.reason.as_deref(), Some("device refused (result 2)"));
    assert_eq!(db.count("playbacks"), 1);

    // The JSON the APIs serve: state by name, the 0x9201 fields as numbers.
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["speed"], 3);
    assert_eq!(json["channel"], 2);
    assert_eq!(json["stream"], format!("{SIM_A}_2_pb"));
    assert_eq!(json["session_id"], session.as_str());
    assert_eq!(json["incident_id"], 42);
    assert_eq!(json["from_ms"], span.0);

    // A long reason is cut, not refused (the state it explains is kept).
    let long = "x".repeat(5000);
    cat.write(&[playback(
        &id,
        SIM_A,
        2,
        span,
        PlaybackState::Failed,
        Some(&long),
        None,
    )])
    .unwrap();
    assert_eq!(playback_row(&cat, &id).reason.unwrap().len(), 1000);
    // An id the schema cannot hold is refused before anything is written.
    let bad = playback(
        &"p".repeat(129),
        SIM_A,
        2,
        span,
        PlaybackState::Requested,
        None,
        None,
    );
    assert!(matches!(
        cat.write(&[bad]),
        Err(streamcore::catalog::Error::InvalidRecord(_))
    ));
    assert_eq!(db.count("playbacks"), 1);
}

fn playbacks_of_a_device_overlap_the_span_oldest_first(db: TestDb) {
    let cat = db.open();
    let req = |id: &str, sim: &str, ch: u8, from: i64, to: i64| {
        playback(
            id,
            sim,
            ch,
            (from, to),
            PlaybackState::Requested,
            None,
            None,
        )
    };
    // Written newest span first: the order of the answer is the query's.
    cat.write(&[
        req("p-late", SIM_A, 1, T0 + 60_000, T0 + 120_000),
        req("p-early", SIM_A, 2, T0, T0 + 60_000),
        req("p-other-device", SIM_B, 1, T0, T0 + 60_000),
    ])
    .unwrap();
    let ids = |from: i64, to: i64| {
        cat.playbacks_of_device(SIM_A, from, to)
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(0, i64::MAX), ["p-early", "p-late"]);
    // Half-open: a span ending where the query starts is not in it.
    assert_eq!(ids(T0 + 60_000, T0 + 61_000), ["p-late"]);
    assert_eq!(ids(T0 + 59_999, T0 + 60_001), ["p-early", "p-late"]);
    assert!(ids(T0 + 120_000, i64::MAX).is_empty());
    assert!(ids(0, T0).is_empty());
    assert_eq!(
        cat.playbacks_of_device(SIM_B, 0, i64::MAX).unwrap()[0].id,
        "p-other-device"
    );
}

fn alarm_incident_opens_extends_closes_and_tracks_its_video(db: TestDb) {
    let cat = db.open();
    let here = (22.543_096, 114.057_865);
    // The alarm bit is set: an open incident where the vehicle is.
    cat.write(&[alarm_incident(Some(1), T0 + 1000, true, Some(here))])
        .unwrap();
    let inc = the_incident(&cat);
    assert!(inc.open);
    assert_eq!((inc.alarm, inc.to_ms), (2, T0 + 1000));
    assert_eq!((inc.lat, inc.lon), (Some(here.0), Some(here.1)));
    assert_eq!(
        (inc.video_state.as_deref(), inc.video_reason.as_deref()),
        (None, None)
    );

    // Still set: extended; a report without a position keeps the first one.
    cat.write(&[alarm_incident(Some(1), T0 + 5000, true, None)])
        .unwrap();
    let inc = the_incident(&cat);
    assert!(inc.open);
    assert_eq!(inc.to_ms, T0 + 5000);
    assert_eq!((inc.lat, inc.lon), (Some(here.0), Some(here.1)));

    // Its video is fetched from the device; the upload's session is linked.
    cat.write(&[incident_video(Some(1), "requested", None, None)])
        .unwrap();
    assert_eq!(the_incident(&cat).video_state.as_deref(), Some("requested"));
    let upload = new_session_id(&format!("{SIM_A}_1_pb"), T0 + 30_000);
    cat.write(&[incident_video(Some(1), "uploading", None, Some(&upload))])
        .unwrap();
    // An alarm report knows nothing of the video and must not erase it.
    cat.write(&[alarm_incident(Some(1), T0 + 7000, true, None)])
        .unwrap();
    let inc = the_incident(&cat);
    assert_eq!(inc.video_state.as_deref(), Some("uploading"));
    assert_eq!(inc.session_id.as_deref(), Some(upload.as_str()));
    assert_eq!(inc.to_ms, T0 + 7000);

    // The bit clears: closed with its final end.
    cat.write(&[alarm_incident(Some(1), T0 + 9000, false, None)])
        .unwrap();
    let inc = the_incident(&cat);
    assert!(!inc.open);
    assert_eq!(inc.to_ms, T0 + 9000);
    // A late open report (a retry of an earlier one) does not reopen it.
    cat.write(&[alarm_incident(Some(1), T0 + 6000, true, None)])
        .unwrap();
    let inc = the_incident(&cat);
    assert_eq!((inc.open, inc.to_ms), (false, T0 + 9000));

    // The upload fails, with a reason; a later success clears the reason.
    cat.write(&[incident_video(
        Some(1),
        "failed",
        Some("device offline"),
        None,
    )])
    .unwrap();
    let inc = the_incident(&cat);
    assert_eq!(
        (inc.video_state.as_deref(), inc.video_reason.as_deref()),
        (Some("failed"), Some("device offline"))
    );
    assert_eq!(
        inc.session_id.as_deref(),
        Some(upload.as_str()),
        "kept when not given"
    );
    cat.write(&[incident_video(Some(1), "fetched", None, None)])
        .unwrap();
    let inc = the_incident(&cat);
    assert_eq!(
        (inc.video_state.as_deref(), inc.video_reason.as_deref()),
        (Some("fetched"), None)
    );

    // The video of an incident nobody reported is a no-op, not an error,
    // and creates nothing.
    cat.write(&[incident_video(Some(3), "requested", None, None)])
        .unwrap();
    assert_eq!(db.count("incidents"), 1);
    // A video state outside the documented set is refused.
    assert!(matches!(
        cat.write(&[incident_video(Some(1), "lost", None, None)]),
        Err(streamcore::catalog::Error::InvalidRecord(_))
    ));

    // What the incident API serialises.
    let json = serde_json::to_value(the_incident(&cat)).unwrap();
    assert_eq!(json["open"], false);
    assert_eq!(json["alarm"], 2);
    assert_eq!(json["lat"], here.0);
    assert_eq!(json["lon"], here.1);
    assert_eq!(json["video_state"], "fetched");
    assert!(json["video_reason"].is_null());
    assert_eq!(json["channel"], 1);
    assert_eq!(json["ended_ms"], T0 + 9000);

    // A whole-device incident (channel 0) is found by its key as well.
    cat.write(&[rekind(
        alarm_incident(None, T0 + 2000, true, None),
        "emergency",
    )])
    .unwrap();
    cat.write(&[rekind(
        incident_video(None, "waiting_online", None, None),
        "emergency",
    )])
    .unwrap();
    let device_wide = cat
        .incidents(SIM_A, 0, i64::MAX)
        .unwrap()
        .into_iter()
        .find(|i| i.kind == "emergency")
        .unwrap();
    assert_eq!(device_wide.channel, 0);
    assert!(device_wide.open);
    assert_eq!(device_wide.video_state.as_deref(), Some("waiting_online"));
    assert_eq!((device_wide.lat, device_wide.lon), (None, None));
}

/// ingestd catalogues a channel's live video and, at the same time, an
/// upload of the same channel's recordings (`<SIM>_<ch>_pb`): two open
/// sessions, interleaved segments of both streams, the playback request's
/// states, an alarm incident whose video is the upload, all through one
/// writer in shared batches. Nothing may be rejected (a foreign key failing
/// for one stream would cost the whole batch its rows).
fn live_and_playback_of_one_channel_at_once_through_the_writer(db: TestDb) {
    let cat = db.open();
    let live_stream = format!("{SIM_A}_1");
    let pb_stream = format!("{SIM_A}_1_pb");
    let live = new_session_id(&live_stream, T0);
    let upload = new_session_id(&pb_stream, T0 + 20_000);
    let request = "pb-request-1";
    let span = (T0 - 3_600_000, T0 - 3_580_000);
    let mut recs = vec![
        // The request is catalogued before anything of the device exists.
        playback(
            request,
            SIM_A,
            1,
            span,
            PlaybackState::Requested,
            None,
            None,
        ),
        session_started(&live, &live_stream, Some(SIM_A), Some(1), T0),
        alarm_incident(Some(1), T0 + 20_000, true, Some((22.5, 114.0))),
        playback_started(&upload, SIM_A, 1, T0 + 20_000),
        playback(
            request,
            SIM_A,
            1,
            span,
            PlaybackState::Uploading,
            None,
            Some(&upload),
        ),
        incident_video(Some(1), "uploading", None, Some(&upload)),
    ];
    // Both streams publish segments while both sessions are open.
    for seq in 0..10u64 {
        recs.push(segment(&live, &live_stream, seq, T0 + seq as i64 * 4000));
        recs.push(segment(
            &upload,
            &pb_stream,
            seq,
            span.0 + seq as i64 * 2000,
        ));
        recs.push(position(SIM_A, T0 + seq as i64 * 1000));
    }
    recs.extend([
        alarm_incident(Some(1), T0 + 30_000, false, None),
        Record::SessionEnded {
            session_id: upload.clone(),
            ended_ms: T0 + 40_000,
        },
        playback(request, SIM_A, 1, span, PlaybackState::Complete, None, None),
        incident_video(Some(1), "fetched", None, None),
        Record::Incident {
            sim: SIM_A.into(),
            channel: Some(1),
            from_ms: span.0,
            to_ms: span.0 + 20_000,
            kind: INCIDENT_KIND_PLAYBACK.into(),
            source: "jt1078".into(),
            session_id: Some(upload.clone()),
            open: false,
            alarm: 0,
            lat: None,
            lon: None,
            video_state: None,
            video_reason: None,
        },
    ]);
    let writer = CatalogWriter::spawn(
        &db.url,
        WriterConfig {
            batch_max: 7, // batches that cut across both streams' records
            linger: Duration::from_millis(1),
            ..WriterConfig::default()
        },
    )
    .unwrap();
    for r in &recs {
        assert!(writer.send(r.clone()));
    }
    assert!(writer.flush(Duration::from_secs(60)));
    let st = writer.shutdown();
    assert_eq!(st.written, recs.len() as u64, "{st:?}");
    assert_eq!((st.rejected, st.dropped()), (0, 0), "{st:?}");

    assert_eq!(db.count("streams"), 2);
    assert_eq!(db.count("sessions"), 2);
    assert_eq!(cat.segments_of_session(&live).unwrap().len(), 10);
    assert_eq!(cat.segments_of_session(&upload).unwrap().len(), 10);
    assert_eq!(
        cat.live_sessions()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [live.as_str()],
        "the live session is still open beside the ended upload"
    );
    let pb = playback_row(&cat, request);
    assert_eq!(pb.state, PlaybackState::Complete);
    assert_eq!(pb.session_id.as_deref(), Some(upload.as_str()));
    let incidents = cat.incidents(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(incidents.len(), 2);
    let alarm = incidents.iter().find(|i| i.kind == "overspeed").unwrap();
    assert_eq!((alarm.open, alarm.to_ms), (false, T0 + 30_000));
    assert_eq!(alarm.video_state.as_deref(), Some("fetched"));
    assert_eq!(alarm.session_id.as_deref(), Some(upload.as_str()));
    let fetched = incidents
        .iter()
        .find(|i| i.kind == INCIDENT_KIND_PLAYBACK)
        .unwrap();
    assert_eq!(fetched.stream_name(), Some(pb_stream.clone()));
    assert_eq!(
        cat.segments_in_range(&live_stream, T0, T0 + 20_000)
            .unwrap()
            .len(),
        5
    );
}

/// A catalog at step 2 (as the previous release left it), holding incidents
/// one of which names its upload's session, is upgraded in place: the rows
/// and their session links survive, the new columns take their defaults,
/// and playback requests can be written.
fn upgrade_from_step_2_keeps_incidents_and_adds_playbacks(db: TestDb) {
    let cat = db.open();
    let upload = new_session_id(&format!("{SIM_A}_1_pb"), T0);
    cat.write(&[
        playback_started(&upload, SIM_A, 1, T0),
        segment(&upload, &format!("{SIM_A}_1_pb"), 0, T0 - 60_000),
        Record::Incident {
            sim: SIM_A.into(),
            channel: Some(1),
            from_ms: T0 - 60_000,
            to_ms: T0 - 56_000,
            kind: INCIDENT_KIND_PLAYBACK.into(),
            source: "jt1078".into(),
            session_id: Some(upload.clone()),
            open: true,
            alarm: 4,
            lat: Some(1.0),
            lon: Some(2.0),
            video_state: Some("fetched".into()),
            video_reason: Some("short".into()),
        },
        alarm_incident(Some(2), T0 + 8000, false, None),
    ])
    .unwrap();
    let ids_before: Vec<i64> = cat
        .incidents(SIM_A, 0, i64::MAX)
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    roll_back_to(&cat, db.backend, STEP_2);
    drop(cat);
    // The step-2 schema has no playbacks table and none of the new columns.
    let tables = db.pairs(match db.backend {
        Backend::Sqlite => {
            "SELECT name AS a, '' AS b FROM sqlite_master WHERE type = 'table' AND name = 'playbacks'"
        }
        Backend::Postgres => {
            "SELECT table_name::text AS a, '' AS b FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name = 'playbacks'"
        }
        Backend::Mysql => {
            "SELECT table_name AS a, '' AS b FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = 'playbacks'"
        }
    });
    assert!(tables.is_empty(), "rolled back: {tables:?}");

    let cat = db.open();
    let incidents = cat.incidents(SIM_A, 0, i64::MAX).unwrap();
    assert_eq!(
        incidents.iter().map(|i| i.id).collect::<Vec<_>>(),
        ids_before,
        "same rows, same ids"
    );
    let pb = &incidents[0];
    assert_eq!(pb.session_id.as_deref(), Some(upload.as_str()));
    assert_eq!(pb.to_ms, T0 - 56_000);
    for i in &incidents {
        // What step 2 did not know takes the column defaults.
        assert_eq!(
            (
                i.open,
                i.alarm,
                i.lat,
                i.lon,
                i.video_state.as_deref(),
                i.video_reason.as_deref()
            ),
            (false, 0, None, None, None, None),
            "{i:?}"
        );
    }
    // New ids continue after the old ones.
    cat.write(&[rekind(
        alarm_incident(Some(1), T0 + 1000, true, None),
        "fatigue",
    )])
    .unwrap();
    let newest = cat
        .incidents(SIM_A, 0, i64::MAX)
        .unwrap()
        .into_iter()
        .find(|i| i.kind == "fatigue")
        .unwrap();
    assert!(newest.open);
    assert!(ids_before.iter().all(|&id| id < newest.id));
    cat.write(&[playback(
        "after-upgrade",
        SIM_A,
        1,
        (T0, T0 + 1000),
        PlaybackState::Requested,
        None,
        None,
    )])
    .unwrap();
    assert_eq!(
        playback_row(&cat, "after-upgrade").state,
        PlaybackState::Requested
    );
    assert_eq!(cat.segments_of_session(&upload).unwrap().len(), 1);
}

fn nodes_register_beat_and_hold_devices_newest_first(db: TestDb) {
    use streamcore::catalog::cluster::IngestNode;
    let cat = db.open();
    let node = |id: &str, at: i64| IngestNode {
        id: id.into(),
        control_url: format!("http://{id}.example:6811"),
        media_addr: Some(format!("{id}.example:6809")),
        started_ms: at,
        heartbeat_ms: at,
    };
    cat.register_node(&node("a", T0)).unwrap();
    cat.register_node(&node("b", T0)).unwrap();
    // A restart registers again: one row, the new start.
    cat.register_node(&node("a", T0 + 1_000)).unwrap();
    let live = cat.live_nodes(T0).unwrap();
    assert_eq!(live, vec![node("a", T0 + 1_000), node("b", T0)]);
    assert!(cat.node_heartbeat("b", T0 + 30_000).unwrap());
    assert!(!cat.node_heartbeat("gone", T0 + 30_000).unwrap());
    let ids = |v: Vec<IngestNode>| v.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(cat.live_nodes(T0 + 20_000).unwrap()), ["b"]);
    // Periodic jobs run on the live node with the smallest id: a while both beat, then b
    // once a has been silent for three heartbeats.
    assert!(cat.runs_periodic_jobs("a", T0 + 10_000).unwrap());
    assert!(!cat.runs_periodic_jobs("b", T0 + 10_000).unwrap());
    assert!(cat.runs_periodic_jobs("b", T0 + 30_000).unwrap());
    assert!(!cat.runs_periodic_jobs("a", T0 + 30_000).unwrap());

    // The device reconnects from a to b; a's late write of its older session changes nothing,
    // and a releasing its own (older) session does not release b's.
    cat.hold_device(SIM_A, "a", T0 + 2_000).unwrap();
    assert_eq!(cat.device_node(SIM_A, T0).unwrap().unwrap().id, "a");
    cat.hold_device(SIM_A, "b", T0 + 5_000).unwrap();
    cat.hold_device(SIM_A, "a", T0 + 4_000).unwrap();
    let held = cat.device_node(SIM_A, T0).unwrap().unwrap();
    assert_eq!(
        held,
        IngestNode {
            heartbeat_ms: T0 + 30_000,
            ..node("b", T0)
        }
    );
    cat.release_device(SIM_A, "a").unwrap();
    assert_eq!(cat.device_node(SIM_A, T0).unwrap().unwrap().id, "b");
    // A holder that stopped beating holds nothing.
    assert_eq!(cat.device_node(SIM_A, T0 + 40_000).unwrap(), None);
    assert_eq!(cat.device_node(SIM_B, T0).unwrap(), None);
    cat.release_device(SIM_A, "b").unwrap();
    assert_eq!(cat.device_node(SIM_A, T0).unwrap(), None);

    // A node that stops takes its devices with it.
    cat.hold_device(SIM_B, "b", T0 + 6_000).unwrap();
    cat.remove_node("b").unwrap();
    assert_eq!(cat.device_node(SIM_B, 0).unwrap(), None);
    assert_eq!(ids(cat.live_nodes(0).unwrap()), ["a"]);
}

fn stream_leases_go_to_the_newest_source_and_fence_the_old_writer(db: TestDb) {
    use streamcore::catalog::cluster::{IngestNode, StreamLease};
    let cat = db.open();
    for id in ["a", "b"] {
        cat.register_node(&IngestNode {
            id: id.into(),
            control_url: format!("http://{id}.example:6811"),
            media_addr: None,
            started_ms: T0,
            heartbeat_ms: T0,
        })
        .unwrap();
    }
    let stream = "013800138000_1";
    let granted = |fence, last_sequence| StreamLease::Granted {
        fence,
        last_sequence,
    };
    // a opens the stream: the first fence, no sequence yet.
    let lease = cat.acquire_stream_lease(stream, "a", T0 + 100, T0).unwrap();
    assert_eq!(lease, granted(1, None));
    // Its uploads record their sequence numbers; a playlist (no sequence) only checks.
    assert!(cat.check_stream_lease(stream, "a", 1, Some(7)).unwrap());
    assert!(cat.check_stream_lease(stream, "a", 1, Some(8)).unwrap());
    assert!(cat.check_stream_lease(stream, "a", 1, None).unwrap());
    // An older sequence (a retried upload) never lowers the record.
    assert!(cat.check_stream_lease(stream, "a", 1, Some(3)).unwrap());
    // a reopening the stream (a codec change, a second connection of its own) keeps its fence.
    assert_eq!(
        cat.acquire_stream_lease(stream, "a", T0 + 150, T0).unwrap(),
        granted(1, Some(8))
    );
    // The device reconnected to b: the newer connection takes the stream above a's sequences.
    assert_eq!(
        cat.acquire_stream_lease(stream, "b", T0 + 200, T0).unwrap(),
        granted(2, Some(8))
    );
    assert_eq!(
        cat.stream_lease_holder(stream).unwrap(),
        Some(("b".to_owned(), 2))
    );
    // a's next upload is refused, with or without a sequence, and records nothing.
    assert!(!cat.check_stream_lease(stream, "a", 1, Some(9)).unwrap());
    assert!(!cat.check_stream_lease(stream, "a", 1, None).unwrap());
    assert!(cat.check_stream_lease(stream, "b", 2, Some(9)).unwrap());
    // a's lingering older connection cannot take the stream back while b is alive...
    assert_eq!(
        cat.acquire_stream_lease(stream, "a", T0 + 150, T0).unwrap(),
        StreamLease::Refused
    );
    // ...but takes it once b has stopped beating (b crashed; a newer fence).
    assert_eq!(
        cat.acquire_stream_lease(stream, "a", T0 + 150, T0 + 1)
            .unwrap(),
        granted(3, Some(9))
    );
    assert!(!cat.check_stream_lease(stream, "b", 2, Some(10)).unwrap());
    // Another stream is another lease.
    assert_eq!(
        cat.acquire_stream_lease("013800138000_2", "b", T0 + 50, T0)
            .unwrap(),
        granted(1, None)
    );
}
