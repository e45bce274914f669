//! LiveStream behaviour end to end: chunking invariance, exact playlist
//! text around a timestamp gap, reconnects, window sliding with deletion,
//! and the real JT/T 1078 device capture.

use crate::common;

use std::sync::Arc;

use common::*;
use streamcore::{Dur90k, LiveStream, MemoryStorage, StreamConfig, StreamEvent};

fn memory_stream(cfg: StreamConfig) -> (LiveStream, MemoryStorage) {
    let storage = MemoryStorage::new();
    let s = LiveStream::with_storage("t", Arc::new(storage.clone()), cfg).unwrap();
    (s, storage)
}

fn all_files(storage: &MemoryStorage) -> Vec<(String, Vec<u8>)> {
    storage
        .names()
        .into_iter()
        .map(|n| (n.clone(), storage.get(&n).unwrap()))
        .collect()
}

/// Remuxes `data` pushed in the given chunk sizes; returns every output file.
fn remux_chunked(data: &[u8], chunk: impl Fn(usize) -> usize) -> Vec<(String, Vec<u8>)> {
    let (mut s, storage) = memory_stream(StreamConfig {
        clock: Arc::new(|| 1_700_000_000_000),
        ..Default::default()
    });
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = chunk(i).clamp(1, data.len() - at);
        s.push_bytes(&data[at..at + n]).unwrap();
        at += n;
        i += 1;
    }
    s.finish(true).unwrap();
    all_files(&storage)
}

#[test]
fn any_chunking_gives_identical_segments_and_playlists() {
    let test = "any_chunking_gives_identical_segments_and_playlists (conformance streams)";
    let fixtures = [
        "baseline.h264",
        "high_b2.h264",
        "high_b3.h264",
        "main_2997.h264",
        "reschange.h264",
        "midgop.h264",
        "sps_once.h264",
    ]
    .map(fixture)
    .into_iter()
    .chain(
        [
            "h264/VID_1280x720_cabac_temporal_direct.264",
            "h264/MR1_BT_A.h264",
            "h264/Error_I_P.264",
        ]
        .into_iter()
        .filter_map(|c| capture(c, test)),
    );
    for f in fixtures {
        let data = std::fs::read(&f).unwrap();
        let whole = remux_chunked(&data, |_| usize::MAX);
        assert!(whole.len() >= 2, "{f:?}: playlist and segments");
        assert_eq!(
            remux_chunked(&data, |_| 1),
            whole,
            "{f:?}: one byte at a time"
        );
        // Pseudo-random chunk sizes from 1 to 4096 (an LCG, reproducible).
        let lcg = |i: usize| {
            ((i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407)
                >> 52) as usize
                % 4096
                + 1
        };
        assert_eq!(remux_chunked(&data, lcg), whole, "{f:?}: random chunks");
    }
}

#[test]
fn capture_time_gap_closes_segment_and_adds_discontinuity() {
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    assert_eq!(aus.len(), 250);
    let (mut s, storage) = memory_stream(StreamConfig {
        clock: stepping_clock(),
        ..Default::default()
    });
    for (i, au) in aus.iter().enumerate() {
        // Non-Unix device clock from 1000 ms, 40 ms a frame, 10 s gap at frame 125.
        let t = 1000 + 40 * i as i64 + if i >= 125 { 10_000 } else { 0 };
        s.push_frame(au, Some(t)).unwrap();
    }
    s.finish(true).unwrap();
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    assert_eq!(
        text,
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:8\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n\
         #EXTINF:4.000000,\n0.ts\n#EXTINF:1.000000,\n1.ts\n\
         #EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:26.000Z\n\
         #EXTINF:4.000000,\n2.ts\n#EXT-X-ENDLIST\n"
    );
    // Frames 125-149 follow the gap before the next keyframe: dropped, counted.
    assert_eq!(s.stats().dropped_before_keyframe, 25);
    assert_eq!(s.stats().frames_muxed, 225);
}

