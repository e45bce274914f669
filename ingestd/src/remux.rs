//! The media workers' handler: device frames and raw bytes into
//! `streamcore` live streams, and what they publish into the catalog.
//!
//! One [`RemuxHandler`] per worker thread owns the [`LiveStream`]s of the
//! streams hashed to it. Layout under the data dir: `live/<stream>/index.m3u8`
//! and `live/<stream>/<sequence>.ts`. Segments are kept when they leave the
//! live window: each is a catalog row of a session (one source connection),
//! and catalog retention deletes them by age. A source that disconnects has
//! its open segment published at once; if it comes back, the same playlist
//! continues (gapless when its clock follows on, else after a
//! DISCONTINUITY). A playback upload (`<SIM>_<ch>_pb`) is over when its
//! connection closes: its playlist gets `#EXT-X-ENDLIST` at once and the
//! span it covers becomes an incident linked to its session. A stream
//! silent for [`RemuxConfig::idle_close`] is finished with `#EXT-X-ENDLIST`
//! and dropped from memory.
//!
//! With an object store shared by several nodes, a stream is opened only under its lease
//! ([`crate::leases`]): its writes carry the lease's fence, its numbering continues above every
//! segment another node uploaded, and once another node's newer source takes the stream, this
//! node drops it (without writing) and ignores the rest of the older source.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamcore::audio::{AudioCodec, G726Packing};
use streamcore::catalog::cluster::StreamLease;
use streamcore::catalog::{self, CatalogWriter, PlaybackState, Record, INCIDENT_KIND_PLAYBACK};
use streamcore::codec::VideoCodec;
use streamcore::storage::upload::UploadQueue;
use streamcore::storage::Scoped;
use streamcore::{layout, LiveStream, StreamConfig, StreamEvent};
use tracing::{error, info, warn};

use crate::context::playback_record;
use crate::leases::Leases;
use crate::low_latency::{LlRegistration, LlRegistry};
use crate::media::{FrameKind, MediaHandler, MediaMsg, SessionKind};
use crate::metrics::{Metrics, StreamCounters, StreamStats};
use crate::sessions::{IncidentKey, PlaybackTicket};

/// JT/T 1078 payload types of video codecs.
const PT_H264: u8 = 98;
const PT_H265: u8 = 99;

/// Settings shared by all workers.
#[derive(Clone)]
pub struct RemuxConfig {
    pub data_dir: PathBuf,
    /// The node's object store (keys are [`layout`] paths); `None`: each
    /// stream writes into its directory under `data_dir`.
    pub object_store: Option<Arc<dyn streamcore::Storage>>,
    /// With a shared object store: the stream leases, and the upload queue whose fenced views
    /// the streams write through (else they write to `object_store` unfenced).
    pub leases: Option<(Arc<Leases>, Arc<UploadQueue>)>,
    pub stream: StreamConfig,
    /// Finish (ENDLIST) and forget a stream after this long without data.
    pub idle_close: Duration,
    /// This process in the catalog's session rows (for crash clean-up).
    pub host: String,
    /// Devices whose G.726 uses the other packing than `stream.audio`'s.
    pub g726_other_packing_sims: Vec<String>,
}

struct Active {
    live: LiveStream,
    /// Serves the stream's low-latency rendition while it lives.
    _ll: Option<LlRegistration>,
    counters: Arc<StreamCounters>,
    /// Catalog session of the current source connection, if one is open.
    session: Option<OpenSession>,
    last_data: Instant,
    reported: streamcore::StreamStats,
    warned_codec: bool,
    warned_audio: bool,
    /// The lease fence its writes carry (shared object store only).
    fence: Option<i64>,
    /// When its source connection started.
    source_started_ms: i64,
}

