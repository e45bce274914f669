//! A simulated dashcam for the end-to-end suite: JT/T 808 signalling over
//! TCP (register, authenticate, positions, acknowledgements of platform
//! commands, which it hands to the test) and JT/T 1078 media from the
//! project's fixture, sub-packaged as devices send it.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ingestd::jt1078::{packetize, DataType, PacketizeParams, Sim};
use ingestd::jt808::{self, Jt808Event, Jt808Parser, OutHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A platform command the terminal received (and acknowledged).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// 0x9101: stream `channel` live to `addr`.
    Live { addr: SocketAddr, channel: u8 },
    /// 0x9102: control of a live channel (0 = close).
    Control { channel: u8, command: u8 },
    /// 0x9201: upload the recording of `[start_ms, end_ms)` on `channel`.
    Playback {
        addr: SocketAddr,
        channel: u8,
        start_ms: i64,
        end_ms: i64,
    },
}

/// One logged-in terminal.
pub struct Terminal {
    commands: mpsc::UnboundedReceiver<Command>,
    outbox: mpsc::UnboundedSender<(u16, Vec<u8>)>,
}

/// The media address in a 0x9101/0x9201 body: length, IP text, TCP port.
fn media_addr(body: &[u8]) -> SocketAddr {
    let n = body[0] as usize;
    let ip = std::str::from_utf8(&body[1..1 + n]).unwrap();
    let port = u16::from_be_bytes([body[1 + n], body[2 + n]]);
    format!("{ip}:{port}").parse().unwrap()
}

fn command(msg_id: u16, body: &[u8]) -> Option<Command> {
    match msg_id {
        jt808::msg::LIVE_REQUEST => {
            let n = body[0] as usize;
            Some(Command::Live {
                addr: media_addr(body),
                channel: body[5 + n],
            })
        }
        jt808::msg::LIVE_CONTROL => Some(Command::Control {
            channel: body[0],
            command: body[1],
        }),
        jt808::msg::PLAYBACK_REQUEST => {
            let n = body[0] as usize;
            // IP, TCP and UDP ports, channel, AV/stream/storage type, mode,
            // speed, then two BCD[6] times.
            let at = 1 + n + 4;
            let time = |i: usize| {
                let t: [u8; 6] = body[i..i + 6].try_into().unwrap();
                jt808::bcd_time_to_unix_ms(&t).unwrap()
            };
            Some(Command::Playback {
                addr: media_addr(body),
                channel: body[at],
                start_ms: time(at + 6),
                end_ms: time(at + 12),
            })
        }
        _ => None,
    }
}

async fn read_message(
    sock: &mut tokio::net::tcp::OwnedReadHalf,
    parser: &mut Jt808Parser,
) -> Option<jt808::Jt808Message> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Some(ev) = parser.pull() {
            if let Jt808Event::Message(m) = ev {
                return Some(m);
            }
        }
        buf.clear();
        if sock.read_buf(&mut buf).await.ok()? == 0 {
            return None;
        }
        parser.push(&buf);
    }
}

impl Terminal {
    /// Connects, registers and authenticates with the code the platform
    /// hands out; then answers and forwards platform commands until dropped.
    pub async fn connect(jt808_addr: SocketAddr, sim: &str) -> Terminal {
        let (mut rd, mut wr) = TcpStream::connect(jt808_addr).await.unwrap().into_split();
        let mut parser = Jt808Parser::new();
        let sim = sim.to_owned();
        let encode = {
            let sim = sim.clone();
            let mut serial = 0u16;
            move |msg_id: u16, body: &[u8]| {
                let mut out = BytesMut::new();
                jt808::encode_frame(
                    &OutHeader {
                        msg_id,
                        phone: &sim,
                        serial,
                        version: None,
                        subpackage: None,
                    },
                    body,
                    &mut out,
                );
                serial = serial.wrapping_add(1);
                out
            }
        };
        let mut encode = encode;
        let register = jt808::Register {
            province: 44,
            city: 300,
            maker_id: "E2E".into(),
            model: "e2e-cam".into(),
            terminal_id: "0000001".into(),
            plate_color: 1,
            plate: "E2E-001".into(),
        };
        wr.write_all(&encode(jt808::msg::REGISTER, &register.encode(false)))
            .await
            .unwrap();
        let reply = read_message(&mut rd, &mut parser).await.unwrap();
        assert_eq!(reply.header.msg_id, jt808::msg::REGISTER_REPLY);
        assert_eq!(reply.body[2], 0, "registration refused");
        let auth = jt808::Authenticate {
            code: String::from_utf8_lossy(&reply.body[3..]).into_owned(),
            imei: None,
            software_version: None,
        };
        wr.write_all(&encode(jt808::msg::AUTHENTICATE, &auth.encode(false)))
            .await
            .unwrap();
        let reply = read_message(&mut rd, &mut parser).await.unwrap();
        let r = jt808::GeneralReply::decode(&reply.body, reply.header.msg_id).unwrap();
        assert_eq!(r.result, 0, "authentication refused");

        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (outbox, mut to_send) = mpsc::unbounded_channel::<(u16, Vec<u8>)>();
        let acks = outbox.clone();
        tokio::spawn(async move {
            while let Some(m) = read_message(&mut rd, &mut parser).await {
                let id = m.header.msg_id;
                if let Some(c) = command(id, &m.body) {
                    let ack = jt808::GeneralReply {
                        serial: m.header.serial,
                        msg_id: id,
                        result: 0,
                    };
                    let _ = acks.send((jt808::msg::TERMINAL_REPLY, ack.encode()));
                    let _ = commands_tx.send(c);
                }
            }
        });
        tokio::spawn(async move {
            while let Some((id, body)) = to_send.recv().await {
                if wr.write_all(&encode(id, &body)).await.is_err() {
                    return;
                }
            }
        });
        Terminal { commands, outbox }
    }

