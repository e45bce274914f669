//! Remuxes every fixture to HLS on disk and checks the result with FFmpeg as
//! the independent reader: clean decode, the same frames (MD5 in display
//! order) as decoding the source, EXTINF equal to what ffprobe derives from
//! PTS, EXTINF within TARGETDURATION, and every segment opening with PAT,
//! PMT and a keyframe.

use crate::common;

use std::path::Path;

use common::*;
use streamcore::{LiveStream, StreamConfig};

struct Outcome {
    dir: tempfile::TempDir,
    stats: streamcore::StreamStats,
}

fn remux_file(input: &Path) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StreamConfig {
        event_playlist: true,
        keep_segments: true,
        clock: stepping_clock(),
        ..Default::default()
    };
    let mut s = LiveStream::open("fixture", dir.path(), cfg).unwrap();
    s.push_bytes(&std::fs::read(input).unwrap()).unwrap();
    s.finish(true).unwrap();
    Outcome {
        dir,
        stats: s.stats(),
    }
}

/// Checks a playlist directory against FFmpeg; `reference` is a file whose
/// decoded frames the playlist must reproduce (a prefix of them when
/// `prefix_frames` is given).
fn check(dir: &Path, reference: &Path, prefix_frames: Option<usize>) {
    let index = dir.join("index.m3u8");
    let text = std::fs::read_to_string(&index).unwrap();
    assert_eq!(
        ffmpeg_errors(&index),
        "",
        "ffmpeg reports errors reading {text}"
    );

    let mut want = frame_md5s(reference);
    if let Some(n) = prefix_frames {
        want.truncate(n);
    }
    let got = frame_md5s(&index);
    assert_eq!(got.len(), want.len(), "frame count");
    assert!(got == want, "decoded frames differ from the source");

    let (segs, target) = parse_playlist_with_discontinuities(&text);
    assert!(!segs.is_empty());
    let probed: Vec<_> = segs
        .iter()
        .map(|(_, uri, _)| packets(&dir.join(uri)))
        .collect();
    for (i, ((extinf, uri, _), pkts)) in segs.iter().zip(&probed).enumerate() {
        assert!(
            extinf.round() as u32 <= target,
            "{uri}: EXTINF {extinf} rounds above {target}"
        );
        let mut pts: Vec<i64> = pkts.iter().map(|p| p.0).collect();
        pts.sort_unstable();
        let first = pts[0];
        let next_contiguous = segs.get(i + 1).is_some_and(|s| !s.2);
        let derived = if next_contiguous {
            // The segment lasts until the next one starts.
            let next_first = probed[i + 1].iter().map(|p| p.0).min().unwrap();
            (next_first - first) as f64 / 90_000.0
        } else {
            // Before a break or at the end: its last frame plus one frame
            // (TS carries no durations, so the frame step is read off the PTS).
            let step = pts
                .windows(2)
                .map(|w| w[1] - w[0])
                .filter(|&d| d > 0)
                .min()
                .unwrap_or(0);
            (pts[pts.len() - 1] + step - first) as f64 / 90_000.0
        };
        assert!(
            (derived - extinf).abs() <= 0.001,
            "{uri}: EXTINF {extinf} vs PTS-derived {derived}"
        );
        assert!(pkts[0].2, "{uri}: first packet is not a keyframe");

        let bytes = std::fs::read(dir.join(uri)).unwrap();
        let pid = |k: usize| {
            assert_eq!(bytes[k * 188], 0x47, "{uri}: TS sync byte");
            ((bytes[k * 188 + 1] as u16 & 0x1f) << 8) | bytes[k * 188 + 2] as u16
        };
        // SDT (0x11) may come first; then PAT (0) and PMT (0x1000) before any video.
        let first_pids: Vec<u16> = (0..4).map(pid).collect();
        let pat = first_pids
            .iter()
            .position(|&p| p == 0)
            .expect("PAT at the start");
        let pmt = first_pids
            .iter()
            .position(|&p| p == 0x1000)
            .expect("PMT at the start");
        let video = first_pids.iter().position(|&p| p == 0x100).unwrap_or(4);
        assert!(
            pat < pmt && pmt < video,
            "{uri}: PIDs at start {first_pids:x?}"
        );
    }
}