#[test]
fn program_date_time_follows_a_unix_device_clock_only() {
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    // stepping_clock starts at 1_700_000_000_000 (2023-11-14T22:13:20Z).
    for (origin, want) in [
        // A device clock 5 s behind the wall clock is used as it is.
        (
            1_699_999_995_000i64,
            "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:15.000Z",
        ),
        // 2^40 ms (a real capture's origin) is not Unix time: wall clock.
        (1 << 40, "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z"),
    ] {
        let (mut s, storage) = memory_stream(StreamConfig {
            clock: stepping_clock(),
            ..Default::default()
        });
        for (i, au) in aus.iter().enumerate() {
            s.push_frame(au, Some(origin + 40 * i as i64)).unwrap();
        }
        s.finish(true).unwrap();
        let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
        assert!(text.contains(want), "{text}");
    }
}

#[test]
fn reconnect_with_following_clock_continues_without_discontinuity() {
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let (mut s, storage) = memory_stream(StreamConfig {
        clock: stepping_clock(),
        ..Default::default()
    });
    let mut published = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        if i == 120 {
            // The device drops its connection mid-GOP and comes back 1 s
            // later at the next keyframe: the open segment is published.
            let ev = s.mark_break().unwrap();
            assert_eq!(ev.len(), 1, "segment open at disconnect is published");
            published.extend(ev);
            continue;
        }
        if (121..150).contains(&i) {
            continue;
        }
        published.extend(s.push_frame(au, Some(1000 + 40 * i as i64)).unwrap());
    }
    published.extend(s.finish(true).unwrap());
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
    let durations: Vec<i64> = published
        .iter()
        .map(|StreamEvent::SegmentPublished(i)| i.duration.0)
        .collect();
    // 0-99 (4 s), 100-119 (0.8 s), then 150-249 gapless (4 s).
    assert_eq!(durations, vec![360_000, 72_000, 360_000]);
    let starts: Vec<i64> = published
        .iter()
        .map(|StreamEvent::SegmentPublished(i)| i.start_pts.0)
        .collect();
    assert_eq!(
        starts,
        vec![0, 360_000, 432_000],
        "timestamps made continuous"
    );
}

#[test]
fn reconnect_with_clock_going_back_is_a_discontinuity() {
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let (mut s, storage) = memory_stream(StreamConfig::default());
    for (i, au) in aus.iter().enumerate().take(100) {
        s.push_frame(au, Some(50_000 + 40 * i as i64)).unwrap();
    }
    s.mark_break().unwrap();
    for (i, au) in aus.iter().enumerate().take(100) {
        s.push_frame(au, Some(40 * i as i64)).unwrap();
    }
    s.finish(true).unwrap();
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
}

#[test]
fn live_window_slides_and_old_segments_are_deleted_after_grace() {
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let (mut s, storage) = memory_stream(StreamConfig {
        delete_grace: Dur90k::from_secs(8),
        ..Default::default()
    });
    // 120 s of video: the baseline fixture looped twelve times.
    for round in 0..12 {
        for (i, au) in aus.iter().enumerate() {
            s.push_frame(au, Some(40 * (round * 250 + i) as i64))
                .unwrap();
        }
    }
    s.finish(false).unwrap();
    let text = String::from_utf8(storage.get("index.m3u8").unwrap()).unwrap();
    let (segs, target) = parse_playlist(&text);
    let total: f64 = segs.iter().map(|s| s.0).sum();
    // At least three target durations, and no more than needed for that.
    assert!(total >= 3.0 * target as f64, "{text}");
    assert!(total - segs[0].0 < 3.0 * target as f64, "{text}");
    let first_seq: u64 = segs[0].1.trim_end_matches(".ts").parse().unwrap();
    assert!(
        text.contains(&format!("#EXT-X-MEDIA-SEQUENCE:{first_seq}\n")),
        "{text}"
    );
    let files = storage.names();
    for (_, uri) in &segs {
        assert!(files.contains(uri), "listed segment {uri} exists");
    }
    // Segments more than the grace period out of the window are gone. The
    // 8 s asked for is below what RFC 8216 6.2.2 requires (the segment plus
    // the longest playlist that listed it: here 24 + 2 x 8 = 40 s), so the
    // last ~40 s of removed 4 s segments are still there.
    assert!(!files.contains(&"0.ts".to_string()), "{files:?}");
    let kept_outside = files
        .iter()
        .filter(|f| f.ends_with(".ts") && !segs.iter().any(|s| &s.1 == *f))
        .count();
    assert!(
        (9..=11).contains(&kept_outside),
        "{kept_outside}: {files:?}"
    );
}

