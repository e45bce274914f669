//! Validation of every name that reaches the file system or the catalog from a URL: stream
//! names `[A-Za-z0-9_-]{1,64}`, session ids `[A-Za-z0-9_-]{1,128}`, segment file names `[0-9]{1,20}.ts`, SIMs (12 digits) and
//! channels. Names are checked after percent-decoding, so `..`, `%2e%2e`, `/` and NUL never
//! survive; the file layer additionally canonicalizes and checks the data-dir prefix.

/// A stream name as the data-dir contract allows it.
pub fn valid_stream(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A catalog session id (`<stream>-<started_ms>-<16 hex>` as ingestd makes them):
/// `[A-Za-z0-9_-]{1,128}`, the schema's length limit.
pub fn valid_session_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The media sequence of a segment file name `<digits>.ts`, or `None` if the name is anything else.
pub fn segment_sequence(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".ts")?;
    if !(1..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A device SIM as JT/T 808 carries it: 12 BCD digits (20 for the 2019 header's longer form).
pub fn valid_sim(sim: &str) -> bool {
    matches!(sim.len(), 12 | 20) && sim.bytes().all(|b| b.is_ascii_digit())
}

/// A logical channel number (JT/T 1076 table: 1..=37, plus 0x40+ for extensions; we accept 0..=255).
pub fn parse_channel(ch: &str) -> Option<u8> {
    if ch.is_empty() || ch.len() > 3 || !ch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ch.parse().ok()
}

/// Splits a device stream name `<SIM>_<channel>`.
pub fn split_device_stream(name: &str) -> Option<(&str, u8)> {
    let (sim, ch) = name.rsplit_once('_')?;
    (valid_sim(sim)).then_some(())?;
    Some((sim, parse_channel(ch)?))
}

/// The stream name of a device channel.
pub fn device_stream(sim: &str, channel: u8) -> String {
    format!("{sim}_{channel}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams() {
        assert!(valid_stream("132570034500_1"));
        assert!(valid_stream("cam-2_A"));
        assert!(valid_stream(&"a".repeat(64)));
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "a b",
            "a%2e",
            "é",
            "a\0",
            &"a".repeat(65),
            "a.b",
        ] {
            assert!(!valid_stream(bad), "{bad:?}");
        }
    }

    #[test]
    fn session_ids() {
        assert!(valid_session_id(
            "132570034500_1-1764000000000-00ff00ff00ff00ff"
        ));
        assert!(valid_session_id(&"a".repeat(128)));
        for bad in ["", "..", "a/b", "a.b", "a%2f", "a b", "é", &"a".repeat(129)] {
            assert!(!valid_session_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn segments() {
        assert_eq!(segment_sequence("123.ts"), Some(123));
        assert_eq!(segment_sequence("0.ts"), Some(0));
        for bad in [
            ".ts",
            "a.ts",
            "1.ts.ts",
            "../1.ts",
            "1.TS",
            "1.m3u8",
            "123456789012345678901.ts",
            "-1.ts",
            "+1.ts",
        ] {
            assert_eq!(segment_sequence(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn devices() {
        assert_eq!(
            split_device_stream("132570034500_1"),
            Some(("132570034500", 1))
        );
        assert_eq!(split_device_stream("132570034500_256"), None);
        assert_eq!(split_device_stream("cam_1"), None);
        assert_eq!(parse_channel("01"), Some(1));
        assert!(!valid_sim("1325700345"));
    }
}