macro_rules! fixture_test {
    ($name:ident, $path:expr) => {
        fixture_test!($name, $path, None);
    };
    ($name:ident, $path:expr, $prefix:expr) => {
        #[test]
        fn $name() {
            let input = $path;
            let out = remux_file(&input);
            check(out.dir.path(), &input, $prefix);
            assert_eq!(out.stats.failed_segments, 0);
        }
    };
}

fixture_test!(baseline_without_b_frames, fixture("baseline.h264"));
fixture_test!(high_profile_two_b_frames, fixture("high_b2.h264"));
fixture_test!(high_profile_three_b_frames_pyramid, fixture("high_b3.h264"));
fixture_test!(ntsc_29_97_fps, fixture("main_2997.h264"));
fixture_test!(starts_mid_gop, fixture("midgop.h264"));
/// The same checks on a third-party conformance stream, when present.
macro_rules! capture_test {
    ($name:ident, $capture:expr) => {
        #[test]
        fn $name() {
            let Some(input) = capture($capture, stringify!($name)) else {
                return;
            };
            let out = remux_file(&input);
            check(out.dir.path(), &input, None);
            assert_eq!(out.stats.failed_segments, 0);
        }
    };
}

capture_test!(
    conformance_720p_b_frames_temporal_direct,
    "h264/VID_1280x720_cabac_temporal_direct.264"
);
capture_test!(conformance_baseline, "h264/BA_MW_D.264");
capture_test!(conformance_nine_slices_per_picture, "h264/MR1_BT_A.h264");
capture_test!(conformance_sar_vui, "h264/SarVui.264");
capture_test!(conformance_idr_lost, "h264/BA_MW_D_IDR_LOST.264");

#[test]
fn parameter_sets_sent_once_are_repeated_in_every_segment() {
    let out = remux_file(&fixture("sps_once.h264"));
    // The pictures are those of high_b2.h264, which repeats SPS/PPS itself.
    check(out.dir.path(), &fixture("high_b2.h264"), None);
    let (segs, _) =
        parse_playlist(&std::fs::read_to_string(out.dir.path().join("index.m3u8")).unwrap());
    assert!(segs.len() >= 3);
    for (_, uri) in &segs {
        // Each segment alone decodes (it carries SPS/PPS before its IDR).
        assert_eq!(ffmpeg_errors(&out.dir.path().join(uri)), "", "{uri}");
    }
}

#[test]
fn resolution_change_starts_a_discontinuity() {
    let conformance = capture(
        "h264/Error_I_P.264",
        "resolution_change_starts_a_discontinuity (its conformance half)",
    );
    let inputs = [(Some(fixture("reschange.h264")), 1), (conformance, 2)];
    for (input, changes) in inputs {
        let Some(input) = input else { continue };
        let out = remux_file(&input);
        let text = std::fs::read_to_string(out.dir.path().join("index.m3u8")).unwrap();
        assert_eq!(
            text.matches("#EXT-X-DISCONTINUITY\n").count(),
            changes,
            "{text}"
        );
        check(out.dir.path(), &input, None);
    }
}

#[test]
fn gop_longer_than_the_target_duration_is_cut_and_counted() {
    // 300 frames, one IDR: nothing can be cut at a keyframe after it.
    let Some(input) = capture(
        "h264/test_cif_P_CABAC_slice.264",
        "gop_longer_than_the_target_duration_is_cut_and_counted",
    ) else {
        return;
    };
    let out = remux_file(&input);
    assert_eq!(out.stats.forced_cuts, 1);
    assert_eq!(
        out.stats.frames_muxed + out.stats.dropped_before_keyframe,
        300
    );
    let muxed = out.stats.frames_muxed as usize;
    // 8 s TARGETDURATION at 25 fps: up to 212 frames (8.48 s rounds to 8).
    assert_eq!(muxed, 212);
    check(out.dir.path(), &input, Some(muxed));
}

#[test]
fn big_buck_bunny_from_mp4() {
    let Some(mp4) = capture("h264/bigbuckbunny.mp4", "big_buck_bunny_from_mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("bbb.h264");
    let st = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(mp4)
        .args(["-c:v", "copy", "-bsf:v", "h264_mp4toannexb", "-f", "h264"])
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let out = remux_file(&raw);
    check(out.dir.path(), &raw, None);
}
