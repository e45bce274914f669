//! JT/T 808 signalling codec: a sans-IO framer/parser, body decoders for the
//! messages a device sends, encoders for platform messages, and
//! [`Jt808Session`], the per-connection protocol state machine (replies,
//! serials, authentication) that the tokio listener drives.
//!
//! Follows JT/T 808-2013 and JT/T 808-2019 (framing with 0x7e and 0x7d
//! escaping, XOR checksum, header with optional sub-package fields, the 2019
//! header with a version byte and a 10-byte BCD phone number) and the
//! JT/T 1078-2016 platform commands 0x9101/0x9102/0x9201/0x9202/0x9205 and
//! the 0x1205 list of recordings, as summarised in `docs/jt808.md`.
//!
//! Output is identical for any chunking of the input: frames are cut only
//! at 0x7e bytes, and a bad frame (escape, checksum, length) yields an error
//! event and is dropped without affecting the next one.
//!
//! One submodule per concern, everything re-exported here: `frame` (parser,
//! escaping, checksum, frame encoder), `header`, `register` (0x0100, 0x8100,
//! 0x0102, auth codes), `location` (0x0200, 0x0704, BCD time), `reply`
//! (0x0001/0x8001 general reply), `body` (decoding by message id), `media`
//! (0x9101/0x9102/0x9201/0x9202/0x9205 platform commands), `resources`
//! (0x1205) and `session`.

mod body;
mod frame;
mod header;
mod location;
mod media;
mod register;
mod reply;
mod resources;
mod session;

pub use body::{decode_body, decode_body_in, Body};
pub use frame::{
    checksum, encode_frame, escape_into, unescape, Jt808Counters, Jt808Event, Jt808Message,
    Jt808Parser, DEFAULT_MAX_FRAME, DEFAULT_MAX_MESSAGE, ESC, FLAG,
};
pub use header::{parse_header, Header, OutHeader};
pub use location::{
    bcd_time_to_unix_ms, checked_unix_ms_to_bcd_time, unix_ms_to_bcd_time, DeviceClock, Location,
    LocationBatch, STATUS_SOUTH, STATUS_WEST,
};
pub use media::{playback_control, playback_mode, speed_code, speed_multiplier, PlatformCommand};
pub use register::{auth_code, register_reply_body, Authenticate, Register};
pub use reply::{result, GeneralReply};
pub use resources::{Resource, ResourceList, RESOURCE_ENTRY_BYTES};
pub use session::{DevicePolicy, Jt808Session, RefuseReason, SessionEvent};

/// Message ids.
pub mod msg {
    pub const TERMINAL_REPLY: u16 = 0x0001;
    pub const HEARTBEAT: u16 = 0x0002;
    pub const REGISTER: u16 = 0x0100;
    pub const AUTHENTICATE: u16 = 0x0102;
    pub const LOCATION: u16 = 0x0200;
    pub const LOCATION_BATCH: u16 = 0x0704;
    pub const PLATFORM_REPLY: u16 = 0x8001;
    pub const REGISTER_REPLY: u16 = 0x8100;
    pub const LIVE_REQUEST: u16 = 0x9101;
    pub const LIVE_CONTROL: u16 = 0x9102;
    pub const PLAYBACK_REQUEST: u16 = 0x9201;
    pub const PLAYBACK_CONTROL: u16 = 0x9202;
    pub const QUERY_RESOURCES: u16 = 0x9205;
    pub const RESOURCE_LIST: u16 = 0x1205;
}

/// Errors for one frame or body; the connection continues after any of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Jt808Error {
    #[error("invalid escape 7d {0:02x}")]
    BadEscape(u8),
    #[error("checksum mismatch: computed {computed:02x}, frame says {found:02x}")]
    BadChecksum { computed: u8, found: u8 },
    #[error("frame too short ({0} bytes)")]
    TooShort(usize),
    #[error("frame longer than {0} bytes")]
    TooLong(usize),
    #[error("body length field {declared} but frame holds {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("sub-package index {index} of {total} invalid")]
    BadSubPackage { index: u16, total: u16 },
    #[error("sub-packaged message exceeds {0} bytes")]
    MessageTooLong(usize),
    #[error("body of message {msg_id:#06x} malformed: {what}")]
    BadBody { msg_id: u16, what: &'static str },
}