#[test]
fn restart_resumes_the_playlist_with_a_discontinuity() {
    let dir = tempfile::tempdir().unwrap();
    let data = std::fs::read(fixture("baseline.h264")).unwrap();
    for run in 0..2 {
        let mut s = LiveStream::open("t", dir.path(), StreamConfig::default()).unwrap();
        s.push_bytes(&data).unwrap();
        // The second run ends the stream, so ffmpeg reads it as a whole.
        s.finish(run == 1).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
    let (segs, _) = parse_playlist(&text);
    let uris: Vec<&str> = segs.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(uris, ["0.ts", "1.ts", "2.ts", "3.ts", "4.ts", "5.ts"]);
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
    assert!(
        text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME:"),
        "{text}"
    );
    assert_eq!(ffmpeg_errors(&dir.path().join("index.m3u8")), "");
}

/// Frames of the real device capture: (capture ms, Annex-B bytes, is I-frame).
fn capture_frames(test: &str) -> Option<Vec<(i64, Vec<u8>, bool)>> {
    let data = std::fs::read(capture("jt1078_capture_24s.bin", test)?).unwrap();
    let mut frames = Vec::new();
    let mut partial = Vec::new();
    let mut at = 0;
    let mut packets = 0;
    while at + 30 <= data.len() {
        assert_eq!(&data[at..at + 4], b"01cd", "magic at {at}");
        let kind = data[at + 15] >> 4;
        let sub = data[at + 15] & 0x0f;
        let ts = i64::from_be_bytes(data[at + 16..at + 24].try_into().unwrap());
        let len_at = at
            + if kind <= 2 {
                28
            } else if kind == 3 {
                24
            } else {
                16
            };
        let len = u16::from_be_bytes([data[len_at], data[len_at + 1]]) as usize;
        let body = &data[len_at + 2..len_at + 2 + len];
        packets += 1;
        at = len_at + 2 + len;
        if kind > 2 {
            continue;
        }
        partial.extend_from_slice(body);
        if sub == 0 || sub == 2 {
            frames.push((ts, std::mem::take(&mut partial), kind == 0));
        }
    }
    assert_eq!(packets, 1634);
    Some(frames)
}

#[test]
fn real_device_capture_plays_for_its_own_timestamp_span() {
    let Some(frames) = capture_frames("real_device_capture_plays_for_its_own_timestamp_span")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = StreamConfig {
        event_playlist: true,
        keep_segments: true,
        ..Default::default()
    };
    let mut s = LiveStream::open("132570034500_1", dir.path(), cfg).unwrap();
    for (ts, frame, _) in &frames {
        s.push_frame(frame, Some(*ts)).unwrap();
    }
    s.finish(true).unwrap();
    let index = dir.path().join("index.m3u8");
    assert_eq!(ffmpeg_errors(&index), "");
    let first_key = frames.iter().position(|f| f.2).unwrap();
    let span_ms = frames.last().unwrap().0 - frames[first_key].0;
    let frame_ms = (span_ms as f64 / (frames.len() - first_key - 1) as f64).round();
    let text = std::fs::read_to_string(&index).unwrap();
    let (segs, _) = parse_playlist(&text);
    let total_ms = segs.iter().map(|s| s.0).sum::<f64>() * 1000.0;
    assert!(
        (total_ms - span_ms as f64).abs() <= frame_ms + 1.0,
        "total {total_ms} ms vs capture span {span_ms} ms (frame {frame_ms} ms)\n{text}"
    );
    assert_eq!(s.stats().frames_muxed as usize, frames.len() - first_key);
    assert_eq!(frame_md5s(&index).len(), frames.len() - first_key);
}

/// Regression (hostile input suite): an SPS claiming 4096x4096 macroblocks
/// was dropped, but the IDR slices that referred to it were still muxed,
/// so segments without any SPS (undecodable) could be published.
#[test]
fn keyframe_whose_sps_was_refused_is_not_muxed() {
    // Baseline SPS, POC type 2, 4096x4096 macroblocks, emulation-prevented.
    let huge: &[u8] = &[
        0x67, 66, 0, 51, 0xda, 0x00, 0x04, 0x00, 0x00, 0x03, 0x02, 0x00, 0x19,
    ];
    assert!(streamcore::h264::Sps::parse(huge).is_err());
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let (mut s, storage) = memory_stream(StreamConfig::default());
    for (i, au) in aus.iter().enumerate() {
        // Swap every SPS for the hostile one (4-byte start codes).
        let patched = replace_sps(au, huge);
        let ev = s.push_frame(&patched, Some(i as i64 * 40)).unwrap();
        assert!(ev.is_empty());
    }
    s.finish(true).unwrap();
    // Every keyframe (one per 2 s GOP) dropped and counted, nothing muxed.
    assert_eq!(s.stats().undecodable_keyframes, 5);
    assert_eq!(s.stats().dropped_before_keyframe, aus.len() as u64);
    assert_eq!(s.stats().frames_muxed, 0);
    assert!(all_files(&storage).iter().all(|(n, _)| !n.ends_with(".ts")));
}

fn replace_sps(au: &[u8], sps: &[u8]) -> Vec<u8> {
    let starts: Vec<usize> = (0..au.len().saturating_sub(3))
        .filter(|&k| au[k..k + 3] == [0, 0, 1])
        .collect();
    let mut out = Vec::new();
    for (n, &st) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(au.len());
        let nal = &au[st + 3..end];
        let nal = nal.strip_suffix(&[0]).unwrap_or(nal);
        out.extend_from_slice(&[0, 0, 0, 1]);
        if nal[0] & 0x1f == 7 {
            out.extend_from_slice(sps);
        } else {
            out.extend_from_slice(nal);
        }
    }
    out
}

