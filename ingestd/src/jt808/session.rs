//! [`Jt808Session`], the per-connection protocol state machine: it drives
//! the parser, answers every message (general reply, register reply),
//! tracks serials and authentication, enforces the [`DevicePolicy`]
//! (authentication first, the SIM allow-list), addresses platform commands
//! to the device, and reports each message as a [`SessionEvent`]. No I/O.

use std::sync::Arc;

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
    /// A message the policy refused: answered with a failure (0x8001 result
    /// 1, or 0x8100 result 4 for a registration) and otherwise ignored.
    Refused {
        sim: String,
        msg_id: u16,
        reason: RefuseReason,
    },
    /// A frame or body was rejected.
    Error(Jt808Error),
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// Anything but registration/authentication before a successful 0x0102.
    Unauthenticated,
    /// The SIM is not on the allow-list.
    NotAllowed,
}

impl RefuseReason {
    /// Label value of the refusal metric.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Unauthenticated => "unauthenticated",
            RefuseReason::NotAllowed => "not_allowed",
        }
    }
}

/// 0x8100 result for a terminal the platform does not accept.
const REGISTER_NO_SUCH_TERMINAL: u8 = 4;

/// Decides whether a SIM may register and authenticate.
pub type AllowSim = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Who a session lets in.
#[derive(Clone)]
pub struct DevicePolicy {
    /// Refuse every message but 0x0100/0x0102 until the SIM authenticates.
    pub require_auth: bool,
    /// Whether a SIM may register and authenticate; `None` lets every SIM.
    pub allowed: Option<AllowSim>,
}

impl DevicePolicy {
    /// Authentication required, every SIM allowed.
    pub fn authenticated() -> Self {
        DevicePolicy {
            require_auth: true,
            allowed: None,
        }
    }

    /// Nothing enforced (legacy fleets, load tools).
    pub fn open() -> Self {
        DevicePolicy {
            require_auth: false,
            allowed: None,
        }
    }

    fn allows(&self, sim: &str) -> bool {
        self.allowed.as_ref().is_none_or(|f| f(sim))
    }
}

impl std::fmt::Debug for DevicePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePolicy")
            .field("require_auth", &self.require_auth)
            .field("allow_list", &self.allowed.is_some())
            .finish()
    }
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
    /// The SIM that authenticated on this connection: a message in another
    /// SIM's name is not authenticated by it.
    authenticated: Option<String>,
    policy: DevicePolicy,
    pending: std::collections::VecDeque<SessionEvent>,
}

impl Jt808Session {
    /// A session for devices whose clocks run at UTC+8, enforcing
    /// authentication.
    pub fn new(secret: &str) -> Self {
        Self::with_clock(secret, DeviceClock::UTC8)
    }

    /// Replaces the policy (authentication required, every SIM allowed by default).
    pub fn with_policy(mut self, policy: DevicePolicy) -> Self {
        self.policy = policy;
        self
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
            authenticated: None,
            policy: DevicePolicy::authenticated(),
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

    /// Whether a SIM has authenticated on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.is_some()
    }

    /// Whether messages in `sim`'s name are accepted: it authenticated, or
    /// the policy does not ask it to.
    pub fn accepts(&self, sim: &str) -> bool {
        !self.policy.require_auth || self.authenticated.as_deref() == Some(sim)
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
            let logging_in = matches!(h.msg_id, msg::REGISTER | msg::AUTHENTICATE);
            if !logging_in && !self.accepts(&sim) {
                // A terminal's own general reply is never answered.
                if h.msg_id != msg::TERMINAL_REPLY {
                    self.general(h, result::FAILURE, out);
                }
                return Some(SessionEvent::Refused {
                    sim,
                    msg_id: h.msg_id,
                    reason: RefuseReason::Unauthenticated,
                });
            }
            if logging_in && !self.policy.allows(&sim) {
                if h.msg_id == msg::REGISTER {
                    let body = register_reply_body(h.serial, REGISTER_NO_SUCH_TERMINAL, "");
                    self.reply(h, msg::REGISTER_REPLY, &body, out);
                } else {
                    self.general(h, result::FAILURE, out);
                }
                return Some(SessionEvent::Refused {
                    sim,
                    msg_id: h.msg_id,
                    reason: RefuseReason::NotAllowed,
                });
            }
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
                        self.authenticated = Some(sim.clone());
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
