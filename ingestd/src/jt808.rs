//! JT/T 808 signalling codec: a sans-IO framer/parser, body decoders for the
//! messages a device sends, encoders for platform messages, and
//! [`Jt808Session`], the per-connection protocol state machine (replies,
//! serials, authentication) that the tokio listener drives.
//!
//! Follows JT/T 808-2013 and JT/T 808-2019 (framing with 0x7e and 0x7d
//! escaping, XOR checksum, header with optional sub-package fields, the 2019
//! header with a version byte and a 10-byte BCD phone number) and the
//! JT/T 1078-2016 platform commands 0x9101/0x9102/0x9201, as summarised in
//! `../shared/NOTES.md`.
//!
//! Output is identical for any chunking of the input: frames are cut only
//! at 0x7e bytes, and a bad frame (escape, checksum, length) yields an error
//! event and is dropped without affecting the next one.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tracing::debug;

use crate::bcd;

pub const FLAG: u8 = 0x7e;
pub const ESC: u8 = 0x7d;

/// Largest escaped frame accepted. A body is at most 1023 bytes and the
/// header at most 21, so twice that (everything escaped) plus slack.
pub const DEFAULT_MAX_FRAME: usize = 4096;
/// Largest sub-packaged message reassembled (multimedia uploads are split
/// into many parts; positions and registrations are tiny).
pub const DEFAULT_MAX_MESSAGE: usize = 1024 * 1024;
/// Concurrent sub-package assemblies kept per connection.
const MAX_ASSEMBLIES: usize = 8;

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
}

/// Results of a 0x8001 platform general reply.
pub mod result {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const MESSAGE_ERROR: u8 = 2;
    pub const UNSUPPORTED: u8 = 3;
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

/// A message header (2013 or 2019).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub msg_id: u16,
    /// Encryption bits 10-12 of the body attributes.
    pub encryption: u8,
    /// `Some(protocol version)` for a 2019 header.
    pub version: Option<u8>,
    /// Phone number digits as sent (12 for 2013, 20 for 2019).
    pub phone: String,
    pub serial: u16,
    /// `(total, index)` with index starting at 1.
    pub subpackage: Option<(u16, u16)>,
}

impl Header {
    /// The phone in the 12-digit form used for stream names and JT/T 1078.
    pub fn sim(&self) -> String {
        bcd::normalize_sim(&self.phone)
    }
}

/// A complete (possibly reassembled) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jt808Message {
    pub header: Header,
    pub body: Bytes,
}

/// What [`Jt808Parser::pull`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jt808Event {
    Message(Jt808Message),
    /// One part of a sub-packaged message was stored (it still needs a reply).
    Part(Header),
    /// A frame was dropped.
    Error(Jt808Error),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jt808Counters {
    pub frames: u64,
    pub messages: u64,
    pub bad_checksum: u64,
    /// Frames dropped for reasons other than the checksum.
    pub bad_frames: u64,
    /// Bytes before the first 0x7e of the stream.
    pub skipped_bytes: u64,
}

#[derive(Debug)]
struct Assembly {
    total: u16,
    parts: HashMap<u16, Bytes>,
    bytes: usize,
    first_header: Option<Header>,
    age: u64,
}

/// Sans-IO JT/T 808 frame parser with sub-package reassembly.
#[derive(Debug)]
pub struct Jt808Parser {
    buf: BytesMut,
    started: bool,
    frame: BytesMut,
    overflow: bool,
    max_frame: usize,
    max_message: usize,
    assemblies: HashMap<(String, u16), Assembly>,
    clock: u64,
    counters: Jt808Counters,
}

impl Default for Jt808Parser {
    fn default() -> Self {
        Self::new()
    }
}

/// XOR of all bytes (the JT/T 808 check code).
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0, |a, b| a ^ b)
}

