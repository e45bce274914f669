//! Media playlists (RFC 8216): the small parser hlsd needs to judge live streams and to derive
//! sessions from the data dir, the VOD renderer for catalog sessions, and the URI rewriting that
//! carries an access token into segment URLs.
//!
//! Rules followed (see shared/NOTES.md "HLS rules that bite"): TARGETDURATION is the largest
//! EXTINF rounded to the nearest integer (half up, computed on 90 kHz ticks so no float edge
//! can round the wrong way); `#EXTINF:<decimal>,` keeps its comma; PROGRAM-DATE-TIME has
//! milliseconds and a zone and is written on the first segment and after every discontinuity;
//! VOD playlists carry `PLAYLIST-TYPE:VOD` and end with `ENDLIST`.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::catalog::SegmentRow;

/// A parsed media playlist (only the tags hlsd looks at).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaPlaylist {
    pub target_duration: Option<u64>,
    pub media_sequence: u64,
    pub end_list: bool,
    pub segments: Vec<PlaylistSegment>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaylistSegment {
    pub uri: String,
    /// Seconds, from EXTINF.
    pub duration: f64,
    pub discontinuity: bool,
    pub program_date_time_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not a playlist: missing #EXTM3U")]
    NoHeader,
    #[error("line {0}: bad {1}")]
    Bad(usize, &'static str),
}

/// Parses a media playlist. Unknown tags are ignored, as RFC 8216 requires of clients.
pub fn parse_media(text: &str) -> Result<MediaPlaylist, ParseError> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, l)) if l.trim_end() == "#EXTM3U" => {}
        _ => return Err(ParseError::NoHeader),
    }
    let mut pl = MediaPlaylist::default();
    let mut duration: Option<f64> = None;
    let mut disc = false;
    let mut pdt: Option<i64> = None;
    for (i, raw) in lines {
        let line = raw.trim();
        let n = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            pl.target_duration = Some(
                v.parse()
                    .map_err(|_| ParseError::Bad(n, "TARGETDURATION"))?,
            );
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            pl.media_sequence = v
                .parse()
                .map_err(|_| ParseError::Bad(n, "MEDIA-SEQUENCE"))?;
        } else if line == "#EXT-X-ENDLIST" {
            pl.end_list = true;
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.split(',').next().unwrap_or("");
            duration = Some(d.parse().map_err(|_| ParseError::Bad(n, "EXTINF"))?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            // ffmpeg writes `+0000` (ISO 8601 basic offset), which RFC 3339 parsing refuses.
            let t = DateTime::parse_from_rfc3339(v)
                .or_else(|_| DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .map_err(|_| ParseError::Bad(n, "PROGRAM-DATE-TIME"))?;
            pdt = Some(t.timestamp_millis());
        } else if !line.starts_with('#') {
            let d = duration
                .take()
                .ok_or(ParseError::Bad(n, "segment without EXTINF"))?;
            pl.segments.push(PlaylistSegment {
                uri: line.to_owned(),
                duration: d,
                discontinuity: std::mem::take(&mut disc),
                program_date_time_ms: pdt.take(),
            });
        }
    }
    Ok(pl)
}

/// `round(ticks / 90000)` with halves rounded up, exactly.
pub fn rounded_seconds(ticks_90k: i64) -> i64 {
    (ticks_90k.max(0) + 45_000) / 90_000
}

/// Restate PROGRAM-DATE-TIME when a segment's catalog time differs from the time extrapolated
/// from the previous segment by more than this.
const PDT_DRIFT_MS: i64 = 500;

