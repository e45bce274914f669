//! Retention: ages out segments (rows and their files), positions and
//! empty ended sessions, in an order that stays consistent through a crash
//! at any point, and sweeps orphan segment files.
//!
//! Order, per chunk of expired segments:
//! 1. one transaction moves the rows from `segments` into
//!    `pending_deletions` (so no row ever names a file that may be gone);
//! 2. the files are unlinked (a missing file is fine: a previous run may
//!    have crashed after unlinking);
//! 3. their `pending_deletions` rows are removed.
//!
//! A crash between 1 and 3 leaves pending rows that the next run finishes.
//! Files that never got a row (the writer dropped their record during an
//! outage, or a process died between writing the file and the row) are
//! removed by the orphan sweep once older than a grace period, so no file
//! is left forever. Only `live/<stream>/<n>.ts` files are swept, and
//! nothing outside the data dir is ever touched: paths from rows must be
//! plain relative paths and must resolve (after symlinks) under the root.
//!
//! Several processes may run retention at once: every step is idempotent.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use diesel::prelude::*;

use super::conn::{dispatch, write_tx};
use super::schema::{pending_deletions, positions, segments, sessions};
use super::write::is_safe_relative;
use super::{Catalog, Error};

/// What to keep.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Delete segments written longer ago than this (by host time of the
    /// row, not the device clock). `None` keeps them forever.
    pub segment_max_age: Option<Duration>,
    /// Delete positions whose device time is older than this. `None` keeps them.
    pub position_max_age: Option<Duration>,
    /// Sweep `.ts` files under `live/` with no row once their mtime is older
    /// than this; long enough for the writer to ride out an outage.
    /// `None` disables the sweep.
    pub orphan_grace: Option<Duration>,
    /// Rows moved per transaction, to keep transactions short.
    pub chunk: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            segment_max_age: Some(Duration::from_secs(7 * 24 * 3600)),
            position_max_age: Some(Duration::from_secs(90 * 24 * 3600)),
            orphan_grace: Some(Duration::from_secs(24 * 3600)),
            chunk: 500,
        }
    }
}

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment rows deleted.
    pub segments_deleted: u64,
    /// Segment files unlinked (from pending deletions, this run's or an earlier crashed run's).
    pub files_deleted: u64,
    /// Pending deletions whose file was already gone.
    pub files_missing: u64,
    /// Position rows deleted.
    pub positions_deleted: u64,
    /// Ended sessions deleted because none of their segments remain.
    pub sessions_deleted: u64,
    /// Orphan files (no row) removed by the sweep.
    pub orphans_deleted: u64,
    /// Paths refused because they would leave the data dir.
    pub unsafe_paths: u64,
}

