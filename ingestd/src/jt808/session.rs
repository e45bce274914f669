//! [`Jt808Session`], the per-connection protocol state machine: it drives
//! the parser, answers every message (general reply, register reply),
//! tracks serials and authentication, addresses platform commands to the
//! device, and reports each message as a [`SessionEvent`]. No I/O.

use bytes::BytesMut;

use super::{
    auth_code, decode_body_in, encode_frame, msg, register_reply_body, result, Body, DeviceClock,
    GeneralReply, Header, Jt808Counters, Jt808Error, Jt808Event, Jt808Parser, Location, OutHeader,
    PlatformCommand, Register, ResourceList,
};
use crate::bcd;

/// What a session reports to its owner after each message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    Registered {
        sim: String,
        register: Register,
    },
    Authenticated {
        sim: String,
    },
    AuthFailed {
        sim: String,
    },
    Heartbeat {
        sim: String,
    },
    /// One position (batched ones come one event each).
    Position {
        sim: String,
        location: Location,
    },
    TerminalReply {
        sim: String,
        reply: GeneralReply,
    },
    /// 0x1205: the device's recordings, answering the command whose serial
    /// `list.serial` is.
    Resources {
        sim: String,
        list: ResourceList,
    },
    Unsupported {
        sim: String,
        msg_id: u16,
    },
    /// A frame or body was rejected.
    Error(Jt808Error),
}

/// Per-connection JT/T 808 protocol state: parses, decides replies (written
/// to the caller's buffer) and reports events. No I/O.
#[derive(Debug)]
pub struct Jt808Session {
    parser: Jt808Parser,
    clock: DeviceClock,
    secret: String,
    next_serial: u16,
    /// Phone digits and header version of the last valid message, used to
    /// address platform commands.
    phone: Option<String>,
    version: Option<u8>,
    authenticated: bool,
    pending: std::collections::VecDeque<SessionEvent>,
}

impl Jt808Session {
    /// A session for devices whose clocks run at UTC+8.
    pub fn new(secret: &str) -> Self {
        Self::with_clock(secret, DeviceClock::UTC8)
    }

    /// A session reading and writing device times in `clock`'s zone.
    pub fn with_clock(secret: &str, clock: DeviceClock) -> Self {
        Jt808Session {
            parser: Jt808Parser::new(),
            clock,
            secret: secret.to_string(),
            next_serial: 0,
            phone: None,
            version: None,
            authenticated: false,
            pending: Default::default(),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.parser.push(data);
    }

    pub fn counters(&self) -> &Jt808Counters {
        self.parser.counters()
    }

    /// The device's 12-digit SIM once a message has been seen.
    pub fn sim(&self) -> Option<String> {
        self.phone.as_deref().map(bcd::normalize_sim)
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    fn take_serial(&mut self) -> u16 {
        let s = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        s
    }

    fn reply(&mut self, h: &Header, msg_id: u16, body: &[u8], out: &mut BytesMut) {
        let serial = self.take_serial();
        encode_frame(
            &OutHeader {
                msg_id,
                phone: &h.phone,
                serial,
                version: h.version,
                subpackage: None,
            },
            body,
            out,
        );
    }

    fn general(&mut self, h: &Header, result: u8, out: &mut BytesMut) {
        let body = GeneralReply {
            serial: h.serial,
            msg_id: h.msg_id,
            result,
        }
        .encode();
        self.reply(h, msg::PLATFORM_REPLY, &body, out);
    }

    /// Sends a platform command to this device; returns the serial used.
    /// `None` until the device has identified itself.
    pub fn command(&mut self, cmd: &PlatformCommand, out: &mut BytesMut) -> Option<u16> {
        let phone = self.phone.clone()?;
        let serial = self.take_serial();
        encode_frame(
            &OutHeader {
                msg_id: cmd.msg_id(),
                phone: &phone,
                serial,
                version: self.version,
                subpackage: None,
            },
            &cmd.encode_body(self.clock),
            out,
        );
        Some(serial)
    }

    /// Processes input; replies are appended to `out`. Returns the next event
    /// or `None` when more input is needed.
    pub fn poll(&mut self, out: &mut BytesMut) -> Option<SessionEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let msg = match self.parser.pull()? {
                Jt808Event::Error(e) => return Some(SessionEvent::Error(e)),
                Jt808Event::Part(h) => {
                    self.general(&h, result::OK, out);
                    continue;
                }
                Jt808Event::Message(m) => m,
            };
            let h = &msg.header;
            self.phone = Some(h.phone.clone());
            self.version = h.version;
            let sim = h.sim();
            let body = match decode_body_in(&msg, self.clock) {
                Ok(b) => b,
                Err(e) => {
                    self.general(h, result::MESSAGE_ERROR, out);
                    return Some(SessionEvent::Error(e));
                }
            };
            let ev = match body {
                Body::Register(register) => {
                    let code = auth_code(&self.secret, &sim);
                    let body = register_reply_body(h.serial, 0, &code);
                    self.reply(h, msg::REGISTER_REPLY, &body, out);
                    SessionEvent::Registered { sim, register }
                }
                Body::Authenticate(a) => {
                    if a.code == auth_code(&self.secret, &sim) {
                        self.authenticated = true;
                        self.general(h, result::OK, out);
                        SessionEvent::Authenticated { sim }
                    } else {
                        self.general(h, result::FAILURE, out);
                        SessionEvent::AuthFailed { sim }
                    }
                }
                Body::Heartbeat => {
                    self.general(h, result::OK, out);
                    SessionEvent::Heartbeat { sim }
                }
                Body::Location(location) => {
                    self.general(h, result::OK, out);
                    SessionEvent::Position { sim, location }
                }
                Body::LocationBatch(b) => {
                    self.general(h, result::OK, out);
                    for location in b.items {
                        self.pending.push_back(SessionEvent::Position {
                            sim: sim.clone(),
                            location,
                        });
                    }
                    continue;
                }
                Body::TerminalReply(reply) => SessionEvent::TerminalReply { sim, reply },
                Body::ResourceList(list) => {
                    self.general(h, result::OK, out);
                    SessionEvent::Resources { sim, list }
                }
                Body::Unknown(msg_id) => {
                    self.general(h, result::UNSUPPORTED, out);
                    SessionEvent::Unsupported { sim, msg_id }
                }
            };
            return Some(ev);
        }
    }
}