/// Undoes 0x7d escaping.
pub fn unescape(raw: &[u8]) -> Result<Vec<u8>, Jt808Error> {
    let mut out = Vec::with_capacity(raw.len());
    let mut it = raw.iter();
    while let Some(&b) = it.next() {
        if b == ESC {
            match it.next() {
                Some(1) => out.push(ESC),
                Some(2) => out.push(FLAG),
                Some(&o) => return Err(Jt808Error::BadEscape(o)),
                None => return Err(Jt808Error::BadEscape(0)),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// Escapes `data` and appends it to `out`.
pub fn escape_into(data: &[u8], out: &mut BytesMut) {
    for &b in data {
        match b {
            FLAG => out.put_slice(&[ESC, 0x02]),
            ESC => out.put_slice(&[ESC, 0x01]),
            _ => out.put_u8(b),
        }
    }
}

impl Jt808Parser {
    pub fn new() -> Self {
        Jt808Parser {
            buf: BytesMut::new(),
            started: false,
            frame: BytesMut::new(),
            overflow: false,
            max_frame: DEFAULT_MAX_FRAME,
            max_message: DEFAULT_MAX_MESSAGE,
            assemblies: HashMap::new(),
            clock: 0,
            counters: Jt808Counters::default(),
        }
    }

    pub fn counters(&self) -> &Jt808Counters {
        &self.counters
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    fn take_into_frame(&mut self, n: usize) {
        if self.overflow || self.frame.len() + n > self.max_frame {
            self.overflow = true;
            self.frame.clear();
        } else {
            self.frame.extend_from_slice(&self.buf[..n]);
        }
        self.buf.advance(n);
    }

    pub fn pull(&mut self) -> Option<Jt808Event> {
        loop {
            let Some(i) = memchr::memchr(FLAG, &self.buf) else {
                let n = self.buf.len();
                if self.started {
                    self.take_into_frame(n);
                } else {
                    self.counters.skipped_bytes += n as u64;
                    self.buf.clear();
                }
                return None;
            };
            if !self.started {
                self.counters.skipped_bytes += i as u64;
                self.buf.advance(i + 1);
                self.started = true;
                continue;
            }
            self.take_into_frame(i);
            self.buf.advance(1);
            if std::mem::take(&mut self.overflow) {
                self.counters.bad_frames += 1;
                return Some(Jt808Event::Error(Jt808Error::TooLong(self.max_frame)));
            }
            if self.frame.is_empty() {
                // Back-to-back 7e 7e between frames.
                continue;
            }
            let raw = self.frame.split();
            self.counters.frames += 1;
            let ev = match self.process(&raw) {
                Ok(Some(ev)) => ev,
                Ok(None) => continue,
                Err(e) => {
                    if matches!(e, Jt808Error::BadChecksum { .. }) {
                        self.counters.bad_checksum += 1;
                    } else {
                        self.counters.bad_frames += 1;
                    }
                    debug!(error = %e, "jt808 frame dropped");
                    Jt808Event::Error(e)
                }
            };
            if matches!(ev, Jt808Event::Message(_)) {
                self.counters.messages += 1;
            }
            return Some(ev);
        }
    }

    fn process(&mut self, raw: &[u8]) -> Result<Option<Jt808Event>, Jt808Error> {
        let data = unescape(raw)?;
        if data.len() < 13 {
            return Err(Jt808Error::TooShort(data.len()));
        }
        let (content, sum) = data.split_at(data.len() - 1);
        let computed = checksum(content);
        if computed != sum[0] {
            return Err(Jt808Error::BadChecksum {
                computed,
                found: sum[0],
            });
        }
        let (header, hlen, body_len) = parse_header(content)?;
        if content.len() != hlen + body_len {
            return Err(Jt808Error::LengthMismatch {
                declared: body_len,
                actual: content.len().saturating_sub(hlen),
            });
        }
        let body = Bytes::copy_from_slice(&content[hlen..]);
        match header.subpackage {
            None => Ok(Some(Jt808Event::Message(Jt808Message { header, body }))),
            Some((total, index)) => self.assemble(header, total, index, body),
        }
    }

    fn assemble(
        &mut self,
        header: Header,
        total: u16,
        index: u16,
        body: Bytes,
    ) -> Result<Option<Jt808Event>, Jt808Error> {
        if total == 0 || index == 0 || index > total {
            return Err(Jt808Error::BadSubPackage { index, total });
        }
        self.clock += 1;
        let key = (header.phone.clone(), header.msg_id);
        if !self.assemblies.contains_key(&key) && self.assemblies.len() >= MAX_ASSEMBLIES {
            // Evict the stalest assembly: a device that never finishes one
            // must not grow our memory.
            if let Some(old) = self
                .assemblies
                .iter()
                .min_by_key(|(_, a)| a.age)
                .map(|(k, _)| k.clone())
            {
                self.assemblies.remove(&old);
            }
        }
        let a = self.assemblies.entry(key.clone()).or_insert(Assembly {
            total,
            parts: HashMap::new(),
            bytes: 0,
            first_header: None,
            age: 0,
        });
        if a.total != total {
            // A new message with a different split replaces the stale one.
            *a = Assembly {
                total,
                parts: HashMap::new(),
                bytes: 0,
                first_header: None,
                age: 0,
            };
        }
        a.age = self.clock;
        if index == 1 {
            a.first_header = Some(header.clone());
        }
        a.bytes += body.len();
        if let Some(old) = a.parts.insert(index, body) {
            a.bytes -= old.len();
        }
        if a.bytes > self.max_message {
            self.assemblies.remove(&key);
            return Err(Jt808Error::MessageTooLong(self.max_message));
        }
        if a.parts.len() < total as usize {
            return Ok(Some(Jt808Event::Part(header)));
        }
        let a = self.assemblies.remove(&key).expect("present");
        let mut body = BytesMut::with_capacity(a.bytes);
        for i in 1..=total {
            body.extend_from_slice(&a.parts[&i]);
        }
        // The reply goes to the part that completed the message; the rest of
        // the header (version, phone) is the same on every part.
        Ok(Some(Jt808Event::Message(Jt808Message {
            header,
            body: body.freeze(),
        })))
    }
}

/// Parses a header from unescaped content; returns it, its length and the
/// declared body length.
pub fn parse_header(c: &[u8]) -> Result<(Header, usize, usize), Jt808Error> {
    let u16_at = |o: usize| u16::from_be_bytes([c[o], c[o + 1]]);
    let msg_id = u16_at(0);
    let attrs = u16_at(2);
    let body_len = (attrs & 0x03ff) as usize;
    let encryption = ((attrs >> 10) & 0x7) as u8;
    let sub = attrs & (1 << 13) != 0;
    let v2019 = attrs & (1 << 14) != 0;
    let (version, phone_len, mut o) = if v2019 {
        (Some(c[4]), 10, 5)
    } else {
        (None, 6, 4)
    };
    let need = o + phone_len + 2 + if sub { 4 } else { 0 };
    if c.len() < need {
        return Err(Jt808Error::TooShort(c.len()));
    }
    let phone = bcd::to_string(&c[o..o + phone_len]);
    o += phone_len;
    let serial = u16_at(o);
    o += 2;
    let subpackage = if sub {
        let t = (u16_at(o), u16_at(o + 2));
        o += 4;
        Some(t)
    } else {
        None
    };
    Ok((
        Header {
            msg_id,
            encryption,
            version,
            phone,
            serial,
            subpackage,
        },
        o,
        body_len,
    ))
}

/// The header fields of an outgoing message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutHeader<'a> {
    pub msg_id: u16,
    /// Phone digits; padded to 12 (2013) or 20 (2019) digits.
    pub phone: &'a str,
    pub serial: u16,
    /// `Some(version)` writes a 2019 header.
    pub version: Option<u8>,
    /// `(total, index)` for a sub-package.
    pub subpackage: Option<(u16, u16)>,
}

/// Encodes one complete frame (header, body, checksum, escaping, flags) and
/// appends it to `out`. Bodies over 1023 bytes must be split by the caller.
pub fn encode_frame(h: &OutHeader<'_>, body: &[u8], out: &mut BytesMut) {
    assert!(body.len() <= 0x3ff, "JT/T 808 body over 1023 bytes");
    let mut raw = Vec::with_capacity(body.len() + 22);
    raw.put_u16(h.msg_id);
    let mut attrs = body.len() as u16;
    if h.subpackage.is_some() {
        attrs |= 1 << 13;
    }
    if h.version.is_some() {
        attrs |= 1 << 14;
    }
    raw.put_u16(attrs);
    let mut phone = [0u8; 10];
    let phone = match h.version {
        Some(v) => {
            raw.put_u8(v);
            &mut phone[..10]
        }
        None => &mut phone[..6],
    };
    if bcd::encode_into(h.phone, phone).is_none() {
        // Unencodable phone strings cannot come from a parsed header; keep
        // zeros rather than panic in a daemon.
        debug!(phone = h.phone, "jt808 phone not BCD-encodable");
    }
    raw.put_slice(phone);
    raw.put_u16(h.serial);
    if let Some((t, i)) = h.subpackage {
        raw.put_u16(t);
        raw.put_u16(i);
    }
    raw.put_slice(body);
    let sum = checksum(&raw);
    raw.push(sum);
    out.reserve(raw.len() * 2 + 2);
    out.put_u8(FLAG);
    escape_into(&raw, out);
    out.put_u8(FLAG);
}

// ---------------------------------------------------------------- bodies

/// 0x0100 terminal registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub province: u16,
    pub city: u16,
    pub maker_id: String,
    pub model: String,
    pub terminal_id: String,
    pub plate_color: u8,
    /// GBK in the wire format; non-UTF-8 bytes are replaced.
    pub plate: String,
}

fn text(b: &[u8]) -> String {
    let end = b
        .iter()
        .rposition(|&c| c != 0 && c != b' ')
        .map_or(0, |i| i + 1);
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn put_fixed(out: &mut Vec<u8>, s: &str, n: usize) {
    let b = s.as_bytes();
    let k = b.len().min(n);
    out.extend_from_slice(&b[..k]);
    out.resize(out.len() + (n - k), 0);
}

impl Register {
    /// Field widths: 2019 (11/30/30), 2013 (5/20/7), 2011 (5/8/7).
    fn widths(v2019: bool, body_len: usize) -> (usize, usize, usize) {
        if v2019 {
            (11, 30, 30)
        } else if body_len >= 37 {
            (5, 20, 7)
        } else {
            (5, 8, 7)
        }
    }

    pub fn decode(body: &[u8], v2019: bool) -> Result<Self, Jt808Error> {
        let (m, md, t) = Self::widths(v2019, body.len());
        let need = 4 + m + md + t + 1;
        if body.len() < need {
            return Err(Jt808Error::BadBody {
                msg_id: msg::REGISTER,
                what: "register body too short",
            });
        }
        let mut o = 4;
        let mut field = |n: usize| {
            let s = text(&body[o..o + n]);
            o += n;
            s
        };
        let maker_id = field(m);
        let model = field(md);
        let terminal_id = field(t);
        Ok(Register {
            province: u16::from_be_bytes([body[0], body[1]]),
            city: u16::from_be_bytes([body[2], body[3]]),
            maker_id,
            model,
            terminal_id,
            plate_color: body[need - 1],
            plate: text(&body[need..]),
        })
    }

    pub fn encode(&self, v2019: bool) -> Vec<u8> {
        let (m, md, t) = Self::widths(v2019, 37);
        let mut out = Vec::new();
        out.put_u16(self.province);
        out.put_u16(self.city);
        put_fixed(&mut out, &self.maker_id, m);
        put_fixed(&mut out, &self.model, md);
        put_fixed(&mut out, &self.terminal_id, t);
        out.push(self.plate_color);
        out.extend_from_slice(self.plate.as_bytes());
        out
    }
}

/// 0x0102 terminal authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub code: String,
    /// 2019 only.
    pub imei: Option<String>,
    /// 2019 only.
    pub software_version: Option<String>,
}

impl Authenticate {
    pub fn decode(body: &[u8], v2019: bool) -> Result<Self, Jt808Error> {
        if !v2019 {
            return Ok(Authenticate {
                code: text(body),
                imei: None,
                software_version: None,
            });
        }
        let bad = Jt808Error::BadBody {
            msg_id: msg::AUTHENTICATE,
            what: "2019 authenticate body too short",
        };
        let n = *body.first().ok_or(bad.clone())? as usize;
        if body.len() < 1 + n + 15 + 20 {
            return Err(bad);
        }
        Ok(Authenticate {
            code: text(&body[1..1 + n]),
            imei: Some(text(&body[1 + n..16 + n])),
            software_version: Some(text(&body[16 + n..36 + n])),
        })
    }

    pub fn encode(&self, v2019: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if v2019 {
            out.push(self.code.len() as u8);
            out.extend_from_slice(self.code.as_bytes());
            put_fixed(&mut out, self.imei.as_deref().unwrap_or(""), 15);
            put_fixed(&mut out, self.software_version.as_deref().unwrap_or(""), 20);
        } else {
            out.extend_from_slice(self.code.as_bytes());
        }
        out
    }
}

/// Status bit 2: latitude is south.
pub const STATUS_SOUTH: u32 = 1 << 2;
/// Status bit 3: longitude is west.
pub const STATUS_WEST: u32 = 1 << 3;

/// 0x0200 location report (also the items of 0x0704).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub alarm: u32,
    pub status: u32,
    /// Signed micro-degrees (negative south), from the unsigned field and
    /// status bit 2.
    pub lat_e6: i64,
    /// Signed micro-degrees (negative west), from status bit 3.
    pub lon_e6: i64,
    pub altitude_m: u16,
    /// 0.1 km/h.
    pub speed_dkmh: u16,
    /// Degrees 0..359 from north.
    pub heading: u16,
    /// Device time (sent as BCD in UTC+8) as Unix ms UTC; `None` if invalid.
    pub time_ms: Option<i64>,
    /// The raw BCD time, kept for re-encoding and diagnostics.
    pub time_bcd: [u8; 6],
    /// Additional information items (id, value).
    pub extras: Vec<(u8, Bytes)>,
}

/// Offset of the device clock (China Standard Time) from UTC.
const UTC8_MS: i64 = 8 * 3600 * 1000;

/// `YYMMDDhhmmss` BCD in UTC+8 -> Unix ms UTC.
pub fn bcd_time_to_unix_ms(t: &[u8; 6]) -> Option<i64> {
    let v: Vec<u32> = t
        .iter()
        .map(|&b| bcd::byte(b).map(u32::from))
        .collect::<Option<_>>()?;
    let date = chrono::NaiveDate::from_ymd_opt(2000 + v[0] as i32, v[1], v[2])?;
    let dt = date.and_hms_opt(v[3], v[4], v[5])?;
    Some(dt.and_utc().timestamp_millis() - UTC8_MS)
}

/// First and last instants `YYMMDDhhmmss` (years 2000-2099 in UTC+8) can
/// name, in Unix ms UTC.
const BCD_TIME_MIN_MS: i64 = 946_684_800_000 - UTC8_MS;
const BCD_TIME_MAX_MS: i64 = 4_102_444_799_999 - UTC8_MS;

/// Unix ms UTC -> `YYMMDDhhmmss` BCD in UTC+8, or `None` outside the years
/// 2000-2099 the field can hold (a two-digit year would silently wrap, and
/// `ms + 8 h` overflows near `i64::MAX`).
pub fn checked_unix_ms_to_bcd_time(ms: i64) -> Option<[u8; 6]> {
    (BCD_TIME_MIN_MS..=BCD_TIME_MAX_MS)
        .contains(&ms)
        .then(|| unix_ms_to_bcd_time(ms))
}

/// Unix ms UTC -> `YYMMDDhhmmss` BCD in UTC+8, saturating to the first or
/// last second of 2000-2099 outside that range (never overflows; callers
/// taking times from outside use [`checked_unix_ms_to_bcd_time`] to refuse
/// them instead).
pub fn unix_ms_to_bcd_time(ms: i64) -> [u8; 6] {
    use chrono::{Datelike, Timelike};
    let ms = ms.clamp(BCD_TIME_MIN_MS, BCD_TIME_MAX_MS);
    let dt = chrono::DateTime::from_timestamp_millis(ms + UTC8_MS)
        .unwrap_or_default()
        .naive_utc();
    [
        (dt.year() % 100) as u8,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
    ]
    .map(bcd::to_byte)
}

impl Location {
    pub fn lat(&self) -> f64 {
        self.lat_e6 as f64 / 1e6
    }
    pub fn lon(&self) -> f64 {
        self.lon_e6 as f64 / 1e6
    }
    pub fn speed_kmh(&self) -> f64 {
        self.speed_dkmh as f64 / 10.0
    }

    /// Builds a location from signed coordinates (sets the south/west bits).
    pub fn new(lat_e6: i64, lon_e6: i64, speed_dkmh: u16, heading: u16, time_ms: i64) -> Self {
        let mut status = 0x0000_0003; // ACC on, positioned
        if lat_e6 < 0 {
            status |= STATUS_SOUTH;
        }
        if lon_e6 < 0 {
            status |= STATUS_WEST;
        }
        let time_bcd = unix_ms_to_bcd_time(time_ms);
        Location {
            alarm: 0,
            status,
            lat_e6,
            lon_e6,
            altitude_m: 0,
            speed_dkmh,
            heading,
            time_ms: bcd_time_to_unix_ms(&time_bcd),
            time_bcd,
            extras: Vec::new(),
        }
    }

    pub fn decode(body: &[u8]) -> Result<Self, Jt808Error> {
        if body.len() < 28 {
            return Err(Jt808Error::BadBody {
                msg_id: msg::LOCATION,
                what: "location body shorter than 28 bytes",
            });
        }
        let u32_at = |o: usize| u32::from_be_bytes(body[o..o + 4].try_into().expect("4 bytes"));
        let u16_at = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
        let status = u32_at(4);
        let lat = u32_at(8) as i64;
        let lon = u32_at(12) as i64;
        let mut time_bcd = [0u8; 6];
        time_bcd.copy_from_slice(&body[22..28]);
        let mut extras = Vec::new();
        let mut o = 28;
        while o + 2 <= body.len() {
            let (id, len) = (body[o], body[o + 1] as usize);
            if o + 2 + len > body.len() {
                return Err(Jt808Error::BadBody {
                    msg_id: msg::LOCATION,
                    what: "additional item overruns body",
                });
            }
            extras.push((id, Bytes::copy_from_slice(&body[o + 2..o + 2 + len])));
            o += 2 + len;
        }
        Ok(Location {
            alarm: u32_at(0),
            status,
            lat_e6: if status & STATUS_SOUTH != 0 {
                -lat
            } else {
                lat
            },
            lon_e6: if status & STATUS_WEST != 0 { -lon } else { lon },
            altitude_m: u16_at(16),
            speed_dkmh: u16_at(18),
            heading: u16_at(20),
            time_ms: bcd_time_to_unix_ms(&time_bcd),
            time_bcd,
            extras,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(28);
        out.put_u32(self.alarm);
        out.put_u32(self.status);
        out.put_u32(self.lat_e6.unsigned_abs() as u32);
        out.put_u32(self.lon_e6.unsigned_abs() as u32);
        out.put_u16(self.altitude_m);
        out.put_u16(self.speed_dkmh);
        out.put_u16(self.heading);
        out.put_slice(&self.time_bcd);
        for (id, v) in &self.extras {
            out.put_u8(*id);
            out.put_u8(v.len() as u8);
            out.put_slice(v);
        }
        out
    }
}

/// 0x0704 batched locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationBatch {
    /// 0 normal, 1 blind-area backfill.
    pub kind: u8,
    pub items: Vec<Location>,
}

impl LocationBatch {
    pub fn decode(body: &[u8]) -> Result<Self, Jt808Error> {
        let bad = |what| Jt808Error::BadBody {
            msg_id: msg::LOCATION_BATCH,
            what,
        };
        if body.len() < 3 {
            return Err(bad("batch body too short"));
        }
        let n = u16::from_be_bytes([body[0], body[1]]) as usize;
        let mut items = Vec::with_capacity(n.min(64));
        let mut o = 3;
        for _ in 0..n {
            if o + 2 > body.len() {
                return Err(bad("batch truncated"));
            }
            let len = u16::from_be_bytes([body[o], body[o + 1]]) as usize;
            o += 2;
            if o + len > body.len() {
                return Err(bad("batch item overruns body"));
            }
            items.push(Location::decode(&body[o..o + len])?);
            o += len;
        }
        Ok(LocationBatch {
            kind: body[2],
            items,
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.put_u16(self.items.len() as u16);
        out.put_u8(self.kind);
        for l in &self.items {
            let b = l.encode();
            out.put_u16(b.len() as u16);
            out.put_slice(&b);
        }
        out
    }
}

/// 0x0001 terminal general reply / 0x8001 platform general reply body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneralReply {
    pub serial: u16,
    pub msg_id: u16,
    pub result: u8,
}

impl GeneralReply {
    pub fn decode(body: &[u8], msg_id: u16) -> Result<Self, Jt808Error> {
        if body.len() < 5 {
            return Err(Jt808Error::BadBody {
                msg_id,
                what: "general reply shorter than 5 bytes",
            });
        }
        Ok(GeneralReply {
            serial: u16::from_be_bytes([body[0], body[1]]),
            msg_id: u16::from_be_bytes([body[2], body[3]]),
            result: body[4],
        })
    }
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5);
        out.put_u16(self.serial);
        out.put_u16(self.msg_id);
        out.put_u8(self.result);
        out
    }
}

/// 0x8100 register reply body: the device's serial, result, and the auth
/// code on success.
pub fn register_reply_body(serial: u16, result: u8, auth_code: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.put_u16(serial);
    out.put_u8(result);
    if result == 0 {
        out.put_slice(auth_code.as_bytes());
    }
    out
}

/// Decoded device message bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Register(Register),
    Authenticate(Authenticate),
    Heartbeat,
    Location(Location),
    LocationBatch(LocationBatch),
    TerminalReply(GeneralReply),
    Unknown(u16),
}

/// Decodes the body of a device message.
pub fn decode_body(m: &Jt808Message) -> Result<Body, Jt808Error> {
    let v2019 = m.header.version.is_some();
    Ok(match m.header.msg_id {
        msg::REGISTER => Body::Register(Register::decode(&m.body, v2019)?),
        msg::AUTHENTICATE => Body::Authenticate(Authenticate::decode(&m.body, v2019)?),
        msg::HEARTBEAT => Body::Heartbeat,
        msg::LOCATION => Body::Location(Location::decode(&m.body)?),
        msg::LOCATION_BATCH => Body::LocationBatch(LocationBatch::decode(&m.body)?),
        msg::TERMINAL_REPLY => {
            Body::TerminalReply(GeneralReply::decode(&m.body, msg::TERMINAL_REPLY)?)
        }
        other => Body::Unknown(other),
    })
}

// ------------------------------------------------------ platform commands

/// Platform -> device commands (JT/T 1078-2016 tables 17, 19, 24).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlatformCommand {
    /// 0x9101: open a media connection to `ip:tcp_port`.
    Live {
        ip: String,
        tcp_port: u16,
        udp_port: u16,
        channel: u8,
        /// 0 audio+video, 1 video, 2 two-way talk, 3 listen, 4 broadcast, 5 transparent.
        data_type: u8,
        /// 0 main stream, 1 sub stream.
        stream_type: u8,
    },
    /// 0x9102: live media control.
    Control {
        channel: u8,
        /// 0 close, 1 switch stream, 2 pause, 3 resume, 4 close two-way talk.
        command: u8,
        /// 0 close audio and video, 1 close audio, 2 close video.
        close_type: u8,
        /// 0 main stream, 1 sub stream.
        stream_type: u8,
    },
    /// 0x9201: play back a recording to `ip:tcp_port`.
    Playback {
        ip: String,
        tcp_port: u16,
        udp_port: u16,
        channel: u8,
        /// 0 audio+video, 1 audio, 2 video, 3 video or audio+video.
        av_type: u8,
        /// 0 main or sub, 1 main, 2 sub.
        stream_type: u8,
        /// 0 all, 1 main storage, 2 disaster-recovery storage.
        storage_type: u8,
        /// 0 normal, 1 fast forward, 2 key-frame rewind, 3 key-frame play, 4 single frame.
        mode: u8,
        speed: u8,
        /// Unix ms UTC (sent as BCD UTC+8).
        start_ms: i64,
        end_ms: i64,
    },
}

