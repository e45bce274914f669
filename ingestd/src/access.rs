//! Who may connect and how long video runs: [`DeviceAccess`] (the SIM
//! allow-list from the config and the catalog, and the JT/T 808 policy each
//! connection enforces) and [`AutoStop`] (live video started through the
//! control API is stopped with 0x9102 once no hlsd has served its playlist
//! for the idle limit, so dashcams do not stream over paid cellular data to
//! nobody).
//!
//! Both read the catalog on a timer from a blocking thread: a slow catalog
//! delays an allow-list update or a stop, never a device's connection.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use streamcore::catalog::{self, Catalog, NewAuditEntry};
use streamcore::StreamName;
use tracing::{info, warn};

use crate::context::Ctx;
use crate::jt808::{DevicePolicy, PlatformCommand};
use crate::sessions::now_ms;

/// How often the catalog's allow-list is re-read.
pub const ALLOW_LIST_REFRESH: Duration = Duration::from_secs(10);

/// The settings-table key of the persistent device auth secret.
pub const AUTH_SECRET_SETTING: &str = "jt808_auth_secret";

/// Who may log in: authentication required or not, and the SIM allow-list
/// (the union of the config's and the catalog's; both empty lets every SIM).
#[derive(Debug)]
pub struct DeviceAccess {
    require_auth: bool,
    from_config: HashSet<String>,
    from_catalog: RwLock<Arc<HashSet<String>>>,
}

impl DeviceAccess {
    pub fn new(require_auth: bool, allowed_sims: &[String]) -> Self {
        DeviceAccess {
            require_auth,
            from_config: allowed_sims.iter().cloned().collect(),
            from_catalog: RwLock::default(),
        }
    }

    pub fn requires_auth(&self) -> bool {
        self.require_auth
    }

    /// Whether `sim` may register and authenticate.
    pub fn allows(&self, sim: &str) -> bool {
        let catalog = self
            .from_catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (self.from_config.is_empty() && catalog.is_empty())
            || self.from_config.contains(sim)
            || catalog.contains(sim)
    }

    /// Replaces the catalog's part of the list.
    pub fn set_catalog_list(&self, sims: impl IntoIterator<Item = String>) {
        let set: HashSet<String> = sims
            .into_iter()
            .map(|s| crate::bcd::normalize_sim(&format!("{s:0>12}")))
            .collect();
        *self.from_catalog.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The policy a JT/T 808 session enforces.
    pub fn policy(self: &Arc<Self>) -> DevicePolicy {
        let me = self.clone();
        DevicePolicy {
            require_auth: self.require_auth,
            allowed: Some(Arc::new(move |sim: &str| me.allows(sim))),
        }
    }
}

/// Re-reads the catalog's allow-list every [`ALLOW_LIST_REFRESH`] until
/// `stop` turns true.
pub async fn refresh_allow_list(
    access: Arc<DeviceAccess>,
    catalog: Catalog,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        let c = catalog.clone();
        match tokio::task::spawn_blocking(move || c.allowed_sims()).await {
            Ok(Ok(sims)) => {
                failing = false;
                access.set_catalog_list(sims);
            }
            Ok(Err(e)) if !failing => {
                failing = true;
                warn!(error = %e, "cannot read the SIM allow-list; keeping the last one");
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(ALLOW_LIST_REFRESH) => {}
            _ = stop.changed() => return,
        }
    }
}

/// A fresh random secret (hex of 32 bytes from the OS).
pub fn random_secret() -> String {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Live video this node started for an operator, by stream.
#[derive(Debug, Default)]
pub struct AutoStop {
    started: Mutex<HashMap<String, Watched>>,
}

#[derive(Debug, Clone)]
struct Watched {
    sim: String,
    channel: u8,
    /// When the last 0x9101 was sent: the grace before the first viewer.
    started_ms: i64,
}

impl AutoStop {
    /// Video of `sim`/`channel` was started through the control API.
    pub fn started(&self, sim: &str, channel: u8) {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                StreamName::live(sim, channel).to_string(),
                Watched {
                    sim: sim.to_string(),
                    channel,
                    started_ms: now_ms(),
                },
            );
    }

    /// Video of `sim`/`channel` was stopped through the control API.
    pub fn stopped(&self, sim: &str, channel: u8) {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&StreamName::live(sim, channel).to_string());
    }

