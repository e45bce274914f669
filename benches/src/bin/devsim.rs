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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use ingestd::jt1078::{
    self, DataType, Jt1078Event, Jt1078Packet, Jt1078Parser, PacketizeParams, Sim,
};
use ingestd::jt808::{self, Jt808Event, Jt808Parser, Location, OutHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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
    /// Repeat the input, keeping timestamps increasing.
    #[arg(long = "loop")]
    looping: bool,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
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
    error: Option<String>,
}

fn sim_of(args: &Args, i: u32) -> String {
    format!("{:012}", args.sim_base + i as u64)
}

/// Point on a 2 km circle round Shenzhen, one lap per 10 minutes, each
/// device offset along the circle.
fn position(i: u32, t_s: f64, now_ms: i64) -> Location {
    let phase = t_s / 600.0 * std::f64::consts::TAU + i as f64 * 0.7;
    let (lat0, lon0, r_deg) = (22.543_096, 114.057_865, 0.018);
    let lat = lat0 + r_deg * phase.sin();
    let lon = lon0 + r_deg * phase.cos() / lat0.to_radians().cos();
    let heading = ((90.0 - phase.to_degrees() + 360.0 * 4.0) % 360.0) as u16;
    // 2 km radius, one lap per 600 s: about 75 km/h.
    Location::new((lat * 1e6) as i64, (lon * 1e6) as i64, 754, heading, now_ms)
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

/// The signalling side of one device. Sends the media address of a 0x9101
/// request through `live` (on-demand mode).
async fn run_808(
    args: Arc<Args>,
    i: u32,
    addr: SocketAddr,
    deadline: Option<Instant>,
    mut live: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    media_done: Option<tokio::sync::oneshot::Receiver<()>>,
    stats: &mut Stats,
) -> anyhow::Result<()> {
    let sim = sim_of(&args, i);
    let mut sock = TcpStream::connect(addr).await.context("connect 808")?;
    let mut parser = Jt808Parser::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    let mut serial: u16 = 0;
    let mut send = |msg_id: u16, body: &[u8], out: &mut BytesMut| {
        jt808::encode_frame(
            &OutHeader {
                msg_id,
                phone: &sim,
                serial,
                version: None,
                subpackage: None,
            },
            body,
            out,
        );
        serial = serial.wrapping_add(1);
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
    send(jt808::msg::REGISTER, &reg.encode(false), &mut out);
    sock.write_all(&out).await?;
    out.clear();
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
    send(jt808::msg::AUTHENTICATE, &auth.encode(false), &mut out);
    sock.write_all(&out).await?;
    out.clear();
    let reply = read_808(&mut sock, &mut parser, &mut buf).await?;
    let r = jt808::GeneralReply::decode(&reply.body, reply.header.msg_id)?;
    if r.result != 0 {
        bail!("authentication refused ({})", r.result);
    }
    stats.replies += 2;
    // Where the device is, as soon as it is logged in (as dashcams do), so
    // even a short clip sent flat out has a position to go with it.
    let start = Instant::now();
    send(
        jt808::msg::LOCATION,
        &position(i, 0.0, now_ms()).encode(),
        &mut out,
    );
    sock.write_all(&out).await?;
    out.clear();
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
    let mut pos = tokio::time::interval_at(start + every, every);
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
                send(jt808::msg::HEARTBEAT, &[], &mut out);
                stats.heartbeats += 1;
            }
            _ = pos.tick() => {
                let l = position(i, start.elapsed().as_secs_f64(), now_ms());
                send(jt808::msg::LOCATION, &l.encode(), &mut out);
                stats.positions += 1;
            }
            m = read_808(&mut sock, &mut parser, &mut buf) => {
                let m = m?;
                match m.header.msg_id {
                    jt808::msg::PLATFORM_REPLY => stats.replies += 1,
                    id @ (jt808::msg::LIVE_REQUEST | jt808::msg::LIVE_CONTROL | jt808::msg::PLAYBACK_REQUEST) => {
                        let ack = jt808::GeneralReply { serial: m.header.serial, msg_id: id, result: 0 };
                        send(jt808::msg::TERMINAL_REPLY, &ack.encode(), &mut out);
                        if id == jt808::msg::LIVE_REQUEST && m.body.len() > 1 {
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
                    _ => {}
                }
            }
        }
        if !out.is_empty() {
            sock.write_all(&out).await?;
            out.clear();
        }
    }
    Ok(())
}

/// Sleeps until `rel_ms` after `t0` in real-time mode, counting sends
/// that are already late.
async fn pace(args: &Args, t0: Instant, rel_ms: u64, stats: &mut Stats) {
    if !args.flat_out {
        let due = t0 + Duration::from_millis(rel_ms);
        let lag = Instant::now().saturating_duration_since(due).as_millis() as u64;
        if lag > 50 {
            stats.late_sends += 1;
        }
        stats.max_lag_ms = stats.max_lag_ms.max(lag);
        tokio::time::sleep_until(due).await;
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
                        timestamp_ms: ts,
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
                    let p = PacketizeParams {
                        sim,
                        channel: args.channel,
                        data_type: u.data_type,
                        payload_type: u.payload_type,
                        timestamp_ms: ts,
                        last_i_interval_ms: 0,
                        last_frame_interval_ms: (1000 / args.fps.max(1)) as u16,
                        max_body: 950,
                    };
                    stats.packets += jt1078::packetize(&p, &mut seq, &u.data, &mut out) as u64;
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

async fn device(args: Arc<Args>, i: u32, src: Arc<Source>, deadline: Option<Instant>) -> Stats {
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
                Some(a) => run_808(args.clone(), i, a, deadline, Some(tx), done_rx, st).await,
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
    let src = Arc::new(src);
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.devices {
        tasks.push(tokio::spawn(device(args.clone(), i, src.clone(), deadline)));
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
