//! BCD helpers shared by the JT/T 808 and JT/T 1078 codecs.
//!
//! Both protocols carry the device's SIM/phone number as packed BCD (two
//! decimal digits per byte, high nibble first) and JT/T 808 carries times as
//! BCD `YYMMDDhhmmss`. Non-decimal nibbles are rendered as `?` rather than
//! rejected: real devices sometimes pad with `F`, and a stream name must still
//! be derivable.

/// Renders packed BCD as a digit string (`0x13 0x25` -> `"1325"`).
pub fn to_string(bcd: &[u8]) -> String {
    let mut s = String::with_capacity(bcd.len() * 2);
    for b in bcd {
        for nib in [b >> 4, b & 0x0f] {
            s.push(if nib < 10 { (b'0' + nib) as char } else { '?' });
        }
    }
    s
}

/// Packs a digit string into `out.len()` BCD bytes, left-padding with zeros.
/// Returns `None` for non-digits or too many digits.
pub fn encode_into(digits: &str, out: &mut [u8]) -> Option<()> {
    let d = digits.as_bytes();
    if d.len() > out.len() * 2 || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let pad = out.len() * 2 - d.len();
    for (i, o) in out.iter_mut().enumerate() {
        let nib = |k: usize| -> u8 {
            if k < pad {
                0
            } else {
                d[k - pad] - b'0'
            }
        };
        *o = (nib(2 * i) << 4) | nib(2 * i + 1);
    }
    Some(())
}

/// Decodes one BCD byte as a number 0..=99; `None` if a nibble is not decimal.
pub fn byte(b: u8) -> Option<u8> {
    let (h, l) = (b >> 4, b & 0x0f);
    (h < 10 && l < 10).then_some(h * 10 + l)
}

/// Encodes 0..=99 as one BCD byte.
pub fn to_byte(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// Normalises a phone/SIM digit string to the 12-digit form JT/T 1078 uses
/// (a 2019 JT/T 808 header carries 20 digits, left-padded with zeros).
pub fn normalize_sim(digits: &str) -> String {
    if digits.len() > 12 && digits[..digits.len() - 12].bytes().all(|c| c == b'0') {
        digits[digits.len() - 12..].to_string()
    } else {
        digits.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut out = [0u8; 6];
        encode_into("13800000001", &mut out).unwrap();
        assert_eq!(out, [0x01, 0x38, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(to_string(&out), "013800000001");
        assert!(encode_into("1234567890123", &mut out).is_none());
        assert!(encode_into("12a", &mut out).is_none());
        assert_eq!(normalize_sim("00000000013800000001"), "013800000001");
        assert_eq!(byte(0x59), Some(59));
        assert_eq!(byte(0x5a), None);
        assert_eq!(to_byte(47), 0x47);
    }
}
