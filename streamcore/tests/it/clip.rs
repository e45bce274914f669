//! Clip export ([`streamcore::mux::clip::remux_to_mp4`]) of segments that
//! [`LiveStream`] recorded, read back by ffprobe and ffmpeg as the
//! independent readers: with G.711A audio (transcoded to AAC in the TS) the
//! MP4 has an h264 and an aac track at the stream's AAC rate, decodes
//! cleanly with `-xerror`, plays the source tone, has no gaps or overlaps
//! between audio frames, and its audio covers the video within 150 ms,
//! whole or part of the recording, across a rebased discontinuity, and
//! when the audio joined the stream after its first segments; an HEVC
//! stream comes out as `hvc1` HEVC with every frame of the recording.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use streamcore::audio::{AudioCodec, AudioConfig};
use streamcore::codec::VideoCodec;
use streamcore::mux::clip::{remux_to_mp4, ClipSegment, ClipStats};
use streamcore::{LiveStream, StreamConfig};

use crate::common::audio_check::{decode_with_ffmpeg, dominant_frequency};
use crate::common::*;

/// Device clock origin of the pushed media (ms).
const ORIGIN_MS: i64 = 5_000_000;
/// G.711A at 8 kHz: 40 ms a packet.
const G711_PACKET: usize = 320;
/// How far audio may end from the video, in seconds.
const AV_TOLERANCE: f64 = 0.15;

fn config(codec: VideoCodec) -> StreamConfig {
    StreamConfig {
        codec,
        event_playlist: true,
        keep_segments: true,
        clock: stepping_clock(),
        ..Default::default()
    }
}

