//! Many ingestd on one catalog: the node registry (`ingest_nodes`: each ingestd's id, the
//! control URL other machines reach it at, the JT/T 1078 address it gives devices, and a
//! heartbeat) and which node holds each device's JT/T 808 session (`device_nodes`), so that
//! any hlsd sends a device's commands to the ingestd the device is connected to.
//!
//! A node is alive while its heartbeat is recent; the caller says how recent. A device held by
//! a node that stopped beating counts as held by nobody: a crashed node's rows are left
//! behind, and only the heartbeat tells them apart from a live one's.

use diesel::prelude::*;

use super::conn::{dispatch, write_tx};
use super::schema::{device_nodes, ingest_nodes};
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

impl Catalog {
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
