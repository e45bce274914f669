//! [`Ctx`], the state every listener, connection task and HTTP handler
//! shares: configuration, metrics, the device/session registry, the media
//! sender and the event channel, with the operations all of them need:
//! emitting an event, sending a platform command to a device and waiting
//! for its answer, asking a device to play back a recording.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use streamcore::catalog::{self, PlaybackState, Record};
use streamcore::StreamName;

use crate::config::Config;
use crate::jt808::{result, PlatformCommand};
use crate::media::MediaSender;
use crate::metrics::Metrics;
use crate::sessions::{
    now_ms, Answer, CommandRequest, IncidentKey, IngestEvent, PlaybackBusy, PlaybackTicket,
    Registry,
};

/// State shared by all tasks.
pub struct Ctx {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub media: MediaSender,
    pub events: Option<crossbeam_channel::Sender<IngestEvent>>,
    /// Positions for the incident tracker (see [`crate::incidents`]).
    pub incidents: Option<tokio::sync::mpsc::Sender<crate::incidents::AlarmReport>>,
    /// Actual bound JT/T 1078 address (port 0 resolved).
    pub jt1078_addr: SocketAddr,
    /// Low-latency renditions of the streams this node ingests.
    pub ll: Arc<crate::low_latency::LlRegistry>,
    /// Who may log in (the JT/T 808 policy and the SIM allow-list).
    pub access: Arc<crate::access::DeviceAccess>,
    /// Live video started for operators, stopped when nobody watches.
    pub auto_stop: Arc<crate::access::AutoStop>,
}

/// Why a command did not get the answer asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("device not connected")]
    Offline,
    #[error("the device did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the device refused the command (result {0})")]
    Refused(u8),
    #[error("a playback of this channel is already running ({0})")]
    Busy(String),
    #[error("the device answered with something else than expected")]
    Unexpected,
}

/// What a 0x9201 asks for, besides where to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaybackParams {
    pub channel: u8,
    pub av_type: u8,
    pub stream_type: u8,
    pub storage_type: u8,
    pub mode: u8,
    /// The speed field (see `jt808::speed_code`).
    pub speed: u8,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A playback the device was asked for.
#[derive(Debug, Clone)]
pub struct PlaybackStarted {
    pub ticket: PlaybackTicket,
    pub serial: u16,
    /// Where the device was told to connect.
    pub server: String,
    /// Whether the device answered the 0x9201 (some never do, and connect
    /// anyway).
    pub acknowledged: bool,
}

