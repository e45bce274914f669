//! One writer per stream when nodes share an object store: this node's side of the catalog's
//! stream leases (`streamcore::catalog::cluster`).
//!
//! A media worker takes a stream's lease before it opens the stream ([`Leases::acquire`]) and
//! writes through the upload queue's view fenced with the lease's number. The upload threads
//! ask [`Leases`] (as the queue's [`UploadFence`]) before every upload; once the catalog says
//! another node took the stream, the upload is dropped and the stream is marked lost here, so
//! the worker closes it ([`Leases::lost`]) and ignores the rest of its old source.

use std::collections::HashMap;
use std::io;
use std::sync::{Mutex, OnceLock};

use streamcore::catalog::cluster::{StreamLease, NODE_ALIVE_MS};
use streamcore::catalog::{self, Catalog};
use streamcore::layout;
use streamcore::storage::upload::UploadFence;
use tracing::warn;

/// This node's leases: who it is, and which of its fences were overtaken.
pub struct Leases {
    catalog: Catalog,
    /// Set once the listeners are bound (the default id names the JT/T 808 port).
    node: OnceLock<String>,
    /// Streams another node took, with the fence this node lost them under.
    lost: Mutex<HashMap<String, i64>>,
}

impl Leases {
    pub fn new(catalog: Catalog) -> Self {
        Leases {
            catalog,
            node: OnceLock::new(),
            lost: Mutex::default(),
        }
    }

    /// Names this node (its id in the node registry); the first call wins.
    pub fn set_node(&self, id: &str) {
        let _ = self.node.set(id.to_owned());
    }

    fn node(&self) -> io::Result<&str> {
        self.node
            .get()
            .map(String::as_str)
            .ok_or_else(|| io::Error::other("node id not known yet"))
    }

    /// Takes `stream`'s lease for a source that started at `source_started_ms` (blocking:
    /// one catalog transaction).
    pub fn acquire(&self, stream: &str, source_started_ms: i64) -> io::Result<StreamLease> {
        let node = self.node()?;
        let lease = self
            .catalog
            .acquire_stream_lease(
                stream,
                node,
                source_started_ms,
                catalog::now_ms() - NODE_ALIVE_MS,
            )
            .map_err(io::Error::other)?;
        if let StreamLease::Granted { fence, .. } = lease {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            if lost.get(stream).is_some_and(|&f| f <= fence) {
                lost.remove(stream);
            }
        }
        Ok(lease)
    }

    /// Whether this node lost `stream`, written under `fence`, to another node.
    pub fn lost(&self, stream: &str, fence: i64) -> bool {
        self.lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(stream)
            .is_some_and(|&f| f >= fence)
    }
}

/// `live/<stream>/<file>`: the stream, and the sequence number when the file is a segment.
fn stream_of(key: &str) -> Option<(&str, Option<i64>)> {
    let rest = key.strip_prefix(layout::LIVE_DIR)?.strip_prefix('/')?;
    let (stream, file) = rest.split_once('/')?;
    let sequence = file.strip_suffix(".ts").and_then(|n| n.parse().ok());
    Some((stream, sequence))
}

impl UploadFence for Leases {
    fn admits(&self, key: &str, fence: i64) -> io::Result<bool> {
        // Fenced writes are stream files; anything else has no lease to check.
        let Some((stream, sequence)) = stream_of(key) else {
            return Ok(true);
        };
        let held = self
            .catalog
            .check_stream_lease(stream, self.node()?, fence, sequence)
            .map_err(io::Error::other)?;
        if !held {
            let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
            let newly = lost.get(stream).is_none_or(|&f| f < fence);
            if newly {
                warn!(
                    stream,
                    fence, "another node took the stream (a newer connection of its source): this node stops writing it"
                );
                lost.insert(stream.to_owned(), fence);
            }
        }
        Ok(held)
    }
}

#[cfg(test)]
mod tests {
    use super::stream_of;

    #[test]
    fn keys_name_their_stream_and_segment() {
        assert_eq!(
            stream_of("live/013800138000_1/42.ts"),
            Some(("013800138000_1", Some(42)))
        );
        assert_eq!(stream_of("live/cab_1/index.m3u8"), Some(("cab_1", None)));
        assert_eq!(stream_of("recordings/x/1.ts"), None);
        assert_eq!(stream_of("live/cab_1"), None);
    }
}
