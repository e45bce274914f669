//! A simulated dashcam for the end-to-end suite: JT/T 808 signalling over
//! TCP (register, authenticate, positions, acknowledgements of platform
//! commands, which it hands to the test) and JT/T 1078 media from the
//! project's fixture, sub-packaged as devices send it. The parts every
//! simulated dashcam shares are [`crate::common::dashcam`]'s.

use std::net::SocketAddr;
use std::time::Duration;

use ingestd::jt808;
use tokio::sync::mpsc;

use crate::common::dashcam::{self, Outbox};
pub use crate::common::dashcam::{fixture_frames, Frame, MediaSender};

pub const FRAME_MS: u64 = dashcam::FRAME_MS as u64;

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
    outbox: Outbox,
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

impl Terminal {
    /// Connects, registers and authenticates with the code the platform
    /// hands out; then answers and forwards platform commands until dropped.
    pub async fn connect(jt808_addr: SocketAddr, sim: &str) -> Terminal {
        let register = dashcam::registration("E2E", "e2e-cam", "0000001", "E2E-001");
        let (mut inbox, outbox) = dashcam::login(jt808_addr, sim, register).await;
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let acks = outbox.clone();
        tokio::spawn(async move {
            while let Some(m) = inbox.next().await {
                if let Some(c) = command(m.header.msg_id, &m.body) {
                    acks.ack(&m);
                    let _ = commands_tx.send(c);
                }
            }
        });
        Terminal { commands, outbox }
    }

    /// Reports a position now, with these 808 alarm bits.
    pub fn send_position(&self, alarm: u32) {
        self.outbox.position(alarm);
    }

    /// The next platform command, within `within`.
    pub async fn next_command(&mut self, within: Duration) -> Command {
        tokio::time::timeout(within, self.commands.recv())
            .await
            .expect("a platform command in time")
            .expect("terminal connection open")
    }
}
