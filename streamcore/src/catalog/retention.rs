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
//! is left forever. Only `live/<stream>/<n>.ts` objects are swept, and
//! files are listed and deleted through the [`Storage`] the segments live
//! in, which refuses any key that would leave it (`..`, symlinks out).
//!
//! Several processes may run retention at once: every step is idempotent.

use std::time::{Duration, SystemTime};

use diesel::prelude::*;

use super::conn::{dispatch, write_tx};
use super::schema::{pending_deletions, positions, segments, sessions};
use super::{Catalog, Error};
use crate::layout;
use crate::storage::Storage;

/// What to keep.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Delete segments written longer ago than this (by host time of the
    /// row, not the device clock). `None` keeps them forever.
    pub segment_max_age: Option<Duration>,
    /// Delete positions whose device time is older than this. `None` keeps them.
    pub position_max_age: Option<Duration>,
    /// Sweep segments under `live/` with no row once their mtime is older
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
    /// Paths the storage refused (they would leave it).
    pub unsafe_paths: u64,
}

impl Catalog {
    /// Applies `policy` to the segments in `storage` (whose keys are the
    /// rows' paths, e.g. an [`crate::FsStorage`] on the data dir). `now_ms`
    /// is the host clock (a parameter so tests and tools can age things
    /// deterministically).
    pub fn run_retention(
        &self,
        storage: &dyn Storage,
        policy: &RetentionPolicy,
        now_ms: i64,
    ) -> Result<RetentionReport, Error> {
        let chunk = i64::try_from(policy.chunk.max(1)).unwrap_or(500);
        let mut report = RetentionReport::default();

        // Finish whatever an earlier run left half done before adding more.
        self.drain_pending(storage, chunk, &mut report)?;

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
                self.drain_pending(storage, chunk, &mut report)?;
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
            self.sweep_orphans(storage, grace, now_ms, &mut report)?;
        }
        if report != RetentionReport::default() {
            tracing::info!(?report, "catalog retention run");
        }
        Ok(report)
    }

    /// Deletes the objects named in `pending_deletions`, then forgets them.
    fn drain_pending(
        &self,
        storage: &dyn Storage,
        chunk: i64,
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
                    match storage.remove(path) {
                        Ok(true) => report.files_deleted += 1,
                        Ok(false) => report.files_missing += 1,
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                            report.unsafe_paths += 1;
                            tracing::warn!(path, error = %e, "retention refused a path outside the storage");
                        }
                        Err(source) => {
                            return Err(Error::Io {
                                path: path.into(),
                                source,
                            })
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

    /// Removes `live/<stream>/<n>.ts` objects older than `grace` that no
    /// segment row names.
    fn sweep_orphans(
        &self,
        storage: &dyn Storage,
        grace: Duration,
        now_ms: i64,
        report: &mut RetentionReport,
    ) -> Result<(), Error> {
        let threshold = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)).saturating_sub(grace);
        let objects = storage.list(layout::LIVE_DIR).map_err(|source| Error::Io {
            path: layout::LIVE_DIR.into(),
            source,
        })?;
        for object in objects {
            if layout::parse_segment_key(&object.key).is_none() || object.modified >= threshold {
                continue;
            }
            let rows: i64 = self.with_conn(|c| {
                Ok(dispatch!(c, |c| segments::table
                    .filter(segments::path.eq(&object.key))
                    .count()
                    .get_result(c))?)
            })?;
            if rows == 0 {
                match storage.remove(&object.key) {
                    Ok(true) => {
                        report.orphans_deleted += 1;
                        tracing::info!(path = %object.key, "retention removed an orphan segment file");
                    }
                    Ok(false) => {}
                    Err(source) => {
                        return Err(Error::Io {
                            path: object.key.into(),
                            source,
                        })
                    }
                }
            }
        }
        Ok(())
    }
}