/// ISO 8601 with milliseconds and `Z`, as PROGRAM-DATE-TIME wants.
pub fn format_pdt(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Renders a VOD playlist for `segments` (in order). `uri` maps a segment to its URL.
pub fn render_vod(segments: &[SegmentRow], uri: impl Fn(&SegmentRow) -> String) -> String {
    render_playlist(segments, true, uri)
}

/// Renders a recording: `finished` gives a VOD playlist with ENDLIST; otherwise an EVENT
/// playlist (the session is still growing, so players keep reloading it).
/// A gap in sequence numbers (segments missing, or two sessions joined) is marked as a
/// discontinuity as well as the flags the catalog carries.
pub fn render_playlist(
    segments: &[SegmentRow],
    finished: bool,
    uri: impl Fn(&SegmentRow) -> String,
) -> String {
    let target = segments
        .iter()
        .map(|s| rounded_seconds(s.duration_90k))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut out = String::with_capacity(96 + segments.len() * 96);
    let first_seq = segments.first().map_or(0, |s| s.sequence);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{first_seq}\n",
        if finished { "VOD" } else { "EVENT" }
    );
    let mut prev: Option<&SegmentRow> = None;
    let mut player_clock = 0i64;
    for s in segments {
        let gap = prev.is_some_and(|p| p.sequence + 1 != s.sequence || p.stream != s.stream);
        let disc = prev.is_some() && (s.discontinuity || gap);
        if disc {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        // Players extrapolate PROGRAM-DATE-TIME from the last tag; restate it where the
        // catalog time drifted from that extrapolation by more than half a second, so the
        // picture-time to GPS mapping stays exact.
        let drifted = (s.program_date_time_ms - player_clock).abs() > PDT_DRIFT_MS;
        if prev.is_none() || disc || drifted {
            let _ = writeln!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}",
                format_pdt(s.program_date_time_ms)
            );
            player_clock = s.program_date_time_ms;
        }
        player_clock += (s.duration_90k + 45) / 90;
        let _ = writeln!(
            out,
            "#EXTINF:{:.6},\n{}",
            s.duration_90k as f64 / 90_000.0,
            uri(s)
        );
        prev = Some(s);
    }
    if finished {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// Appends `token=<token>` to every URI line (lines not starting with `#`) of a playlist, so
/// players that resolve relative segment URLs without the playlist's query still send it.
pub fn add_token_to_uris(playlist: &str, token: &str) -> String {
    let mut out = String::with_capacity(playlist.len() + playlist.len() / 4);
    for line in playlist.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        if body.is_empty() || body.starts_with('#') {
            out.push_str(line);
            continue;
        }
        out.push_str(body);
        out.push(if body.contains('?') { '&' } else { '?' });
        out.push_str("token=");
        out.push_str(token);
        out.push_str(&line[body.len()..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, ticks: i64, pdt: i64, disc: bool) -> SegmentRow {
        SegmentRow {
            stream: "s".into(),
            sequence: seq,
            path: format!("live/s/{seq}.ts"),
            duration_90k: ticks,
            bytes: 0,
            program_date_time_ms: pdt,
            discontinuity: disc,
        }
    }

    #[test]
    fn vod_exact_text() {
        let segs = [
            row(7, 180_000, 1_700_000_000_000, false),
            row(8, 449_999, 1_700_000_002_000, false),
            row(9, 90_000, 1_700_000_100_000, true),
        ];
        let text = render_vod(&segs, |s| format!("/live/{}/{}.ts", s.stream, s.sequence));
        assert_eq!(
            text,
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-TARGETDURATION:5\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n#EXTINF:2.000000,\n/live/s/7.ts\n\
             #EXTINF:4.999989,\n/live/s/8.ts\n\
             #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:15:00.000Z\n#EXTINF:1.000000,\n/live/s/9.ts\n#EXT-X-ENDLIST\n"
        );
        let parsed = parse_media(&text).unwrap();
        assert!(parsed.end_list);
        assert_eq!(parsed.segments.len(), 3);
        assert!(parsed.segments[2].discontinuity);
        assert_eq!(
            parsed.segments[2].program_date_time_ms,
            Some(1_700_000_100_000)
        );
    }

    #[test]
    fn target_duration_rounds_half_up() {
        assert_eq!(rounded_seconds(10 * 90_000 + 44_999), 10);
        assert_eq!(rounded_seconds(10 * 90_000 + 45_000), 11);
        let text = render_vod(&[row(1, 10 * 90_000 + 45_000, 0, false)], |_| "1.ts".into());
        assert!(text.contains("#EXT-X-TARGETDURATION:11\n"));
    }

    #[test]
    fn sequence_gap_is_a_discontinuity() {
        let text = render_vod(
            &[row(1, 90_000, 0, false), row(3, 90_000, 5_000, false)],
            |s| format!("{}.ts", s.sequence),
        );
        assert!(text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:05.000Z\n#EXTINF:1.000000,\n3.ts"));
    }

    #[test]
    fn pdt_restated_only_where_the_clock_drifted() {
        let segs = [
            row(1, 180_000, 10_000, false),
            row(2, 180_000, 12_400, false),
            row(3, 180_000, 15_400, false),
        ];
        let text = render_vod(&segs, |s| format!("{}.ts", s.sequence));
        assert_eq!(
            text.matches("#EXT-X-PROGRAM-DATE-TIME:").count(),
            2,
            "{text}"
        );
        assert!(text.contains(
            "#EXT-X-PROGRAM-DATE-TIME:1970-01-01T00:00:15.400Z\n#EXTINF:2.000000,\n3.ts"
        ));
    }

    #[test]
    fn token_rewrite() {
        let pl = "#EXTM3U\n#EXTINF:2.0,\n1.ts\n#EXTINF:2.0,\r\n2.ts?x=1\r\n";
        assert_eq!(
            add_token_to_uris(pl, "T"),
            "#EXTM3U\n#EXTINF:2.0,\n1.ts?token=T\n#EXTINF:2.0,\r\n2.ts?x=1&token=T\r\n"
        );
    }

    #[test]
    fn parses_ffmpeg_offsets() {
        let p = parse_media("#EXTM3U\n#EXTINF:2.000000,\n#EXT-X-PROGRAM-DATE-TIME:2026-11-25T09:35:23.836+0000\n0.ts\n").unwrap();
        assert_eq!(p.segments[0].program_date_time_ms, Some(1_795_599_323_836));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(parse_media("hello"), Err(ParseError::NoHeader));
        assert!(parse_media("#EXTM3U\n#EXTINF:x,\n1.ts\n").is_err());
    }
}