struct OpenSession {
    id: String,
    kind: SessionKind,
    sim: Option<String>,
    channel: Option<u8>,
    started_ms: i64,
    /// Media time (PROGRAM-DATE-TIME) covered by the session's segments.
    media_span_ms: Option<(i64, i64)>,
    /// The 0x9201 request a playback upload answers.
    playback: Option<Arc<PlaybackTicket>>,
}

/// Remuxes the streams of one worker thread.
pub struct RemuxHandler {
    cfg: Arc<RemuxConfig>,
    metrics: Arc<Metrics>,
    catalog: Option<Arc<CatalogWriter>>,
    /// Looked up several times per frame; foldhash's per-process seed keeps
    /// it cheap without making collisions predictable.
    streams: foldhash::HashMap<String, Active>,
    /// A catalog session carried over while its stream is reopened.
    reopened_session: Option<OpenSession>,
    /// Where low-latency renditions are served from (HTTP `/ll/`).
    ll: Option<Arc<LlRegistry>>,
    /// Streams another node writes: the start of the newest source of ours that lost; media
    /// from sources that started no later is dropped without asking the catalog again.
    superseded: foldhash::HashMap<String, i64>,
}

impl RemuxHandler {
    pub fn new(
        cfg: Arc<RemuxConfig>,
        metrics: Arc<Metrics>,
        catalog: Option<Arc<CatalogWriter>>,
    ) -> Self {
        RemuxHandler {
            cfg,
            metrics,
            catalog,
            streams: Default::default(),
            reopened_session: None,
            ll: None,
            superseded: Default::default(),
        }
    }

    /// Registers each stream's low-latency rendition in `registry`.
    pub fn with_low_latency(mut self, registry: Arc<LlRegistry>) -> Self {
        self.ll = Some(registry);
        self
    }

    fn record(&self, r: Record) {
        if let Some(c) = &self.catalog {
            c.send(r);
        }
    }