    /// Reports a position now, with these 808 alarm bits.
    pub fn send_position(&self, alarm: u32) {
        let now = chrono::Utc::now().timestamp_millis();
        let location = jt808::Location {
            alarm,
            status: 0x3,
            lat_e6: 22_543_096,
            lon_e6: 114_057_865,
            altitude_m: 12,
            speed_dkmh: 420,
            heading: 90,
            time_ms: Some(now),
            time_bcd: jt808::unix_ms_to_bcd_time(now),
            extras: Vec::new(),
        };
        let _ = self.outbox.send((jt808::msg::LOCATION, location.encode()));
    }

    /// The next platform command, within `within`.
    pub async fn next_command(&mut self, within: Duration) -> Command {
        tokio::time::timeout(within, self.commands.recv())
            .await
            .expect("a platform command in time")
            .expect("terminal connection open")
    }
}

/// One access unit of the fixture with its JT/T 1078 data type.
#[derive(Clone)]
pub struct Frame {
    pub data_type: DataType,
    pub data: Vec<u8>,
}

/// The frames of a committed fixture (25 fps).
pub fn fixture_frames(name: &str) -> Vec<Frame> {
    let path = format!("{}/../fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let data = std::fs::read(path).expect("committed fixture");
    streamcore::access_unit::split_access_units(&data)
        .iter()
        .map(|au| Frame {
            data_type: if au.keyframe {
                DataType::IFrame
            } else {
                DataType::PFrame
            },
            data: au.to_annexb(),
        })
        .collect()
}

pub const FRAME_MS: u64 = 40;

/// One media connection of a device channel. Frames are the fixture's,
/// looped, stamped `origin_ms + 40 ms` per frame sent on the connection.
pub struct MediaSender {
    sock: TcpStream,
    sim: Sim,
    channel: u8,
    seq: u16,
    sent: u64,
}

impl MediaSender {
    pub async fn connect(addr: SocketAddr, sim: &str, channel: u8) -> MediaSender {
        MediaSender {
            sock: TcpStream::connect(addr).await.unwrap(),
            sim: Sim::parse(sim).unwrap(),
            channel,
            seq: 0,
            sent: 0,
        }
    }

    /// Sends the next `count` frames of `frames` (looped), at real time when
    /// `realtime` (else as fast as the connection takes them); stops early
    /// once `stop` is set or the connection is gone.
    pub async fn send(
        &mut self,
        frames: &[Frame],
        origin_ms: i64,
        count: u64,
        realtime: bool,
        stop: &std::sync::atomic::AtomicBool,
    ) {
        let t0 = tokio::time::Instant::now();
        for k in 0..count {
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            if realtime {
                tokio::time::sleep_until(t0 + Duration::from_millis(k * FRAME_MS)).await;
            }
            let f = &frames[(self.sent % frames.len() as u64) as usize];
            let params = PacketizeParams {
                sim: self.sim,
                channel: self.channel,
                data_type: f.data_type,
                payload_type: 98,
                timestamp_ms: origin_ms as u64 + self.sent * FRAME_MS,
                last_i_interval_ms: 0,
                last_frame_interval_ms: FRAME_MS as u16,
                max_body: 950,
            };
            let mut out = BytesMut::new();
            packetize(&params, &mut self.seq, &f.data, &mut out);
            if self.sock.write_all(&out).await.is_err() {
                return;
            }
            self.sent += 1;
        }
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Closes the connection, as a device does when it is done.
    pub async fn close(mut self) {
        let _ = self.sock.shutdown().await;
    }
}