/// Records baseline.h264 (10 s, 25 fps) with the G.711A tone fixture from
/// `audio_from_ms` on (by capture time; `None`: no audio), interleaved by
/// capture time as a device sends them. Returns the segments in order.
fn record_h264(dir: &Path, audio_from_ms: Option<i64>) -> Vec<ClipSegment> {
    let video = access_units(&std::fs::read(fixture("baseline.h264")).unwrap());
    let audio_bytes = std::fs::read(fixture("audio/tone1k_g711a.raw")).unwrap();
    let audio: Vec<&[u8]> = match audio_from_ms {
        Some(from) => audio_bytes
            .chunks(G711_PACKET)
            .skip((from / 40) as usize)
            .collect(),
        None => Vec::new(),
    };
    let audio_t0 = audio_from_ms.unwrap_or(0);
    let mut s = LiveStream::open("cab", dir, config(VideoCodec::H264)).unwrap();
    let (mut v, mut a) = (0usize, 0usize);
    loop {
        let tv = (v < video.len()).then(|| v as i64 * 40);
        let ta = (a < audio.len()).then(|| audio_t0 + a as i64 * 40);
        let video_next = match (tv, ta) {
            (Some(tv), Some(ta)) => tv <= ta,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if video_next {
            s.push_frame(&video[v], Some(ORIGIN_MS + v as i64 * 40))
                .unwrap();
            v += 1;
        } else {
            s.push_audio(
                AudioCodec::G711A,
                audio[a],
                Some(ORIGIN_MS + audio_t0 + a as i64 * 40),
            )
            .unwrap();
            a += 1;
        }
    }
    s.finish(true).unwrap();
    let stats = s.stats();
    if audio_from_ms.is_some() {
        assert_eq!(stats.audio_rejected, 0, "{stats:?}");
        assert!(stats.audio_frames_muxed > 0, "{stats:?}");
    }
    segments(dir)
}

/// The segments of the stream's playlist, with its discontinuities.
fn segments(dir: &Path) -> Vec<ClipSegment> {
    let text = std::fs::read_to_string(dir.join("index.m3u8")).unwrap();
    let (segs, _) = parse_playlist_with_discontinuities(&text);
    assert!(segs.len() >= 3, "want a few segments: {text}");
    segs.into_iter()
        .map(|(_, uri, discontinuity)| ClipSegment {
            path: dir.join(uri),
            discontinuity,
        })
        .collect()
}

fn ffprobe_json(input: &Path, args: &[&str]) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(input)
        .output()
        .expect("cannot run ffprobe (install ffmpeg)");
    assert!(
        out.status.success(),
        "ffprobe {input:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One stream of a file as ffprobe reads it.
#[derive(Debug)]
struct Probed {
    codec_type: String,
    codec_name: String,
    codec_tag: String,
    sample_rate: u32,
    start: f64,
    duration: f64,
    /// Packets ffprobe read (`-count_packets`).
    packets: u64,
}

fn probe_streams(input: &Path) -> Vec<Probed> {
    let v = ffprobe_json(
        input,
        &[
            "-count_packets",
            "-show_entries",
            "stream=codec_type,codec_name,codec_tag_string,sample_rate,start_time,duration,nb_read_packets",
        ],
    );
    let text = |s: &Value, k: &str| s[k].as_str().unwrap_or_default().to_string();
    let num = |s: &Value, k: &str| s[k].as_str().and_then(|x| x.parse::<f64>().ok());
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| Probed {
            codec_type: text(s, "codec_type"),
            codec_name: text(s, "codec_name"),
            codec_tag: text(s, "codec_tag_string"),
            sample_rate: num(s, "sample_rate").unwrap_or(0.0) as u32,
            start: num(s, "start_time").unwrap_or(f64::NAN),
            duration: num(s, "duration").unwrap_or(f64::NAN),
            packets: num(s, "nb_read_packets").unwrap_or(0.0) as u64,
        })
        .collect()
}

/// (pts, duration) in the stream's time base of every packet of the first
/// stream of type `kind` (`v`, `a`), in file order.
fn packet_times(input: &Path, kind: &str) -> Vec<(i64, i64)> {
    let v = ffprobe_json(
        input,
        &[
            "-select_streams",
            &format!("{kind}:0"),
            "-show_entries",
            "packet=pts,duration",
        ],
    );
    v["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["pts"].as_i64().unwrap(), p["duration"].as_i64().unwrap()))
        .collect()
}

/// Sum of the durations ffprobe gives the segments' video.
fn video_seconds(segs: &[ClipSegment]) -> f64 {
    segs.iter()
        .map(|s| {
            packet_times(&s.path, "v")
                .iter()
                .map(|p| p.1 as f64 / 90_000.0)
                .sum::<f64>()
        })
        .sum()
}

fn clip(segs: &[ClipSegment]) -> (tempfile::TempDir, std::path::PathBuf, ClipStats) {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("clip.mp4");
    let stats = remux_to_mp4(segs, &mp4).unwrap();
    (dir, mp4, stats)
}

/// The checks every clip with audio passes; returns its (video, audio)
/// streams.
fn check_av_clip(mp4: &Path, stats: &ClipStats, want_video_secs: f64) -> (Probed, Probed) {
    let mut streams = probe_streams(mp4);
    assert_eq!(streams.len(), 2, "{streams:?}");
    streams.sort_by(|a, b| b.codec_type.cmp(&a.codec_type)); // video, audio
    let audio = streams.pop().unwrap();
    let video = streams.pop().unwrap();
    assert_eq!(
        (video.codec_type.as_str(), video.codec_name.as_str()),
        ("video", "h264"),
        "{video:?}"
    );
    assert_eq!(video.codec_tag, "avc1", "{video:?}");
    assert_eq!(
        (audio.codec_type.as_str(), audio.codec_name.as_str()),
        ("audio", "aac"),
        "{audio:?}"
    );
    assert_eq!(audio.codec_tag, "mp4a", "{audio:?}");
    // The stream's AAC rate (the tone is transcoded from 8 kHz G.711A).
    assert_eq!(audio.sample_rate, AudioConfig::default().sample_rate);
    assert_eq!(video.packets, stats.frames, "{video:?} {stats:?}");
    assert_eq!(audio.packets, stats.audio_frames, "{audio:?} {stats:?}");

    let errors = strict_decode_errors(mp4);
    assert!(errors.is_empty(), "decode errors: {errors}");

    assert!(
        (video.duration - want_video_secs).abs() <= 0.05,
        "video {video:?}, segments hold {want_video_secs:.3} s"
    );
    // Same span as the video: starts with it (within one AAC frame), ends
    // with it within the tolerance, by the container and by the samples
    // the decoder puts out.
    let aac_frame = 1024.0 / audio.sample_rate as f64;
    assert!(
        audio.start >= video.start - 0.001 && audio.start - video.start <= aac_frame,
        "audio starts at {} s, video at {} s",
        audio.start,
        video.start
    );
    assert!(
        (audio.duration - video.duration).abs() <= AV_TOLERANCE,
        "audio {} s, video {} s",
        audio.duration,
        video.duration
    );
    let decoded = decode_with_ffmpeg(mp4).unwrap();
    assert_eq!(decoded.codec, "aac");
    assert!(decoded.stderr.is_empty(), "{}", decoded.stderr);
    let secs = decoded.samples.len() as f64 / decoded.sample_rate as f64;
    assert!(
        (secs - video.duration).abs() <= AV_TOLERANCE,
        "{secs:.3} s of audio decoded for {} s of video",
        video.duration
    );
    let f = dominant_frequency(&decoded.samples, decoded.sample_rate);
    assert!((f - 1000.0).abs() <= 20.0, "dominant {f:.1} Hz");

    // Audio frames follow each other exactly: no gaps, no overlaps.
    let times = packet_times(mp4, "a");
    for w in times.windows(2) {
        assert_eq!(w[0].0 + w[0].1, w[1].0, "audio packets {w:?}");
    }
    (video, audio)
}

#[test]
fn clip_with_g711a_audio_has_h264_and_aac_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), Some(0));
    let (_d, mp4, stats) = clip(&segs);
    assert_eq!(stats.segments, segs.len());
    assert_eq!(stats.frames, 250, "{stats:?}");
    check_av_clip(&mp4, &stats, video_seconds(&segs));
}

