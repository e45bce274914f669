//! What every simulated dashcam of these suites shares, on the device's side of real sockets:
//! JT/T 808 framing with ingestd's codec (long bodies sub-packaged as devices send them), the
//! register-and-authenticate login, acknowledgements, positions and heartbeats, and JT/T 1078
//! media from the project's committed fixtures.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use ingestd::jt1078::{packetize, DataType, PacketizeParams, Sim};
use ingestd::jt808::{self, msg, Jt808Event, Jt808Message, Jt808Parser, OutHeader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Time between frames of the fixtures (25 fps).
pub const FRAME_MS: i64 = 40;
/// Largest 808 body a device sends in one frame (the header's length field has 10 bits).
const MAX_PART: usize = 1000;

/// The registration (0x0100) of a test device (Guangdong, Shenzhen; a blue plate).
pub fn registration(maker: &str, model: &str, terminal_id: &str, plate: &str) -> jt808::Register {
    jt808::Register {
        province: 44,
        city: 300,
        maker_id: maker.into(),
        model: model.into(),
        terminal_id: terminal_id.into(),
        plate_color: 1,
        plate: plate.into(),
    }
}

/// Frames the device writes: a whole message, or the parts of a long one.
struct Encoder {
    sim: String,
    serial: u16,
}

impl Encoder {
    fn frames(&mut self, msg_id: u16, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        let parts: Vec<&[u8]> = if body.len() <= MAX_PART {
            vec![body]
        } else {
            body.chunks(MAX_PART).collect()
        };
        let total = parts.len() as u16;
        for (i, part) in parts.iter().enumerate() {
            jt808::encode_frame(
                &OutHeader {
                    msg_id,
                    phone: &self.sim,
                    serial: self.serial,
                    version: None,
                    subpackage: (total > 1).then_some((total, i as u16 + 1)),
                },
                part,
                &mut out,
            );
            // Each sub-package has a serial of its own.
            self.serial = self.serial.wrapping_add(1);
        }
        out
    }
}

/// The platform's side of a logged-in connection, as the device reads it.
pub struct Inbox {
    rd: OwnedReadHalf,
    parser: Jt808Parser,
}

impl Inbox {
    /// The platform's next message; `None` once the connection is closed.
    pub async fn next(&mut self) -> Option<Jt808Message> {
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            while let Some(ev) = self.parser.pull() {
                if let Jt808Event::Message(m) = ev {
                    return Some(m);
                }
            }
            buf.clear();
            if self.rd.read_buf(&mut buf).await.ok()? == 0 {
                return None;
            }
            self.parser.push(&buf);
        }
    }
}

/// What the device sends on a logged-in connection: written in order, with the device's own
/// serials, until the connection fails.
#[derive(Clone)]
pub struct Outbox(mpsc::UnboundedSender<(u16, Vec<u8>)>);

impl Outbox {
    pub fn send(&self, msg_id: u16, body: Vec<u8>) {
        let _ = self.0.send((msg_id, body));
    }

    /// The terminal's general reply (0x0001) to `m`: accepted.
    pub fn ack(&self, m: &Jt808Message) {
        let ack = jt808::GeneralReply {
            serial: m.header.serial,
            msg_id: m.header.msg_id,
            result: 0,
        };
        self.send(msg::TERMINAL_REPLY, ack.encode());
    }

    /// Reports a position now, with these 808 alarm bits.
    pub fn position(&self, alarm: u32) {
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
        self.send(msg::LOCATION, location.encode());
    }

    /// A heartbeat (0x0002) now and every `every` after, while the connection lasts.
    pub fn heartbeats(&self, every: Duration) {
        let tx = self.0.clone();
        tokio::spawn(async move {
            while tx.send((msg::HEARTBEAT, Vec::new())).is_ok() {
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// Connects to the platform's JT/T 808 port, registers as `register` and authenticates with the
/// code the platform hands out.
pub async fn login(addr: SocketAddr, sim: &str, register: jt808::Register) -> (Inbox, Outbox) {
    let (rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut inbox = Inbox {
        rd,
        parser: Jt808Parser::new(),
    };
    let mut enc = Encoder {
        sim: sim.to_owned(),
        serial: 0,
    };
    wr.write_all(&enc.frames(msg::REGISTER, &register.encode(false)))
        .await
        .unwrap();
    let reply = inbox.next().await.unwrap();
    assert_eq!(reply.header.msg_id, msg::REGISTER_REPLY);
    assert_eq!(reply.body[2], 0, "registration refused");
    let auth = jt808::Authenticate {
        code: String::from_utf8_lossy(&reply.body[3..]).into_owned(),
        imei: None,
        software_version: None,
    };
    wr.write_all(&enc.frames(msg::AUTHENTICATE, &auth.encode(false)))
        .await
        .unwrap();
    let reply = inbox.next().await.unwrap();
    let r = jt808::GeneralReply::decode(&reply.body, reply.header.msg_id).unwrap();
    assert_eq!(r.result, 0, "authentication refused");

    let (outbox, mut to_send) = mpsc::unbounded_channel::<(u16, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((id, body)) = to_send.recv().await {
            if wr.write_all(&enc.frames(id, &body)).await.is_err() {
                return;
            }
        }
    });
    (inbox, Outbox(outbox))
}

/// One access unit of a fixture with its JT/T 1078 data type.
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

/// One media connection of a device channel. Frames are the fixture's, looped, stamped
/// `origin_ms + 40 ms` per frame sent on the connection.
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

    /// Sends the next frame of `frames` (looped); false once the connection is gone.
    pub async fn send_one(&mut self, frames: &[Frame], origin_ms: i64) -> bool {
        let f = &frames[(self.sent % frames.len() as u64) as usize];
        let params = PacketizeParams {
            sim: self.sim,
            channel: self.channel,
            data_type: f.data_type,
            payload_type: 98,
            timestamp_ms: (origin_ms + self.sent as i64 * FRAME_MS) as u64,
            last_i_interval_ms: 0,
            last_frame_interval_ms: FRAME_MS as u16,
            max_body: 950,
        };
        let mut out = BytesMut::new();
        packetize(&params, &mut self.seq, &f.data, &mut out);
        if self.sock.write_all(&out).await.is_err() {
            return false;
        }
        self.sent += 1;
        true
    }

    /// Sends the next `count` frames of `frames` (looped), at real time when `realtime` (else
    /// as fast as the connection takes them); stops early once `stop` is set or the connection
    /// is gone.
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
                tokio::time::sleep_until(t0 + Duration::from_millis(k * FRAME_MS as u64)).await;
            }
            if !self.send_one(frames, origin_ms).await {
                return;
            }
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