    /// The stream `name`, opened if needed with `codec` for its video (a
    /// device's G.726 packing by its SIM). A stream whose video turns out
    /// to be another codec than it was opened with (opened by its audio,
    /// or the device switched) is reopened: its playlist goes on after a
    /// discontinuity.
    fn stream(
        &mut self,
        name: &str,
        codec: Option<VideoCodec>,
        sim: Option<&str>,
        source_started_ms: i64,
    ) -> Option<&mut Active> {
        if self
            .superseded
            .get(name)
            .is_some_and(|&lost| source_started_ms <= lost)
        {
            self.metrics
                .superseded_frames
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        if let (Some(want), Some(a)) = (codec, self.streams.get(name)) {
            if a.live.video_codec() != want {
                info!(stream = name, from = %a.live.video_codec(), to = %want, "video codec changed: stream reopened");
                let a = self.streams.get_mut(name).expect("checked");
                let result = a.live.finish(false);
                self.published(name, result);
                let session = self.streams.remove(name).and_then(|a| a.session);
                // The session goes on with the reopened stream.
                self.reopened_session = session;
            }
        }
        if !self.streams.contains_key(name) {
            let dir = layout::stream_dir(&self.cfg.data_dir, name);
            let mut cfg = self.cfg.stream.clone();
            cfg.codec = codec.unwrap_or_default();
            if sim.is_some_and(|s| self.cfg.g726_other_packing_sims.iter().any(|o| o == s)) {
                cfg.audio.g726_packing = match cfg.audio.g726_packing {
                    G726Packing::Le => G726Packing::Be,
                    G726Packing::Be => G726Packing::Le,
                };
            }
            let (store, fence, start_above) = match self.lease(name, source_started_ms) {
                Leased::No => (self.cfg.object_store.clone(), None, None),
                Leased::Fenced(store, fence, last) => (Some(store), Some(fence), last),
                Leased::Refused => return None,
            };
            let opened = match store {
                None => LiveStream::open(name, &dir, cfg),
                Some(store) => {
                    // The name was checked when the stream was identified; a key it cannot
                    // make is a bug, not bad input.
                    let scoped = Scoped::new(store, &layout::stream_key(name))
                        .expect("a valid stream name is a valid key");
                    LiveStream::with_storage(name, Arc::new(scoped), cfg)
                }
            };
            match opened {
                Ok(mut live) => {
                    if let Some(last) = start_above {
                        live.start_at_least(last.saturating_add(1).max(0) as u64);
                    }
                    info!(stream = name, "stream opened");
                    let session = self.reopened_session.take();
                    let ll = match (&self.ll, live.low_latency()) {
                        (Some(registry), Some(store)) => Some(registry.register(name, store)),
                        _ => None,
                    };
                    self.streams.insert(
                        name.to_string(),
                        Active {
                            live,
                            _ll: ll,
                            counters: self.metrics.stream_counters(name),
                            session,
                            last_data: Instant::now(),
                            reported: Default::default(),
                            warned_codec: false,
                            warned_audio: false,
                            fence,
                            source_started_ms,
                        },
                    );
                }
                Err(e) => {
                    error!(stream = name, error = %e, "cannot open stream");
                    return None;
                }
            }
        }
        self.streams.get_mut(name)
    }

    /// Takes the stream's lease when streams share an object store (see the module docs).
    fn lease(&mut self, name: &str, source_started_ms: i64) -> Leased {
        let Some((leases, queue)) = &self.cfg.leases else {
            return Leased::No;
        };
        match leases.acquire(name, source_started_ms) {
            Ok(StreamLease::Granted {
                fence,
                last_sequence,
            }) => Leased::Fenced(queue.fenced(fence), fence, last_sequence),
            Ok(StreamLease::Refused) => {
                warn!(
                    stream = name,
                    "another node writes this stream for a newer connection of its source: this older one's media is dropped"
                );
                self.superseded.insert(name.to_owned(), source_started_ms);
                self.metrics
                    .superseded_frames
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Leased::Refused
            }
            Err(e) => {
                // Availability first: the video is kept, and the writer is unfenced until the
                // stream is reopened.
                warn!(stream = name, error = %e, "cannot take the stream's lease (catalog unreachable): opened without one");
                Leased::No
            }
        }
    }

    /// Drops a stream another node took over: nothing more is written (the queue drops what
    /// this node still had queued for it), and its source's media is ignored from now on.
    fn drop_if_superseded(&mut self, name: &str) -> bool {
        let Some((leases, _)) = &self.cfg.leases else {
            return false;
        };
        let Some(a) = self.streams.get(name) else {
            return false;
        };
        let Some(fence) = a.fence else {
            return false;
        };
        if !leases.lost(name, fence) {
            return false;
        }
        let started = a.source_started_ms;
        self.end_session(name);
        self.streams.remove(name);
        let cutoff = self.superseded.entry(name.to_owned()).or_insert(started);
        *cutoff = (*cutoff).max(started);
        info!(
            stream = name,
            "stream closed on this node: another node writes it now"
        );
        true
    }

    /// Starts a catalog session for the stream's current source if none is open.
    fn ensure_session(
        &mut self,
        name: &str,
        kind: SessionKind,
        sim: Option<&str>,
        channel: Option<u8>,
        playback: Option<&Arc<PlaybackTicket>>,
    ) {
        let Some(a) = self.streams.get_mut(name) else {
            return;
        };
        if a.session.is_some() {
            return;
        }
        let started_ms = catalog::now_ms();
        let id = catalog::new_session_id(name, started_ms);
        a.session = Some(OpenSession {
            id: id.clone(),
            kind,
            sim: sim.map(str::to_string),
            channel,
            started_ms,
            media_span_ms: None,
            playback: playback.cloned(),
        });
        info!(stream = name, session = %id, ?kind, "media session started");
        self.record(Record::SessionStarted {
            session_id: id.clone(),
            stream: name.to_string(),
            sim: sim.map(str::to_string),
            channel,
            kind,
            started_ms,
            host: self.cfg.host.clone(),
        });
        if let Some(t) = playback {
            self.record(playback_record(
                t,
                PlaybackState::Uploading,
                None,
                Some(id.clone()),
            ));
            if let Some(key) = &t.incident {
                self.record(incident_video(key, "uploading", None, Some(id)));
            }
        }
    }

    /// The playlist listing a new segment is in place when `push_*` returns:
    /// the time since the closing frame was read is the publish latency.
    fn record_latency(&self, result: &streamcore::Result<Vec<StreamEvent>>, received: Instant) {
        if let Ok(events) = result {
            for _ in events {
                self.metrics.publish_latency.record(received.elapsed());
            }
        }
    }

    /// Turns published segments into catalog rows and counters.
    fn published(&mut self, name: &str, result: streamcore::Result<Vec<StreamEvent>>) {
        let Some(a) = self.streams.get_mut(name) else {
            return;
        };
        a.last_data = Instant::now();
        let events = match result {
            Ok(ev) => ev,
            Err(e) => {
                warn!(stream = name, error = %e, "frame refused by the remuxer");
                a.counters.add(&StreamStats {
                    rejected_frames: 1,
                    ..Default::default()
                });
                Vec::new()
            }
        };
        let now = a.live.stats();
        let before = std::mem::replace(&mut a.reported, now);
        a.counters.add_remux(&now.since(&before));
        if events.is_empty() {
            return;
        }
        let Some(session) = a.session.as_mut() else {
            return;
        };
        let mut records = Vec::with_capacity(events.len());
        for StreamEvent::SegmentPublished(seg) in events {
            let end_ms = seg.program_date_time_ms + seg.duration.as_millis();
            session.media_span_ms = Some(match session.media_span_ms {
                Some((from, to)) => (from.min(seg.program_date_time_ms), to.max(end_ms)),
                None => (seg.program_date_time_ms, end_ms),
            });
            records.push(Record::Segment {
                session_id: session.id.clone(),
                path: layout::segment_key(&seg.stream, seg.sequence),
                stream: seg.stream,
                sequence: seg.sequence,
                start_pts: seg.start_pts.0,
                duration_90k: seg.duration.0,
                bytes: seg.bytes,
                program_date_time_ms: seg.program_date_time_ms,
                discontinuity: seg.discontinuity,
            });
        }
        for r in records {
            self.record(r);
        }
        self.drop_if_superseded(name);
    }

    /// The source of `kind` went away: publish the open segment and end the
    /// session. A playback upload is then complete: its playlist is ended and
    /// the stream dropped. A live source may come back (the playlist goes on).
    fn source_ended(&mut self, name: &str, kind: SessionKind) {
        let Some(a) = self.streams.get_mut(name) else {
            return;
        };
        let upload = kind == SessionKind::Playback;
        let result = if upload {
            a.live.finish(true)
        } else {
            a.live.mark_break()
        };
        self.published(name, result);
        self.end_session(name);
        if upload {
            self.streams.remove(name);
            info!(stream = name, "playback upload complete (ENDLIST)");
        }
    }

    /// Closes the stream's catalog session; an upload's span becomes an
    /// incident that names the session holding its video.
    fn end_session(&mut self, name: &str) {
        let Some(s) = self.streams.get_mut(name).and_then(|a| a.session.take()) else {
            return;
        };
        let ended_ms = catalog::now_ms();
        info!(stream = name, session = %s.id, "media session ended");
        self.record(Record::SessionEnded {
            session_id: s.id.clone(),
            ended_ms,
        });
        if let Some(t) = &s.playback {
            self.playback_outcome(t, &s.id, s.media_span_ms);
        }
        if let (SessionKind::Playback, Some(sim)) = (s.kind, s.sim) {
            // The recorded time the upload covers (the device's clock when
            // it is plausible Unix time), else when it was uploaded.
            let (from_ms, to_ms) = s.media_span_ms.unwrap_or((s.started_ms, ended_ms));
            self.record(Record::Incident {
                sim,
                channel: s.channel,
                from_ms,
                to_ms,
                kind: INCIDENT_KIND_PLAYBACK.into(),
                source: "jt1078".into(),
                session_id: Some(s.id),
                open: false,
                alarm: 0,
                lat: None,
                lon: None,
                video_state: None,
                video_reason: None,
            });
        }
    }

    /// Catalogues how a playback upload ended: complete (with a note when
    /// it covers less than was asked), stopped by the operator, or failed
    /// when it carried no video; an incident it fetched for gets its video.
    fn playback_outcome(&self, t: &PlaybackTicket, session: &str, span: Option<(i64, i64)>) {
        let (from, to) = t.span_ms();
        let stopped = t.stopped.load(std::sync::atomic::Ordering::Relaxed);
        let (state, reason) = match span {
            None => (
                PlaybackState::Failed,
                Some("the upload carried no complete segment of video".to_string()),
            ),
            Some(_) if stopped => (
                PlaybackState::Stopped,
                Some("stopped by the operator".to_string()),
            ),
            Some((a, b)) => {
                // Device clocks and GOP boundaries blur the edges by a second or two.
                let covered = (b.min(to) - a.max(from)).max(0);
                let asked = (to - from).max(1);
                let short = covered * 10 < asked * 9;
                (
                    PlaybackState::Complete,
                    short.then(|| {
                        format!(
                            "the device sent {:.1} s of the {:.1} s asked for",
                            covered as f64 / 1000.0,
                            asked as f64 / 1000.0
                        )
                    }),
                )
            }
        };
        info!(playback = %t.id, session, ?state, ?reason, "playback upload ended");
        if let Some(key) = &t.incident {
            let video = if state == PlaybackState::Failed {
                "failed"
            } else {
                "fetched"
            };
            self.record(incident_video(
                key,
                video,
                reason.clone(),
                Some(session.to_string()),
            ));
        }
        self.record(playback_record(t, state, reason, Some(session.to_string())));
    }

    /// One audio packet: muxed with the stream's video (or alone), or
    /// counted by payload type when we do not decode it.
    fn audio_frame(&mut self, f: crate::media::MediaFrame, handled: StreamStats) {
        let Some(codec) = AudioCodec::from_jt1078_payload_type(f.payload_type) else {
            self.metrics.count_unsupported_audio(f.payload_type);
            match self.streams.get_mut(&*f.stream) {
                Some(a) => {
                    a.counters.add(&handled);
                    if !a.warned_audio {
                        a.warned_audio = true;
                        warn!(stream = %f.stream, payload_type = f.payload_type, "audio payload type not decoded; counted and dropped");
                    }
                }
                None => self.metrics.add_stream(&f.stream, &handled),
            }
            return;
        };
        let Some(a) = self.stream(&f.stream, None, Some(&f.sim), f.source_started_ms) else {
            self.metrics.add_stream(&f.stream, &handled);
            return;
        };
        a.counters.add(&handled);
        self.ensure_session(
            &f.stream,
            f.session,
            Some(&f.sim),
            Some(f.channel),
            f.playback.as_ref(),
        );
        let Some(a) = self.streams.get_mut(&*f.stream) else {
            return;
        };
        let result = a.live.push_audio(codec, &f.data, f.capture_ms);
        self.record_latency(&result, f.received);
        self.published(&f.stream, result);
    }

    fn close(&mut self, name: &str) {
        let kind = self
            .streams
            .get(name)
            .and_then(|a| a.session.as_ref())
            .map(|s| s.kind);
        self.source_ended(name, kind.unwrap_or(SessionKind::Live));
        let Some(a) = self.streams.get_mut(name) else {
            return;
        };
        let result = a.live.finish(true);
        self.published(name, result);
        self.streams.remove(name);
        info!(stream = name, "stream finished (ENDLIST)");
    }
}

impl MediaHandler for RemuxHandler {
    fn handle(&mut self, msg: MediaMsg) {
        match msg {
            MediaMsg::Frame(f) => {
                self.metrics.media_wait.record(f.received.elapsed());
                let handled = StreamStats::worker_frame(f.data.len());
                if f.kind == FrameKind::Audio {
                    self.audio_frame(f, handled);
                    return;
                }
                let codec = match f.payload_type {
                    PT_H264 => Some(VideoCodec::H264),
                    PT_H265 => Some(VideoCodec::H265),
                    _ => None,
                };
                let Some(a) = self.stream(&f.stream, codec, Some(&f.sim), f.source_started_ms)
                else {
                    self.metrics.add_stream(&f.stream, &handled);
                    return;
                };
                a.counters.add(&handled);
                if codec.is_none() {
                    if !a.warned_codec {
                        a.warned_codec = true;
                        warn!(stream = %f.stream, payload_type = f.payload_type, "unknown video payload type; frames dropped");
                    }
                    a.counters.add(&StreamStats {
                        rejected_frames: 1,
                        ..Default::default()
                    });
                    return;
                }
                self.ensure_session(
                    &f.stream,
                    f.session,
                    Some(&f.sim),
                    Some(f.channel),
                    f.playback.as_ref(),
                );
                let Some(a) = self.streams.get_mut(&*f.stream) else {
                    return;
                };
                let result = a.live.push_frame_bytes(f.data, f.capture_ms);
                self.record_latency(&result, f.received);
                self.published(&f.stream, result);
            }
            MediaMsg::Raw(r) => {
                self.metrics.media_wait.record(r.received.elapsed());
                let handled = StreamStats::worker_frame(r.data.len());
                let Some(a) = self.stream(&r.stream, Some(r.codec), None, r.source_started_ms)
                else {
                    self.metrics.add_stream(&r.stream, &handled);
                    return;
                };
                a.counters.add(&handled);
                self.ensure_session(&r.stream, SessionKind::Raw, None, None, None);
                let Some(a) = self.streams.get_mut(&*r.stream) else {
                    return;
                };
                let result = a.live.push_bytes_shared(r.data);
                self.record_latency(&result, r.received);
                self.published(&r.stream, result);
            }
            MediaMsg::SourceEnded { stream, session } => self.source_ended(&stream, session),
        }
    }

