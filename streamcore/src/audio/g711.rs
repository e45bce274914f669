//! G.711 A-law and µ-law expansion (ITU-T G.711 tables 1a/2a), as
//! 256-entry lookup tables built at compile time: decoding a 40 ms packet
//! is 320 table reads.

/// A-law code to 16-bit linear PCM.
pub fn alaw_to_linear(code: u8) -> i16 {
    ALAW[code as usize]
}

/// µ-law code to 16-bit linear PCM.
pub fn ulaw_to_linear(code: u8) -> i16 {
    ULAW[code as usize]
}

static ALAW: [i16; 256] = build(false);
static ULAW: [i16; 256] = build(true);

const fn build(mu_law: bool) -> [i16; 256] {
    let mut table = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = if mu_law {
            ulaw_expand(i as u8)
        } else {
            alaw_expand(i as u8)
        };
        i += 1;
    }
    table
}

/// A-law: even bits are inverted on the wire; 3-bit segment, 4-bit
/// mantissa, sign bit set for positive values. The decoded value sits in
/// the middle of its quantisation interval (hence the half-step added).
const fn alaw_expand(code: u8) -> i16 {
    let a = code ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let mantissa = (a & 0x0f) as i16;
    let magnitude = match segment {
        0 => (mantissa << 4) + 8,
        s => ((mantissa << 4) + 0x108) << (s - 1),
    };
    if a & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// µ-law: all bits are inverted on the wire; the magnitude is biased by
/// 0x84 (132) before the segment shift, and the bias is removed after.
const fn ulaw_expand(code: u8) -> i16 {
    let u = !code;
    let segment = (u >> 4) & 0x07;
    let mantissa = (u & 0x0f) as i16;
    let biased = ((mantissa << 3) + 0x84) << segment;
    if u & 0x80 != 0 {
        0x84 - biased
    } else {
        biased - 0x84
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference points of G.711: the codes for the smallest and largest
    /// magnitudes, and symmetry of the sign bit.
    #[test]
    fn known_codes() {
        // A-law 0xd5 / 0x55: the smallest positive / negative step.
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(alaw_to_linear(0x2a), -32256);
        // µ-law 0xff / 0x7f: zero; 0x80 / 0x00: full scale.
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        for c in 0..=255u8 {
            assert_eq!(alaw_to_linear(c), -alaw_to_linear(c ^ 0x80));
        }
    }

    /// Both laws are monotonic within a sign: decoded values sort like the
    /// magnitudes their codes stand for.
    #[test]
    fn monotonic_magnitudes() {
        // Un-inverted, the 7 bits below the sign are segment then mantissa.
        let alaw: Vec<i16> = (0..128u8)
            .map(|v| alaw_to_linear((v | 0x80) ^ 0x55))
            .collect();
        assert!(alaw.windows(2).all(|w| w[0] < w[1]), "{alaw:?}");
        let ulaw: Vec<i16> = (0..128u8).map(|v| ulaw_to_linear(0xff - v)).collect();
        assert!(ulaw.windows(2).all(|w| w[0] < w[1]), "{ulaw:?}");
    }
}
