//! devsim: simulated JT/T 808/1078 devices (and raw-port encoders) for load
//! tests and demos.
//!
//! Each simulated device opens a JT/T 808 connection (register, authenticate,
//! heartbeats, 0x0200 positions moving round a circle) and a JT/T 1078
//! connection that sends video with the device's own SIM. The video comes
//! from a JT/T 1078 capture (packets re-addressed per device) or from an
//! Annex-B H.264 file such as the project's fixtures (split into access
//! units, typed I/P/B as a dashcam types them, cut into sub-packages of at
//! most 950 bytes). Pacing is
//! real time by the timestamps, or flat out. In raw mode each device sends
//! `STREAM <name>\n` and Annex-B bytes to the raw port instead.
//!
//! Every device with a JT/T 808 connection also behaves as a dashcam with an
//! SD card (JT/T 1078-2016 section 5.5; the card itself is
//! `benches::sdcard`): it answers a 0x9205 query with a 0x0001 and then a
//! 0x1205 list (sub-packaged when long) of synthetic recordings; on 0x9201
//! it opens a new media connection and uploads the span asked for, cut from
//! the looped input, with the recording's own Unix-ms timestamps, paced at
//! real time times the speed (backwards for keyframe rewind), and closes it
//! at the end; 0x9202 pauses, resumes, stops, changes speed or mode and
//! seeks that upload. Any span can be played back, listed or not.
//! `--alarm-at` makes its position reports carry alarm bits for a while.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use benches::sdcard::{
    AlarmPlan, AlarmSpan, ControlOutcome, Playback, ResourceQuery, SdCard, Tape,
};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use ingestd::jt1078::{
    self, DataType, Jt1078Event, Jt1078Packet, Jt1078Parser, PacketizeParams, Sim,
};
use ingestd::jt808::{
    self, DeviceClock, GeneralReply, Jt808Event, Jt808Parser, Location, OutHeader, PlatformCommand,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "devsim",
    about = "Simulated JT/T 808/1078 devices and raw H.264 encoders"
)]
struct Args {
    /// JT/T 808 address of ingestd (signalling; omit to send media only).
    #[arg(long)]
    jt808: Option<SocketAddr>,
    /// JT/T 1078 address of ingestd (media).
    #[arg(long)]
    jt1078: Option<SocketAddr>,
    /// More JT/T 1078 addresses (repeat): media-only device i sends to the (i mod k)-th of
    /// --jt1078 and these, spreading the devices over k ingest nodes (the load harness's
    /// --nodes).
    #[arg(long = "jt1078-node", requires = "jt1078", conflicts_with = "jt808")]
    jt1078_nodes: Vec<SocketAddr>,
    /// Raw port address: send `STREAM <name>\n` + Annex-B instead of JT/T 1078.
    #[arg(long, conflicts_with = "jt1078")]
    raw: Option<SocketAddr>,
    /// Bare Annex-B over TCP, device i to this port + i, no first line (for
    /// `ffmpeg -f h264 -i tcp://...?listen=1` in the load tests).
    #[arg(long, conflicts_with_all = ["jt1078", "raw", "jt808"])]
    h264_tcp_base: Option<SocketAddr>,
    /// Spread the devices' start times evenly over this many seconds (so
    /// their keyframes do not all arrive at once).
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Write `<stream> <media ms> <unix ns>` for every keyframe once its
    /// last byte is written (the load harness measures publish latency
    /// from it).
    #[arg(long, value_name = "FILE")]
    keyframe_log: Option<PathBuf>,
    /// Number of simulated devices.
    #[arg(long, default_value_t = 1)]
    devices: u32,
    /// A JT/T 1078 capture (starts with 30 31 63 64) or an Annex-B H.264 file.
    #[arg(long)]
    input: PathBuf,
    /// SIM of device 0; device i uses sim-base + i (12 digits, zero-padded).
    #[arg(long, default_value_t = 13_800_000_000)]
    sim_base: u64,
    /// Logical channel the video is sent on.
    #[arg(long, default_value_t = 1)]
    channel: u8,
    /// Pace by timestamps (the default).
    #[arg(long, conflicts_with = "flat_out")]
    realtime: bool,
    /// Send as fast as the connection allows.
    #[arg(long)]
    flat_out: bool,
    /// Stamp media with the wall clock at sending (Unix ms) instead of the
    /// input's own times, as a device with a synchronised clock does: the
    /// playlists' PROGRAM-DATE-TIME is then the capture time, and a player's
    /// `now - playing date` is the glass-to-glass latency.
    #[arg(long)]
    wall_clock: bool,
    /// Repeat the input, keeping timestamps increasing.
    #[arg(long = "loop")]
    looping: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Every this many seconds, every device holds its media for --burst-hold
    /// ms and then sends what piled up at once, all devices together: the
    /// traffic after a network hiccup (a cellular cell handover, a backhaul
    /// stall). Realtime pacing only.
    #[arg(long, value_name = "SECS", conflicts_with = "flat_out")]
    burst: Option<f64>,
    /// How long each burst holds the media back, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000, requires = "burst")]
    burst_hold: u64,
    /// Heartbeat interval in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat: u64,
    /// Position report interval in seconds.
    #[arg(long, default_value_t = 5)]
    position_interval: u64,
    /// Frame rate assumed for Annex-B input (timestamps).
    #[arg(long, default_value_t = 25)]
    fps: u32,
    /// Raw mode stream name prefix (stream i is `<prefix>-<i>`).
    #[arg(long, default_value = "devsim")]
    stream_prefix: String,
    /// Wait for a 0x9101 request on the 808 connection before sending media
    /// (to the address in the request), as a real device does.
    #[arg(long, requires = "jt808")]
    on_demand: bool,
    /// Audio to interleave with the video (Annex-B input only): JT/T 1078
    /// audio payloads one after another, as in fixtures/audio/ (fixed-size
    /// packets of --audio-packet-bytes, 40 ms each; ADTS frames for AAC).
    #[arg(long, value_name = "FILE")]
    audio: Option<PathBuf>,
    /// JT/T 1078 payload type of --audio: 6 G.711A, 7 G.711U, 8 G.726, 19 AAC, 26 ADPCM.
    #[arg(long, default_value_t = 6)]
    audio_pt: u8,
    /// Bytes of one --audio packet (a 40 ms payload; ignored for AAC).
    #[arg(long, default_value_t = 320)]
    audio_packet_bytes: usize,
    /// Send the audio only (no video packets).
    #[arg(long, requires = "audio")]
    audio_only: bool,
    /// Codec of Annex-B --input: h264 or h265 (JT/T 1078 payload type 98 or 99).
    #[arg(long, default_value = "h264")]
    video_codec: streamcore::codec::VideoCodec,
    /// Channels the SD card holds recordings of, e.g. `1,2` (default: --channel).
    #[arg(long, value_delimiter = ',')]
    sd_channels: Vec<u8>,
    /// Length of each recording on the SD card, in seconds.
    #[arg(long, default_value_t = 60)]
    sd_clip_secs: u64,
    /// A recording starts every this many seconds (aligned to Unix time).
    #[arg(long, default_value_t = 300)]
    sd_every_secs: u64,
    /// The SD card holds the recordings of this many hours before now.
    #[arg(long, default_value_t = 24.0)]
    sd_hours: f64,
    /// Raise an alarm this many seconds after login (repeatable, or a comma
    /// list): position reports carry --alarm-bits while it lasts.
    #[arg(long, value_delimiter = ',')]
    alarm_at: Vec<f64>,
    /// The 0x0200 alarm word of --alarm-at (hex; 0x2 = overspeed).
    #[arg(long, default_value = "0x2", value_parser = parse_hex_u32)]
    alarm_bits: u32,
    /// How long each --alarm-at alarm lasts, in seconds (positions every
    /// second meanwhile).
    #[arg(long, default_value_t = 5.0)]
    alarm_secs: f64,
    /// UTC offset of the device clock (BCD times in positions, recordings
    /// and playback requests).
    #[arg(long, default_value = "+08:00")]
    device_utc_offset: DeviceClock,
}

