//! Connections: which backend a `--database-url` names, how a connection is
//! set up (SQLite pragmas), embedded per-backend migrations, and the
//! dispatch macros that run one piece of diesel code on whichever backend
//! is connected.
//!
//! Why not `#[derive(diesel::MultiConnection)]`: its `MultiBackend` does not
//! support upserts (`ON CONFLICT` / `ON DUPLICATE KEY`) or multi-row inserts,
//! which the writer needs for race-safe idempotent writes and batching. We
//! instead keep an enum of the three concrete connections and expand the
//! same source block once per variant (the `dispatch!` macro), so every query is
//! type-checked by diesel against each backend and there is one code path.

use std::fmt;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::mysql::MysqlConnection;
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::Error;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const MYSQL_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// How long a SQLite connection waits for another writer's lock before
/// failing with SQLITE_BUSY (several processes may share one file).
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

/// Seconds libpq may spend connecting, unless the URL sets `connect_timeout`.
const PG_CONNECT_TIMEOUT_S: u32 = 10;

/// The database product behind a catalog URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Embedded SQLite file (WAL mode).
    Sqlite,
    /// PostgreSQL server.
    Postgres,
    /// MySQL or MariaDB server.
    Mysql,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
            Backend::Mysql => "mysql",
        })
    }
}

/// A parsed `--database-url`: a plain path or `sqlite://path` is SQLite,
/// `postgres://` / `postgresql://` is PostgreSQL, `mysql://` is MySQL/MariaDB.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    backend: Backend,
    /// What diesel is given: the file path for SQLite, the URL otherwise.
    target: String,
}

impl DbUrl {
    /// Parses a database URL; anything with another `scheme://` is rejected.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        let (backend, target) =
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                // libpq waits forever for an unanswered connect by default; the
                // writer must notice a dead server and back off instead.
                let target = if url.contains("connect_timeout=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&connect_timeout={PG_CONNECT_TIMEOUT_S}")
                } else {
                    format!("{url}?connect_timeout={PG_CONNECT_TIMEOUT_S}")
                };
                (Backend::Postgres, target)
            } else if url.starts_with("mysql://") {
                (Backend::Mysql, url.to_owned())
            } else if let Some(path) = url.strip_prefix("sqlite://") {
                (Backend::Sqlite, path.to_owned())
            } else if url.contains("://") || url.is_empty() {
                return Err(Error::BadUrl(url.to_owned()));
            } else {
                (Backend::Sqlite, url.to_owned())
            };
        if backend == Backend::Sqlite && (target.is_empty() || target == ":memory:") {
            // A pool of connections to ":memory:" would be several unrelated databases.
            return Err(Error::BadUrl(url.to_owned()));
        }
        Ok(DbUrl { backend, target })
    }

    /// Which backend the URL names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL with any password replaced, for logs and errors.
    pub fn redacted(&self) -> String {
        match self.backend {
            Backend::Sqlite => self.target.clone(),
            _ => redact(&self.target),
        }
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.redacted())
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn redact(url: &str) -> String {
    // scheme://user:password@host/... -> scheme://user:***@host/...
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_owned(),
    }
}

/// One live connection to whichever backend the URL named.
pub(crate) enum AnyConn {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
    Mysql(MysqlConnection),
}

/// Runs `$body` with `$c` bound to the concrete connection of `$conn`
/// (`&mut AnyConn`). The block is expanded once per backend, so diesel
/// checks it against each.
macro_rules! dispatch {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::catalog::conn::AnyConn::Sqlite($c) => $body,
            $crate::catalog::conn::AnyConn::Pg($c) => $body,
            $crate::catalog::conn::AnyConn::Mysql($c) => $body,
        }
    };
}

/// Like [`dispatch!`] inside a write transaction. SQLite takes the write
/// lock up front (`BEGIN IMMEDIATE`) so two processes never deadlock on a
/// read-to-write lock upgrade; the servers use their default isolation.
macro_rules! write_tx {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::catalog::conn::AnyConn::Sqlite($c) => $c.immediate_transaction(|$c| $body),
            $crate::catalog::conn::AnyConn::Pg($c) => $c.transaction(|$c| $body),
            $crate::catalog::conn::AnyConn::Mysql($c) => $c.transaction(|$c| $body),
        }
    };
}

pub(crate) use {dispatch, write_tx};

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    one: i32,
}

