//! Ingest events (positions, devices coming and going) into catalog records.
//!
//! Runs on its own thread, reading the bounded event channel the listeners
//! `try_send` into. A lasting 808 alarm becomes one incident whose end moves
//! with each report, until the alarm bits clear.

use std::collections::HashMap;

use streamcore::catalog::{CatalogWriter, Record};

use crate::sessions::IngestEvent;

/// Converts and forwards events until the channel closes.
pub fn run(events: crossbeam_channel::Receiver<IngestEvent>, writer: &CatalogWriter) {
    let mut alarms: HashMap<String, (i64, u32)> = HashMap::new();
    for ev in events {
        match ev {
            IngestEvent::Position(p) => {
                let loc = &p.location;
                let at = loc.time_ms.unwrap_or(p.received_ms);
                writer.send(Record::DeviceSeen {
                    sim: p.sim.clone(),
                    plate: None,
                    auth_code: None,
                    at: p.received_ms,
                });
                writer.send(Record::Position {
                    sim: p.sim.clone(),
                    device_time_ms: at,
                    lat: loc.lat_e6 as f64 / 1e6,
                    lon: loc.lon_e6 as f64 / 1e6,
                    speed: loc.speed_dkmh as f32 / 10.0,
                    heading: loc.heading,
                    altitude: loc.altitude_m as i32,
                    alarm: loc.alarm,
                    status: loc.status,
                });
                if loc.alarm == 0 {
                    alarms.remove(&p.sim);
                    continue;
                }
                let (from, bits) = *alarms
                    .entry(p.sim.clone())
                    .and_modify(|e| {
                        if e.1 != loc.alarm {
                            *e = (at, loc.alarm);
                        }
                    })
                    .or_insert((at, loc.alarm));
                writer.send(Record::Incident {
                    sim: p.sim,
                    channel: None,
                    from_ms: from,
                    to_ms: at.max(from),
                    kind: format!("alarm:{bits:08x}"),
                    source: "jt808".into(),
                    session_id: None,
                });
            }
            IngestEvent::DeviceOnline { sim, at_ms, .. }
            | IngestEvent::DeviceOffline { sim, at_ms } => {
                writer.send(Record::DeviceSeen {
                    sim,
                    plate: None,
                    auth_code: None,
                    at: at_ms,
                });
            }
            // Media sessions are recorded by the remux workers, which own
            // the segments that belong to them.
            IngestEvent::MediaSessionStarted(_) | IngestEvent::MediaSessionEnded(_) => {}
        }
    }
}
