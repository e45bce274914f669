//! Ingest events (positions, devices coming and going, records made by the
//! control API and the incident task) into catalog records.
//!
//! Runs on its own thread, reading the bounded event channel the listeners
//! `try_send` into. Alarm incidents are [`crate::incidents`]' business; this
//! only stores the positions they come from.

use streamcore::catalog::{CatalogWriter, Record};

use crate::cluster::Holding;
use crate::sessions::IngestEvent;

/// Converts and forwards events until the channel closes; devices coming and going also go to
/// `holdings` (the node registry's thread, [`crate::cluster`]).
pub fn run(
    events: crossbeam_channel::Receiver<IngestEvent>,
    writer: &CatalogWriter,
    holdings: &crossbeam_channel::Sender<Holding>,
) {
    for ev in events {
        if let IngestEvent::DeviceOnline { sim, at_ms, .. }
        | IngestEvent::DeviceOffline { sim, at_ms } = &ev
        {
            let held = matches!(ev, IngestEvent::DeviceOnline { .. });
            let _ = holdings.try_send(Holding {
                sim: sim.clone(),
                held,
                at_ms: *at_ms,
            });
        }
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
                    sim: p.sim,
                    device_time_ms: at,
                    lat: loc.lat_e6 as f64 / 1e6,
                    lon: loc.lon_e6 as f64 / 1e6,
                    speed: loc.speed_dkmh as f32 / 10.0,
                    heading: loc.heading,
                    altitude: loc.altitude_m as i32,
                    alarm: loc.alarm,
                    status: loc.status,
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
            IngestEvent::Record(r) => {
                writer.send(r);
            }
            // Media sessions are recorded by the remux workers, which own
            // the segments that belong to them.
            IngestEvent::MediaSessionStarted(_) | IngestEvent::MediaSessionEnded(_) => {}
        }
    }
}
