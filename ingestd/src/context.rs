//! [`Ctx`], the state every listener, connection task and HTTP handler
//! shares: configuration, metrics, the device/session registry, the media
//! sender and the event channel, with the two operations all of them need
//! (emitting an event, sending a platform command to a device).

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::config::Config;
use crate::jt808::PlatformCommand;
use crate::media::MediaSender;
use crate::metrics::Metrics;
use crate::sessions::{CommandRequest, IngestEvent, Registry};

/// State shared by all tasks.
pub struct Ctx {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub media: MediaSender,
    pub events: Option<crossbeam_channel::Sender<IngestEvent>>,
    /// Actual bound JT/T 1078 address (port 0 resolved).
    pub jt1078_addr: SocketAddr,
}

impl Ctx {
    pub fn emit(&self, ev: IngestEvent) {
        if let Some(tx) = &self.events {
            if tx.try_send(ev).is_err() {
                self.metrics.events_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Sends a platform command to an online device; returns the serial.
    pub async fn send_command(&self, sim: &str, cmd: PlatformCommand) -> Option<u16> {
        let (tx, _) = self.registry.device_handle(sim)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(CommandRequest { cmd, reply }).await.ok()?;
        rx.await.ok().flatten()
    }
}