    /// Streams started more than `idle` ago.
    fn due(&self, idle: Duration, now: i64) -> Vec<(String, Watched)> {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, w)| now - w.started_ms >= idle.as_millis() as i64)
            .map(|(s, w)| (s.clone(), w.clone()))
            .collect()
    }

    /// Forgets `stream` unless it was started again after `started_ms`.
    fn forget(&self, stream: &str, started_ms: i64) {
        let mut m = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(stream).is_some_and(|w| w.started_ms == started_ms) {
            m.remove(stream);
        }
    }

    /// Streams tracked now (for tests and the metrics).
    pub fn tracked(&self) -> usize {
        self.started.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Every `idle / 4` (at most 5 s), stops the tracked streams nobody has
/// watched for `idle`: sends 0x9102 (close audio and video) and writes the
/// audit log. Runs until `stop` turns true.
pub async fn run_auto_stop(
    ctx: Arc<Ctx>,
    catalog: Catalog,
    idle: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = (idle / 4).clamp(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let now = now_ms();
        let due = ctx.auto_stop.due(idle, now);
        if due.is_empty() {
            continue;
        }
        let names: Vec<String> = due.iter().map(|(s, _)| s.clone()).collect();
        let c = catalog.clone();
        let viewed = match tokio::task::spawn_blocking(move || c.last_viewed(&names)).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read viewers; no automatic stop this round");
                continue;
            }
            Err(_) => continue,
        };
        for (stream, w) in due {
            let last = viewed.get(&stream).copied().unwrap_or(w.started_ms);
            let last = last.max(w.started_ms);
            if now - last < idle.as_millis() as i64 {
                continue;
            }
            ctx.auto_stop.forget(&stream, w.started_ms);
            let cmd = PlatformCommand::Control {
                channel: w.channel,
                command: 0,
                close_type: 0,
                stream_type: 0,
            };
            let sent = ctx.send_command(&w.sim, cmd).await;
            ctx.metrics.auto_stops.fetch_add(1, Relaxed);
            let idle_s = (now - last) / 1000;
            info!(%stream, idle_s, sent = sent.is_some(), "no viewer: live video stopped (0x9102)");
            let detail = format!(
                "no viewer for {idle_s} s; 0x9102 {}",
                if sent.is_some() {
                    "sent"
                } else {
                    "not sent: device offline"
                }
            );
            let c = catalog.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let r = c.audit(&NewAuditEntry {
                    at_ms: catalog::now_ms(),
                    actor: "system",
                    action: "live.auto_stop",
                    target: &stream,
                    detail: Some(&detail),
                    client: None,
                });
                if let Err(e) = r {
                    warn!(error = %e, "cannot write the audit log");
                }
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_is_the_union_and_empty_allows_all() {
        let a = DeviceAccess::new(true, &[]);
        assert!(a.allows("013800000000"));
        a.set_catalog_list(["13800000001".to_string()]);
        assert!(a.allows("013800000001"), "padded to 12 digits");
        assert!(!a.allows("013800000000"));
        let a = DeviceAccess::new(true, &["013800000000".into()]);
        assert!(a.allows("013800000000"));
        assert!(!a.allows("013800000001"));
        a.set_catalog_list(["013800000001".to_string()]);
        assert!(a.allows("013800000001"));
    }

    #[test]
    fn auto_stop_tracks_the_latest_start() {
        let s = AutoStop::default();
        s.started("013800000000", 1);
        assert_eq!(s.tracked(), 1);
        assert!(s.due(Duration::from_secs(60), now_ms()).is_empty());
        let due = s.due(Duration::ZERO, now_ms());
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].0, "013800000000_1");
        // A stale round must not forget a newer start.
        s.forget("013800000000_1", due[0].1.started_ms - 1);
        assert_eq!(s.tracked(), 1);
        s.forget("013800000000_1", due[0].1.started_ms);
        assert_eq!(s.tracked(), 0);
        s.started("013800000000", 2);
        s.stopped("013800000000", 2);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn secrets_are_random() {
        let (a, b) = (random_secret(), random_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