fn parse_hex_u32(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).map_err(|e| format!("{s:?}: not a 32-bit hex number ({e})"))
}

/// One access unit / frame with its timestamp.
#[derive(Clone)]
struct Unit {
    ts_ms: u64,
    data_type: DataType,
    payload_type: u8,
    data: Bytes,
}

/// What a device replays.
enum Source {
    /// Capture packets, re-addressed per device.
    Packets(Vec<Jt1078Packet>),
    /// Access units to packetize.
    Units(Vec<Unit>),
}

impl Source {
    fn span_ms(&self) -> u64 {
        let (first, last, step) = match self {
            Source::Packets(p) => (
                p.first().and_then(|p| p.timestamp_ms).unwrap_or(0),
                p.last().and_then(|p| p.timestamp_ms).unwrap_or(0),
                40,
            ),
            Source::Units(u) => (
                u.first().map_or(0, |u| u.ts_ms),
                u.last().map_or(0, |u| u.ts_ms),
                40,
            ),
        };
        last.saturating_sub(first) + step
    }
}

/// Audio payloads of `path` with their times: fixed-size 40 ms packets, or
/// ADTS frames (1024 samples each) for AAC.
fn load_audio(path: &PathBuf, pt: u8, packet_bytes: usize) -> anyhow::Result<Vec<Unit>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut units = Vec::new();
    if pt == 19 {
        let mut rest = &data[..];
        let mut samples = 0u64;
        while !rest.is_empty() {
            let f = streamcore::audio::adts::parse_frame(rest)
                .map_err(|e| anyhow::anyhow!("{}: not ADTS ({e:?})", path.display()))?;
            let rate = f.config.sample_rate() as u64;
            units.push(Unit {
                ts_ms: samples * 1000 / rate,
                data_type: DataType::Audio,
                payload_type: pt,
                data: Bytes::copy_from_slice(&rest[..f.len]),
            });
            samples += 1024 * f.blocks as u64;
            rest = &rest[f.len..];
        }
    } else {
        if packet_bytes == 0 || data.len() % packet_bytes != 0 {
            bail!(
                "{}: {} bytes are not whole {packet_bytes}-byte packets",
                path.display(),
                data.len()
            );
        }
        for (i, chunk) in data.chunks(packet_bytes).enumerate() {
            units.push(Unit {
                ts_ms: i as u64 * 40,
                data_type: DataType::Audio,
                payload_type: pt,
                data: Bytes::copy_from_slice(chunk),
            });
        }
    }
    Ok(units)
}

/// Video and audio units in one list by time (video first at equal times).
fn interleave(video: Vec<Unit>, audio: Vec<Unit>) -> Vec<Unit> {
    let mut all: Vec<Unit> = video.into_iter().chain(audio).collect();
    all.sort_by_key(|u| (u.ts_ms, u.data_type == DataType::Audio));
    all
}

