//! Daemon counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Per-stream counters are atomics behind an `Arc` that connection tasks and
//! media workers keep for the stream's life: counting a frame takes no lock
//! and no name lookup. Connection tasks add parser/reassembler deltas per
//! socket read, not per packet.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Declares the per-stream counters of the ingest side once: [`StreamStats`],
/// a plain snapshot or delta, and [`StreamCounters`], its lock-free live
/// form. The remuxer's own counters are streamcore's
/// [`streamcore::StreamStats`], carried as they are in `remux`.
macro_rules! stream_counters {
    ($($(#[doc = $doc:literal])+ $field:ident,)*) => {
        /// Per-stream counters (a snapshot, or a delta to add).
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct StreamStats {
            $($(#[doc = $doc])+ pub $field: u64,)*
            /// What the stream's remuxer counted.
            pub remux: streamcore::StreamStats,
        }

        /// The live counters of one stream. Connection tasks and media
        /// workers keep an `Arc` of their stream's and add to it without a
        /// lock or a name lookup per frame.
        #[derive(Debug, Default)]
        pub struct StreamCounters {
            $($field: AtomicU64,)*
            remux: [AtomicU64; streamcore::StreamStats::COUNT],
        }

        impl StreamCounters {
            pub fn add(&self, d: &StreamStats) {
                $(if d.$field != 0 {
                    self.$field.fetch_add(d.$field, Relaxed);
                })*
                self.add_remux(&d.remux);
            }

            /// Adds what a remuxer counted since its last report.
            pub fn add_remux(&self, d: &streamcore::StreamStats) {
                for (counter, v) in self.remux.iter().zip(d.values()) {
                    if v != 0 {
                        counter.fetch_add(v, Relaxed);
                    }
                }
            }

            pub fn snapshot(&self) -> StreamStats {
                StreamStats {
                    $($field: self.$field.load(Relaxed),)*
                    remux: streamcore::StreamStats::from_values(
                        std::array::from_fn(|i| self.remux[i].load(Relaxed)),
                    ),
                }
            }
        }

        /// Names and help texts of the ingest-side counters, in order.
        const INGEST_FIELDS: &[(&str, &str)] = &[$((stringify!($field), concat!($($doc),+))),*];

        impl StreamStats {
            fn ingest_values(&self) -> Vec<u64> {
                vec![$(self.$field),*]
            }
        }
    };
}

stream_counters! {
    /// Bytes received (JT/T 1078 packets or raw bytes).
    bytes_in,
    /// JT/T 1078 packets parsed.
    packets,
    /// Frames reassembled.
    frames,
    /// I-frames reassembled.
    i_frames,
    /// Frames dropped (broken sub-package runs, oversize).
    dropped_frames,
    /// Resynchronisations after garbage.
    resyncs,
    /// Bytes skipped while resynchronising.
    resync_skipped_bytes,
    /// Rejected packet headers.
    parse_errors,
    /// Audio packets.
    audio_packets,
    /// Transparent-data packets.
    transparent_packets,
    /// Messages handled by media workers.
    worker_frames,
    /// Bytes handled by media workers.
    worker_bytes,
    /// Frames refused by the remuxer (unsupported codec, bad bitstream).
    rejected_frames,
}

impl StreamStats {
    /// One message handled by a media worker.
    pub fn worker_frame(bytes: usize) -> StreamStats {
        StreamStats {
            worker_frames: 1,
            worker_bytes: bytes as u64,
            ..Default::default()
        }
    }
}

/// Connection-level and JT/T 808 counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open_808: AtomicU64,
    pub connections_open_1078: AtomicU64,
    pub connections_open_raw: AtomicU64,
    pub connections_total: AtomicU64,
    /// Refused because the connection limit was reached.
    pub connections_rejected: AtomicU64,
    /// Closed for not sending within the handshake or idle timeout.
    pub connections_timed_out: AtomicU64,
    pub jt808_frames: AtomicU64,
    pub jt808_messages: AtomicU64,
    pub jt808_bad_checksum: AtomicU64,
    pub jt808_bad_frames: AtomicU64,
    pub jt808_unsupported: AtomicU64,
    /// 808 messages refused: the terminal had not authenticated.
    pub jt808_refused_unauthenticated: AtomicU64,
    /// 808 registrations/authentications refused: SIM not on the allow-list.
    pub jt808_refused_not_allowed: AtomicU64,
    /// 1078 connections closed: their SIM had no authenticated 808 session.
    pub jt1078_refused: AtomicU64,
    /// Live video stopped (0x9102) because nobody watched it.
    pub auto_stops: AtomicU64,
    pub positions: AtomicU64,
    /// Events (positions, sessions) dropped because the event channel was full.
    pub events_dropped: AtomicU64,
    /// Bytes on the JT/T 1078 port before any stream was identified.
    pub unattributed_bytes: AtomicU64,
    /// Media dropped because another node writes its stream for a newer source connection.
    pub superseded_frames: AtomicU64,
    /// JT/T 1078 resynchronisations and rejected headers over all
    /// connections, including those that never sent a valid packet (whose
    /// per-stream counters have no stream to go to).
    pub jt1078_resyncs: AtomicU64,
    pub jt1078_parse_errors: AtomicU64,
    /// JT/T 1078 packets ignored because their connection already carried
    /// [`crate::jt1078::MAX_STREAMS`] other SIM + channel pairs.
    pub jt1078_refused_packets: AtomicU64,
    /// From the arrival of the access unit that closes a segment to the
    /// playlist listing that segment being in place.
    pub publish_latency: LatencyHistogram,
    /// From the read that completed a frame (or raw chunk) to a media worker
    /// taking it up: the wait in the media queue, the part of the publish
    /// latency that is queueing rather than work.
    pub media_wait: LatencyHistogram,
    /// Audio packets of payload types we do not decode, by payload type.
    unsupported_audio: Mutex<BTreeMap<u8, u64>>,
    streams: Mutex<BTreeMap<String, Arc<StreamCounters>>>,
    /// The object store's upload queue, when segments go to one.
    pub uploads: std::sync::OnceLock<Arc<streamcore::storage::upload::UploadQueue>>,
}

/// Buckets per decade of [`LatencyHistogram`]: bounds 12% apart, so a
/// quantile read off the buckets is within 12% of the true value.
const BUCKETS_PER_DECADE: usize = 20;
/// Decades above the first bound (10 us .. 100 s).
const DECADES: usize = 7;
const BUCKETS: usize = BUCKETS_PER_DECADE * DECADES + 1;

/// A lock-free latency histogram with log-spaced buckets, exported in the
/// Prometheus histogram format (cumulative `le` buckets, `_sum`, `_count`),
/// so quantiles over any window are the difference of two scrapes.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Upper bounds in nanoseconds; the last is +Inf.
    bounds_ns: [u64; BUCKETS],
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        let mut bounds_ns = [u64::MAX; BUCKETS];
        for (i, b) in bounds_ns.iter_mut().enumerate().take(BUCKETS - 1) {
            let exp = 4.0 + i as f64 / BUCKETS_PER_DECADE as f64; // 10^4 ns = 10 us
            *b = 10f64.powf(exp).round() as u64;
        }
        LatencyHistogram {
            bounds_ns,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn record(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds_ns.partition_point(|&b| b < ns);
        self.counts[i.min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) since start, read off the buckets (upper
    /// bound of the bucket holding it); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<std::time::Duration> {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(std::time::Duration::from_nanos(self.bounds_ns[i]));
            }
        }
        None
    }

    fn render(&self, o: &mut String, name: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds_ns.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            if *b == u64::MAX {
                let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            } else {
                let _ = writeln!(
                    o,
                    "{name}_bucket{{le=\"{}\"}} {cumulative}",
                    *b as f64 / 1e9
                );
            }
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(o, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

impl Metrics {
    /// The live counters of `stream`, created on first use. Hold on to the
    /// `Arc` for the stream's life: this takes the map lock.
    /// Counts one audio packet of a payload type we do not decode.
    pub fn count_unsupported_audio(&self, payload_type: u8) {
        *self
            .unsupported_audio
            .lock()
            .expect("metrics lock")
            .entry(payload_type)
            .or_default() += 1;
    }

    pub fn stream_counters(&self, stream: &str) -> Arc<StreamCounters> {
        let mut m = self.streams.lock().expect("metrics lock");
        match m.get(stream) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(StreamCounters::default());
                m.insert(stream.to_string(), c.clone());
                c
            }
        }
    }

    /// Adds to `stream`'s counters by name (for the rare paths; hot paths
    /// hold a [`StreamCounters`]).
    pub fn add_stream(&self, stream: &str, delta: &StreamStats) {
        self.stream_counters(stream).add(delta);
    }

    pub fn stream(&self, stream: &str) -> Option<StreamStats> {
        self.streams
            .lock()
            .expect("metrics lock")
            .get(stream)
            .map(|c| c.snapshot())
    }

    pub fn streams(&self) -> BTreeMap<String, StreamStats> {
        let m = self.streams.lock().expect("metrics lock");
        m.iter().map(|(k, c)| (k.clone(), c.snapshot())).collect()
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, queue: (usize, usize), devices_online: usize) -> String {
        let (queue_depth, queued_bytes) = queue;
        let mut o = String::new();
        let g = |o: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            &mut o,
            "ingestd_connections_total",
            "counter",
            "Accepted TCP connections.",
            self.connections_total.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_connections_rejected_total",
            "counter",
            "Connections refused at the connection limit.",
            self.connections_rejected.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_connections_timed_out_total",
            "counter",
            "Connections closed by handshake or idle timeout.",
            self.connections_timed_out.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP ingestd_connections_open Open connections per listener.\n# TYPE ingestd_connections_open gauge");
        for (l, v) in [
            ("jt808", &self.connections_open_808),
            ("jt1078", &self.connections_open_1078),
            ("raw", &self.connections_open_raw),
        ] {
            let _ = writeln!(
                o,
                "ingestd_connections_open{{listener=\"{l}\"}} {}",
                v.load(Relaxed)
            );
        }
        if let Some(queue) = self.uploads.get() {
            let b = queue.backlog();
            g(
                &mut o,
                "ingestd_storage_backlog_operations",
                "gauge",
                "Segments and playlists not yet in the object store (spilled to the data dir).",
                b.operations,
            );
            g(
                &mut o,
                "ingestd_storage_backlog_bytes",
                "gauge",
                "Bytes not yet in the object store.",
                b.bytes,
            );
            let _ = writeln!(
                o,
                "# HELP ingestd_storage_backlog_oldest_seconds How long the oldest upload has waited.\n# TYPE ingestd_storage_backlog_oldest_seconds gauge\ningestd_storage_backlog_oldest_seconds {:.3}",
                b.oldest.as_secs_f64()
            );
            g(
                &mut o,
                "ingestd_storage_failing",
                "gauge",
                "1 while the last upload to the object store failed.",
                u64::from(b.failing),
            );
            g(
                &mut o,
                "ingestd_storage_uploads_total",
                "counter",
                "Segments and playlists uploaded to the object store.",
                b.uploaded,
            );
            g(
                &mut o,
                "ingestd_storage_superseded_total",
                "counter",
                "Queued segments and playlists dropped: another node took their stream over.",
                b.superseded,
            );
        }
        g(
            &mut o,
            "ingestd_media_queue_depth",
            "gauge",
            "Messages queued for the media workers.",
            queue_depth as u64,
        );
        g(
            &mut o,
            "ingestd_media_queue_bytes",
            "gauge",
            "Media bytes queued for (or being handled by) the media workers.",
            queued_bytes as u64,
        );
        g(
            &mut o,
            "ingestd_devices_online",
            "gauge",
            "JT/T 808 devices connected.",
            devices_online as u64,
        );
        g(
            &mut o,
            "ingestd_jt808_frames_total",
            "counter",
            "JT/T 808 frames received.",
            self.jt808_frames.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt808_messages_total",
            "counter",
            "JT/T 808 complete messages.",
            self.jt808_messages.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt808_bad_checksum_total",
            "counter",
            "JT/T 808 frames dropped for a bad checksum.",
            self.jt808_bad_checksum.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt808_bad_frames_total",
            "counter",
            "JT/T 808 frames dropped for escaping/length/header errors.",
            self.jt808_bad_frames.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt808_unsupported_total",
            "counter",
            "JT/T 808 messages answered 'unsupported'.",
            self.jt808_unsupported.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP ingestd_devices_refused_total Device messages (jt808) and media connections (jt1078) refused by the access policy.\n\
             # TYPE ingestd_devices_refused_total counter\n\
             ingestd_devices_refused_total{{protocol=\"jt808\",reason=\"unauthenticated\"}} {}\n\
             ingestd_devices_refused_total{{protocol=\"jt808\",reason=\"not_allowed\"}} {}\n\
             ingestd_devices_refused_total{{protocol=\"jt1078\",reason=\"unauthenticated\"}} {}",
            self.jt808_refused_unauthenticated.load(Relaxed),
            self.jt808_refused_not_allowed.load(Relaxed),
            self.jt1078_refused.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_live_auto_stops_total",
            "counter",
            "Live video stopped (0x9102) because no viewer watched it for the idle limit.",
            self.auto_stops.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_positions_total",
            "counter",
            "Positions decoded.",
            self.positions.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_events_dropped_total",
            "counter",
            "Events dropped because the event channel was full.",
            self.events_dropped.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_unattributed_bytes_total",
            "counter",
            "JT/T 1078 bytes received before any stream was identified.",
            self.unattributed_bytes.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_superseded_frames_total",
            "counter",
            "Media frames and chunks dropped: another node writes their stream for a newer connection of its source.",
            self.superseded_frames.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt1078_resyncs_total",
            "counter",
            "JT/T 1078 resynchronisations after garbage, all connections.",
            self.jt1078_resyncs.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt1078_parse_errors_total",
            "counter",
            "JT/T 1078 headers rejected (bad type, body too long), all connections.",
            self.jt1078_parse_errors.load(Relaxed),
        );
        g(
            &mut o,
            "ingestd_jt1078_refused_packets_total",
            "counter",
            "JT/T 1078 packets of SIM + channel pairs beyond a connection's limit.",
            self.jt1078_refused_packets.load(Relaxed),
        );
        let _ = writeln!(o, "# HELP ingestd_audio_unsupported_packets_total JT/T 1078 audio packets of payload types not decoded, by type.\n# TYPE ingestd_audio_unsupported_packets_total counter");
        for (pt, v) in self.unsupported_audio.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                o,
                "ingestd_audio_unsupported_packets_total{{payload_type=\"{pt}\"}} {v}"
            );
        }
        self.publish_latency.render(
            &mut o,
            "ingestd_segment_publish_seconds",
            "From the arrival of the access unit that closes a segment to the playlist listing it.",
        );
        self.media_wait.render(
            &mut o,
            "ingestd_media_queue_wait_seconds",
            "From the read that completed a frame to a media worker taking it up.",
        );
        let streams = self.streams();
        let ingest: Vec<(&String, Vec<u64>)> = streams
            .iter()
            .map(|(n, s)| (n, s.ingest_values()))
            .collect();
        let remux: Vec<(&String, [u64; streamcore::StreamStats::COUNT])> =
            streams.iter().map(|(n, s)| (n, s.remux.values())).collect();
        for (i, (name, help)) in INGEST_FIELDS.iter().enumerate() {
            render_stream_counter(
                &mut o,
                name,
                help.trim(),
                ingest.iter().map(|(s, v)| (*s, v[i])),
            );
        }
        for (i, (name, help)) in streamcore::StreamStats::FIELDS.iter().enumerate() {
            render_stream_counter(&mut o, name, help, remux.iter().map(|(s, v)| (*s, v[i])));
        }
        o
    }
}

/// One per-stream counter family in the Prometheus text format.
fn render_stream_counter<'a>(
    o: &mut String,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (&'a String, u64)>,
) {
    let _ = writeln!(
        o,
        "# HELP ingestd_stream_{name}_total {help}\n# TYPE ingestd_stream_{name}_total counter"
    );
    for (stream, v) in values {
        let _ = writeln!(o, "ingestd_stream_{name}_total{{stream=\"{stream}\"}} {v}");
    }
}

/// Where each media worker's time goes: wall time handling media, and its
/// thread's CPU time. Busy time well above CPU time means the worker waits
/// on storage writes (the disk is the bottleneck); busy time near the wall
/// clock means it cannot keep up, and connections are being paused for it.
pub fn render_worker_loads(loads: &[Arc<crate::media::WorkerLoad>]) -> String {
    let mut o = String::new();
    for (name, help, pick) in [
        (
            "ingestd_media_worker_busy_seconds_total",
            "Wall time each media worker spent handling media.",
            (|l: &crate::media::WorkerLoad| l.busy_ns.load(Relaxed))
                as fn(&crate::media::WorkerLoad) -> u64,
        ),
        (
            "ingestd_media_worker_cpu_seconds_total",
            "CPU time of each media worker's thread.",
            |l: &crate::media::WorkerLoad| l.cpu_ns.load(Relaxed),
        ),
    ] {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, l) in loads.iter().enumerate() {
            let _ = writeln!(o, "{name}{{worker=\"{i}\"}} {:.6}", pick(l) as f64 / 1e9);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latency_quantiles_come_from_the_right_buckets() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..98 {
            h.record(Duration::from_millis(2));
        }
        h.record(Duration::from_millis(40));
        h.record(Duration::from_secs(1000)); // beyond the last bound: +Inf
        assert_eq!(h.count(), 100);
        let p50 = h.quantile(0.5).unwrap();
        assert!(
            p50 >= Duration::from_millis(2) && p50 < Duration::from_micros(2260),
            "{p50:?}"
        );
        let p99 = h.quantile(0.99).unwrap();
        assert!(
            p99 >= Duration::from_millis(40) && p99 < Duration::from_micros(45_000),
            "{p99:?}"
        );
        let mut o = String::new();
        h.render(&mut o, "x", "help");
        assert!(o.contains("x_bucket{le=\"+Inf\"} 100\n"), "{o}");
        assert!(o.contains("x_count 100\n"));
        // Cumulative buckets never decrease.
        let counts: Vec<u64> = o
            .lines()
            .filter(|l| l.starts_with("x_bucket"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), BUCKETS);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(counts[BUCKETS - 2], 99);
    }
}