/// A clip from the middle of the recording: the audio is cut to the
/// video of those segments.
#[test]
fn clip_of_middle_segments_cuts_audio_to_their_video() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), Some(0));
    let part = &segs[1..segs.len() - 1];
    let (_d, mp4, stats) = clip(part);
    assert_eq!(stats.segments, part.len());
    check_av_clip(&mp4, &stats, video_seconds(part));
}

/// Segments 0 and 2 with the discontinuity flagged: the second is rebased
/// onto the end of the first, its audio with it.
#[test]
fn clip_across_a_discontinuity_moves_audio_with_video() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), Some(0));
    let mut second = segs[2].clone();
    second.discontinuity = true;
    let part = [segs[0].clone(), second];
    let (_d, mp4, stats) = clip(&part);
    let (_, audio) = check_av_clip(&mp4, &stats, video_seconds(&part));
    // The second segment's audio starts where its video does (one AAC
    // frame at most later; the first segment's last frame may reach over).
    let boundary = video_seconds(&part[..1]);
    let rate = audio.sample_rate as f64;
    let after = packet_times(&mp4, "a")
        .into_iter()
        .map(|(pts, dur)| (pts as f64 / rate, dur as f64 / rate))
        .find(|&(t, d)| t + d > boundary)
        .unwrap();
    assert!(
        after.0 <= boundary + 1024.0 / rate,
        "first audio after the boundary ({boundary} s) at {after:?}"
    );
}

/// The live muxer writes a segment's last audio into the next segment:
/// without that file (a segment alone in its directory) the clip's audio
/// ends early, but within the video and at most a few frames short.
#[test]
fn clip_without_the_next_segment_ends_its_audio_early() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), Some(0));
    let lone = dir.path().join("lone");
    std::fs::create_dir(&lone).unwrap();
    std::fs::copy(&segs[1].path, lone.join("1.ts")).unwrap();
    let part = [ClipSegment {
        path: lone.join("1.ts"),
        discontinuity: false,
    }];
    let (_d, mp4, stats) = clip(&part);
    assert!(stats.audio_frames > 0, "{stats:?}");
    let errors = strict_decode_errors(&mp4);
    assert!(errors.is_empty(), "decode errors: {errors}");
    let mut streams = probe_streams(&mp4);
    streams.sort_by(|a, b| b.codec_type.cmp(&a.codec_type));
    let (video, audio) = (&streams[0], &streams[1]);
    let (audio_end, video_end) = (audio.start + audio.duration, video.start + video.duration);
    assert!(
        audio_end <= video_end + 1e-3 && audio_end >= video_end - 0.5,
        "audio ends at {audio_end} s, video at {video_end} s"
    );
}