fn load(path: &PathBuf, fps: u32, codec: streamcore::codec::VideoCodec) -> anyhow::Result<Source> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if data.starts_with(&jt1078::MAGIC) {
        let mut p = Jt1078Parser::new();
        p.push(&data);
        let pkts: Vec<_> = std::iter::from_fn(|| p.pull())
            .filter_map(|e| match e {
                Jt1078Event::Packet(p) => Some(p),
                Jt1078Event::Resync { .. } => None,
            })
            .collect();
        if pkts.is_empty() {
            bail!("no JT/T 1078 packets in {}", path.display());
        }
        return Ok(Source::Packets(pkts));
    }
    let aus = match codec {
        streamcore::codec::VideoCodec::H264 => streamcore::access_unit::split_access_units(&data),
        streamcore::codec::VideoCodec::H265 => streamcore::h265::split_access_units(&data),
    };
    if aus.is_empty() {
        bail!("no {codec} access units in {}", path.display());
    }
    let payload_type = match codec {
        streamcore::codec::VideoCodec::H264 => jt1078::PT_H264,
        streamcore::codec::VideoCodec::H265 => jt1078::PT_H265,
    };
    let step = 1000.0 / fps.max(1) as f64;
    // Decode order; a picture shown before one decoded earlier in its IDR
    // period is a B-frame, and a device marks it so.
    let mut max_poc = i64::MIN;
    Ok(Source::Units(
        aus.into_iter()
            .enumerate()
            .map(|(i, au)| {
                let poc = au.poc.unwrap_or(i64::MAX);
                if au.keyframe {
                    max_poc = i64::MIN;
                }
                let data_type = if au.keyframe {
                    DataType::IFrame
                } else if poc < max_poc {
                    DataType::BFrame
                } else {
                    DataType::PFrame
                };
                max_poc = max_poc.max(poc);
                Unit {
                    ts_ms: (i as f64 * step).round() as u64,
                    data_type,
                    payload_type,
                    data: Bytes::from(au.to_annexb()),
                }
            })
            .collect(),
    ))
}

/// The input as whole frames (capture packets joined again), in time order
/// from its start: what the SD card's recordings are cut from.
fn frames_of(src: &Source) -> Vec<Unit> {
    match src {
        Source::Units(u) => u.clone(),
        Source::Packets(pkts) => {
            let base = pkts.iter().find_map(|p| p.timestamp_ms).unwrap_or(0);
            let mut out = Vec::new();
            let mut body = BytesMut::new();
            for p in pkts {
                let Some(ts) = p.timestamp_ms else { continue };
                if matches!(
                    p.sub,
                    jt1078::SubPackage::Atomic | jt1078::SubPackage::First
                ) {
                    body.clear();
                }
                body.extend_from_slice(&p.body);
                if matches!(p.sub, jt1078::SubPackage::Atomic | jt1078::SubPackage::Last) {
                    out.push(Unit {
                        ts_ms: ts.saturating_sub(base),
                        data_type: p.data_type,
                        payload_type: p.payload_type,
                        data: body.split().freeze(),
                    });
                }
            }
            out.sort_by_key(|u| u.ts_ms);
            out
        }
    }
}

/// What every device's SD card holds and plays back.
struct Card {
    sd: SdCard,
    tape: Arc<Tape>,
    /// The frames the tape's entries index.
    units: Vec<Unit>,
    plan: AlarmPlan,
}

impl Card {
    fn new(args: &Args, src: &Source) -> anyhow::Result<Card> {
        if args.sd_every_secs == 0 || args.sd_clip_secs == 0 {
            bail!("--sd-every-secs and --sd-clip-secs must be at least 1");
        }
        if args.sd_clip_secs > args.sd_every_secs {
            bail!("--sd-clip-secs is longer than --sd-every-secs");
        }
        if !(args.sd_hours.is_finite() && args.sd_hours >= 0.0) {
            bail!("--sd-hours must be a number of hours >= 0");
        }
        if args.alarm_at.iter().any(|s| !(s.is_finite() && *s >= 0.0))
            || !(args.alarm_secs.is_finite() && args.alarm_secs > 0.0)
        {
            bail!("--alarm-at needs seconds >= 0 and --alarm-secs seconds > 0");
        }
        let units = frames_of(src);
        let tape = Tape::new(units.iter().map(|u| {
            let audio = u.data_type == DataType::Audio;
            (u.ts_ms, u.data_type == DataType::IFrame, audio)
        }))
        .context("no frames in --input to play back")?;
        let on_tape = |f: fn(&Unit) -> bool| tape.frames().iter().any(|t| f(&units[t.unit]));
        let av_type = match (
            on_tape(|u| u.data_type == DataType::Audio),
            on_tape(|u| u.data_type.is_video()),
        ) {
            (true, true) => 0,
            (true, false) => 1,
            _ => 2,
        };
        let bytes: u64 = tape
            .frames()
            .iter()
            .map(|t| units[t.unit].data.len() as u64)
            .sum();
        let sd = SdCard {
            channels: if args.sd_channels.is_empty() {
                vec![args.channel]
            } else {
                args.sd_channels.clone()
            },
            clip_ms: args.sd_clip_secs as i64 * 1000,
            every_ms: args.sd_every_secs as i64 * 1000,
            history_ms: (args.sd_hours * 3_600_000.0) as i64,
            av_type,
            bytes_per_sec: bytes * 1000 / tape.period_ms().max(1),
        };
        let at: Vec<Duration> = args
            .alarm_at
            .iter()
            .map(|&s| Duration::from_secs_f64(s))
            .collect();
        let plan = AlarmPlan::new(
            &at,
            Duration::from_secs_f64(args.alarm_secs),
            args.alarm_bits,
        );
        Ok(Card {
            sd,
            tape: Arc::new(tape),
            units,
            plan,
        })
    }
}

#[derive(Debug, Default, Clone)]
struct Stats {
    frames: u64,
    packets: u64,
    bytes: u64,
    positions: u64,
    heartbeats: u64,
    replies: u64,
    /// Sends that started more than 50 ms behind their schedule (the
    /// sender could not keep real time), and the worst lag.
    late_sends: u64,
    max_lag_ms: u64,
    /// (media ms, unix ns) of each keyframe sent.
    keyframes: Vec<(u64, u128)>,
    /// 0x9205 queries answered, 0x9201 uploads started, and what the
    /// uploads sent.
    queries: u64,
    playbacks: u64,
    playback_frames: u64,
    playback_packets: u64,
    playback_bytes: u64,
    error: Option<String>,
}

