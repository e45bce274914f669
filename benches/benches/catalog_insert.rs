//! Catalog insert throughput: batched position inserts per second on each
//! backend (SQLite in a temp dir, the local PostgreSQL and MariaDB), as the
//! catalog writer performs them: one transaction per batch of 500.
//!
//! Run: `cargo bench -p benches --bench catalog_insert`
//! Server URLs: `CATALOG_BENCH_PG_URL` (default
//! postgres://root@127.0.0.1:5432/test) and `CATALOG_BENCH_MYSQL_URL`
//! (default mysql://root@127.0.0.1:3306/test); a database `bench_<pid>` is
//! created on each and dropped afterwards. An unreachable server is skipped
//! with a note on stderr.

use std::cell::Cell;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection, PgConnection};
use streamcore::catalog::{Catalog, CatalogWriter, Record, WriterConfig};

const BATCH: usize = 500;
const DEVICES: usize = 50;
const T0: i64 = 1_764_000_000_000;

/// A batch like a busy ingestd produces: 500 fixes spread over 50 devices,
/// every one new (device times advance), so nothing is skipped as a duplicate.
fn batch(start: i64) -> Vec<Record> {
    (0..BATCH)
        .map(|i| {
            let t = start + i as i64;
            Record::Position {
                sim: format!("1325700{:05}", i % DEVICES),
                device_time_ms: T0 + t,
                lat: 22.5 + t as f64 * 1e-7,
                lon: 114.0 + t as f64 * 1e-7,
                speed: 60.0,
                heading: (t % 360) as u16,
                altitude: 30,
                alarm: 0,
                status: 3,
            }
        })
        .collect()
}

enum Server {
    Pg(String),
    Mysql(String),
}

/// A scratch database for one backend, dropped at the end.
struct BenchDb {
    url: String,
    drop_with: Option<(Server, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl BenchDb {
    fn sqlite() -> BenchDb {
        let dir = tempfile::tempdir().unwrap();
        BenchDb {
            url: dir.path().join("bench.sqlite").display().to_string(),
            drop_with: None,
            _dir: Some(dir),
        }
    }

    fn server(admin: &str, pg: bool) -> Option<BenchDb> {
        let name = format!("bench_{}", std::process::id());
        let sql = format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}");
        let r = if pg {
            PgConnection::establish(admin).map(|mut c| {
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .and_then(|_| c.batch_execute(&format!("CREATE DATABASE {name}")))
            })
        } else {
            MysqlConnection::establish(admin).map(|mut c| c.batch_execute(&sql))
        };
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("cannot create {name} on {admin}: {e}"),
            Err(e) => {
                eprintln!("skipping {admin}: {e}");
                return None;
            }
        }
        let (base, _) = admin.rsplit_once('/').unwrap();
        let server = if pg {
            Server::Pg(admin.to_owned())
        } else {
            Server::Mysql(admin.to_owned())
        };
        Some(BenchDb {
            url: format!("{base}/{name}"),
            drop_with: Some((server, name)),
            _dir: None,
        })
    }
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        match &self.drop_with {
            Some((Server::Pg(admin), name)) => {
                if let Ok(mut c) = PgConnection::establish(admin) {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            Some((Server::Mysql(admin), name)) => {
                if let Ok(mut c) = MysqlConnection::establish(admin) {
                    let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
            None => {}
        }
    }
}

fn bench_backend(c: &mut Criterion, label: &str, db: BenchDb) {
    let cat = Catalog::open(&db.url).unwrap();
    let next = Cell::new(0i64);
    let mut g = c.benchmark_group("catalog_insert");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    // One transaction of 500 positions: what the writer thread does per batch.
    g.bench_function(format!("{label}/positions_batch_500"), |b| {
        b.iter_batched(
            || {
                let start = next.get();
                next.set(start + BATCH as i64);
                batch(start)
            },
            |recs| cat.write(&recs).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // End to end through CatalogWriter: send 20 batches' worth, then flush.
    let writer = CatalogWriter::spawn(&db.url, WriterConfig::default()).unwrap();
    let mut g = c.benchmark_group("catalog_writer");
    const N: usize = 20 * BATCH;
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function(format!("{label}/send_and_flush_10000"), |b| {
        b.iter_batched(
            || {
                (0..N / BATCH)
                    .flat_map(|_| {
                        let start = next.get();
                        next.set(start + BATCH as i64);
                        batch(start)
                    })
                    .collect::<Vec<_>>()
            },
            |recs| {
                for r in recs {
                    assert!(writer.send(r));
                }
                assert!(writer.flush(Duration::from_secs(120)));
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let st = writer.shutdown();
    assert_eq!(st.dropped() + st.rejected, 0, "{st:?}");
}

fn catalog_insert(c: &mut Criterion) {
    bench_backend(c, "sqlite", BenchDb::sqlite());
    let pg = std::env::var("CATALOG_BENCH_PG_URL")
        .unwrap_or("postgres://root@127.0.0.1:5432/test".into());
    if let Some(db) = BenchDb::server(&pg, true) {
        bench_backend(c, "postgres", db);
    }
    let my = std::env::var("CATALOG_BENCH_MYSQL_URL")
        .unwrap_or("mysql://root@127.0.0.1:3306/test".into());
    if let Some(db) = BenchDb::server(&my, false) {
        bench_backend(c, "mysql", db);
    }
}

criterion_group!(benches, catalog_insert);
criterion_main!(benches);
