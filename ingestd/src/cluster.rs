//! This ingestd's place in a cluster: it registers itself in the catalog's node registry
//! (instance id, the control URL hlsd reaches it at, the JT/T 1078 address devices are told),
//! beats a heartbeat, and records which devices' JT/T 808 sessions it holds, so that any hlsd
//! sends a device's commands to this node. On its own thread: the catalog calls block, and a
//! catalog outage must not stall a listener. Device changes that cannot be written yet are
//! kept (the newest per SIM) and written when the catalog answers again.

use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, Sender};
use streamcore::catalog::cluster::{IngestNode, HEARTBEAT_EVERY_MS};
use streamcore::catalog::{self, Catalog};
use tracing::{info, warn};

const HEARTBEAT_EVERY: Duration = Duration::from_millis(HEARTBEAT_EVERY_MS as u64);

/// A device's 808 session came to this node or left it.
#[derive(Debug, Clone)]
pub struct Holding {
    pub sim: String,
    pub held: bool,
    pub at_ms: i64,
}

/// The running registration; [`Membership::leave`] deregisters.
pub struct Membership {
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Membership {
    /// Registers `node` and keeps it alive; `holdings` carries the device changes.
    pub fn join(
        catalog: Catalog,
        node: IngestNode,
        holdings: Receiver<Holding>,
    ) -> std::io::Result<Membership> {
        let (stop, stopped) = crossbeam_channel::bounded(1);
        let thread = std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || run(&catalog, node, &holdings, &stopped))?;
        Ok(Membership {
            stop,
            thread: Some(thread),
        })
    }

    /// Removes this node (and the devices it held) from the registry. Blocking.
    pub fn leave(mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(catalog: &Catalog, mut node: IngestNode, holdings: &Receiver<Holding>, stop: &Receiver<()>) {
    let mut registered = register(catalog, &mut node);
    if registered {
        info!(id = %node.id, control_url = %node.control_url, media_addr = ?node.media_addr, "registered in the catalog's node registry");
    }
    let mut pending: HashMap<String, Holding> = HashMap::new();
    // Every device held now, to write again should the registration have to be made again.
    let mut held: HashMap<String, Holding> = HashMap::new();
    let mut failing = false;
    let heartbeat = crossbeam_channel::tick(HEARTBEAT_EVERY);
    let mut holdings = holdings.clone();
    loop {
        select! {
            recv(holdings) -> h => match h {
                Ok(h) => {
                    if h.held {
                        held.insert(h.sim.clone(), h.clone());
                    } else {
                        held.remove(&h.sim);
                    }
                    pending.insert(h.sim.clone(), h);
                }
                // The event thread ended (the listeners stopped): a closed channel is always
                // ready, so stop selecting it rather than spin until the stop comes.
                Err(_) => holdings = crossbeam_channel::never(),
            },
            recv(heartbeat) -> _ => {
                let beat = registered.then(|| catalog.node_heartbeat(&node.id, catalog::now_ms()));
                registered = match beat {
                    Some(Ok(true)) => true,
                    Some(Err(e)) => {
                        warn!(error = %e, "cannot write the node heartbeat");
                        false
                    }
                    // Not registered yet, or the row is gone (an operator, a restored backup):
                    // register again, with every device it holds.
                    None | Some(Ok(false)) => {
                        let again = register(catalog, &mut node);
                        if again {
                            for (sim, h) in &held {
                                pending.entry(sim.clone()).or_insert_with(|| h.clone());
                            }
                        }
                        again
                    }
                };
            },
            recv(stop) -> _ => break,
        }
        if !registered {
            continue;
        }
        let mut written = Vec::new();
        for (sim, h) in &pending {
            let done = if h.held {
                catalog.hold_device(sim, &node.id, h.at_ms)
            } else {
                catalog.release_device(sim, &node.id)
            };
            match done {
                Ok(()) => written.push(sim.clone()),
                Err(e) => {
                    if !failing {
                        warn!(error = %e, "cannot record which devices this node holds; retrying");
                    }
                    failing = true;
                    break;
                }
            }
        }
        if !written.is_empty() && failing && written.len() == pending.len() {
            info!("device holdings written again");
            failing = false;
        }
        for sim in written {
            pending.remove(&sim);
        }
    }
    match catalog.remove_node(&node.id) {
        Ok(()) => info!(id = %node.id, "left the node registry"),
        Err(e) => warn!(error = %e, "cannot remove this node from the registry"),
    }
}

fn register(catalog: &Catalog, node: &mut IngestNode) -> bool {
    let now = catalog::now_ms();
    node.heartbeat_ms = now;
    match catalog.register_node(node) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "cannot register in the node registry; retrying");
            false
        }
    }
}