fn sim_of(args: &Args, i: u32) -> String {
    format!("{:012}", args.sim_base + i as u64)
}

/// Point on a 2 km circle round Shenzhen, one lap per 10 minutes, each
/// device offset along the circle, with the alarm word and the time in the
/// device's zone.
fn position(i: u32, t_s: f64, now_ms: i64, alarm: u32, clock: DeviceClock) -> Location {
    let phase = t_s / 600.0 * std::f64::consts::TAU + i as f64 * 0.7;
    let (lat0, lon0, r_deg) = (22.543_096, 114.057_865, 0.018);
    let lat = lat0 + r_deg * phase.sin();
    let lon = lon0 + r_deg * phase.cos() / lat0.to_radians().cos();
    let heading = ((90.0 - phase.to_degrees() + 360.0 * 4.0) % 360.0) as u16;
    // 2 km radius, one lap per 600 s: about 75 km/h.
    let mut l = Location::new((lat * 1e6) as i64, (lon * 1e6) as i64, 754, heading, now_ms);
    l.alarm = alarm;
    l.time_bcd = clock.to_bcd(now_ms);
    l.time_ms = clock.to_unix_ms(&l.time_bcd);
    l
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn read_808(
    sock: &mut TcpStream,
    parser: &mut Jt808Parser,
    buf: &mut BytesMut,
) -> anyhow::Result<jt808::Jt808Message> {
    loop {
        while let Some(ev) = parser.pull() {
            if let Jt808Event::Message(m) = ev {
                return Ok(m);
            }
        }
        buf.clear();
        if sock.read_buf(buf).await? == 0 {
            bail!("808 connection closed");
        }
        parser.push(buf);
    }
}

/// The device's end of its JT/T 808 connection: its phone number, the
/// serial of the next message, and what is queued for the socket.
struct Signalling {
    sim: String,
    serial: u16,
    out: BytesMut,
}

/// Largest body of one sub-package this device sends (the header's length
/// field has 10 bits, so a frame body stays below 1024 bytes).
const PART_BODY: usize = 1000;

impl Signalling {
    /// Queues one message; a body too long for one frame goes out as
    /// sub-packages (total and index from 1, each with its own serial), as
    /// devices send long 0x1205 lists.
    fn send(&mut self, msg_id: u16, body: &[u8]) {
        let parts: Vec<&[u8]> = if body.len() <= 0x3ff {
            vec![body]
        } else {
            body.chunks(PART_BODY).collect()
        };
        let total = parts.len() as u16;
        for (i, part) in parts.into_iter().enumerate() {
            jt808::encode_frame(
                &OutHeader {
                    msg_id,
                    phone: &self.sim,
                    serial: self.serial,
                    version: None,
                    subpackage: (total > 1).then_some((total, i as u16 + 1)),
                },
                part,
                &mut self.out,
            );
            self.serial = self.serial.wrapping_add(1);
        }
    }

    /// Queues a 0x0001 general reply to `m`.
    fn reply(&mut self, m: &jt808::Jt808Message, result: u8) {
        let ack = GeneralReply {
            serial: m.header.serial,
            msg_id: m.header.msg_id,
            result,
        };
        self.send(jt808::msg::TERMINAL_REPLY, &ack.encode());
    }

    async fn flush(&mut self, sock: &mut TcpStream) -> std::io::Result<()> {
        if !self.out.is_empty() {
            sock.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }
}

/// A 0x9202 control on its way to the upload it concerns.
#[derive(Debug, Clone, Copy)]
struct Ctl {
    control: u8,
    speed: u8,
    seek_ms: Option<i64>,
}

/// How one playback upload went.
struct PlaybackReport {
    channel: u8,
    frames: u64,
    packets: u64,
    bytes: u64,
    /// "complete" (the span was sent), "stopped" (0x9202 stop, a newer
    /// request for the channel, or the device going away) or "failed".
    outcome: &'static str,
    error: Option<String>,
}

/// The device's running uploads: one per channel, each steered through its
/// control channel (dropping the sender stops it).
struct Uploads {
    controls: std::collections::HashMap<u8, mpsc::UnboundedSender<Ctl>>,
    tasks: JoinSet<PlaybackReport>,
}

impl Uploads {
    /// Passes a control to the upload of `channel` (0: every upload);
    /// false if none is running.
    fn control(&mut self, channel: u8, ctl: Ctl) -> bool {
        self.controls.retain(|_, tx| !tx.is_closed());
        let mut any = false;
        for (&ch, tx) in &self.controls {
            if (channel == 0 || ch == channel) && tx.send(ctl).is_ok() {
                any = true;
            }
        }
        any
    }
}

fn record_upload(
    sim: &str,
    done: Result<PlaybackReport, tokio::task::JoinError>,
    stats: &mut Stats,
) {
    match done {
        Ok(r) => {
            stats.playback_frames += r.frames;
            stats.playback_packets += r.packets;
            stats.playback_bytes += r.bytes;
            eprintln!(
                "devsim: {sim} channel {} playback {}: frames {} packets {} bytes {}{}",
                r.channel,
                r.outcome,
                r.frames,
                r.packets,
                r.bytes,
                r.error.map(|e| format!(" ERROR {e}")).unwrap_or_default()
            );
        }
        Err(e) => eprintln!("devsim: {sim} playback task: {e}"),
    }
}

/// The signalling side of one device. Sends the media address of a 0x9101
/// request through `live` (on-demand mode); answers recording queries and
/// runs playback uploads from `card`.
#[allow(clippy::too_many_arguments)]
async fn run_808(
    args: Arc<Args>,
    card: Arc<Card>,
    i: u32,
    addr: SocketAddr,
    deadline: Option<Instant>,
    mut live: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    media_done: Option<tokio::sync::oneshot::Receiver<()>>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let sim = sim_of(&args, i);
    let media_sim = Sim::parse(&sim).context("SIM does not fit 12 digits")?;
    let clock = args.device_utc_offset;
    let mut sock = TcpStream::connect(addr).await.context("connect 808")?;
    let mut parser = Jt808Parser::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut sig = Signalling {
        sim: sim.clone(),
        serial: 0,
        out: BytesMut::new(),
    };
    let reg = jt808::Register {
        province: 44,
        city: 300,
        maker_id: "DEVSM".into(),
        model: "devsim".into(),
        terminal_id: format!("{:07}", i % 10_000_000),
        plate_color: 1,
        plate: format!("SIM{i:05}"),
    };
    sig.send(jt808::msg::REGISTER, &reg.encode(false));
    sig.flush(&mut sock).await?;
    let reply = read_808(&mut sock, &mut parser, &mut buf).await?;
    if reply.header.msg_id != jt808::msg::REGISTER_REPLY
        || reply.body.len() < 3
        || reply.body[2] != 0
    {
        bail!("registration refused: {:?}", reply);
    }
    let code = String::from_utf8_lossy(&reply.body[3..]).into_owned();
    let auth = jt808::Authenticate {
        code,
        imei: None,
        software_version: None,
    };
    sig.send(jt808::msg::AUTHENTICATE, &auth.encode(false));
    sig.flush(&mut sock).await?;
    let reply = read_808(&mut sock, &mut parser, &mut buf).await?;
    let r = jt808::GeneralReply::decode(&reply.body, reply.header.msg_id)?;
    if r.result != 0 {
        bail!("authentication refused ({})", r.result);
    }
    stats.replies += 2;
    // Where the device is, as soon as it is logged in (as dashcams do), so
    // even a short clip sent flat out has a position to go with it.
    let start = Instant::now();
    let alarms: Vec<AlarmSpan> = card.plan.spans(now_ms());
    let bits = card.plan.bits_at(Duration::ZERO);
    sig.send(
        jt808::msg::LOCATION,
        &position(i, 0.0, now_ms(), bits, clock).encode(),
    );
    sig.flush(&mut sock).await?;
    stats.positions += 1;
    // A real device sends media only once logged in; without --on-demand
    // it starts right away, else it waits for 0x9101.
    if !args.on_demand {
        if let (Some(tx), Some(a)) = (live.take(), args.raw.or(args.jt1078)) {
            let _ = tx.send(a);
        }
    }
    let mut hb = tokio::time::interval(Duration::from_secs(args.heartbeat.max(1)));
    let every = Duration::from_secs(args.position_interval.max(1));
    // When the next position is due, counted from login: every `every`,
    // and every second while an --alarm-at alarm lasts.
    let mut next_pos = card.plan.next_report(Duration::ZERO, every);
    let mut uploads = Uploads {
        controls: std::collections::HashMap::new(),
        tasks: JoinSet::new(),
    };
    // Ends at the deadline, or when the media side finishes (its sender is
    // dropped); signalling-only devices run until the deadline or forever.
    let end = async {
        let media_done = async {
            match media_done {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        match deadline {
            Some(d) => tokio::select! {
                _ = tokio::time::sleep_until(d) => {}
                _ = media_done => {}
            },
            None => media_done.await,
        }
    };
    tokio::pin!(end);
    loop {
        tokio::select! {
            _ = &mut end => break,
            _ = hb.tick() => {
                sig.send(jt808::msg::HEARTBEAT, &[]);
                stats.heartbeats += 1;
            }
            _ = tokio::time::sleep_until(start + next_pos) => {
                let bits = card.plan.bits_at(next_pos);
                let l = position(i, start.elapsed().as_secs_f64(), now_ms(), bits, clock);
                sig.send(jt808::msg::LOCATION, &l.encode());
                stats.positions += 1;
                next_pos = card.plan.next_report(next_pos, every);
            }
            Some(done) = uploads.tasks.join_next(), if !uploads.tasks.is_empty() => {
                record_upload(&sim, done, stats);
            }
            m = read_808(&mut sock, &mut parser, &mut buf) => {
                let m = m?;
                match m.header.msg_id {
                    jt808::msg::PLATFORM_REPLY => stats.replies += 1,
                    jt808::msg::LIVE_REQUEST | jt808::msg::LIVE_CONTROL => {
                        sig.reply(&m, jt808::result::OK);
                        if m.header.msg_id == jt808::msg::LIVE_REQUEST && m.body.len() > 1 {
                            let n = m.body[0] as usize;
                            if m.body.len() >= 1 + n + 2 {
                                let ip = String::from_utf8_lossy(&m.body[1..1 + n]).into_owned();
                                let port = u16::from_be_bytes([m.body[1 + n], m.body[2 + n]]);
                                if let (Some(tx), Ok(a)) = (live.take(), format!("{ip}:{port}").parse()) {
                                    let _ = tx.send(a);
                                }
                            }
                        }
                    }
                    jt808::msg::PLAYBACK_REQUEST => {
                        start_playback(&args, &card, &sim, media_sim, &m, &mut sig, &mut uploads, stats);
                    }
                    jt808::msg::PLAYBACK_CONTROL => {
                        let result = match PlatformCommand::decode(m.header.msg_id, &m.body, clock) {
                            Ok(PlatformCommand::PlaybackControl { channel, control, speed, seek_ms })
                                if Playback::accepts(control, seek_ms) =>
                            {
                                let ctl = Ctl { control, speed, seek_ms };
                                if uploads.control(channel, ctl) {
                                    jt808::result::OK
                                } else {
                                    jt808::result::FAILURE
                                }
                            }
                            _ => jt808::result::MESSAGE_ERROR,
                        };
                        sig.reply(&m, result);
                    }
                    jt808::msg::QUERY_RESOURCES => {
                        let q = PlatformCommand::decode(m.header.msg_id, &m.body, clock)
                            .ok()
                            .and_then(|c| ResourceQuery::from_command(&c));
                        match q {
                            Some(q) => {
                                // Many devices acknowledge first, then list.
                                sig.reply(&m, jt808::result::OK);
                                let list = jt808::ResourceList {
                                    serial: m.header.serial,
                                    items: card.sd.query(now_ms(), &q, &alarms),
                                };
                                sig.send(jt808::msg::RESOURCE_LIST, &list.encode(clock));
                                stats.queries += 1;
                            }
                            None => sig.reply(&m, jt808::result::MESSAGE_ERROR),
                        }
                    }
                    _ => {}
                }
            }
        }
        sig.flush(&mut sock).await?;
    }
    // The device goes away: its uploads see their control channels close
    // and close their connections.
    uploads.controls.clear();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = uploads.tasks.join_next().await {
            record_upload(&sim, done, stats);
        }
    })
    .await;
    Ok(())
}

/// Answers a 0x9201 and starts its upload on a new media connection; a
/// request for a channel that is already uploading replaces that upload.
#[allow(clippy::too_many_arguments)]
fn start_playback(
    args: &Arc<Args>,
    card: &Arc<Card>,
    sim: &str,
    media_sim: Sim,
    m: &jt808::Jt808Message,
    sig: &mut Signalling,
    uploads: &mut Uploads,
    stats: &mut Stats,
) {
    let cmd = PlatformCommand::decode(m.header.msg_id, &m.body, args.device_utc_offset);
    let Ok(PlatformCommand::Playback {
        ip,
        tcp_port,
        channel,
        av_type,
        mode,
        speed,
        start_ms,
        end_ms,
        ..
    }) = cmd
    else {
        sig.reply(m, jt808::result::MESSAGE_ERROR);
        return;
    };
    sig.reply(m, jt808::result::OK);
    let pb = Playback::new(card.tape.clone(), start_ms, end_ms, mode, speed, av_type);
    eprintln!(
        "devsim: {sim} channel {channel} playback {start_ms}..{end_ms} mode {mode} x{} to {ip}:{tcp_port}",
        pb.speed()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    // Replacing the sender drops the old one, which stops that upload.
    uploads.controls.insert(channel, tx);
    uploads.tasks.spawn(run_playback(
        args.clone(),
        card.clone(),
        media_sim,
        channel,
        (ip, tcp_port),
        pb,
        rx,
    ));
    stats.playbacks += 1;
}

/// One playback upload, start to end.
async fn run_playback(
    args: Arc<Args>,
    card: Arc<Card>,
    sim: Sim,
    channel: u8,
    addr: (String, u16),
    mut pb: Playback,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
) -> PlaybackReport {
    let mut r = PlaybackReport {
        channel,
        frames: 0,
        packets: 0,
        bytes: 0,
        outcome: "failed",
        error: None,
    };
    match upload(&args, &card, sim, channel, &addr, &mut pb, &mut ctl, &mut r).await {
        Ok(outcome) => r.outcome = outcome,
        Err(e) => r.error = Some(format!("{e:#}")),
    }
    r
}

/// Connects to the address of the 0x9201 and sends the playback's frames,
/// each at its recording time divided by the speed after the one pacing
/// counts from, obeying controls as they come; closes the connection at
/// the end of the span or on stop.
#[allow(clippy::too_many_arguments)]
async fn upload(
    args: &Args,
    card: &Card,
    sim: Sim,
    channel: u8,
    (host, port): &(String, u16),
    pb: &mut Playback,
    ctl: &mut mpsc::UnboundedReceiver<Ctl>,
    r: &mut PlaybackReport,
) -> anyhow::Result<&'static str> {
    let mut sock = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.as_str(), *port)),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connect playback {host}:{port}: timed out"))?
    .with_context(|| format!("connect playback {host}:{port}"))?;
    sock.set_nodelay(true)?;
    let mut seq: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    // (wall time, recording time) that pacing counts from. Every control
    // clears it, so a new speed, position or resume applies at once.
    let mut anchor: Option<(Instant, i64)> = None;
    let outcome = loop {
        let next = if pb.is_paused() {
            None
        } else {
            match pb.next_frame() {
                Some(f) => Some(f),
                None => break "complete",
            }
        };
        let due = match (next, anchor) {
            (Some(f), Some((wall, t))) => Some(wall + pb.wall_between(t, f.time_ms)),
            (Some(_), None) => Some(Instant::now()),
            (None, _) => None,
        };
        let wait = async {
            match due {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            c = ctl.recv() => {
                let Some(c) = c else { break "stopped" };
                if pb.control(c.control, c.speed, c.seek_ms) == ControlOutcome::Stop {
                    break "stopped";
                }
                anchor = None;
                continue;
            }
            _ = wait => {}
        }
        let (Some(f), Some(due)) = (next, due) else {
            continue;
        };
        if anchor.is_none() {
            anchor = Some((due, f.time_ms));
        }
        let u = &card.units[f.unit];
        out.clear();
        let ts = u64::try_from(f.time_ms).unwrap_or(0);
        r.packets += packetize_unit(sim, channel, args.fps, u, ts, &mut seq, &mut out) as u64;
        sock.write_all(&out).await?;
        r.bytes += out.len() as u64;
        r.frames += 1;
        pb.sent(&f);
    };
    sock.shutdown().await?;
    Ok(outcome)
}

/// Packetizes one frame as JT/T 1078 packets with timestamp `ts` (bodies of
/// at most 950 bytes, as devices cut them) into `out`; returns how many.
fn packetize_unit(
    sim: Sim,
    channel: u8,
    fps: u32,
    u: &Unit,
    ts: u64,
    seq: &mut u16,
    out: &mut BytesMut,
) -> usize {
    let p = PacketizeParams {
        sim,
        channel,
        data_type: u.data_type,
        payload_type: u.payload_type,
        timestamp_ms: ts,
        last_i_interval_ms: 0,
        last_frame_interval_ms: (1000 / fps.max(1)) as u16,
        max_body: 950,
    };
    jt1078::packetize(&p, seq, &u.data, out)
}

/// Sleeps until `rel_ms` after `t0` in real-time mode, counting sends
/// that are already late.
async fn pace(args: &Args, t0: Instant, rel_ms: u64, stats: &mut Stats) {
    if !args.flat_out {
        let due = burst_release(args, t0 + Duration::from_millis(rel_ms));
        let lag = Instant::now().saturating_duration_since(due).as_millis() as u64;
        if lag > 50 {
            stats.late_sends += 1;
        }
        stats.max_lag_ms = stats.max_lag_ms.max(lag);
        tokio::time::sleep_until(due).await;
    }
}

/// The process's start: the burst windows of every device are counted from it, so all devices
/// hold and release together.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// When media due at `due` is sent: `due`, or with `--burst`, if `due` falls in a hold window
/// (the first `--burst-hold` ms of every `--burst` period), the window's end.
fn burst_release(args: &Args, due: Instant) -> Instant {
    let Some(period) = args.burst.filter(|p| *p > 0.0) else {
        return due;
    };
    let epoch = *EPOCH.get_or_init(Instant::now);
    let period = Duration::from_secs_f64(period);
    let hold = Duration::from_millis(args.burst_hold).min(period);
    let since = due.saturating_duration_since(epoch);
    let into = Duration::from_nanos((since.as_nanos() % period.as_nanos()) as u64);
    if into < hold {
        due + (hold - into)
    } else {
        due
    }
}

fn unix_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Connects, retrying while the peer is not listening yet (a load test
/// starts hundreds of ffmpeg listeners at once).
async fn connect_retrying(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < give_up =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("connect media {addr}")),
        }
    }
}

