//! Registration and authentication: 0x0100 terminal registration
//! ([`Register`]), the 0x8100 reply carrying the auth code
//! ([`register_reply_body`]), 0x0102 terminal authentication
//! ([`Authenticate`]), and how auth codes are derived ([`auth_code`]).

use bytes::BufMut;

use super::{msg, Jt808Error};

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

/// Derives a device's auth code from the platform secret (persistent, so a
/// device that registered before a restart still authenticates, on any
/// node sharing the secret). The code is the credential 0x0102 checks, so
/// it is a MAC: HMAC-SHA256(secret, SIM), the first 16 bytes in hex
/// (32 characters, within the 2019 format's length-prefixed field and the
/// 2013 format's free-length one). Nobody can derive another SIM's code
/// from their own.
pub fn auth_code(secret: &str, phone: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(phone.as_bytes());
    let tag = mac.finalize().into_bytes();
    tag[..16].iter().map(|b| format!("{b:02x}")).collect()
}