/// Storage over [`MemoryStorage`] whose segment and playlist writes fail
/// with ENOSPC while the test says the disk is full.
#[derive(Clone, Default)]
struct FullDisk {
    inner: MemoryStorage,
    segments_fail: Arc<std::sync::atomic::AtomicBool>,
    playlists_fail: Arc<std::sync::atomic::AtomicBool>,
}

fn enospc() -> std::io::Error {
    std::io::Error::from_raw_os_error(28)
}

struct FailingWriter {
    inner: Box<dyn streamcore::SegmentWriter>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(enospc());
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl streamcore::SegmentWriter for FailingWriter {
    fn commit(self: Box<Self>) -> std::io::Result<()> {
        self.inner.commit()
    }
    fn abort(self: Box<Self>) {
        self.inner.abort()
    }
}

impl streamcore::Storage for FullDisk {
    fn begin_segment(&self, name: &str) -> std::io::Result<Box<dyn streamcore::SegmentWriter>> {
        Ok(Box::new(FailingWriter {
            inner: self.inner.begin_segment(name)?,
            fail: self.segments_fail.clone(),
        }))
    }
    fn replace_playlist(&self, name: &str, text: &[u8]) -> std::io::Result<()> {
        if self
            .playlists_fail
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(enospc());
        }
        self.inner.replace_playlist(name, text)
    }
    fn remove(&self, name: &str) -> std::io::Result<bool> {
        self.inner.remove(name)
    }
    fn read(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.inner.read(name)
    }
    fn list(&self, prefix: &str) -> std::io::Result<Vec<streamcore::StoredObject>> {
        self.inner.list(prefix)
    }
}