/// The media side of one device.
async fn run_media(
    args: Arc<Args>,
    i: u32,
    addr: SocketAddr,
    src: Arc<Source>,
    deadline: Option<Instant>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let mut sock = connect_retrying(addr).await?;
    sock.set_nodelay(true)?;
    let bare = args.h264_tcp_base.is_some();
    let raw = args.raw.is_some() || bare;
    if args.raw.is_some() {
        sock.write_all(format!("STREAM {}-{i}\n", args.stream_prefix).as_bytes())
            .await?;
    }
    let sim = Sim::parse(&sim_of(&args, i)).context("SIM does not fit 12 digits")?;
    let span = src.span_ms();
    let t0 = Instant::now();
    let t0_unix_ms = now_ms();
    // With --wall-clock a frame's time is when pacing sends it.
    let stamp = |media_ms: u64| {
        if args.wall_clock {
            t0_unix_ms as u64 + media_ms
        } else {
            media_ms
        }
    };
    let log_keyframes = args.keyframe_log.is_some();
    let mut seq: u16 = 0;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let expired = |d: &Option<Instant>| d.is_some_and(|d| Instant::now() >= d);
    for lap in 0u64.. {
        let offset = lap * span;
        match &*src {
            Source::Packets(pkts) => {
                let base = pkts[0].timestamp_ms.unwrap_or(0);
                for p in pkts {
                    if expired(&deadline) {
                        return Ok(());
                    }
                    let ts = p.timestamp_ms.map(|t| t + offset);
                    let rel = ts.map_or(0, |t| t - base);
                    if raw {
                        // Raw mode sends the H.264 bodies only.
                        if p.data_type.is_video() {
                            pace(&args, t0, rel, stats).await;
                            sock.write_all(&p.body).await?;
                            stats.bytes += p.body.len() as u64;
                        }
                        continue;
                    }
                    let q = Jt1078Packet {
                        sim,
                        channel: args.channel,
                        seq,
                        timestamp_ms: ts.map(|t| if args.wall_clock { stamp(t - base) } else { t }),
                        ..p.clone()
                    };
                    seq = seq.wrapping_add(1);
                    out.clear();
                    q.encode(&mut out);
                    pace(&args, t0, rel, stats).await;
                    sock.write_all(&out).await?;
                    stats.packets += 1;
                    stats.bytes += out.len() as u64;
                    if matches!(q.sub, jt1078::SubPackage::Atomic | jt1078::SubPackage::Last) {
                        stats.frames += 1;
                    }
                }
            }
            Source::Units(units) => {
                for u in units {
                    if expired(&deadline) {
                        return Ok(());
                    }
                    let ts = u.ts_ms + offset;
                    pace(&args, t0, ts, stats).await;
                    let key = u.data_type == DataType::IFrame;
                    if raw {
                        if u.data_type == DataType::Audio {
                            continue;
                        }
                        sock.write_all(&u.data).await?;
                        stats.bytes += u.data.len() as u64;
                        stats.frames += 1;
                        if key && log_keyframes {
                            stats.keyframes.push((ts, unix_ns()));
                        }
                        continue;
                    }
                    out.clear();
                    stats.packets += packetize_unit(
                        sim,
                        args.channel,
                        args.fps,
                        u,
                        stamp(ts),
                        &mut seq,
                        &mut out,
                    ) as u64;
                    sock.write_all(&out).await?;
                    stats.bytes += out.len() as u64;
                    stats.frames += 1;
                    if key && log_keyframes {
                        stats.keyframes.push((ts, unix_ns()));
                    }
                }
            }
        }
        if !args.looping {
            break;
        }
    }
    sock.shutdown().await?;
    Ok(())
}