impl Catalog {
    /// Applies `policy` with `data_dir` as the root that segment paths are
    /// relative to. `now_ms` is the host clock (a parameter so tests and
    /// tools can age things deterministically).
    pub fn run_retention(
        &self,
        data_dir: &Path,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionReport, Error> {
        let root = data_dir.canonicalize().map_err(|source| Error::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let chunk = i64::try_from(policy.chunk.max(1)).unwrap_or(500);
        let mut report = RetentionReport::default();

        // Finish whatever an earlier run left half done before adding more.
        self.drain_pending(&root, chunk, now_ms, &mut report)?;

        if let Some(age) = policy.segment_max_age {
            let cutoff = now_ms - age.as_millis() as i64;
            loop {
                let moved = self.with_conn(|c| {
                    Ok(write_tx!(c, |c| {
                        let expired: Vec<(String, i64, String)> = segments::table
                            .filter(segments::created_ms.lt(cutoff))
                            .select((segments::stream, segments::sequence, segments::path))
                            .order(segments::created_ms.asc())
                            .limit(chunk)
                            .load(c)?;
                        for (stream, sequence, path) in &expired {
                            diesel::insert_into(pending_deletions::table)
                                .values((
                                    pending_deletions::path.eq(path),
                                    pending_deletions::queued_ms.eq(now_ms),
                                ))
                                .on_conflict_do_nothing()
                                .execute(c)?;
                            diesel::delete(
                                segments::table
                                    .filter(segments::stream.eq(stream))
                                    .filter(segments::sequence.eq(sequence)),
                            )
                            .execute(c)?;
                        }
                        QueryResult::Ok(expired.len())
                    })?)
                })?;
                report.segments_deleted += moved as u64;
                self.drain_pending(&root, chunk, now_ms, &mut report)?;
                if (moved as i64) < chunk {
                    break;
                }
            }
            // Ended sessions older than the cutoff with nothing left to play.
            let n = self.with_conn(|c| {
                Ok(dispatch!(c, |c| diesel::delete(
                    sessions::table
                        .filter(sessions::ended_ms.lt(cutoff))
                        .filter(diesel::dsl::not(diesel::dsl::exists(
                            segments::table.filter(segments::session_id.eq(sessions::id))
                        )))
                )
                .execute(c))?)
            })?;
            report.sessions_deleted += n as u64;
            if n > 0 {
                // Our write cache may name a session that is gone now.
                self.forget_known();
            }
        }

        if let Some(age) = policy.position_max_age {
            let cutoff = now_ms - age.as_millis() as i64;
            let n = self.with_conn(|c| {
                Ok(dispatch!(c, |c| diesel::delete(
                    positions::table.filter(positions::device_time_ms.lt(cutoff))
                )
                .execute(c))?)
            })?;
            report.positions_deleted += n as u64;
        }

        if let Some(grace) = policy.orphan_grace {
            self.sweep_orphans(&root, grace, now_ms, &mut report)?;
        }
        if report != RetentionReport::default() {
            tracing::info!(?report, "catalog retention run");
        }
        Ok(report)
    }

    /// Unlinks the files named in `pending_deletions`, then forgets them.
    fn drain_pending(
        &self,
        root: &Path,
        chunk: i64,
        _now_ms: i64,
        report: &mut RetentionReport,
    ) -> Result<(), Error> {
        loop {
            let pending: Vec<String> = self.with_conn(|c| {
                Ok(dispatch!(c, |c| pending_deletions::table
                    .select(pending_deletions::path)
                    .order(pending_deletions::path.asc())
                    .limit(chunk)
                    .load(c))?)
            })?;
            if pending.is_empty() {
                return Ok(());
            }
            for path in &pending {
                // The same path may have been re-used by a newer segment row
                // (a stream whose sequence numbers restarted); its file is live.
                let in_use: i64 = self.with_conn(|c| {
                    Ok(dispatch!(c, |c| segments::table
                        .filter(segments::path.eq(path))
                        .count()
                        .get_result(c))?)
                })?;
                if in_use == 0 {
                    match resolve_inside(root, path) {
                        Some(full) => match std::fs::remove_file(&full) {
                            Ok(()) => report.files_deleted += 1,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                report.files_missing += 1
                            }
                            Err(source) => return Err(Error::Io { path: full, source }),
                        },
                        None => {
                            report.unsafe_paths += 1;
                            tracing::warn!(path, "retention refused a path outside the data dir");
                        }
                    }
                }
                self.with_conn(|c| {
                    Ok(dispatch!(c, |c| diesel::delete(
                        pending_deletions::table.filter(pending_deletions::path.eq(path))
                    )
                    .execute(c))?)
                })?;
            }
            if (pending.len() as i64) < chunk {
                return Ok(());
            }
        }
    }

    /// Removes `live/<stream>/*.ts` files older than `grace` that no
    /// segment row names.
    fn sweep_orphans(
        &self,
        root: &Path,
        grace: Duration,
        now_ms: i64,
        report: &mut RetentionReport,
    ) -> Result<(), Error> {
        let live = root.join("live");
        let Ok(streams) = std::fs::read_dir(&live) else {
            return Ok(());
        };
        let threshold = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)).saturating_sub(grace);
        for stream_dir in streams.flatten() {
            let Ok(ft) = stream_dir.file_type() else {
                continue;
            };
            if !ft.is_dir() {
                continue; // symlinked stream dirs are not ours to sweep
            }
            let Ok(files) = std::fs::read_dir(stream_dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                if p.extension().and_then(|e| e.to_str()) != Some("ts") {
                    continue;
                }
                let Ok(meta) = f.metadata() else { continue };
                if !meta.is_file() || meta.modified().map(|m| m >= threshold).unwrap_or(true) {
                    continue;
                }
                let Ok(rel) = p.strip_prefix(root) else {
                    continue;
                };
                let Some(rel) = rel.to_str() else { continue };
                let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
                let rows: i64 = self.with_conn(|c| {
                    Ok(dispatch!(c, |c| segments::table
                        .filter(segments::path.eq(&rel))
                        .count()
                        .get_result(c))?)
                })?;
                if rows == 0 {
                    match std::fs::remove_file(&p) {
                        Ok(()) => {
                            report.orphans_deleted += 1;
                            tracing::info!(path = %rel, "retention removed an orphan segment file");
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => return Err(Error::Io { path: p, source }),
                    }
                }
            }
        }
        Ok(())
    }
}

/// `root.join(rel)` if `rel` is a plain relative path and its parent,
/// with symlinks resolved, is still under `root` (already canonical).
fn resolve_inside(root: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    if !is_safe_relative(rel) {
        return None;
    }
    let full = root.join(rel);
    let parent = full.parent()?.canonicalize().ok();
    match parent {
        Some(parent) if parent.starts_with(root) => Some(parent.join(full.file_name()?)),
        // A missing parent directory means a missing file: nothing to unlink,
        // but return the lexical path so the caller counts it as missing.
        None => Some(full),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_outside_the_root_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("live/a")).unwrap();
        assert_eq!(
            resolve_inside(&root, "live/a/1.ts"),
            Some(root.join("live/a/1.ts"))
        );
        assert_eq!(resolve_inside(&root, "../etc/passwd"), None);
        assert_eq!(resolve_inside(&root, "/etc/passwd"), None);
        assert_eq!(resolve_inside(&root, "live/../../x.ts"), None);
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("live/evil")).unwrap();
        assert_eq!(resolve_inside(&root, "live/evil/1.ts"), None);
    }
}