    fn tick(&mut self) {
        // A quiet stream publishes nothing that would tell it was taken over.
        if self.cfg.leases.is_some() {
            let names: Vec<String> = self.streams.keys().cloned().collect();
            for name in names {
                self.drop_if_superseded(&name);
            }
        }
        let idle: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, a)| a.last_data.elapsed() >= self.cfg.idle_close)
            .map(|(n, _)| n.clone())
            .collect();
        for name in idle {
            self.close(&name);
        }
    }

    fn shutdown(&mut self) {
        let names: Vec<String> = self.streams.keys().cloned().collect();
        for name in names {
            self.close(&name);
        }
    }
}

/// How a stream is opened with respect to its lease.
enum Leased {
    /// No shared store (or the catalog cannot be asked): no lease.
    No,
    /// Written through this fenced view; numbering above the sequence given.
    Fenced(Arc<dyn streamcore::Storage>, i64, Option<i64>),
    /// A newer source on another live node writes it.
    Refused,
}

/// The record setting the video of the incident `key`.
fn incident_video(
    key: &IncidentKey,
    state: &str,
    reason: Option<String>,
    session_id: Option<String>,
) -> Record {
    Record::IncidentVideo {
        sim: key.sim.clone(),
        channel: key.channel,
        from_ms: key.from_ms,
        kind: key.kind.clone(),
        source: key.source.clone(),
        video_state: state.into(),
        video_reason: reason,
        session_id,
    }
}
