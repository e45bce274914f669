//! Many ingestd on one catalog: the node registry (`ingest_nodes`: each ingestd's id, the
//! control URL other machines reach it at, the JT/T 1078 address it gives devices, and a
//! heartbeat) and which node holds each device's JT/T 808 session (`device_nodes`), so that
//! any hlsd sends a device's commands to the ingestd the device is connected to.
//!
//! A node is alive while its heartbeat is recent; the caller says how recent. A device held by
//! a node that stopped beating counts as held by nobody: a crashed node's rows are left
//! behind, and only the heartbeat tells them apart from a live one's.
//!
//! Stream leases (`stream_leases`): when nodes share an object store, a stream has one writer.
//! The node that opens a stream takes its lease if the holder is gone or the new source
//! connection is newer than the holder's; taking it from another node raises the fencing
//! number. The writer checks its fence before each upload ([`Catalog::check_stream_lease`]),
//! which also records the segment's sequence number, so the next writer starts above every
//! sequence an older one could still upload and no object is ever written by two nodes.

use diesel::prelude::*;

use super::conn::{dispatch, write_tx};
use super::schema::{device_nodes, ingest_nodes, stream_leases};
use super::{Catalog, Error};

/// How often a node writes its heartbeat.
pub const HEARTBEAT_EVERY_MS: i64 = 5_000;
/// A node whose heartbeat is older than this counts as gone (three missed heartbeats).
pub const NODE_ALIVE_MS: i64 = 3 * HEARTBEAT_EVERY_MS;

/// One ingestd as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = ingest_nodes)]
pub struct IngestNode {
    pub id: String,
    pub control_url: String,
    pub media_addr: Option<String>,
    pub started_ms: i64,
    pub heartbeat_ms: i64,
}

/// What [`Catalog::acquire_stream_lease`] answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamLease {
    /// The caller writes the stream: uploads carry `fence`, and its media sequence numbers
    /// start above `last_sequence` (the highest any writer uploaded).
    Granted {
        fence: i64,
        last_sequence: Option<i64>,
    },
    /// A live node with a newer source connection writes the stream.
    Refused,
}

