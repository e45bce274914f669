//! H.265/HEVC end to end: the HEVC fixtures through [`LiveStream`] with
//! `codec: VideoCodec::H265`, read back by FFmpeg as the independent
//! reader: HEVC streams (stream type 0x24) in every segment, a keyframe at
//! every segment start, a clean decode with `-xerror`, the source's frames
//! in display order (frame MD5s), 10 s in total, PTS increasing in display
//! order; and the parser's POC and keyframes against FFmpeg's reading of
//! the same slice headers.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use bytes::Bytes;
use streamcore::codec::VideoCodec;
use streamcore::h265::{self, NalHeader};
use streamcore::{LiveStream, StreamConfig, StreamStats};

const FRAMES: usize = 250;
const FRAME_TICKS: i64 = 3600;

fn config() -> StreamConfig {
    StreamConfig {
        codec: VideoCodec::H265,
        event_playlist: true,
        keep_segments: true,
        clock: stepping_clock(),
        ..Default::default()
    }
}

/// Remuxes a whole HEVC file pushed as one byte stream.
fn remux_file(input: &Path) -> (tempfile::TempDir, StreamStats) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LiveStream::open("hevc", dir.path(), config()).unwrap();
    s.push_bytes(&std::fs::read(input).unwrap()).unwrap();
    s.finish(true).unwrap();
    (dir, s.stats())
}

/// The stream types of the first PMT of a TS file (ISO/IEC 13818-1 2.4.4.8).
fn pmt_stream_types(ts: &[u8], pmt_pid: u16) -> Vec<u8> {
    for pkt in ts.chunks_exact(188) {
        let pid = (u16::from(pkt[1] & 0x1f) << 8) | u16::from(pkt[2]);
        if pid != pmt_pid || pkt[1] & 0x40 == 0 {
            continue;
        }
        let mut at = 4;
        if pkt[3] & 0x20 != 0 {
            at += 1 + usize::from(pkt[4]); // adaptation field
        }
        let section = &pkt[at + 1 + usize::from(pkt[at])..];
        assert_eq!(section[0], 0x02, "PMT table id");
        let section_len = (usize::from(section[1] & 0x0f) << 8) | usize::from(section[2]);
        let program_info = (usize::from(section[10] & 0x0f) << 8) | usize::from(section[11]);
        let end = 3 + section_len - 4; // before the CRC
        let mut i = 12 + program_info;
        let mut types = Vec::new();
        while i + 5 <= end {
            types.push(section[i]);
            i += 5 + ((usize::from(section[i + 3] & 0x0f) << 8) | usize::from(section[i + 4]));
        }
        return types;
    }
    panic!("no PMT on PID {pmt_pid:#x}");
}

/// (pts, dts) of every video packet, in decode order.
fn pts_dts(input: &Path) -> Vec<(i64, i64)> {
    ffprobe_csv(
        input,
        &["-select_streams", "v", "-show_entries", "packet=pts,dts"],
    )
    .iter()
    .map(|l| {
        let mut f = l.split(',');
        let mut next = |what| f.next().and_then(|v| v.parse().ok()).expect(what);
        (next("pts"), next("dts"))
    })
    .collect()
}

/// PTS of every decoded frame, in display (output) order.
fn frame_pts(input: &Path) -> Vec<i64> {
    ffprobe_csv(
        input,
        &["-select_streams", "v", "-show_entries", "frame=pts"],
    )
    .iter()
    .map(|l| l.split(',').next().unwrap().parse().expect("frame pts"))
    .collect()
}

/// Checks a remuxed playlist directory against FFmpeg and the source.
fn check(dir: &Path, source: &Path, b_frames: bool) {
    let index = dir.join("index.m3u8");
    let text = std::fs::read_to_string(&index).unwrap();
    assert_eq!(strict_decode_errors(&index), "", "decoding {text}");
    let (segs, target) = parse_playlist(&text);
    assert!(segs.len() >= 3, "{text}");

    let want = frame_md5s(source);
    assert_eq!(want.len(), FRAMES, "the source decodes to {FRAMES} frames");
    assert!(
        frame_md5s(&index) == want,
        "frames differ from the source's"
    );

    let mut all = Vec::new();
    for (extinf, uri) in &segs {
        let seg = dir.join(uri);
        // One elementary stream, of stream type 0x24 (H.265), which FFmpeg
        // reads as HEVC.
        let names = codec_names(&seg);
        assert!(
            !names.is_empty() && names.iter().all(|n| n == "hevc"),
            "{uri}: {names:?}"
        );
        assert_eq!(
            pmt_stream_types(&std::fs::read(&seg).unwrap(), 0x1000),
            [0x24],
            "{uri}"
        );
        let pkts = packets(&seg);
        assert!(pkts[0].2, "{uri}: first packet is not a keyframe");
        assert!(extinf.round() as u32 <= target, "{uri}: {extinf}");
        // Each segment decodes on its own (parameter sets before its
        // keyframe).
        assert_eq!(strict_decode_errors(&seg), "", "{uri}");
        all.extend(pts_dts(&seg));
    }
    assert_eq!(all.len(), FRAMES, "packets in the segments");

    // 10 s: EXTINFs, and the PTS span plus one frame, within one frame.
    let listed: f64 = segs.iter().map(|s| s.0).sum();
    assert!((listed - 10.0).abs() <= 0.04, "EXTINF total {listed}");
    let first = all.iter().map(|p| p.0).min().unwrap();
    let last = all.iter().map(|p| p.0).max().unwrap();
    let span = last + FRAME_TICKS - first;
    assert!(
        (span - 900_000).abs() <= FRAME_TICKS,
        "PTS span {span} ticks"
    );

    // Display order: decoded frames come out with strictly increasing PTS,
    // one frame step apart.
    let shown = frame_pts(&index);
    assert_eq!(shown.len(), FRAMES);
    assert!(
        shown.windows(2).all(|w| w[1] - w[0] == FRAME_TICKS),
        "display-order PTS {shown:?}"
    );
    assert!(all.iter().all(|&(pts, dts)| pts >= dts), "PTS before DTS");
    let reordered = all.iter().filter(|(pts, dts)| pts != dts).count();
    if b_frames {
        // Decode order differs from display order: the PTS restore it.
        assert!(reordered > 0 && all.windows(2).any(|w| w[1].0 < w[0].0));
    } else {
        assert!(all.windows(2).all(|w| w[1].0 > w[0].0));
    }
}

