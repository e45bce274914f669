//! The low-latency rendition checked by FFmpeg: a stream remuxed with
//! `low_latency` on publishes, beside its MPEG-TS segments, fragmented-MP4
//! parts whose playlist follows RFC 8216bis (parts no longer than
//! PART-TARGET, independent parts where segments start, the same segment
//! boundaries and EXTINF as `index.m3u8`), and whose bytes ffprobe reads as
//! the same frames as the MPEG-TS segment of the same number.

use std::path::Path;
use std::sync::Arc;

use crate::common::*;
use streamcore::audio::AudioCodec;
use streamcore::codec::VideoCodec;
use streamcore::ll::{parse_file_name, LlFile, LlPlaylist, LowLatencyConfig};
use streamcore::{Dur90k, LiveStream, MemoryStorage, StreamConfig};

const PART_TARGET_MS: i64 = 200;

struct Part {
    duration: f64,
    uri: String,
    independent: bool,
}

/// What the test reads from `ll.m3u8`: per segment (msn, EXTINF, parts).
struct LlText {
    target_duration: u32,
    part_target: f64,
    segments: Vec<(u64, Option<f64>, Vec<Part>)>,
    maps: Vec<String>,
    pdts: usize,
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[start..];
    if let Some(q) = rest.strip_prefix('"') {
        return q.split('"').next();
    }
    rest.split(',').next()
}

fn read_ll(text: &str) -> LlText {
    let mut out = LlText {
        target_duration: 0,
        part_target: 0.0,
        segments: Vec::new(),
        maps: Vec::new(),
        pdts: 0,
    };
    let mut msn: u64 = 0;
    let mut parts = Vec::new();
    let mut extinf = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            out.target_duration = v.parse().unwrap();
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            msn = v.parse().unwrap();
        } else if line.starts_with("#EXT-X-PART-INF:") {
            out.part_target = attr(line, "PART-TARGET").unwrap().parse().unwrap();
        } else if line.starts_with("#EXT-X-MAP:") {
            out.maps.push(attr(line, "URI").unwrap().to_string());
        } else if line.starts_with("#EXT-X-PROGRAM-DATE-TIME:") {
            out.pdts += 1;
        } else if line.starts_with("#EXT-X-PART:") {
            parts.push(Part {
                duration: attr(line, "DURATION").unwrap().parse().unwrap(),
                uri: attr(line, "URI").unwrap().to_string(),
                independent: attr(line, "INDEPENDENT") == Some("YES"),
            });
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            extinf = Some(v.trim_end_matches(',').parse::<f64>().unwrap());
        } else if !line.starts_with('#') && !line.is_empty() {
            assert_eq!(
                parse_file_name(line),
                Some(LlFile::Segment(msn)),
                "segment URI {line} for msn {msn}"
            );
            out.segments
                .push((msn, extinf.take(), std::mem::take(&mut parts)));
            msn += 1;
        }
    }
    if !parts.is_empty() {
        out.segments.push((msn, None, parts));
    }
    out
}

fn ll_config(codec: VideoCodec) -> StreamConfig {
    StreamConfig {
        event_playlist: true,
        keep_segments: true,
        codec,
        low_latency: Some(LowLatencyConfig {
            part_target: Dur90k::from_millis(PART_TARGET_MS),
            on_demand: None,
        }),
        clock: stepping_clock(),
        ..Default::default()
    }
}

/// Pushes `fixture` frame by frame, 40 ms apart (with `audio`: 40 ms of
/// G.711 between frames) and ends the stream.
fn remux(fixture_name: &str, codec: VideoCodec, audio: bool) -> (MemoryStorage, LiveStream) {
    let storage = MemoryStorage::new();
    let mut s =
        LiveStream::with_storage("ll", Arc::new(storage.clone()), ll_config(codec)).unwrap();
    assert!(s.low_latency().is_some());
    let data = std::fs::read(fixture(fixture_name)).unwrap();
    let units = match codec {
        VideoCodec::H264 => access_units(&data),
        VideoCodec::H265 => streamcore::h265::split_access_units(&data)
            .iter()
            .map(|au| au.to_annexb())
            .collect(),
    };
    let tone: Vec<u8> = (0..320)
        .map(|i| if i % 16 < 8 { 0xaa } else { 0x2a })
        .collect();
    for (i, au) in units.iter().enumerate() {
        let t = 1_700_000_000_000 + i as i64 * 40;
        s.push_frame(au, Some(t)).unwrap();
        if audio {
            s.push_audio(AudioCodec::G711A, &tone, Some(t)).unwrap();
        }
    }
    s.finish(true).unwrap();
    (storage, s)
}