impl PlatformCommand {
    pub fn msg_id(&self) -> u16 {
        match self {
            PlatformCommand::Live { .. } => msg::LIVE_REQUEST,
            PlatformCommand::Control { .. } => msg::LIVE_CONTROL,
            PlatformCommand::Playback { .. } => msg::PLAYBACK_REQUEST,
        }
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            PlatformCommand::Live {
                ip,
                tcp_port,
                udp_port,
                channel,
                data_type,
                stream_type,
            } => {
                out.put_u8(ip.len() as u8);
                out.put_slice(ip.as_bytes());
                out.put_u16(*tcp_port);
                out.put_u16(*udp_port);
                out.put_slice(&[*channel, *data_type, *stream_type]);
            }
            PlatformCommand::Control {
                channel,
                command,
                close_type,
                stream_type,
            } => out.put_slice(&[*channel, *command, *close_type, *stream_type]),
            PlatformCommand::Playback {
                ip,
                tcp_port,
                udp_port,
                channel,
                av_type,
                stream_type,
                storage_type,
                mode,
                speed,
                start_ms,
                end_ms,
            } => {
                out.put_u8(ip.len() as u8);
                out.put_slice(ip.as_bytes());
                out.put_u16(*tcp_port);
                out.put_u16(*udp_port);
                out.put_slice(&[
                    *channel,
                    *av_type,
                    *stream_type,
                    *storage_type,
                    *mode,
                    *speed,
                ]);
                out.put_slice(&unix_ms_to_bcd_time(*start_ms));
                out.put_slice(&unix_ms_to_bcd_time(*end_ms));
            }
        }
        out
    }
}