/// Disk full: segments whose writes fail are lost and counted, a failed
/// playlist write never fails the push (it used to abort the frame loop
/// and lose the next segment uncounted), the playlist lists only complete
/// segments, and publishing resumes with a DISCONTINUITY once space is back.
#[test]
fn disk_full_loses_segments_counted_and_resumes_with_a_discontinuity() {
    use std::sync::atomic::Ordering::Relaxed;
    let disk = FullDisk::default();
    let cfg = StreamConfig {
        target_segment: Dur90k::from_secs(2),
        max_segment_secs: 4,
        // Nothing slides out: the playlist must list every published segment.
        event_playlist: true,
        clock: stepping_clock(),
        ..Default::default()
    };
    let mut s = LiveStream::with_storage("t", Arc::new(disk.clone()), cfg).unwrap();
    let aus = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    // 25 fps, a keyframe every 50 access units: one 2 s segment per GOP.
    let mut published = Vec::new();
    for (i, au) in aus.iter().chain(aus.iter()).enumerate() {
        disk.playlists_fail.store((120..300).contains(&i), Relaxed);
        disk.segments_fail.store((180..300).contains(&i), Relaxed);
        let events = s.push_bytes(au).expect("storage errors never fail a push");
        for StreamEvent::SegmentPublished(seg) in events {
            published.push(seg.file_name);
        }
    }
    for StreamEvent::SegmentPublished(seg) in s.finish(true).unwrap() {
        published.push(seg.file_name);
    }
    let st = s.stats();
    assert!(st.failed_segments >= 2, "{st:?}");
    assert!(st.failed_playlist_writes >= 1, "{st:?}");
    assert_eq!(st.segments, published.len() as u64, "{st:?}");
    let text = String::from_utf8(disk.inner.get("index.m3u8").unwrap()).unwrap();
    let (listed, _) = parse_playlist_with_discontinuities(&text);
    let names: Vec<&str> = listed.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names, published, "{text}");
    for name in &names {
        let bytes = disk.inner.get(name).unwrap_or_default();
        assert!(
            !bytes.is_empty() && bytes.len() % 188 == 0,
            "{name}: {} bytes",
            bytes.len()
        );
    }
    // Exactly one discontinuity: before the first segment after the loss.
    let disc: Vec<usize> = (0..listed.len()).filter(|&i| listed[i].2).collect();
    assert_eq!(disc.len(), 1, "{text}");
    assert!(disc[0] > 0, "{text}");
    assert_eq!(
        published.len() as u64 + st.failed_segments,
        10,
        "20 s of 2 s GOPs: every segment published or counted lost"
    );
    assert!(text.ends_with("#EXT-X-ENDLIST\n"), "{text}");
}

/// Index of the pushed access unit whose `push_frame` published each segment.
fn publishing_pushes(file: &str) -> (Vec<usize>, Vec<usize>) {
    let aus = access_units(&std::fs::read(fixture(file)).unwrap());
    let (mut s, _storage) = memory_stream(StreamConfig {
        clock: stepping_clock(),
        ..Default::default()
    });
    let mut published = Vec::new();
    let mut keyframes = Vec::new();
    for (i, au) in aus.iter().enumerate() {
        // IDR slice (type 5) anywhere in the unit.
        if au
            .windows(4)
            .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
        {
            keyframes.push(i);
        }
        if !s.push_frame(au, Some(40 * i as i64)).unwrap().is_empty() {
            published.push(i);
        }
    }
    (published, keyframes)
}

/// Publish latency: a stream without reordering publishes a segment while
/// the keyframe that closes it is pushed, not one frame later.
#[test]
fn segment_is_published_by_the_push_of_its_closing_keyframe() {
    let (published, keyframes) = publishing_pushes("baseline.h264");
    assert!(!published.is_empty());
    for p in &published {
        assert!(
            keyframes.contains(p),
            "published at push {p}, keyframes at {keyframes:?}"
        );
    }
}

/// The zero-copy entry gives byte-identical segments and playlists.
#[test]
fn push_frame_bytes_equals_push_frame() {
    for file in ["baseline.h264", "high_b3.h264", "reschange.h264"] {
        let aus = access_units(&std::fs::read(fixture(file)).unwrap());
        let run = |shared: bool| {
            let (mut s, storage) = memory_stream(StreamConfig {
                clock: stepping_clock(),
                ..Default::default()
            });
            for (i, au) in aus.iter().enumerate() {
                let t = Some(1000 + 40 * i as i64);
                if shared {
                    s.push_frame_bytes(bytes::Bytes::from(au.clone()), t)
                        .unwrap();
                } else {
                    s.push_frame(au, t).unwrap();
                }
            }
            s.finish(true).unwrap();
            all_files(&storage)
        };
        let (copied, sliced) = (run(false), run(true));
        assert!(copied.len() >= 3, "{file}");
        assert_eq!(copied, sliced, "{file}");
    }
}

