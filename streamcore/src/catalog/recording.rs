//! A recording's playlist from catalog rows: the segments of a session or
//! of a time range on a stream, rendered through the one playlist model
//! ([`crate::playlist`]).

use super::record::Segment;
use super::Error;
use crate::playlist::{MediaPlaylist, PlaylistSegment};
use crate::time::Dur90k;

/// The playlist of `segments` (in order): VOD with ENDLIST when
/// `finished`, else EVENT. A gap in sequence numbers (segments missing, or
/// two sessions joined) or a change of stream is a discontinuity as much
/// as the flags the rows carry. `uri` gives each row's URL and is called
/// only for rows that name the file the layout puts at their place.
pub fn recording_playlist(
    segments: &[Segment],
    finished: bool,
    uri: impl Fn(&Segment, u64) -> String,
) -> Result<MediaPlaylist, Error> {
    let mut listed = Vec::with_capacity(segments.len());
    let mut prev: Option<(&str, u64)> = None;
    for row in segments {
        let sequence = row.checked_sequence().map_err(Error::InvalidRecord)?;
        let gap = prev.is_some_and(|(stream, seq)| stream != row.stream || seq + 1 != sequence);
        listed.push(PlaylistSegment {
            sequence,
            uri: uri(row, sequence),
            duration: Dur90k(row.duration_90k),
            discontinuity: prev.is_some() && (row.discontinuity || gap),
            pdt_ms: Some(row.program_date_time_ms),
        });
        prev = Some((&row.stream, sequence));
    }
    Ok(MediaPlaylist::recording(finished, listed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stream: &str, sequence: i64, pdt_ms: i64, discontinuity: bool) -> Segment {
        Segment {
            stream: stream.into(),
            sequence,
            session_id: "s-1-00".into(),
            start_pts: 0,
            duration_90k: 90_000,
            bytes: 0,
            path: format!("live/{stream}/{sequence}.ts"),
            program_date_time_ms: pdt_ms,
            end_ms: pdt_ms + 1000,
            discontinuity,
            created_ms: 0,
        }
    }

    fn text(rows: &[Segment]) -> String {
        recording_playlist(rows, true, |r, seq| format!("{}/{seq}.ts", r.stream))
            .unwrap()
            .render()
    }

    #[test]
    fn sequence_gaps_and_stream_changes_are_discontinuities() {
        let t = text(&[row("s", 1, 0, false), row("s", 3, 5_000, false)]);
        assert!(t.contains(
            "#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:05.000Z\n#EXTINF:1.000000,\ns/3.ts"
        ), "{t}");
        let t = text(&[row("s", 1, 0, false), row("t", 2, 1_000, false)]);
        assert_eq!(t.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{t}");
        let t = text(&[row("s", 1, 0, true), row("s", 2, 1_000, false)]);
        assert!(
            !t.contains("#EXT-X-DISCONTINUITY\n"),
            "the first segment carries none: {t}"
        );
    }

    #[test]
    fn rows_must_name_the_file_that_is_served() {
        let mut bad = row("cam-1", 7, 0, false);
        assert_eq!(bad.checked_sequence(), Ok(7));
        for path in [
            "live/cam-1/8.ts",
            "live/other/7.ts",
            "../live/cam-1/7.ts",
            "7.ts",
        ] {
            bad.path = path.into();
            assert!(
                recording_playlist(&[bad.clone()], true, |_, _| String::new()).is_err(),
                "{path}"
            );
        }
        let mut negative = row("cam-1", -1, 0, false);
        negative.path = "live/cam-1/-1.ts".into();
        assert!(negative.checked_sequence().is_err());
    }
}
