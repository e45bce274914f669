//! Framing: the sans-IO [`Jt808Parser`] (cuts frames at 0x7e, undoes 0x7d
//! escaping, checks the XOR checksum and the declared length, reassembles
//! sub-packaged messages) and [`encode_frame`], its outgoing counterpart.
//!
//! Frames are cut only at 0x7e bytes, which is what makes the parser's output
//! independent of how the input is chunked.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tracing::debug;

use super::{parse_header, Header, Jt808Error, OutHeader};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jt808::{msg, Location};

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