/// A frame that arrives behind an access-unit delimiter (as ingestd's
/// JT/T 1078 reassembler builds them) reaches the muxer as a slice of
/// itself, and the files are byte-identical to those of the copying path;
/// a keyframe that needs the cached parameter sets put in front is still
/// copied, so it stays decodable.
#[test]
fn frames_behind_a_delimiter_reach_the_muxer_in_place() {
    use streamcore::codec::VideoCodec;
    let cases = [
        ("baseline.h264", VideoCodec::H264),
        ("high_b3.h264", VideoCodec::H264),
        ("reschange.h264", VideoCodec::H264),
        ("sps_once.h264", VideoCodec::H264),
        ("hevc_b.h265", VideoCodec::H265),
    ];
    for (file, codec) in cases {
        let data = std::fs::read(fixture(file)).unwrap();
        let aus: Vec<Vec<u8>> = match codec {
            VideoCodec::H264 => access_units(&data),
            VideoCodec::H265 => streamcore::h265::split_access_units(&data)
                .iter()
                .map(streamcore::access_unit::AccessUnit::to_annexb)
                .collect(),
        };
        let run = |delimited: bool| {
            let (mut s, storage) = memory_stream(StreamConfig {
                clock: stepping_clock(),
                codec,
                ..Default::default()
            });
            for (i, au) in aus.iter().enumerate() {
                let t = Some(1000 + 40 * i as i64);
                if !delimited {
                    // Copied into the framer: nothing to slice.
                    s.push_frame(au, t).unwrap();
                    continue;
                }
                let mut frame = Vec::new();
                if codec.first_nal_is_delimiter(au) == Some(false) {
                    frame.extend_from_slice(codec.access_unit_delimiter());
                }
                frame.extend_from_slice(au);
                s.push_frame_bytes(bytes::Bytes::from(frame), t).unwrap();
            }
            s.finish(true).unwrap();
            (all_files(&storage), s.stats())
        };
        let (copied, copied_stats) = run(false);
        let (in_place, stats) = run(true);
        assert_eq!(copied_stats.packets_in_place, 0, "{file}");
        assert!(stats.frames_muxed > 0, "{file}");
        if file == "sps_once.h264" {
            // Its later keyframes lack SPS and PPS: those are rebuilt.
            assert!(
                stats.packets_in_place > 0 && stats.packets_in_place < stats.frames_muxed,
                "{file}: {stats:?}"
            );
        } else {
            assert_eq!(stats.packets_in_place, stats.frames_muxed, "{file}");
        }
        assert!(copied.len() >= 3, "{file}");
        if codec.first_nal_is_delimiter(&aus[0]) == Some(true) {
            // The file's own delimiters (sps_once: `09 10`, I pictures
            // only) stay where ours (`09 f0`, any picture) would replace
            // them: same playlists, same decoded pictures.
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(copied.len(), in_place.len(), "{file}");
            for ((name, a), (name_b, b)) in copied.iter().zip(&in_place) {
                assert_eq!(name, name_b, "{file}");
                if !name.ends_with(".ts") {
                    assert_eq!(a, b, "{file}: {name}");
                    continue;
                }
                let (pa, pb) = (dir.path().join("a.ts"), dir.path().join("b.ts"));
                std::fs::write(&pa, a).unwrap();
                std::fs::write(&pb, b).unwrap();
                let md5s = frame_md5s(&pa);
                assert!(!md5s.is_empty(), "{file}: {name}");
                assert_eq!(md5s, frame_md5s(&pb), "{file}: {name}");
            }
        } else {
            assert_eq!(copied, in_place, "{file}");
        }
    }
}