impl Ctx {
    pub fn emit(&self, ev: IngestEvent) {
        if let Some(tx) = &self.events {
            if tx.try_send(ev).is_err() {
                self.metrics.events_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Hands a position's alarm word (or a device's going offline) to the
    /// incident task.
    pub fn report_alarm(&self, r: crate::incidents::AlarmReport) {
        if let Some(tx) = &self.incidents {
            if tx.try_send(r).is_err() {
                self.metrics.events_dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// A catalog record, through the event channel (the catalog writer
    /// lives with the embedding application).
    pub fn record(&self, r: Record) {
        self.emit(IngestEvent::Record(r));
    }

    /// Sends a platform command to an online device; returns the serial.
    pub async fn send_command(&self, sim: &str, cmd: PlatformCommand) -> Option<u16> {
        self.command(sim, cmd, None).await.ok()
    }

    async fn command(
        &self,
        sim: &str,
        cmd: PlatformCommand,
        answer: Option<tokio::sync::oneshot::Sender<Answer>>,
    ) -> Result<u16, CommandError> {
        let (tx, _) = self
            .registry
            .device_handle(sim)
            .ok_or(CommandError::Offline)?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(CommandRequest { cmd, reply, answer })
            .await
            .map_err(|_| CommandError::Offline)?;
        rx.await.ok().flatten().ok_or(CommandError::Offline)
    }

    /// Sends a command and waits up to `timeout` for the device's answer
    /// (matched by serial): the 0x1205 list for a 0x9205 query, the 0x0001
    /// reply otherwise. A refusal (result != 0) is an error.
    pub async fn ask(
        &self,
        sim: &str,
        cmd: PlatformCommand,
        timeout: Duration,
    ) -> Result<(u16, Answer), CommandError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let serial = self.command(sim, cmd, Some(tx)).await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Answer::Reply(r))) if r.result != result::OK => {
                Err(CommandError::Refused(r.result))
            }
            Ok(Ok(answer)) => Ok((serial, answer)),
            // The connection closed before answering.
            Ok(Err(_)) => Err(CommandError::Offline),
            Err(_) => Err(CommandError::Timeout(timeout)),
        }
    }

    /// The address devices are told to send media to, as seen from the
    /// device's 808 connection.
    pub fn media_server_for(&self, sim: &str) -> Option<(String, u16)> {
        let (_, local) = self.registry.device_handle(sim)?;
        let ip = self.config.advertise_ip.unwrap_or(local.ip()).to_string();
        Some((ip, self.jt1078_addr.port()))
    }

    /// Asks `sim` to play back `p` to us (0x9201): one playback per channel
    /// at a time. The request is catalogued at once; it is answered when the
    /// device acknowledges it, or connects its upload, or after the answer
    /// timeout (some devices never acknowledge and connect anyway).
    pub async fn start_playback(
        &self,
        sim: &str,
        p: PlaybackParams,
        incident: Option<IncidentKey>,
    ) -> Result<PlaybackStarted, CommandError> {
        let (ip, port) = self.media_server_for(sim).ok_or(CommandError::Offline)?;
        let stream = StreamName::playback(sim, p.channel).to_string();
        let requested_ms = now_ms();
        let cmd = PlatformCommand::Playback {
            ip: ip.clone(),
            tcp_port: port,
            udp_port: 0,
            channel: p.channel,
            av_type: p.av_type,
            stream_type: p.stream_type,
            storage_type: p.storage_type,
            mode: p.mode,
            speed: p.speed,
            start_ms: p.start_ms,
            end_ms: p.end_ms,
        };
        let ticket = PlaybackTicket {
            id: catalog::new_session_id(&stream, requested_ms),
            sim: sim.to_string(),
            channel: p.channel,
            cmd: cmd.clone(),
            requested_ms,
            incident,
            stopped: Default::default(),
            rewinding: Arc::new(std::sync::atomic::AtomicBool::new(
                p.mode == crate::jt808::playback_mode::KEYFRAME_REWIND,
            )),
        };
        // Expected before it is sent: the device may connect at once.
        self.registry
            .expect_playback(ticket.clone())
            .map_err(|PlaybackBusy::Uploading(id)| CommandError::Busy(id))?;
        self.record(playback_record(
            &ticket,
            PlaybackState::Requested,
            None,
            None,
        ));
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let serial = match self.command(sim, cmd, Some(tx)).await {
            Ok(s) => s,
            Err(e) => {
                self.playback_failed(&ticket, &e);
                return Err(e);
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.device_answer_timeout;
        let acknowledged = loop {
            tokio::select! {
                answer = &mut rx => match answer {
                    Ok(Answer::Reply(r)) if r.result != result::OK => {
                        let e = CommandError::Refused(r.result);
                        self.playback_failed(&ticket, &e);
                        return Err(e);
                    }
                    // 0x0001 OK, or the 0x1205 naming what it will play.
                    Ok(_) => break true,
                    Err(_) => {
                        self.playback_failed(&ticket, &CommandError::Offline);
                        return Err(CommandError::Offline);
                    }
                },
                _ = tokio::time::sleep_until(deadline) => break false,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    let connected = self.registry.current_playback(sim, p.channel)
                        .is_some_and(|t| t.id == ticket.id)
                        && self.registry.is_uploading(sim, p.channel, &ticket.id);
                    if connected {
                        break false;
                    }
                }
            }
        };
        Ok(PlaybackStarted {
            ticket,
            serial,
            server: format!("{ip}:{port}"),
            acknowledged,
        })
    }

    fn playback_failed(&self, ticket: &PlaybackTicket, e: &CommandError) {
        self.registry
            .cancel_playback(&ticket.sim, ticket.channel, &ticket.id);
        self.record(playback_record(
            ticket,
            PlaybackState::Failed,
            Some(e.to_string()),
            None,
        ));
    }
}

/// The catalog row of a playback request in `state`.
pub fn playback_record(
    t: &PlaybackTicket,
    state: PlaybackState,
    reason: Option<String>,
    session_id: Option<String>,
) -> Record {
    let (from_ms, to_ms) = t.span_ms();
    let (av_type, stream_type, storage_type, mode, speed) = match &t.cmd {
        PlatformCommand::Playback {
            av_type,
            stream_type,
            storage_type,
            mode,
            speed,
            ..
        } => (*av_type, *stream_type, *storage_type, *mode, *speed),
        _ => (0, 0, 0, 0, 0),
    };
    Record::Playback {
        id: t.id.clone(),
        sim: t.sim.clone(),
        channel: t.channel,
        stream: StreamName::playback(&t.sim, t.channel).to_string(),
        from_ms,
        to_ms,
        av_type,
        stream_type,
        storage_type,
        mode,
        speed,
        requested_ms: t.requested_ms,
        state,
        reason,
        session_id,
        incident_id: None,
    }
}