/// Audio that joins after the first segments (tracks change, a new
/// muxer): the clip still has it, from where it started.
#[test]
fn clip_picks_up_audio_that_joined_later() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), Some(2_000));
    let first = probe_streams(&segs[0].path);
    assert!(
        first.iter().all(|s| s.codec_type == "video"),
        "the first segment should be video only: {first:?}"
    );
    let second = probe_streams(&segs[1].path);
    assert!(
        second.iter().any(|s| s.codec_type == "audio"),
        "the second segment should have audio: {second:?}"
    );
    let (_d, mp4, stats) = clip(&segs);
    assert!(stats.audio_frames > 0, "{stats:?}");
    let mut streams = probe_streams(&mp4);
    streams.sort_by(|a, b| b.codec_type.cmp(&a.codec_type));
    assert_eq!(streams.len(), 2, "{streams:?}");
    let (video, audio) = (&streams[0], &streams[1]);
    assert_eq!(audio.codec_name, "aac", "{audio:?}");
    assert_eq!(audio.sample_rate, AudioConfig::default().sample_rate);
    let errors = strict_decode_errors(&mp4);
    assert!(errors.is_empty(), "decode errors: {errors}");
    // From where the second segment's audio starts (it joined at 2 s, the
    // tracks change at the next segment, up to 0.5 s of audio leads its
    // video) to the end of the video.
    let audio_end = audio.start + audio.duration;
    let video_end = video.start + video.duration;
    assert!(
        (3.4..=4.1).contains(&audio.start),
        "audio starts at {} s",
        audio.start
    );
    assert!(
        (audio_end - video_end).abs() <= AV_TOLERANCE,
        "audio ends at {audio_end} s, video at {video_end} s"
    );
}

/// Video only: no audio track, as before.
#[test]
fn clip_without_audio_has_only_video() {
    let dir = tempfile::tempdir().unwrap();
    let segs = record_h264(dir.path(), None);
    let (_d, mp4, stats) = clip(&segs);
    assert_eq!(stats.audio_frames, 0);
    let streams = probe_streams(&mp4);
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].codec_name, "h264");
    assert_eq!(streams[0].packets, 250);
    let errors = strict_decode_errors(&mp4);
    assert!(errors.is_empty(), "decode errors: {errors}");
}

#[test]
fn clip_of_hevc_stream_is_hvc1_with_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = LiveStream::open("hevc", dir.path(), config(VideoCodec::H265)).unwrap();
    s.push_bytes(&std::fs::read(fixture("hevc_nob.h265")).unwrap())
        .unwrap();
    s.finish(true).unwrap();
    let segs = segments(dir.path());
    let (_d, mp4, stats) = clip(&segs);
    assert_eq!(stats.segments, segs.len());

    let v = ffprobe_json(&mp4, &["-show_entries", "format=format_name"]);
    let format = v["format"]["format_name"].as_str().unwrap();
    assert!(format.contains("mp4"), "{format}");
    let streams = probe_streams(&mp4);
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].codec_name, "hevc", "{streams:?}");
    assert_eq!(streams[0].codec_tag, "hvc1", "{streams:?}");
    assert_eq!(streams[0].packets, 250, "{streams:?}");
    assert_eq!(stats.frames, 250);
    assert!(
        (streams[0].duration - 10.0).abs() <= 0.05,
        "{}",
        streams[0].duration
    );
    let errors = strict_decode_errors(&mp4);
    assert!(errors.is_empty(), "decode errors: {errors}");
    // The same pictures as the recording (decoded from its HLS).
    let want = frame_md5s(&dir.path().join("index.m3u8"));
    assert_eq!(want.len(), 250);
    assert_eq!(frame_md5s(&mp4), want);

    // The sample entry carries the parameter sets (hvcC arrays), as
    // FFmpeg's own bitstream reader lists them from the extradata.
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-i"])
        .arg(&mp4)
        .args(["-map", "0:v", "-c", "copy", "-bsf:v", "trace_headers"])
        .args(["-frames:v", "1", "-f", "null", "-"])
        .output()
        .expect("cannot run ffmpeg (install it)");
    let log = String::from_utf8_lossy(&out.stderr);
    let units: Vec<&str> = log
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[trace_headers @ ")?
                .split_once("] ")
                .map(|p| p.1)
        })
        .skip_while(|m| *m != "Extradata")
        .take_while(|m| !m.starts_with("Packet:"))
        .filter(|m| !m.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    for ps in [
        "Video Parameter Set",
        "Sequence Parameter Set",
        "Picture Parameter Set",
    ] {
        assert!(units.contains(&ps), "hvcC lacks the {ps}: {units:?}");
    }
}