async fn device(
    args: Arc<Args>,
    card: Arc<Card>,
    i: u32,
    src: Arc<Source>,
    deadline: Option<Instant>,
) -> Stats {
    let mut st808 = Stats::default();
    let mut stm = Stats::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    if args.ramp > 0.0 && args.devices > 1 {
        let delay = args.ramp * i as f64 / args.devices as f64;
        tokio::time::sleep(Duration::from_secs_f64(delay)).await;
    }
    let has_media = args.jt1078.is_some() || args.raw.is_some() || args.h264_tcp_base.is_some();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let done_rx = has_media.then_some(done_rx);
    let sig = {
        let args = args.clone();
        let st = &mut st808;
        async move {
            match args.jt808 {
                Some(a) => run_808(args.clone(), card, i, a, deadline, Some(tx), done_rx, st).await,
                None => Ok(()),
            }
        }
    };
    let media = {
        let args = args.clone();
        let st = &mut stm;
        async move {
            let addr = if args.jt808.is_some() {
                rx.await.ok()
            } else if let Some(base) = args.h264_tcp_base {
                let mut a = base;
                a.set_port(base.port() + i as u16);
                Some(a)
            } else if let (Some(first), false) = (args.jt1078, args.jt1078_nodes.is_empty()) {
                let k = args.jt1078_nodes.len() + 1;
                Some(match i as usize % k {
                    0 => first,
                    n => args.jt1078_nodes[n - 1],
                })
            } else {
                args.raw.or(args.jt1078)
            };
            let r = match addr {
                Some(a) => run_media(args.clone(), i, a, src, deadline, st).await,
                None => Ok(()),
            };
            drop(done_tx);
            r
        }
    };
    let (r808, rmedia) = tokio::join!(sig, media);
    let mut s = Stats {
        positions: st808.positions,
        heartbeats: st808.heartbeats,
        replies: st808.replies,
        frames: stm.frames,
        packets: stm.packets,
        bytes: stm.bytes,
        late_sends: stm.late_sends,
        max_lag_ms: stm.max_lag_ms,
        keyframes: stm.keyframes,
        queries: st808.queries,
        playbacks: st808.playbacks,
        playback_frames: st808.playback_frames,
        playback_packets: st808.playback_packets,
        playback_bytes: st808.playback_bytes,
        error: None,
    };
    if let Err(e) = r808.and(rmedia) {
        s.error = Some(format!("{e:#}"));
    }
    s
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    EPOCH.get_or_init(Instant::now);
    if args.jt808.is_none()
        && args.jt1078.is_none()
        && args.raw.is_none()
        && args.h264_tcp_base.is_none()
    {
        bail!("give at least one of --jt808, --jt1078, --raw, --h264-tcp-base");
    }
    if let Some(base) = args.h264_tcp_base {
        if base.port() as u32 + args.devices > 65_536 {
            bail!("--h264-tcp-base {base}: {} ports do not fit", args.devices);
        }
    }
    let mut src = load(&args.input, args.fps, args.video_codec)?;
    if let Some(path) = &args.audio {
        let audio = load_audio(path, args.audio_pt, args.audio_packet_bytes)?;
        let Source::Units(video) = src else {
            bail!("--audio goes with Annex-B --input, not a JT/T 1078 capture");
        };
        let video = if args.audio_only { Vec::new() } else { video };
        src = Source::Units(interleave(video, audio));
    }
    let card = Arc::new(Card::new(&args, &src)?);
    let src = Arc::new(src);
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.devices {
        tasks.push(tokio::spawn(device(
            args.clone(),
            card.clone(),
            i,
            src.clone(),
            deadline,
        )));
    }
    let mut total = Stats::default();
    let mut failed = 0;
    let mut keyframe_log = match &args.keyframe_log {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    for (i, t) in tasks.into_iter().enumerate() {
        let s = t.await?;
        let name = if args.raw.is_some() || args.h264_tcp_base.is_some() {
            format!("{}-{i}", args.stream_prefix)
        } else {
            format!("{}_{}", sim_of(&args, i as u32), args.channel)
        };
        println!(
            "{name}: frames {} packets {} bytes {} positions {} heartbeats {} replies {}{}",
            s.frames,
            s.packets,
            s.bytes,
            s.positions,
            s.heartbeats,
            s.replies,
            s.error
                .as_deref()
                .map(|e| format!(" ERROR {e}"))
                .unwrap_or_default()
        );
        if s.queries > 0 || s.playbacks > 0 {
            println!(
                "{}: queries {} playbacks {} playback frames {} packets {} bytes {}",
                sim_of(&args, i as u32),
                s.queries,
                s.playbacks,
                s.playback_frames,
                s.playback_packets,
                s.playback_bytes
            );
        }
        failed += s.error.is_some() as u32;
        if let Some(w) = keyframe_log.as_mut() {
            use std::io::Write;
            for (media_ms, ns) in &s.keyframes {
                writeln!(w, "{name} {media_ms} {ns}")?;
            }
        }
        total.late_sends += s.late_sends;
        total.max_lag_ms = total.max_lag_ms.max(s.max_lag_ms);
        total.frames += s.frames;
        total.packets += s.packets;
        total.bytes += s.bytes;
        total.positions += s.positions;
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(mut w) = keyframe_log {
        use std::io::Write;
        w.flush()?;
    }
    println!(
        "total: {} devices, frames {} packets {} bytes {} positions {} in {:.2} s ({:.1} MB/s), late sends {} max lag {} ms",
        args.devices,
        total.frames,
        total.packets,
        total.bytes,
        total.positions,
        secs,
        total.bytes as f64 / secs / 1e6,
        total.late_sends,
        total.max_lag_ms,
    );
    if failed > 0 {
        bail!("{failed} device(s) failed");
    }
    Ok(())
}
