//! Stream names and the data-dir layout: the one place that spells them.
//!
//! Names (the operator contract):
//! - a device channel's live video is `<SIM>_<channel>` (`132570034500_1`),
//!   SIM as the 12 BCD digits of the JT/T 808 header (20 in the 2019 header);
//! - a recording the device plays back to us (after 0x9201) is
//!   `<SIM>_<channel>_pb`, so it never mixes with the live playlist;
//! - a raw-port stream keeps the name it was given, `[A-Za-z0-9_-]{1,64}`.
//!
//! Every stream name is also a valid raw name, so a name alone cannot tell a
//! raw stream called `132570034500_1` from the device stream: [`StreamName`]
//! reads the device form wherever it fits, which is what every reader
//! (hlsd's API, incident lookups) wants.
//!
//! Layout (relative to the data dir, `/`-separated, the same on disk and as
//! object keys): `live/<stream>/index.m3u8` is the stream's playlist and
//! `live/<stream>/<sequence>.ts` its segments; segment URLs in the playlist
//! are relative to it. Every name is checked before it becomes a path:
//! nothing outside `[A-Za-z0-9_.-]` ever reaches the file system.

use std::fmt;
use std::path::{Path, PathBuf};

/// Directory (and key prefix) of all streams under the data dir.
pub const LIVE_DIR: &str = "live";
/// File name of a stream's playlist.
pub const PLAYLIST_FILE: &str = "index.m3u8";
/// Extension of MPEG-TS segment files.
pub const SEGMENT_EXTENSION: &str = "ts";
/// Suffix of a device's playback stream.
const PLAYBACK_SUFFIX: &str = "_pb";
/// Longest stream name (the schema's column and the directory name).
pub const MAX_STREAM_NAME: usize = 64;
/// Longest catalog session id.
pub const MAX_SESSION_ID: usize = 128;

/// Where a stream's media comes from. One definition for ingestd's
/// connections, its media workers and the catalog's session rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// JT/T 1078 live video (after 0x9101, or unsolicited).
    Live,
    /// A recording the device plays back to us (JT/T 1078 after 0x9201).
    Playback,
    /// The raw H.264 port.
    Raw,
}

impl SessionKind {
    /// The name used in logs, JSON and the catalog.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Live => "live",
            SessionKind::Playback => "playback",
            SessionKind::Raw => "raw",
        }
    }
}

/// What a stream name says about its source.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamName {
    /// `<SIM>_<channel>` or, for a playback upload, `<SIM>_<channel>_pb`.
    Device {
        sim: String,
        channel: u8,
        playback: bool,
    },
    /// Any other valid name.
    Raw(String),
}

impl StreamName {
    /// The live stream of a device channel.
    pub fn live(sim: &str, channel: u8) -> StreamName {
        StreamName::Device {
            sim: sim.to_owned(),
            channel,
            playback: false,
        }
    }

    /// The stream a device's playback upload of `channel` goes to.
    pub fn playback(sim: &str, channel: u8) -> StreamName {
        StreamName::Device {
            sim: sim.to_owned(),
            channel,
            playback: true,
        }
    }

    /// The stream of a device channel fed by a session of `kind` (a raw
    /// session has no device: `None`).
    pub fn for_device(sim: &str, channel: u8, kind: SessionKind) -> Option<StreamName> {
        match kind {
            SessionKind::Live => Some(StreamName::live(sim, channel)),
            SessionKind::Playback => Some(StreamName::playback(sim, channel)),
            SessionKind::Raw => None,
        }
    }

    /// Reads a name: the device forms where they fit, else a raw name;
    /// `None` when the name is not valid at all.
    pub fn parse(name: &str) -> Option<StreamName> {
        if !valid_stream_name(name) {
            return None;
        }
        let (base, playback) = match name.strip_suffix(PLAYBACK_SUFFIX) {
            Some(base) => (base, true),
            None => (name, false),
        };
        let device = base
            .rsplit_once('_')
            .and_then(|(sim, ch)| Some((valid_sim(sim).then_some(sim)?, parse_channel(ch)?)));
        Some(match device {
            Some((sim, channel)) => StreamName::Device {
                sim: sim.to_owned(),
                channel,
                playback,
            },
            None => StreamName::Raw(name.to_owned()),
        })
    }

