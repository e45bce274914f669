//! Media time as 90 kHz ticks (the MPEG-TS clock), on a 64-bit timeline.
//!
//! Seconds appear only where an `#EXTINF` is written; everything else
//! (frame durations, segment cuts, PTS/DTS) stays in integer ticks so that
//! 29.97 fps (3003 ticks a frame) adds up exactly. The 33-bit PTS wrap of
//! MPEG-TS is the muxer's business: above it, timelines never wrap.

use std::fmt;
use std::ops::{Add, AddAssign, Mul, Sub, SubAssign};

/// Ticks per second of the MPEG-TS system clock used for PTS/DTS.
pub const TICKS_PER_SECOND: i64 = 90_000;

/// A point on a 90 kHz timeline.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ts90k(pub i64);

/// A span of 90 kHz ticks.
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur90k(pub i64);

impl Dur90k {
    pub const ZERO: Dur90k = Dur90k(0);

    pub const fn from_secs(secs: i64) -> Self {
        Dur90k(secs * TICKS_PER_SECOND)
    }

    pub const fn from_millis(ms: i64) -> Self {
        Dur90k(ms * 90)
    }

    /// Frame duration for a rational frame rate `num/den` frames per second,
    /// rounded to the nearest tick (exact for 25, 30, 30000/1001, 60 ...).
    pub fn from_frame_rate(num: u32, den: u32) -> Option<Self> {
        if num == 0 || den == 0 {
            return None;
        }
        let ticks = (TICKS_PER_SECOND * den as i64 + num as i64 / 2) / num as i64;
        (ticks > 0).then_some(Dur90k(ticks))
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / TICKS_PER_SECOND as f64
    }

    pub fn as_millis(self) -> i64 {
        self.0.div_euclid(90)
    }
}

impl Ts90k {
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / TICKS_PER_SECOND as f64
    }
}

impl Add<Dur90k> for Ts90k {
    type Output = Ts90k;
    fn add(self, rhs: Dur90k) -> Ts90k {
        Ts90k(self.0 + rhs.0)
    }
}

impl AddAssign<Dur90k> for Ts90k {
    fn add_assign(&mut self, rhs: Dur90k) {
        self.0 += rhs.0;
    }
}

impl Sub<Dur90k> for Ts90k {
    type Output = Ts90k;
    fn sub(self, rhs: Dur90k) -> Ts90k {
        Ts90k(self.0 - rhs.0)
    }
}

impl Sub for Ts90k {
    type Output = Dur90k;
    fn sub(self, rhs: Ts90k) -> Dur90k {
        Dur90k(self.0 - rhs.0)
    }
}

impl Add for Dur90k {
    type Output = Dur90k;
    fn add(self, rhs: Dur90k) -> Dur90k {
        Dur90k(self.0 + rhs.0)
    }
}

impl AddAssign for Dur90k {
    fn add_assign(&mut self, rhs: Dur90k) {
        self.0 += rhs.0;
    }
}

impl Sub for Dur90k {
    type Output = Dur90k;
    fn sub(self, rhs: Dur90k) -> Dur90k {
        Dur90k(self.0 - rhs.0)
    }
}

impl SubAssign for Dur90k {
    fn sub_assign(&mut self, rhs: Dur90k) {
        self.0 -= rhs.0;
    }
}

impl Mul<i64> for Dur90k {
    type Output = Dur90k;
    fn mul(self, rhs: i64) -> Dur90k {
        Dur90k(self.0 * rhs)
    }
}

impl std::ops::Div<i64> for Dur90k {
    type Output = Dur90k;
    fn div(self, rhs: i64) -> Dur90k {
        Dur90k(self.0 / rhs)
    }
}

impl fmt::Debug for Ts90k {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ts90k({} = {:.6}s)", self.0, self.as_secs_f64())
    }
}

impl fmt::Debug for Dur90k {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dur90k({} = {:.6}s)", self.0, self.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntsc_frame_is_3003_ticks() {
        assert_eq!(Dur90k::from_frame_rate(30000, 1001), Some(Dur90k(3003)));
        assert_eq!(Dur90k::from_frame_rate(25, 1), Some(Dur90k(3600)));
        assert_eq!(Dur90k::from_frame_rate(0, 1), None);
    }

    #[test]
    fn arithmetic_round_trips() {
        let t = Ts90k(1000) + Dur90k(500);
        assert_eq!(t - Ts90k(1000), Dur90k(500));
        assert_eq!(Dur90k::from_millis(40), Dur90k(3600));
        assert_eq!(Dur90k(3600).as_millis(), 40);
    }
}