impl AnyConn {
    /// Opens a connection and applies the per-connection settings.
    pub(crate) fn connect(url: &DbUrl) -> Result<AnyConn, Error> {
        let connect_err = |source| Error::Connect {
            backend: url.backend,
            url: url.redacted(),
            source,
        };
        match url.backend {
            Backend::Sqlite => {
                let mut c = SqliteConnection::establish(&url.target).map_err(connect_err)?;
                c.batch_execute(&format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                     PRAGMA synchronous = NORMAL;
                     PRAGMA foreign_keys = ON;"
                ))
                .map_err(Error::Query)?;
                // Switching to WAL needs a moment of exclusive access and can
                // report SQLITE_BUSY without waiting on busy_timeout when
                // other processes open the file at the same time: retry.
                let mut attempt = 0;
                loop {
                    match c.batch_execute("PRAGMA journal_mode = WAL;") {
                        Ok(()) => break,
                        Err(e) if attempt < 100 && e.to_string().contains("locked") => {
                            attempt += 1;
                            std::thread::sleep(Duration::from_millis(10 + attempt));
                        }
                        Err(e) => return Err(Error::Query(e)),
                    }
                }
                Ok(AnyConn::Sqlite(c))
            }
            Backend::Postgres => Ok(AnyConn::Pg(
                PgConnection::establish(&url.target).map_err(connect_err)?,
            )),
            Backend::Mysql => Ok(AnyConn::Mysql(
                MysqlConnection::establish(&url.target).map_err(connect_err)?,
            )),
        }
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            AnyConn::Sqlite(_) => Backend::Sqlite,
            AnyConn::Pg(_) => Backend::Postgres,
            AnyConn::Mysql(_) => Backend::Mysql,
        }
    }

    /// A round trip that tells a broken connection from a bad statement.
    pub(crate) fn is_healthy(&mut self) -> bool {
        dispatch!(self, |c| diesel::sql_query("SELECT 1 AS one")
            .load::<One>(c)
            .map(|r| r.len() == 1 && r[0].one == 1)
            .unwrap_or(false))
    }

    /// Applies pending migrations. Several processes may start at once
    /// against one database (the demo starts ingestd and hlsd together), and
    /// diesel decides what is pending before it runs anything: two processes
    /// both running a migration would, for a table rebuild, put the old table
    /// back over the new one. So the whole run holds a lock: an advisory lock
    /// on the servers, an exclusive lock on a file beside a SQLite database
    /// (SQLite's own write lock cannot span it: a rebuild migration opens its
    /// own transaction with foreign keys off).
    pub(crate) fn migrate(&mut self, url: &DbUrl) -> Result<Vec<String>, Error> {
        let backend = self.backend();
        let mig_err = |e: &dyn fmt::Display| Error::Migration {
            backend,
            message: e.to_string(),
        };
        match self {
            AnyConn::Sqlite(c) => {
                let _lock = sqlite_migration_lock(&url.target)?;
                let mut last = None;
                for attempt in 0..5 {
                    match c.run_pending_migrations(SQLITE_MIGRATIONS) {
                        Ok(v) => return Ok(v.iter().map(|m| m.to_string()).collect()),
                        Err(e) => {
                            tracing::debug!(attempt, error = %e, "sqlite migration attempt failed");
                            last = Some(e);
                            std::thread::sleep(Duration::from_millis(50 << attempt));
                        }
                    }
                }
                Err(mig_err(&last.expect("at least one attempt")))
            }
            AnyConn::Pg(c) => {
                diesel::sql_query("SELECT pg_advisory_lock(7239001)")
                    .execute(c)
                    .map_err(Error::Query)?;
                let r = c
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect())
                    .map_err(|e| mig_err(&e));
                let _ = diesel::sql_query("SELECT pg_advisory_unlock(7239001)").execute(c);
                r
            }
            AnyConn::Mysql(c) => {
                #[derive(QueryableByName)]
                struct Got {
                    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
                    got: Option<i32>,
                }
                let got = diesel::sql_query(
                    "SELECT GET_LOCK('streamcore_catalog_migrations', 120) AS got",
                )
                .load::<Got>(c)
                .map_err(Error::Query)?;
                if got.first().and_then(|g| g.got) != Some(1) {
                    return Err(mig_err(&"timed out waiting for the migration lock"));
                }
                let r = c
                    .run_pending_migrations(MYSQL_MIGRATIONS)
                    .map(|v| v.iter().map(|m| m.to_string()).collect())
                    .map_err(|e| mig_err(&e));
                let _ = diesel::sql_query(
                    "SELECT RELEASE_LOCK('streamcore_catalog_migrations') AS got",
                )
                .load::<Got>(c);
                r
            }
        }
    }
}

/// Holds an exclusive lock on `<database>.migrations.lock` (created if missing) until dropped;
/// `None` for an in-memory database, which no other process can open.
fn sqlite_migration_lock(target: &str) -> Result<Option<std::fs::File>, Error> {
    if target == ":memory:" || target.starts_with("file::memory:") {
        return Ok(None);
    }
    let path = format!("{target}.migrations.lock");
    let lock_err = |e: std::io::Error| Error::Migration {
        backend: Backend::Sqlite,
        message: format!("locking {path}: {e}"),
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(lock_err)?;
    file.lock().map_err(lock_err)?;
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_backend() {
        assert_eq!(
            DbUrl::parse("/data/catalog.sqlite").unwrap().backend(),
            Backend::Sqlite
        );
        assert_eq!(
            DbUrl::parse("sqlite:///data/c.db").unwrap().target,
            "/data/c.db"
        );
        assert_eq!(
            DbUrl::parse("postgres://u@h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            DbUrl::parse("postgresql://u@h/db").unwrap().backend(),
            Backend::Postgres
        );
        assert_eq!(
            DbUrl::parse("mysql://root@h/db").unwrap().backend(),
            Backend::Mysql
        );
        assert!(DbUrl::parse("redis://h").is_err());
        assert!(DbUrl::parse("").is_err());
        assert!(DbUrl::parse(":memory:").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        let u = DbUrl::parse("postgres://app:s3cret@db:5432/cat").unwrap();
        assert_eq!(
            u.redacted(),
            "postgres://app:***@db:5432/cat?connect_timeout=10"
        );
        assert!(!format!("{u:?}").contains("s3cret"));
        let u = DbUrl::parse("postgres://u@h/db?sslmode=disable").unwrap();
        assert_eq!(
            u.target,
            "postgres://u@h/db?sslmode=disable&connect_timeout=10"
        );
        let u = DbUrl::parse("postgres://u@h/db?connect_timeout=3").unwrap();
        assert_eq!(u.target, "postgres://u@h/db?connect_timeout=3");
        let u = DbUrl::parse("mysql://root@127.0.0.1:3306/test").unwrap();
        assert_eq!(u.redacted(), "mysql://root@127.0.0.1:3306/test");
    }
}