// --------------------------------------------------------------- session

/// Derives a device's auth code from a per-server secret, so a device that
/// registered before a restart can still authenticate. FNV-1a: this is an
/// identifier the device echoes back, not a cryptographic credential.
pub fn auth_code(secret: &str, phone: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in secret.bytes().chain([0u8]).chain(phone.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

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
    pub fn new(secret: &str) -> Self {
        Jt808Session {
            parser: Jt808Parser::new(),
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
            &cmd.encode_body(),
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
            let body = match decode_body(&msg) {
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
                Body::Unknown(msg_id) => {
                    self.general(h, result::UNSUPPORTED, out);
                    SessionEvent::Unsupported { sim, msg_id }
                }
            };
            return Some(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_roundtrip() {
        let data = [0x30, 0x7e, 0x08, 0x7d, 0x55];
        let mut out = BytesMut::new();
        escape_into(&data, &mut out);
        assert_eq!(&out[..], &[0x30, 0x7d, 0x02, 0x08, 0x7d, 0x01, 0x55]);
        assert_eq!(unescape(&out).unwrap(), data);
        assert_eq!(unescape(&[0x7d, 0x03]), Err(Jt808Error::BadEscape(3)));
    }

    #[test]
    fn bcd_time() {
        // 2024-02-29 08:00:00 UTC+8 == 2024-02-29 00:00:00 UTC.
        let t = [0x24, 0x02, 0x29, 0x08, 0x00, 0x00];
        assert_eq!(bcd_time_to_unix_ms(&t), Some(1_709_164_800_000));
        assert_eq!(unix_ms_to_bcd_time(1_709_164_800_000), t);
        assert_eq!(bcd_time_to_unix_ms(&[0x24, 0x02, 0x30, 0, 0, 0]), None);
        assert_eq!(bcd_time_to_unix_ms(&[0x24, 0x0a, 0x01, 0, 0, 0]), None);
    }

    /// Regression: `ms + UTC8_MS` overflowed for a playback time near
    /// `i64::MAX` from the control API (a panic in debug builds, a wrap to
    /// 1970 in release); years outside 2000-2099 wrapped modulo 100.
    #[test]
    fn bcd_time_saturates_and_checked_refuses_out_of_range() {
        let last = [0x99, 0x12, 0x31, 0x23, 0x59, 0x59];
        let first = [0x00, 0x01, 0x01, 0x00, 0x00, 0x00];
        assert_eq!(unix_ms_to_bcd_time(i64::MAX), last);
        assert_eq!(unix_ms_to_bcd_time(i64::MAX - 1), last);
        assert_eq!(unix_ms_to_bcd_time(i64::MIN), first);
        assert_eq!(unix_ms_to_bcd_time(0), first);
        assert_eq!(checked_unix_ms_to_bcd_time(i64::MAX), None);
        assert_eq!(checked_unix_ms_to_bcd_time(i64::MIN), None);
        assert_eq!(checked_unix_ms_to_bcd_time(0), None);
        // 2100-01-01 00:00:00 UTC+8 is one ms past the range.
        assert_eq!(checked_unix_ms_to_bcd_time(BCD_TIME_MAX_MS + 1), None);
        assert_eq!(checked_unix_ms_to_bcd_time(BCD_TIME_MAX_MS), Some(last));
        assert_eq!(checked_unix_ms_to_bcd_time(BCD_TIME_MIN_MS), Some(first));
        assert_eq!(bcd_time_to_unix_ms(&last), Some(BCD_TIME_MAX_MS - 999));
        assert_eq!(bcd_time_to_unix_ms(&first), Some(BCD_TIME_MIN_MS));
        assert_eq!(
            checked_unix_ms_to_bcd_time(1_709_164_800_000),
            Some([0x24, 0x02, 0x29, 0x08, 0x00, 0x00])
        );
    }

    #[test]
    fn location_roundtrip_south_west() {
        let l = Location::new(-33_856_784, -70_651_234, 657, 271, 1_700_000_000_000);
        assert_eq!(
            l.status & (STATUS_SOUTH | STATUS_WEST),
            STATUS_SOUTH | STATUS_WEST
        );
        let d = Location::decode(&l.encode()).unwrap();
        assert_eq!(d, l);
        assert_eq!(d.time_ms, Some(1_700_000_000_000));
        assert_eq!(d.lat(), -33.856784);
    }

    #[test]
    fn chunking_invariance() {
        let mut wire = BytesMut::new();
        for serial in 0..20u16 {
            let body =
                Location::new(30_000_000 + serial as i64 * 0x7e7d, 120_000_000, 0, 0, 0).encode();
            encode_frame(
                &OutHeader {
                    msg_id: msg::LOCATION,
                    phone: "13800000001",
                    serial,
                    version: if serial % 2 == 0 { None } else { Some(1) },
                    subpackage: None,
                },
                &body,
                &mut wire,
            );
            if serial == 7 {
                wire.extend_from_slice(b"junk\x7e\x7e\x7d");
            }
        }
        let run = |chunk: usize| {
            let mut p = Jt808Parser::new();
            let mut ev = Vec::new();
            for c in wire.chunks(chunk) {
                p.push(c);
                while let Some(e) = p.pull() {
                    ev.push(e);
                }
            }
            (ev, *p.counters())
        };
        let all = run(wire.len());
        assert_eq!(
            all.0
                .iter()
                .filter(|e| matches!(e, Jt808Event::Message(_)))
                .count(),
            20
        );
        for n in [1, 2, 3, 7, 64] {
            assert_eq!(run(n), all);
        }
    }
}