fn write(dir: &Path, name: &str, parts: &[&[u8]]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, parts.concat()).unwrap();
    path
}

/// (pts relative to the first, duration, keyframe) of a file's video packets.
fn relative_packets(path: &Path) -> Vec<(i64, i64, bool)> {
    let mut p = packets(path);
    p.sort_by_key(|x| x.0);
    let first = p.first().map_or(0, |x| x.0);
    p.into_iter().map(|(t, d, k)| (t - first, d, k)).collect()
}

fn check_rendition(fixture_name: &str, codec: VideoCodec, audio: bool) {
    let (storage, stream) = remux(fixture_name, codec, audio);
    let store = stream.low_latency().unwrap();
    let text = store.read(|p: &LlPlaylist| p.render(false));
    let ll = read_ll(&text);
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
    assert_eq!(ll.part_target, PART_TARGET_MS as f64 / 1000.0);
    let ts_text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    let (ts_segments, ts_target) = parse_playlist(&ts_text);
    assert_eq!(ll.target_duration, ts_target);
    assert!(ll.segments.len() >= 2, "{text}");
    assert_eq!(
        ll.pdts,
        ll.segments.len(),
        "a PROGRAM-DATE-TIME on every segment"
    );
    assert_eq!(ll.maps, ["ll-init-0.mp4"], "{text}");

    let dir = tempfile::tempdir().unwrap();
    let init = store.read(|p| p.init(0)).expect("init segment");
    let mut all_parts: Vec<bytes::Bytes> = Vec::new();
    let first_msn = ll.segments[0].0;
    for (msn, extinf, parts) in &ll.segments {
        // Same boundaries and durations as the MPEG-TS segment of that number.
        let (ts_extinf, ts_uri) = &ts_segments[*msn as usize];
        assert_eq!(ts_uri, &format!("{msn}.ts"));
        assert_eq!(extinf.unwrap(), *ts_extinf, "EXTINF of segment {msn}");
        // Parts: none over PART-TARGET; the first starts with the keyframe.
        let listed = !parts.is_empty();
        if listed {
            assert!(
                parts[0].independent,
                "segment {msn} opens with an independent part"
            );
            let sum: f64 = parts.iter().map(|p| p.duration).sum();
            assert!(
                (sum - ts_extinf).abs() < 0.002,
                "parts of {msn} sum to {sum}, EXTINF {ts_extinf}"
            );
            for p in parts {
                assert!(
                    p.duration <= ll.part_target + 1e-9,
                    "{} lasts {}",
                    p.uri,
                    p.duration
                );
            }
            // Parts other than the segment's last are at least half the target.
            for p in &parts[..parts.len() - 1] {
                assert!(
                    p.duration >= ll.part_target / 2.0,
                    "{} lasts {}",
                    p.uri,
                    p.duration
                );
            }
        }
        let segment = store.read(|p| p.segment(*msn)).expect("complete segment");
        let mut joined = Vec::new();
        for k in 0.. {
            match store.read(|p| p.part(*msn, k)) {
                streamcore::ll::Fetch::Ready(b) => {
                    joined.extend_from_slice(&b);
                    all_parts.push(b);
                }
                _ => break,
            }
        }
        assert_eq!(joined, segment.to_vec(), "segment {msn} is its parts");

        // FFmpeg reads init + segment as the same video frames as the TS.
        let mp4 = write(dir.path(), &format!("{msn}.mp4"), &[&init, &segment]);
        let ts = write(
            dir.path(),
            &format!("{msn}.ts"),
            &[&storage.get(ts_uri).unwrap()],
        );
        assert_eq!(ffmpeg_errors(&mp4), "", "segment {msn}");
        let (got, want) = (relative_packets(&mp4), relative_packets(&ts));
        assert_eq!(got.len(), want.len(), "frames of segment {msn}");
        assert_eq!(
            got.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            want.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
            "pts and keyframes of segment {msn}"
        );
        assert_eq!(
            frame_md5s(&mp4),
            frame_md5s(&ts),
            "decoded frames of segment {msn}"
        );
        if audio {
            let names = codec_names(&mp4);
            assert!(names.iter().any(|n| n == "aac"), "{names:?}");
        }
    }
    assert_eq!(first_msn, 0, "the whole fixture fits the window");
    // All parts in a row after the init: one playable file with every frame.
    let mut whole: Vec<&[u8]> = vec![&init];
    whole.extend(all_parts.iter().map(|b| &b[..]));
    let all = write(dir.path(), "all.mp4", &whole);
    assert_eq!(ffmpeg_errors(&all), "");
    assert_eq!(
        packets(&all).len() as u64,
        stream.stats().frames_muxed,
        "every muxed frame is in the parts"
    );
}

