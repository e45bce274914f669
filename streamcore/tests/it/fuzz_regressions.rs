//! Regression tests for what the cargo-fuzz targets (fuzz/) found in the
//! whole-stream path, each named after its bug. Lower-level ones live next
//! to the code they pin (h264.rs, annexb.rs, playlist.rs, segmenter.rs).

use std::sync::Arc;

use streamcore::playlist::{MediaPlaylist, PlaylistKind};
use streamcore::{Dur90k, LiveStream, MemoryStorage, StreamConfig};

/// The configuration of the `live_stream_*` fuzz targets.
fn fuzz_stream() -> (LiveStream, MemoryStorage) {
    let cfg = StreamConfig {
        target_segment: Dur90k::from_secs(1),
        max_segment_secs: 2,
        live_window: Some(Dur90k::from_secs(6)),
        delete_grace: Dur90k::from_secs(1),
        clock: Arc::new(|| 1_700_000_000_000),
        ..StreamConfig::default()
    };
    let storage = MemoryStorage::new();
    let s = LiveStream::with_storage("fuzz", Arc::new(storage.clone()), cfg).unwrap();
    (s, storage)
}

/// Found by `live_stream_bytes`: an SPS, two IDRs and a P slice (105
/// bytes) whose second IDR arrives before the 1 s target with a PTS and
/// duration that take the segment to 4.25 s. The segmenter let keyframes
/// extend a segment past the limit, the playlist refused it, and
/// `finish` failed with "rounds above TARGETDURATION 2".
#[test]
fn fuzz_regression_stream_segment_over_target_duration() {
    let data = [
        0x00, 0x00, 0x00, 0x01, 0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x02,
        0x00, 0x03, 0x00, 0x10, 0x00, 0x03, 0x03, 0x2f, 0x78, 0x32, 0x36, 0x34, 0x2e, 0x68, 0xff,
        0x00, 0x00, 0x01, 0x65, 0xbf, 0xf0, 0x05, 0x00, 0x00, 0x00, 0x00, 0x01, 0x68, 0xce, 0x02,
        0x00, 0x00, 0x01, 0x65, 0x88, 0x80, 0x2f, 0x01, 0xa9, 0x74,
    ];
    let (mut s, storage) = fuzz_stream();
    s.push_bytes(&data).unwrap();
    s.finish(true).unwrap();
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    let p = MediaPlaylist::parse(&text, PlaylistKind::Event).unwrap();
    assert!(p.segments().count() >= 1, "{text}");
    for seg in p.segments() {
        assert!(seg.duration <= Dur90k(2 * 90_000 + 44_999), "{text}");
        assert!(storage.get(&seg.uri).is_some());
    }
}

/// Found by `live_stream_bytes` under AddressSanitizer (a 16-byte seed: a
/// 4-byte start code, an IDR slice header, zeros): a keyframe with no SPS
/// ever received made `finish` fail ("keyframe without any valid SPS"),
/// so the playlist was never ended; inside a push the error also threw
/// away that push's events and left the rest of its input unread. The
/// keyframe is now dropped and counted.
#[test]
fn fuzz_regression_stream_keyframe_without_sps_fails_finish() {
    let data = [
        0x00, 0x00, 0x00, 0x01, 0x65, 0x88, 0x77, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    let (mut s, storage) = fuzz_stream();
    assert!(s.push_bytes(&data).unwrap().is_empty());
    assert!(s.finish(true).unwrap().is_empty());
    assert_eq!(s.stats().undecodable_keyframes, 1);
    assert_eq!(s.stats().frames_muxed, 0);
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
}
