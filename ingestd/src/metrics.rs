//! Daemon counters and their Prometheus text rendering (`GET /metrics`).
//!
//! Connection tasks add parser/reassembler deltas per socket read (not per
//! packet), so the per-stream map lock is taken at most once per read.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Per-stream counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    /// Bytes received for the stream (JT/T 1078 packets or raw bytes).
    pub bytes_in: u64,
    pub packets: u64,
    pub frames: u64,
    pub i_frames: u64,
    pub dropped_frames: u64,
    pub resyncs: u64,
    pub resync_skipped_bytes: u64,
    pub parse_errors: u64,
    pub audio_packets: u64,
    pub transparent_packets: u64,
    /// Messages handled by the media workers and their bytes.
    pub worker_frames: u64,
    pub worker_bytes: u64,
    /// Access units written into MPEG-TS segments.
    pub frames_muxed: u64,
    /// Segments published (file complete and listed by the playlist).
    pub segments: u64,
    pub segment_bytes: u64,
    /// Frames dropped waiting for a keyframe (mid-GOP start, after a gap).
    pub dropped_before_keyframe: u64,
    /// Segments lost to a storage error.
    pub failed_segments: u64,
    /// Frames the remuxer refused (unsupported codec, bitstream errors).
    pub rejected_frames: u64,
    /// Parameter sets and slice headers streamcore could not parse (e.g. an
    /// SPS claiming a picture above 8192x8192), dropped.
    pub bad_nals: u64,
    /// Capture times streamcore replaced (zero, frozen, jittery clocks).
    pub repaired_timestamps: u64,
    /// Discontinuities started (backward jumps, gaps, format changes, breaks).
    pub discontinuities: u64,
    /// NAL units dropped over the NAL or access-unit bound (e.g. one start
    /// code followed by endless bytes on the raw port).
    pub oversize_nals: u64,
}

impl StreamStats {
    fn add(&mut self, d: &StreamStats) {
        self.bytes_in += d.bytes_in;
        self.packets += d.packets;
        self.frames += d.frames;
        self.i_frames += d.i_frames;
        self.dropped_frames += d.dropped_frames;
        self.resyncs += d.resyncs;
        self.resync_skipped_bytes += d.resync_skipped_bytes;
        self.parse_errors += d.parse_errors;
        self.audio_packets += d.audio_packets;
        self.transparent_packets += d.transparent_packets;
        self.worker_frames += d.worker_frames;
        self.worker_bytes += d.worker_bytes;
        self.frames_muxed += d.frames_muxed;
        self.segments += d.segments;
        self.segment_bytes += d.segment_bytes;
        self.dropped_before_keyframe += d.dropped_before_keyframe;
        self.failed_segments += d.failed_segments;
        self.rejected_frames += d.rejected_frames;
        self.bad_nals += d.bad_nals;
        self.repaired_timestamps += d.repaired_timestamps;
        self.discontinuities += d.discontinuities;
        self.oversize_nals += d.oversize_nals;
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
    pub positions: AtomicU64,
    /// Events (positions, sessions) dropped because the event channel was full.
    pub events_dropped: AtomicU64,
    /// Bytes on the JT/T 1078 port before any stream was identified.
    pub unattributed_bytes: AtomicU64,
    /// JT/T 1078 resynchronisations and rejected headers over all
    /// connections, including those that never sent a valid packet (whose
    /// per-stream counters have no stream to go to).
    pub jt1078_resyncs: AtomicU64,
    pub jt1078_parse_errors: AtomicU64,
    /// JT/T 1078 packets ignored because their connection already carried
    /// [`crate::jt1078::MAX_STREAMS`] other SIM + channel pairs.
    pub jt1078_refused_packets: AtomicU64,
    streams: Mutex<BTreeMap<String, StreamStats>>,
}

impl Metrics {
    pub fn add_stream(&self, stream: &str, delta: &StreamStats) {
        let mut m = self.streams.lock().expect("metrics lock");
        match m.get_mut(stream) {
            Some(s) => s.add(delta),
            None => {
                m.insert(stream.to_string(), delta.clone());
            }
        }
    }

    pub fn worker_frame(&self, stream: &str, bytes: usize) {
        self.add_stream(
            stream,
            &StreamStats {
                worker_frames: 1,
                worker_bytes: bytes as u64,
                ..Default::default()
            },
        );
    }

    pub fn stream(&self, stream: &str) -> Option<StreamStats> {
        self.streams
            .lock()
            .expect("metrics lock")
            .get(stream)
            .cloned()
    }

    pub fn streams(&self) -> BTreeMap<String, StreamStats> {
        self.streams.lock().expect("metrics lock").clone()
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, queue_depth: usize, devices_online: usize) -> String {
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
        g(
            &mut o,
            "ingestd_media_queue_depth",
            "gauge",
            "Messages queued for the media workers.",
            queue_depth as u64,
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
        let streams = self.streams();
        type Field = fn(&StreamStats) -> u64;
        let fields: [(&str, &str, Field); 22] = [
            ("bytes_in", "Bytes received.", |s| s.bytes_in),
            (
                "oversize_nals",
                "NAL units dropped over the size bound.",
                |s| s.oversize_nals,
            ),
            ("packets", "JT/T 1078 packets parsed.", |s| s.packets),
            ("frames", "Frames reassembled.", |s| s.frames),
            ("i_frames", "I-frames reassembled.", |s| s.i_frames),
            (
                "dropped_frames",
                "Frames dropped (broken sub-package runs, oversize).",
                |s| s.dropped_frames,
            ),
            ("resyncs", "Resynchronisations after garbage.", |s| {
                s.resyncs
            }),
            (
                "resync_skipped_bytes",
                "Bytes skipped while resynchronising.",
                |s| s.resync_skipped_bytes,
            ),
            ("parse_errors", "Rejected packet headers.", |s| {
                s.parse_errors
            }),
            ("audio_packets", "Audio packets.", |s| s.audio_packets),
            ("transparent_packets", "Transparent-data packets.", |s| {
                s.transparent_packets
            }),
            ("worker_frames", "Messages handled by media workers.", |s| {
                s.worker_frames
            }),
            ("worker_bytes", "Bytes handled by media workers.", |s| {
                s.worker_bytes
            }),
            ("frames_muxed", "Access units muxed into segments.", |s| {
                s.frames_muxed
            }),
            ("segments", "Segments published.", |s| s.segments),
            ("segment_bytes", "Bytes of published segments.", |s| {
                s.segment_bytes
            }),
            (
                "dropped_before_keyframe",
                "Frames dropped waiting for a keyframe.",
                |s| s.dropped_before_keyframe,
            ),
            ("failed_segments", "Segments lost to storage errors.", |s| {
                s.failed_segments
            }),
            (
                "rejected_frames",
                "Frames refused by the remuxer (unsupported codec, bad bitstream).",
                |s| s.rejected_frames,
            ),
            (
                "bad_nals",
                "Unparsable parameter sets and slice headers dropped.",
                |s| s.bad_nals,
            ),
            (
                "repaired_timestamps",
                "Device capture times replaced (zero, frozen, jitter).",
                |s| s.repaired_timestamps,
            ),
            ("discontinuities", "Discontinuities started.", |s| {
                s.discontinuities
            }),
        ];
        for (name, help, f) in fields {
            let _ = writeln!(o, "# HELP ingestd_stream_{name}_total {help}\n# TYPE ingestd_stream_{name}_total counter");
            for (stream, s) in &streams {
                let _ = writeln!(
                    o,
                    "ingestd_stream_{name}_total{{stream=\"{stream}\"}} {}",
                    f(s)
                );
            }
        }
        o
    }
}