fn stats_are_clean(stats: &StreamStats) {
    assert_eq!(stats.access_units, FRAMES as u64);
    assert_eq!(stats.frames_muxed, FRAMES as u64);
    assert_eq!(
        (
            stats.bad_nals,
            stats.failed_segments,
            stats.dropped_before_keyframe
        ),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn hevc_without_b_frames() {
    let source = fixture("hevc_nob.h265");
    let (dir, stats) = remux_file(&source);
    stats_are_clean(&stats);
    check(dir.path(), &source, false);
}

#[test]
fn hevc_with_b_frames() {
    let source = fixture("hevc_b.h265");
    let (dir, stats) = remux_file(&source);
    stats_are_clean(&stats);
    check(dir.path(), &source, true);
}

/// A device that sends VPS/SPS/PPS once: the cached ones are put before
/// every later keyframe, so each segment still decodes on its own. Frames
/// are pushed one access unit at a time, as JT/T 1078 delivers them.
#[test]
fn hevc_parameter_sets_sent_once_are_repeated_in_every_segment() {
    let source = fixture("hevc_b.h265");
    let units = h265::split_access_units(&std::fs::read(&source).unwrap());
    assert_eq!(units.len(), FRAMES);
    let dir = tempfile::tempdir().unwrap();
    let mut s = LiveStream::open("hevc", dir.path(), config()).unwrap();
    let mut stripped = 0;
    for (i, au) in units.iter().enumerate() {
        let nals: Vec<Bytes> = au
            .nals
            .iter()
            .filter(|n| {
                let t = NalHeader::parse(n).unwrap().nal_type;
                let keep = i == 0 || !(32..=34).contains(&t);
                stripped += usize::from(!keep);
                keep
            })
            .cloned()
            .collect();
        s.push_nals(nals, None).unwrap();
    }
    s.finish(true).unwrap();
    assert_eq!(stripped, 4 * 3, "the later keyframes lost VPS, SPS and PPS");
    stats_are_clean(&s.stats());
    check(dir.path(), &source, true);
}

/// The parser's picture order count and keyframes against FFmpeg's own
/// reading of the slice headers (`trace_headers`) and packet flags.
#[test]
fn hevc_poc_and_keyframes_match_ffmpeg() {
    for name in ["hevc_nob.h265", "hevc_b.h265"] {
        let source = fixture(name);
        let units = h265::split_access_units(&std::fs::read(&source).unwrap());
        let trace = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-i"])
            .arg(&source)
            .args(["-c", "copy", "-bsf:v", "trace_headers", "-f", "null", "-"])
            .output()
            .expect("cannot run ffmpeg");
        let trace = String::from_utf8_lossy(&trace.stderr);
        // Per picture: its first slice segment's POC LSB (absent for IDR).
        let mut lsbs: Vec<i64> = Vec::new();
        let mut log2_max_lsb = None;
        for line in trace.lines() {
            let value = || line.rsplit(" = ").next().unwrap().trim().parse::<i64>();
            if line.contains("first_slice_segment_in_pic_flag") && value() == Ok(1) {
                lsbs.push(0);
            } else if line.contains(" slice_pic_order_cnt_lsb ") {
                *lsbs.last_mut().expect("after a first slice") = value().unwrap();
            } else if line.contains("log2_max_pic_order_cnt_lsb_minus4") {
                log2_max_lsb = Some(value().unwrap() + 4);
            }
        }
        let max_lsb = 1i64 << log2_max_lsb.expect("an SPS in the trace");
        let ours: Vec<i64> = units
            .iter()
            .map(|u| u.poc.expect("POC").rem_euclid(max_lsb))
            .collect();
        assert_eq!(ours, lsbs, "{name}: POC LSBs in decode order");

        let flags: Vec<bool> = ffprobe_csv(&source, &["-show_entries", "packet=flags"])
            .iter()
            .map(|l| l.starts_with('K'))
            .collect();
        let keyframes: Vec<bool> = units.iter().map(|u| u.keyframe).collect();
        assert_eq!(keyframes, flags, "{name}: keyframes");
    }
}
