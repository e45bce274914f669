//! The message header, incoming ([`Header`], [`parse_header`]) and outgoing
//! ([`OutHeader`]): 2013 layout with a 6-byte BCD phone, 2019 layout with a
//! version byte and a 10-byte BCD phone, optional sub-package fields.

use super::Jt808Error;
use crate::bcd;

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