    /// The device SIM, for device streams.
    pub fn sim(&self) -> Option<&str> {
        match self {
            StreamName::Device { sim, .. } => Some(sim),
            StreamName::Raw(_) => None,
        }
    }

    /// The logical channel, for device streams.
    pub fn channel(&self) -> Option<u8> {
        match self {
            StreamName::Device { channel, .. } => Some(*channel),
            StreamName::Raw(_) => None,
        }
    }

    /// The kind of session that feeds a stream of this name.
    pub fn kind(&self) -> SessionKind {
        match self {
            StreamName::Device { playback: true, .. } => SessionKind::Playback,
            StreamName::Device { .. } => SessionKind::Live,
            StreamName::Raw(_) => SessionKind::Raw,
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamName::Device {
                sim,
                channel,
                playback,
            } => {
                write!(f, "{sim}_{channel}")?;
                if *playback {
                    f.write_str(PLAYBACK_SUFFIX)?;
                }
                Ok(())
            }
            StreamName::Raw(name) => f.write_str(name),
        }
    }
}

/// `[A-Za-z0-9_-]{1,64}`: every stream name, and the raw port's rule.
pub fn valid_stream_name(name: &str) -> bool {
    (1..=MAX_STREAM_NAME).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// A catalog session id (`<stream>-<started_ms>-<16 hex>` as producers make
/// them): `[A-Za-z0-9_-]{1,128}`, the schema's length limit.
pub fn valid_session_id(id: &str) -> bool {
    (1..=MAX_SESSION_ID).contains(&id.len()) && id.bytes().all(is_name_byte)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A device SIM as JT/T 808 carries it: 12 BCD digits (20 in the 2019 header).
pub fn valid_sim(sim: &str) -> bool {
    matches!(sim.len(), 12 | 20) && sim.bytes().all(|b| b.is_ascii_digit())
}

/// A logical channel number in decimal (JT/T 1076 numbers them 1-37, with
/// extensions from 0x40; any byte is accepted).
pub fn parse_channel(text: &str) -> Option<u8> {
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// File name of the segment with media sequence `sequence`.
pub fn segment_file(sequence: u64) -> String {
    format!("{sequence}.{SEGMENT_EXTENSION}")
}

/// The media sequence of a segment file name `<digits>.ts`; `None` for
/// anything else (the check every URL and directory entry goes through).
pub fn segment_sequence(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(SEGMENT_EXTENSION)?.strip_suffix('.')?;
    if !(1..=20).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A stream's directory (key prefix) relative to the data dir: `live/<stream>`.
pub fn stream_key(stream: &str) -> String {
    format!("{LIVE_DIR}/{stream}")
}

/// A segment's path relative to the data dir: `live/<stream>/<sequence>.ts`,
/// what the catalog stores and what hlsd serves.
pub fn segment_key(stream: &str, sequence: u64) -> String {
    format!("{LIVE_DIR}/{stream}/{}", segment_file(sequence))
}

/// A stream's playlist relative to the data dir: `live/<stream>/index.m3u8`.
pub fn playlist_key(stream: &str) -> String {
    format!("{LIVE_DIR}/{stream}/{PLAYLIST_FILE}")
}

/// Splits a segment key `live/<stream>/<sequence>.ts` into the stream and
/// the sequence; `None` for any other key.
pub fn parse_segment_key(key: &str) -> Option<(&str, u64)> {
    let rest = key.strip_prefix(LIVE_DIR)?.strip_prefix('/')?;
    let (stream, file) = rest.split_once('/')?;
    if !valid_stream_name(stream) {
        return None;
    }
    Some((stream, segment_sequence(file)?))
}

/// A stream's directory on disk.
pub fn stream_dir(data_dir: &Path, stream: &str) -> PathBuf {
    data_dir.join(LIVE_DIR).join(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_round_trip() {
        for (text, name) in [
            ("132570034500_1", StreamName::live("132570034500", 1)),
            ("132570034500_1_pb", StreamName::playback("132570034500", 1)),
            (
                "12345678901234567890_37",
                StreamName::live("12345678901234567890", 37),
            ),
            ("cam-2_A", StreamName::Raw("cam-2_A".into())),
            ("cam_1", StreamName::Raw("cam_1".into())),
            // Not a device form: a 13-digit SIM, a channel over 255.
            ("1325700345001_1", StreamName::Raw("1325700345001_1".into())),
            (
                "132570034500_256",
                StreamName::Raw("132570034500_256".into()),
            ),
            ("x_pb", StreamName::Raw("x_pb".into())),
        ] {
            assert_eq!(StreamName::parse(text), Some(name.clone()), "{text}");
            assert_eq!(name.to_string(), text);
        }
        let pb = StreamName::parse("132570034500_2_pb").unwrap();
        assert_eq!(
            (pb.sim(), pb.channel(), pb.kind()),
            (Some("132570034500"), Some(2), SessionKind::Playback)
        );
        assert_eq!(StreamName::parse("cam").unwrap().kind(), SessionKind::Raw);
        assert_eq!(
            StreamName::for_device("132570034500", 1, SessionKind::Playback)
                .unwrap()
                .to_string(),
            "132570034500_1_pb"
        );
    }

    #[test]
    fn invalid_names_never_become_paths() {
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "a b",
            "a%2e",
            "é",
            "a\0",
            "a.b",
            &"a".repeat(65),
        ] {
            assert!(!valid_stream_name(bad), "{bad:?}");
            assert_eq!(StreamName::parse(bad), None, "{bad:?}");
        }
        assert!(valid_stream_name(&"a".repeat(64)));
        assert!(valid_session_id(
            "132570034500_1-1764000000000-00ff00ff00ff00ff"
        ));
        assert!(valid_session_id(&"a".repeat(128)));
        for bad in ["", "..", "a/b", "a.b", "a%2f", "a b", "é", &"a".repeat(129)] {
            assert!(!valid_session_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn segment_names_and_keys() {
        assert_eq!(segment_sequence("123.ts"), Some(123));
        assert_eq!(segment_sequence("0.ts"), Some(0));
        for bad in [
            ".ts",
            "a.ts",
            "1.ts.ts",
            "../1.ts",
            "1.TS",
            "1.m3u8",
            "1ts",
            "123456789012345678901.ts",
            "-1.ts",
            "+1.ts",
        ] {
            assert_eq!(segment_sequence(bad), None, "{bad:?}");
        }
        assert_eq!(segment_key("cam-1", 7), "live/cam-1/7.ts");
        assert_eq!(playlist_key("cam-1"), "live/cam-1/index.m3u8");
        assert_eq!(parse_segment_key("live/cam-1/7.ts"), Some(("cam-1", 7)));
        for bad in [
            "live/cam-1/8.m3u8",
            "live/../7.ts",
            "other/cam-1/7.ts",
            "live/cam-1/x/7.ts",
            "7.ts",
        ] {
            assert_eq!(parse_segment_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn sims_and_channels() {
        assert!(valid_sim("132570034500") && valid_sim("12345678901234567890"));
        assert!(!valid_sim("1325700345") && !valid_sim("13257003450a"));
        assert_eq!(parse_channel("01"), Some(1));
        assert_eq!(parse_channel("255"), Some(255));
        for bad in ["", "256", "1000", "-1", "+1", "a"] {
            assert_eq!(parse_channel(bad), None, "{bad:?}");
        }
    }
}
