//! Dispatch of a device message to its body decoder by message id
//! ([`decode_body`] yielding a [`Body`]).

use super::{
    msg, Authenticate, GeneralReply, Jt808Error, Jt808Message, Location, LocationBatch, Register,
};

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
