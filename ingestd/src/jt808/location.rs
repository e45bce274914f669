//! Positions: 0x0200 location reports ([`Location`]), 0x0704 batches of them
//! ([`LocationBatch`]), and the conversions between the `YYMMDDhhmmss` BCD
//! time field and Unix milliseconds ([`DeviceClock`]: the device's time
//! zone, UTC+8 unless configured otherwise).

use bytes::{BufMut, Bytes};

use super::{msg, Jt808Error};
use crate::bcd;

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

/// The time zone device clocks run in: every `YYMMDDhhmmss` BCD time a
/// device sends or receives (positions, recordings, playback requests) is
/// local time at this fixed offset from UTC. JT/T 808 says Beijing time
/// (UTC+8), the default; fleets abroad set their devices' zone instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceClock {
    offset_ms: i64,
}

impl Default for DeviceClock {
    fn default() -> Self {
        DeviceClock::UTC8
    }
}

impl std::fmt::Display for DeviceClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.offset_ms / 60_000;
        let sign = if m < 0 { '-' } else { '+' };
        write!(f, "{sign}{:02}:{:02}", m.abs() / 60, m.abs() % 60)
    }
}

impl std::str::FromStr for DeviceClock {
    type Err = String;

    /// `+08:00`, `-05:30`, `+8`, `UTC+8`, `Z`/`UTC` (offsets within ±14 h).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected a UTC offset such as +08:00, -05:30 or UTC+8");
        let t = s.trim();
        let t = t
            .strip_prefix("UTC")
            .or_else(|| t.strip_prefix("utc"))
            .unwrap_or(t);
        if t.is_empty() || t == "Z" {
            return Ok(DeviceClock { offset_ms: 0 });
        }
        let (sign, rest) = match t.as_bytes()[0] {
            b'+' => (1, &t[1..]),
            b'-' => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = match rest.split_once(':') {
            Some((h, m)) => (h, m),
            None if rest.len() == 4 => rest.split_at(2),
            None => (rest, "0"),
        };
        let digits = |x: &str| {
            (!x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit()))
                .then(|| x.parse::<i64>().ok())
                .flatten()
        };
        let (Some(h), Some(m)) = (digits(h), digits(m)) else {
            return Err(bad());
        };
        if m >= 60 || h * 60 + m > 14 * 60 {
            return Err(bad());
        }
        Ok(DeviceClock {
            offset_ms: sign * (h * 60 + m) * 60_000,
        })
    }
}

impl DeviceClock {
    /// Beijing time, the standard's and the default.
    pub const UTC8: DeviceClock = DeviceClock { offset_ms: UTC8_MS };

    /// A clock `minutes` east of UTC (clamped to ±14 h).
    pub fn from_offset_minutes(minutes: i32) -> Self {
        DeviceClock {
            offset_ms: i64::from(minutes.clamp(-14 * 60, 14 * 60)) * 60_000,
        }
    }

    pub fn offset_minutes(&self) -> i32 {
        (self.offset_ms / 60_000) as i32
    }

    /// `YYMMDDhhmmss` BCD device time -> Unix ms UTC; `None` when not a
    /// valid date.
    pub fn to_unix_ms(&self, t: &[u8; 6]) -> Option<i64> {
        let v: Vec<u32> = t
            .iter()
            .map(|&b| bcd::byte(b).map(u32::from))
            .collect::<Option<_>>()?;
        let date = chrono::NaiveDate::from_ymd_opt(2000 + v[0] as i32, v[1], v[2])?;
        let dt = date.and_hms_opt(v[3], v[4], v[5])?;
        Some(dt.and_utc().timestamp_millis() - self.offset_ms)
    }

    /// First and last instants `YYMMDDhhmmss` (years 2000-2099 local) can
    /// name, in Unix ms UTC.
    fn range_ms(&self) -> (i64, i64) {
        (
            946_684_800_000 - self.offset_ms,
            4_102_444_799_999 - self.offset_ms,
        )
    }

    /// Unix ms UTC -> `YYMMDDhhmmss` BCD device time, or `None` outside the
    /// years 2000-2099 the field can hold (a two-digit year would silently
    /// wrap).
    pub fn checked_to_bcd(&self, ms: i64) -> Option<[u8; 6]> {
        let (min, max) = self.range_ms();
        (min..=max).contains(&ms).then(|| self.to_bcd(ms))
    }

    /// Unix ms UTC -> `YYMMDDhhmmss` BCD device time, saturating to the
    /// first or last second of 2000-2099 outside that range (never
    /// overflows; callers taking times from outside use
    /// [`DeviceClock::checked_to_bcd`] to refuse them instead).
    pub fn to_bcd(&self, ms: i64) -> [u8; 6] {
        use chrono::{Datelike, Timelike};
        let (min, max) = self.range_ms();
        let ms = ms.clamp(min, max);
        let dt = chrono::DateTime::from_timestamp_millis(ms + self.offset_ms)
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
}

/// `YYMMDDhhmmss` BCD in UTC+8 -> Unix ms UTC.
pub fn bcd_time_to_unix_ms(t: &[u8; 6]) -> Option<i64> {
    DeviceClock::UTC8.to_unix_ms(t)
}

/// First and last instants `YYMMDDhhmmss` (years 2000-2099 in UTC+8) can
/// name, in Unix ms UTC.
#[cfg(test)]
const BCD_TIME_MIN_MS: i64 = 946_684_800_000 - UTC8_MS;
#[cfg(test)]
const BCD_TIME_MAX_MS: i64 = 4_102_444_799_999 - UTC8_MS;

/// Unix ms UTC -> `YYMMDDhhmmss` BCD in UTC+8, or `None` outside the years
/// 2000-2099 (see [`DeviceClock::checked_to_bcd`]).
pub fn checked_unix_ms_to_bcd_time(ms: i64) -> Option<[u8; 6]> {
    DeviceClock::UTC8.checked_to_bcd(ms)
}

/// Unix ms UTC -> `YYMMDDhhmmss` BCD in UTC+8, saturating (see
/// [`DeviceClock::to_bcd`]).
pub fn unix_ms_to_bcd_time(ms: i64) -> [u8; 6] {
    DeviceClock::UTC8.to_bcd(ms)
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn device_clock_parses_offsets_and_converts_in_its_zone() {
        let utc8: DeviceClock = "+08:00".parse().unwrap();
        assert_eq!(utc8, DeviceClock::UTC8);
        for s in ["+8", "UTC+8", "+0800", "utc+08:00"] {
            assert_eq!(s.parse::<DeviceClock>().unwrap(), utc8, "{s}");
        }
        let ist: DeviceClock = "+05:30".parse().unwrap();
        assert_eq!(ist.offset_minutes(), 330);
        let west: DeviceClock = "-05:00".parse().unwrap();
        assert_eq!(west.to_string(), "-05:00");
        assert_eq!("Z".parse::<DeviceClock>().unwrap().offset_minutes(), 0);
        for bad in ["", "8", "+15", "+08:60", "+x", "+123:00"] {
            if bad.is_empty() {
                continue;
            }
            assert!(bad.parse::<DeviceClock>().is_err(), "{bad}");
        }
        // 2024-02-29 00:00:00 UTC is 2024-02-28 19:00:00 at UTC-5.
        let t = 1_709_164_800_000;
        assert_eq!(west.to_bcd(t), [0x24, 0x02, 0x28, 0x19, 0x00, 0x00]);
        assert_eq!(west.to_unix_ms(&west.to_bcd(t)), Some(t));
        assert_eq!(ist.to_bcd(t), [0x24, 0x02, 0x29, 0x05, 0x30, 0x00]);
    }
}