impl Catalog {
    /// Takes the lease of `stream` for `node`, whose source connection started at
    /// `source_started_ms`. Granted when nobody holds it, when `node` already does (the fence
    /// stays: its own upload queue keeps its writes in order), when the holder's heartbeat is
    /// older than `alive_since_ms`, or when the holder's source started no later than this
    /// one (the newer connection wins; a lingering older one cannot take the stream back).
    pub fn acquire_stream_lease(
        &self,
        stream: &str,
        node: &str,
        source_started_ms: i64,
        alive_since_ms: i64,
    ) -> Result<StreamLease, Error> {
        let now = super::now_ms();
        let row = self.with_conn(|c| {
            Ok(write_tx!(c, |c| {
                // Counts of affected rows are not relied on: MySQL's "insert or ignore" counts
                // a row that was already there. The last read says who holds the lease.
                diesel::insert_into(stream_leases::table)
                    .values((
                        stream_leases::stream.eq(stream),
                        stream_leases::node.eq(node),
                        stream_leases::fence.eq(1i64),
                        stream_leases::source_started_ms.eq(source_started_ms),
                        stream_leases::renewed_ms.eq(now),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                let live = ingest_nodes::table
                    .filter(ingest_nodes::heartbeat_ms.ge(alive_since_ms))
                    .select(ingest_nodes::id);
                diesel::update(
                    stream_leases::table
                        .filter(stream_leases::stream.eq(stream))
                        .filter(stream_leases::node.ne(node))
                        .filter(
                            stream_leases::source_started_ms
                                .le(source_started_ms)
                                .or(diesel::dsl::not(stream_leases::node.eq_any(live))),
                        ),
                )
                .set((
                    stream_leases::node.eq(node),
                    stream_leases::fence.eq(stream_leases::fence + 1i64),
                    stream_leases::source_started_ms.eq(source_started_ms),
                    stream_leases::renewed_ms.eq(now),
                ))
                .execute(c)?;
                // The holder's newest source is the one an older connection must beat.
                diesel::update(
                    stream_leases::table
                        .filter(stream_leases::stream.eq(stream))
                        .filter(stream_leases::node.eq(node))
                        .filter(stream_leases::source_started_ms.lt(source_started_ms)),
                )
                .set(stream_leases::source_started_ms.eq(source_started_ms))
                .execute(c)?;
                stream_leases::table
                    .filter(stream_leases::stream.eq(stream))
                    .select((
                        stream_leases::node,
                        stream_leases::fence,
                        stream_leases::last_sequence,
                    ))
                    .first::<(String, i64, Option<i64>)>(c)
            })?)
        })?;
        Ok(match row {
            (holder, fence, last_sequence) if holder == node => StreamLease::Granted {
                fence,
                last_sequence,
            },
            _ => StreamLease::Refused,
        })
    }

    /// Whether `node` still writes `stream` under `fence` (false once another node took it);
    /// when it does and `sequence` is given, records it as uploaded. Called before each upload:
    /// a takeover is ordered before or after this check, never between the recorded sequence
    /// and the next writer's first one.
    pub fn check_stream_lease(
        &self,
        stream: &str,
        node: &str,
        fence: i64,
        sequence: Option<i64>,
    ) -> Result<bool, Error> {
        let now = super::now_ms();
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| {
                let held = || {
                    stream_leases::table
                        .filter(stream_leases::stream.eq(stream))
                        .filter(stream_leases::node.eq(node))
                        .filter(stream_leases::fence.eq(fence))
                };
                let recorded = match sequence {
                    Some(seq) => diesel::update(
                        held().filter(
                            stream_leases::last_sequence
                                .is_null()
                                .or(stream_leases::last_sequence.lt(seq)),
                        ),
                    )
                    .set((
                        stream_leases::last_sequence.eq(seq),
                        stream_leases::renewed_ms.eq(now),
                    ))
                    .execute(c)?,
                    None => 0,
                };
                if recorded > 0 {
                    Ok::<_, diesel::result::Error>(true)
                } else {
                    held().count().get_result::<i64>(c).map(|n| n > 0)
                }
            })?)
        })
    }

    /// The lease of `stream`: its holder and fence.
    pub fn stream_lease_holder(&self, stream: &str) -> Result<Option<(String, i64)>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| stream_leases::table
                .filter(stream_leases::stream.eq(stream))
                .select((stream_leases::node, stream_leases::fence))
                .first(c)
                .optional())?)
        })
    }

    /// Registers (or re-registers, after a restart) a node, its heartbeat set to its start.
    pub fn register_node(&self, node: &IngestNode) -> Result<(), Error> {
        self.with_conn(|c| {
            write_tx!(c, |c| {
                diesel::delete(ingest_nodes::table.filter(ingest_nodes::id.eq(&node.id)))
                    .execute(c)?;
                diesel::insert_into(ingest_nodes::table)
                    .values((
                        ingest_nodes::id.eq(&node.id),
                        ingest_nodes::control_url.eq(&node.control_url),
                        ingest_nodes::media_addr.eq(&node.media_addr),
                        ingest_nodes::started_ms.eq(node.started_ms),
                        ingest_nodes::heartbeat_ms.eq(node.heartbeat_ms),
                    ))
                    .execute(c)
                    .map(drop)
            })?;
            Ok(())
        })
    }

    /// Moves a node's heartbeat forward; `false` when the node has no row (removed by an
    /// operator, or a catalog restored from a backup): the caller registers again.
    pub fn node_heartbeat(&self, id: &str, at_ms: i64) -> Result<bool, Error> {
        let n = self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::update(
                ingest_nodes::table.filter(ingest_nodes::id.eq(id))
            )
            .set(ingest_nodes::heartbeat_ms.eq(at_ms))
            .execute(c))?)
        })?;
        Ok(n > 0)
    }

    /// Removes a node that stops, and the devices it held.
    pub fn remove_node(&self, id: &str) -> Result<(), Error> {
        self.with_conn(|c| {
            write_tx!(c, |c| {
                diesel::delete(device_nodes::table.filter(device_nodes::node.eq(id))).execute(c)?;
                diesel::delete(ingest_nodes::table.filter(ingest_nodes::id.eq(id)))
                    .execute(c)
                    .map(drop)
            })?;
            Ok(())
        })
    }

    /// Nodes whose heartbeat is at or after `alive_since_ms`, by id.
    pub fn live_nodes(&self, alive_since_ms: i64) -> Result<Vec<IngestNode>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| ingest_nodes::table
                .filter(ingest_nodes::heartbeat_ms.ge(alive_since_ms))
                .order(ingest_nodes::id)
                .select(IngestNode::as_select())
                .load(c))?)
        })
    }

    /// Whether `node` should run the cluster's periodic jobs (retention) now: it is the live
    /// node with the smallest id. Every node asks before each run, so the jobs move to another
    /// node within [`NODE_ALIVE_MS`] of this one's death. Two nodes can both believe it for a
    /// moment (a node with a smaller id joining mid-run); the jobs are idempotent, so that
    /// costs a repeated query, never a lost or doubled deletion.
    pub fn runs_periodic_jobs(&self, node: &str, now_ms: i64) -> Result<bool, Error> {
        let first = self.with_conn(|c| {
            Ok(dispatch!(c, |c| ingest_nodes::table
                .filter(ingest_nodes::heartbeat_ms.ge(now_ms - NODE_ALIVE_MS))
                .order(ingest_nodes::id)
                .select(ingest_nodes::id)
                .first::<String>(c)
                .optional())?)
        })?;
        // No live node at all (the registry is not written yet): run rather than never.
        Ok(first.is_none_or(|f| f == node))
    }

    /// Records that `node` holds `sim`'s session since `at_ms`. The newest connection wins: a
    /// device that reconnected through the balancer to another node moves there, and a late
    /// write of an older connection does not take it back.
    pub fn hold_device(&self, sim: &str, node: &str, at_ms: i64) -> Result<(), Error> {
        self.with_conn(|c| {
            write_tx!(c, |c| {
                diesel::insert_into(device_nodes::table)
                    .values((
                        device_nodes::sim.eq(sim),
                        device_nodes::node.eq(node),
                        device_nodes::since_ms.eq(at_ms),
                    ))
                    .on_conflict_do_nothing()
                    .execute(c)?;
                diesel::update(
                    device_nodes::table
                        .filter(device_nodes::sim.eq(sim))
                        .filter(device_nodes::since_ms.le(at_ms)),
                )
                .set((
                    device_nodes::node.eq(node),
                    device_nodes::since_ms.eq(at_ms),
                ))
                .execute(c)
                .map(drop)
            })?;
            Ok(())
        })
    }

    /// Forgets that `node` holds `sim` (its connection closed); a newer holder is kept.
    pub fn release_device(&self, sim: &str, node: &str) -> Result<(), Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| diesel::delete(
                device_nodes::table
                    .filter(device_nodes::sim.eq(sim))
                    .filter(device_nodes::node.eq(node))
            )
            .execute(c))?)
        })?;
        Ok(())
    }

    /// The live node holding `sim`'s session, if any (heartbeat at or after
    /// `alive_since_ms`).
    pub fn device_node(&self, sim: &str, alive_since_ms: i64) -> Result<Option<IngestNode>, Error> {
        self.with_conn(|c| {
            Ok(dispatch!(c, |c| device_nodes::table
                .inner_join(ingest_nodes::table.on(ingest_nodes::id.eq(device_nodes::node)))
                .filter(device_nodes::sim.eq(sim))
                .filter(ingest_nodes::heartbeat_ms.ge(alive_since_ms))
                .select(IngestNode::as_select())
                .first(c)
                .optional())?)
        })
    }
}
