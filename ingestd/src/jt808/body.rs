//! Dispatch of a device message to its body decoder by message id
//! ([`decode_body`] yielding a [`Body`]).

use super::{
    msg, Authenticate, DeviceClock, GeneralReply, Jt808Error, Jt808Message, Location,
    LocationBatch, Register, ResourceList,
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
    ResourceList(ResourceList),
    Unknown(u16),
}

/// Decodes the body of a device message whose clock runs at UTC+8.
pub fn decode_body(m: &Jt808Message) -> Result<Body, Jt808Error> {
    decode_body_in(m, DeviceClock::UTC8)
}

/// Decodes the body of a device message, reading its BCD times in `clock`.
pub fn decode_body_in(m: &Jt808Message, clock: DeviceClock) -> Result<Body, Jt808Error> {
    let in_zone = |mut l: Location| {
        l.time_ms = clock.to_unix_ms(&l.time_bcd);
        l
    };
    let v2019 = m.header.version.is_some();
    Ok(match m.header.msg_id {
        msg::REGISTER => Body::Register(Register::decode(&m.body, v2019)?),
        msg::AUTHENTICATE => Body::Authenticate(Authenticate::decode(&m.body, v2019)?),
        msg::HEARTBEAT => Body::Heartbeat,
        msg::LOCATION => Body::Location(in_zone(Location::decode(&m.body)?)),
        msg::LOCATION_BATCH => {
            let mut b = LocationBatch::decode(&m.body)?;
            b.items = b.items.into_iter().map(in_zone).collect();
            Body::LocationBatch(b)
        }
        msg::RESOURCE_LIST => Body::ResourceList(ResourceList::decode(&m.body, clock)?),
        msg::TERMINAL_REPLY => {
            Body::TerminalReply(GeneralReply::decode(&m.body, msg::TERMINAL_REPLY)?)
        }
        other => Body::Unknown(other),
    })
}