#[test]
fn h264_parts_are_the_ts_segments_frames() {
    check_rendition("baseline.h264", VideoCodec::H264, false);
}

#[test]
fn h264_with_transcoded_audio() {
    check_rendition("baseline.h264", VideoCodec::H264, true);
}

#[test]
fn h265_parts_are_the_ts_segments_frames() {
    check_rendition("hevc_nob.h265", VideoCodec::H265, false);
}

/// On demand, parts are made from the first segment after a request and stop once requests
/// stop: an unwatched stream holds nothing.
#[test]
fn on_demand_starts_at_a_segment_and_stops_when_unwatched() {
    let linger = std::time::Duration::from_millis(300);
    let mut cfg = ll_config(VideoCodec::H264);
    cfg.low_latency = Some(LowLatencyConfig {
        part_target: Dur90k::from_millis(PART_TARGET_MS),
        on_demand: Some(linger),
    });
    let storage = MemoryStorage::new();
    let mut s = LiveStream::with_storage("od", Arc::new(storage.clone()), cfg).unwrap();
    let store = s.low_latency().unwrap();
    let units = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let mut i = 0usize;
    // Pushes frames until `n` more segments are published.
    let mut segments = |s: &mut LiveStream, n: usize| {
        let mut published = 0;
        while published < n {
            let au = &units[i % units.len()];
            let t = 1_700_000_000_000 + i as i64 * 40;
            published += s.push_frame(au, Some(t)).unwrap().len();
            i += 1;
        }
    };
    segments(&mut s, 2);
    assert!(!store.read(|p| p.has_parts()), "nobody asked: no parts");
    assert_eq!(store.read(|p| p.bytes_held()), 0);
    store.mark_wanted();
    // Parts begin with the next segment to begin (at its keyframe), not mid-segment: the one
    // after the segment open now.
    segments(&mut s, 1);
    let (ts_segments, _) =
        parse_playlist(&String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap());
    let msn = ts_segments.len() as u64;
    segments(&mut s, 1);
    let first = store.read(|p| p.render(false));
    assert!(
        first.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{msn}\n")),
        "starts at segment {msn}: {first}"
    );
    assert!(
        first.contains(&format!("URI=\"ll-{msn}.0.m4s\",INDEPENDENT=YES")),
        "{first}"
    );
    assert!(store.read(|p| p.segment(msn).is_some()));
    // Nobody asks any more: at the next segment the rendition is dropped.
    std::thread::sleep(linger);
    segments(&mut s, 2);
    assert!(!store.read(|p| p.has_parts()));
    assert_eq!(store.read(|p| p.bytes_held()), 0);
    // Asked again: a new init segment, numbered on.
    store.mark_wanted();
    segments(&mut s, 2);
    let again = store.read(|p| p.render(false));
    assert!(
        again.contains("ll-init-1.mp4") && !again.contains("ll-init-0.mp4"),
        "{again}"
    );
}

#[test]
fn off_by_default() {
    let s = LiveStream::with_storage(
        "plain",
        Arc::new(MemoryStorage::new()),
        StreamConfig::default(),
    )
    .unwrap();
    assert!(s.low_latency().is_none());
}
