//! The device's recordings: the 0x1205 answer to a 0x9205 query (or to a
//! 0x9201 playback request), [`ResourceList`], a list of [`Resource`]s.
//!
//! Entries are 28 bytes as JT/T 1078-2016 table 29 gives them (64-bit alarm
//! flags). Some devices send 24-byte entries (32-bit alarm flags, as one
//! widely used platform library reads them); the entry size follows from
//! the body length and the count, so both are accepted. Long lists arrive
//! in 808 sub-packages, which the frame parser reassembles first.

use bytes::BufMut;

use super::{msg, DeviceClock, Jt808Error};

/// One recording on the device (JT/T 1078-2016 table 29).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resource {
    pub channel: u8,
    /// Unix ms UTC (BCD device time on the wire).
    pub start_ms: i64,
    pub end_ms: i64,
    /// Low 32 bits: the 0x0200 alarm word; high 32: the video alarms.
    pub alarm: u64,
    /// 0 audio+video, 1 audio, 2 video, 3 audio or video.
    pub av_type: u8,
    /// 1 main, 2 sub.
    pub stream_type: u8,
    /// 1 main storage, 2 backup storage.
    pub storage_type: u8,
    /// Bytes.
    pub size: u32,
}

/// 0x1205: the recordings matching a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceList {
    /// Serial of the 0x9205 (or 0x9201) this answers.
    pub serial: u16,
    pub items: Vec<Resource>,
}

/// Entry size with 64-bit alarm flags (the standard's).
pub const RESOURCE_ENTRY_BYTES: usize = 28;
/// Entry size with 32-bit alarm flags (seen in the field).
const SHORT_ENTRY_BYTES: usize = 24;
/// Serial and count.
const LIST_HEADER_BYTES: usize = 6;

impl ResourceList {
    pub fn decode(body: &[u8], clock: DeviceClock) -> Result<Self, Jt808Error> {
        let bad = |what| Jt808Error::BadBody {
            msg_id: msg::RESOURCE_LIST,
            what,
        };
        if body.len() < LIST_HEADER_BYTES {
            return Err(bad("resource list shorter than 6 bytes"));
        }
        let serial = u16::from_be_bytes([body[0], body[1]]);
        let count = u32::from_be_bytes(body[2..6].try_into().expect("4 bytes")) as usize;
        let entries = &body[LIST_HEADER_BYTES..];
        let entry = match count {
            0 if entries.is_empty() => RESOURCE_ENTRY_BYTES,
            0 => return Err(bad("resource list of 0 entries has trailing bytes")),
            n if entries.len() == n.saturating_mul(RESOURCE_ENTRY_BYTES) => RESOURCE_ENTRY_BYTES,
            n if entries.len() == n.saturating_mul(SHORT_ENTRY_BYTES) => SHORT_ENTRY_BYTES,
            _ => return Err(bad("resource count does not match the body length")),
        };
        let items = entries
            .chunks_exact(entry)
            .map(|e| {
                let time = |t: &[u8]| clock.to_unix_ms(t.try_into().expect("6 bytes"));
                let start_ms = time(&e[1..7]).ok_or(bad("resource start time is not a date"))?;
                let end_ms = time(&e[7..13]).ok_or(bad("resource end time is not a date"))?;
                let (alarm, rest) = if entry == RESOURCE_ENTRY_BYTES {
                    (
                        u64::from_be_bytes(e[13..21].try_into().expect("8 bytes")),
                        &e[21..],
                    )
                } else {
                    (
                        u64::from(u32::from_be_bytes(e[13..17].try_into().expect("4 bytes"))),
                        &e[17..],
                    )
                };
                Ok(Resource {
                    channel: e[0],
                    start_ms,
                    end_ms,
                    alarm,
                    av_type: rest[0],
                    stream_type: rest[1],
                    storage_type: rest[2],
                    size: u32::from_be_bytes(rest[3..7].try_into().expect("4 bytes")),
                })
            })
            .collect::<Result<Vec<_>, Jt808Error>>()?;
        Ok(ResourceList { serial, items })
    }

    /// The standard's layout (28-byte entries).
    pub fn encode(&self, clock: DeviceClock) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(LIST_HEADER_BYTES + self.items.len() * RESOURCE_ENTRY_BYTES);
        out.put_u16(self.serial);
        out.put_u32(self.items.len() as u32);
        for r in &self.items {
            out.put_u8(r.channel);
            out.put_slice(&clock.to_bcd(r.start_ms));
            out.put_slice(&clock.to_bcd(r.end_ms));
            out.put_u64(r.alarm);
            out.put_slice(&[r.av_type, r.stream_type, r.storage_type]);
            out.put_u32(r.size);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_709_164_800_000; // 2024-02-29 08:00:00 UTC+8

    fn resource(i: u32) -> Resource {
        Resource {
            channel: (i % 4 + 1) as u8,
            start_ms: T0 + i as i64 * 60_000,
            end_ms: T0 + i as i64 * 60_000 + 59_000,
            alarm: if i.is_multiple_of(7) {
                1 << 1 | 1 << 33
            } else {
                0
            },
            av_type: 0,
            stream_type: 1,
            storage_type: 1,
            size: 1_000_000 + i,
        }
    }

    #[test]
    fn one_entry_bytes() {
        let list = ResourceList {
            serial: 0x1234,
            items: vec![resource(0)],
        };
        let body = list.encode(DeviceClock::UTC8);
        #[rustfmt::skip]
        let expected = [
            0x12, 0x34, 0, 0, 0, 1,
            1, 0x24, 0x02, 0x29, 0x08, 0x00, 0x00, 0x24, 0x02, 0x29, 0x08, 0x00, 0x59,
            0, 0, 0, 2, 0, 0, 0, 2, 0, 1, 1, 0x00, 0x0f, 0x42, 0x40,
        ];
        assert_eq!(body, expected);
        assert_eq!(
            ResourceList::decode(&body, DeviceClock::UTC8).unwrap(),
            list
        );
    }

    #[test]
    fn short_entries_with_32_bit_alarms_are_read_too() {
        let list = ResourceList {
            serial: 9,
            items: (0..3).map(resource).collect(),
        };
        let long = list.encode(DeviceClock::UTC8);
        let mut short = long[..6].to_vec();
        for e in long[6..].chunks(RESOURCE_ENTRY_BYTES) {
            short.extend_from_slice(&e[..13]);
            short.extend_from_slice(&e[17..]); // the low word of the alarm flags
        }
        let got = ResourceList::decode(&short, DeviceClock::UTC8).unwrap();
        assert_eq!(got.items.len(), 3);
        assert_eq!(got.items[0].alarm, 2, "the high word is not on the wire");
        assert_eq!(got.items[1], list.items[1]);
    }

    #[test]
    fn malformed_lists_are_refused() {
        let body = ResourceList {
            serial: 1,
            items: (0..2).map(resource).collect(),
        }
        .encode(DeviceClock::UTC8);
        for cut in [0, 5, 7, body.len() - 1] {
            assert!(
                ResourceList::decode(&body[..cut], DeviceClock::UTC8).is_err(),
                "cut at {cut}"
            );
        }
        let mut more = body.clone();
        more[5] = 3;
        assert!(ResourceList::decode(&more, DeviceClock::UTC8).is_err());
        let mut bad_time = body.clone();
        bad_time[6 + 2] = 0x13; // month 13
        assert!(ResourceList::decode(&bad_time, DeviceClock::UTC8).is_err());
        let mut huge = body[..6].to_vec();
        huge[2..6].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(ResourceList::decode(&huge, DeviceClock::UTC8).is_err());
    }
}
