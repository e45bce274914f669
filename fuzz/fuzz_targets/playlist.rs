//! The HLS playlist state machine driven by a sequence of operations read
//! from the input (push a segment with a duration, discontinuity flag and
//! date; end), with the invariants checked after every step:
//! - every `#EXTINF` rounds to at most `#EXT-X-TARGETDURATION`, and a push
//!   of an overlong (or misnumbered) segment is refused without a change;
//! - `#EXT-X-MEDIA-SEQUENCE` never decreases and rises by one per segment
//!   that slid out;
//! - `#EXT-X-DISCONTINUITY-SEQUENCE` never decreases and equals the number
//!   of discontinuities that slid out;
//! - the live window holds no segment it could have dropped;
//! - render -> parse -> render gives the same text.
#![no_main]

mod common;

use common::Reader;
use libfuzzer_sys::fuzz_target;
use streamcore::playlist::{MediaPlaylist, PlaylistKind, PlaylistSegment};
use streamcore::time::Dur90k;

const TICKS: i64 = 90_000;

fn tag<T: std::str::FromStr>(text: &str, name: &str) -> T {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
    line.parse()
        .ok()
        .unwrap_or_else(|| panic!("{name} unreadable: {line}"))
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let target = 1 + (r.u8() % 30) as u32;
    let kind = match r.u8() % 3 {
        0 => PlaylistKind::Live {
            window: Dur90k::from_secs(target as i64 * (3 + (r.u8() % 4) as i64)),
        },
        1 => PlaylistKind::Event,
        _ => PlaylistKind::Vod,
    };
    let mut p = MediaPlaylist::new(kind, target);
    let mut slid_discontinuities = 0u64;
    let mut slid = 0u64;
    let mut last_media_seq = 0u64;
    let mut last_disc_seq = 0u64;
    let mut steps = 0;
    while !r.is_empty() && steps < 500 {
        steps += 1;
        let op = r.u8();
        if op % 8 == 7 {
            p.end();
            assert!(p.is_ended());
        } else {
            let raw = r.u32() as i32 as i64;
            let duration = Dur90k(raw % ((target as i64 + 2) * TICKS));
            let discontinuity = op & 0x10 != 0;
            let pdt_ms = match (op >> 5) & 3 {
                0 => None,
                1 => Some(1_700_000_000_000 + p.next_sequence() as i64 * 4_000),
                2 => Some(r.u32() as i64 * 1_000),
                _ => Some(r.u64() as i64),
            };
            let sequence = if op % 8 == 6 {
                r.u8() as u64
            } else {
                p.next_sequence()
            };
            let seg = PlaylistSegment {
                sequence,
                uri: format!("{sequence}.ts"),
                duration,
                discontinuity,
                pdt_ms,
            };
            let before = p.clone();
            let rounded = (duration.0 + TICKS / 2) / TICKS;
            let acceptable =
                sequence == before.next_sequence() && rounded <= target as i64 && duration.0 >= 0;
            match p.push(seg) {
                Ok(removed) => {
                    assert!(
                        acceptable,
                        "accepted a bad segment: {duration:?} seq {sequence}"
                    );
                    slid += removed.len() as u64;
                    slid_discontinuities +=
                        removed.iter().filter(|s| s.discontinuity).count() as u64;
                }
                Err(_) => {
                    assert!(
                        !acceptable,
                        "refused a good segment: {duration:?} seq {sequence}"
                    );
                    assert_eq!(p, before, "a refused push changed the playlist");
                }
            }
        }

        assert_eq!(p.media_sequence(), slid);
        assert_eq!(p.discontinuity_sequence(), slid_discontinuities);
        if let PlaylistKind::Live { window } = kind {
            let total = p.segments().fold(Dur90k::ZERO, |a, s| a + s.duration);
            if let Some(front) = p.segments().next() {
                assert!(
                    total - front.duration < window,
                    "window kept a droppable segment"
                );
            }
        }

        let text = p.render();
        assert_eq!(tag::<u32>(&text, "#EXT-X-TARGETDURATION:"), target);
        let media_seq: u64 = tag(&text, "#EXT-X-MEDIA-SEQUENCE:");
        let disc_seq: u64 = tag(&text, "#EXT-X-DISCONTINUITY-SEQUENCE:");
        assert!(media_seq >= last_media_seq && disc_seq >= last_disc_seq);
        (last_media_seq, last_disc_seq) = (media_seq, disc_seq);
        for l in text.lines().filter_map(|l| l.strip_prefix("#EXTINF:")) {
            let secs: f64 = l.trim_end_matches(',').parse().expect("EXTINF is a number");
            assert!(
                secs >= 0.0 && secs.round() <= target as f64,
                "EXTINF {secs} > {target}"
            );
        }
        let back = MediaPlaylist::parse(&text, kind)
            .unwrap_or_else(|e| panic!("own playlist unreadable: {e}\n{text}"));
        assert_eq!(
            back.render(),
            text,
            "render -> parse -> render changed the text"
        );
        assert_eq!(back.next_sequence(), p.next_sequence());
    }
});
