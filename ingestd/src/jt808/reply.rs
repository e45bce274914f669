//! The general reply: 0x0001 from the terminal, 0x8001 from the platform
//! ([`GeneralReply`]), and its [`result`] codes.

use bytes::BufMut;

use super::Jt808Error;

/// Results of a 0x8001 platform general reply.
pub mod result {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const MESSAGE_ERROR: u8 = 2;
    pub const UNSUPPORTED: u8 = 3;
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
