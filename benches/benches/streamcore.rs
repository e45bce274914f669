//! streamcore throughput per stage, in bytes of Annex-B input per second,
//! beside a plain memcpy of the same bytes in the same run.
//!
//! Run: `cargo bench -p benches --bench streamcore`
//!
//! Inputs:
//! - `720p25_2700k`: 10 s of 1280x720 at 25 fps, 2.7 Mbit/s, no B-frames,
//!   2 s GOP (the load-test stream of issue 6). Encoded once with the
//!   ffmpeg CLI (libx264) into `<target>/bench-inputs/` when missing; it is
//!   too large (~3.4 MB) to commit. Benchmarks may spawn ffmpeg; product
//!   code never does.
//! - `720p30_cabac_bframes`: the conformance stream
//!   `h264/VID_1280x720_cabac_temporal_direct.264` (720p30, B-frames) from
//!   the third-party captures (`docs/captures.md`), when present.
//! - `baseline`, `high_b3`: the small committed fixtures (320x240).
//! - `hevc_nob`, `hevc_b`: the committed H.265 fixtures (320x240, 25 fps,
//!   10 s, ~200 kbit/s; no B-frames, and 3 B-frames in a pyramid). Only
//!   `memcpy` and `whole_stream` run on them (the other stages are the
//!   H.264 parser's).
//!
//! Groups, each a superset of the work of the one before, except the muxer
//! and playlist groups which isolate one stage:
//! `memcpy` (the baseline), `annexb_framing`, `access_units` (+ assembler),
//! `timing` (+ timeline), `ts_mux` (libavformat alone on pre-split access
//! units, each already behind our AUD, into a discarding sink),
//! `ts_mux_as_is` (the same with the access units as the input has them:
//! libavformat copies each packet to put its AUD in front, the copy
//! `LiveStream` makes for it when it builds the packet), `playlist_render` (10-segment live window,
//! push + render), `whole_stream` (`LiveStream` into a discarding
//! `MemoryStorage`: push_bytes of the whole input, then finish),
//! `whole_stream_shared` (the same through `push_bytes_shared`: the input
//! handed over as `Bytes`, NAL units sliced out of it, not copied).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use streamcore::access_unit::{AccessUnit, AccessUnitAssembler};
use streamcore::annexb::AnnexBFramer;
use streamcore::codec::{VideoCodec, VideoParser};
use streamcore::mux::{MuxPacket, SegmentMuxer, Track, TsMuxer};
use streamcore::playlist::{MediaPlaylist, PlaylistKind, PlaylistSegment};
use streamcore::time::{Dur90k, Ts90k};
use streamcore::timing::{TimedFrame, Timeline, TimingConfig};
use streamcore::{LiveStream, MemoryStorage, Storage, StreamConfig};

#[path = "../../fixtures/captures.rs"]
mod captures;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// The 720p25 2.7 Mbit/s no-B stream, encoded on first use.
fn bench_720p() -> Option<Vec<u8>> {
    let dir = target_dir().join("bench-inputs");
    let path = dir.join("720p25_2700k_10s.h264");
    if !path.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        let tmp = dir.join("720p25_2700k_10s.h264.tmp");
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1280x720:rate=25:duration=10")
            .args([
                "-pix_fmt",
                "yuv420p",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "main",
                "-bf",
                "0",
                "-g",
                "50",
                "-keyint_min",
                "50",
                "-sc_threshold",
                "0",
                "-b:v",
                "2700k",
                "-maxrate",
                "2700k",
                "-bufsize",
                "5400k",
                "-f",
                "h264",
            ])
            .arg(&tmp)
            .status();
        match status {
            Ok(s) if s.success() => std::fs::rename(&tmp, &path).ok()?,
            other => {
                eprintln!("skipping the 720p input: ffmpeg failed ({other:?})");
                return None;
            }
        }
    }
    std::fs::read(&path).ok()
}

fn inputs() -> Vec<(&'static str, VideoCodec, Vec<u8>)> {
    let mut v = Vec::new();
    if let Some(b) = bench_720p() {
        v.push(("720p25_2700k", VideoCodec::H264, b));
    }
    let cabac = captures::capture(
        "h264/VID_1280x720_cabac_temporal_direct.264",
        "the 720p30_cabac_bframes benchmarks",
    );
    if let Some(path) = cabac {
        v.push((
            "720p30_cabac_bframes",
            VideoCodec::H264,
            std::fs::read(path).expect("readable capture"),
        ));
    }
    for (name, codec, ext) in [
        ("baseline", VideoCodec::H264, "h264"),
        ("high_b3", VideoCodec::H264, "h264"),
        ("hevc_nob", VideoCodec::H265, "h265"),
        ("hevc_b", VideoCodec::H265, "h265"),
    ] {
        let p = repo_root().join("fixtures").join(format!("{name}.{ext}"));
        v.push((name, codec, std::fs::read(p).expect("committed fixture")));
    }
    v
}

fn pull_all(framer: &mut AnnexBFramer, mut each: impl FnMut(bytes::Bytes)) {
    while let Some(nal) = framer.pull() {
        each(nal);
    }
}

/// Frame duration and reorder depth as `LiveStream` derives them.
fn sps_timing(asm: &AccessUnitAssembler) -> (Option<Dur90k>, u32) {
    let hints = asm.timing_hints();
    (hints.nominal_frame, hints.reorder_depth)
}

/// Timed access units as the muxer receives them: one Annex-B packet each,
/// starting with an AUD, as `LiveStream` builds them; or (`as_is`) the
/// access units' NAL units as the input has them, for libavformat to put
/// its own AUD in front (what it does to a packet without one).
fn mux_packets(data: &[u8], as_is: bool) -> Vec<(Vec<u8>, TimedFrame)> {
    let mut framer = AnnexBFramer::new();
    let mut asm = AccessUnitAssembler::new();
    let mut timeline = Timeline::new(TimingConfig::default());
    let mut frames = Vec::new();
    framer.push(data);
    framer.finish();
    let mut push = |asm: &AccessUnitAssembler, au: AccessUnit, frames: &mut Vec<TimedFrame>| {
        let (nominal, reorder) = sps_timing(asm);
        timeline.push(au, nominal, reorder, 1_700_000_000_000, frames);
    };
    while let Some(nal) = framer.pull() {
        if let Some(au) = asm.push(nal, None) {
            push(&asm, au, &mut frames);
        }
    }
    if let Some(au) = asm.flush() {
        push(&asm, au, &mut frames);
    }
    timeline.flush_into(&mut frames);
    // Like the segmenter, start at the first keyframe.
    let first_key = frames.iter().position(|f| f.au.keyframe).unwrap_or(0);
    frames
        .drain(..)
        .skip(first_key)
        .map(|f| {
            let mut p = Vec::new();
            if as_is {
                p = f.au.to_annexb();
            } else {
                asm.write_packet(&f.au, &mut p);
            }
            (p, f)
        })
        .collect()
}

fn stages(c: &mut Criterion) {
    for (name, codec, data) in inputs() {
        let bytes = data.len() as u64;

        let mut g = c.benchmark_group("memcpy");
        g.throughput(Throughput::Bytes(bytes));
        let mut dst = vec![0u8; data.len()];
        g.bench_function(name, |b| {
            b.iter(|| {
                dst.copy_from_slice(black_box(&data));
                black_box(&mut dst);
            })
        });
        g.finish();

        if codec == VideoCodec::H264 {
            h264_stages(c, name, &data);
        }

        // `whole_stream_shared`: the input handed over as `Bytes`, so NAL
        // units are sliced out of it instead of copied into the framer.
        let cfg = StreamConfig {
            codec,
            ..StreamConfig::default()
        };
        let shared = bytes::Bytes::from(data.clone());
        for (group, as_bytes) in [("whole_stream", false), ("whole_stream_shared", true)] {
            let mut g = c.benchmark_group(group);
            g.throughput(Throughput::Bytes(bytes));
            g.bench_function(name, |b| {
                b.iter_batched(
                    || {
                        let storage = Arc::new(MemoryStorage::discarding());
                        LiveStream::with_storage("bench", storage, cfg.clone()).unwrap()
                    },
                    |mut s| {
                        let mut events = if as_bytes {
                            s.push_bytes_shared(black_box(shared.clone())).unwrap()
                        } else {
                            s.push_bytes(black_box(&data)).unwrap()
                        };
                        events.extend(s.finish(true).unwrap());
                        assert!(!events.is_empty());
                        (s, events)
                    },
                    BatchSize::PerIteration,
                )
            });
            g.finish();
        }
    }
}

/// The stages of the H.264 parser, each with the work of the one before.
fn h264_stages(c: &mut Criterion, name: &str, data: &[u8]) {
    let bytes = data.len() as u64;
    {
        let mut g = c.benchmark_group("annexb_framing");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = AnnexBFramer::new();
                framer.push(black_box(data));
                framer.finish();
                let mut n = 0usize;
                pull_all(&mut framer, |nal| n += nal.len());
                n
            })
        });
        g.finish();

        let mut g = c.benchmark_group("access_units");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = AnnexBFramer::new();
                let mut asm = AccessUnitAssembler::new();
                framer.push(black_box(data));
                framer.finish();
                let mut n = 0usize;
                pull_all(&mut framer, |nal| {
                    if let Some(au) = asm.push(nal, None) {
                        n += au.payload_bytes;
                    }
                });
                n + asm.flush().map_or(0, |au| au.payload_bytes)
            })
        });
        g.finish();

        let mut g = c.benchmark_group("timing");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            let mut frames = Vec::new();
            b.iter(|| {
                let mut framer = AnnexBFramer::new();
                let mut asm = AccessUnitAssembler::new();
                let mut timeline = Timeline::new(TimingConfig::default());
                framer.push(black_box(data));
                framer.finish();
                let mut last = Ts90k(0);
                let mut step = |asm: &AccessUnitAssembler, au, frames: &mut Vec<TimedFrame>| {
                    let (nominal, reorder) = sps_timing(asm);
                    timeline.push(au, nominal, reorder, 1_700_000_000_000, frames);
                    for f in frames.drain(..) {
                        last = last.max(f.pts);
                    }
                };
                while let Some(nal) = framer.pull() {
                    if let Some(au) = asm.push(nal, None) {
                        step(&asm, au, &mut frames);
                    }
                }
                if let Some(au) = asm.flush() {
                    step(&asm, au, &mut frames);
                }
                timeline.flush_into(&mut frames);
                frames.clear();
                last
            })
        });
        g.finish();

        for (group, as_is) in [("ts_mux", false), ("ts_mux_as_is", true)] {
            let packets = mux_packets(data, as_is);
            let mut g = c.benchmark_group(group);
            g.throughput(Throughput::Bytes(bytes));
            let storage = MemoryStorage::discarding();
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut mux = TsMuxer::new("bench", &[Track::Video(VideoCodec::H264)]).unwrap();
                    mux.begin_segment(Some(storage.begin_segment("0.ts").unwrap()));
                    for (p, f) in &packets {
                        mux.write(&MuxPacket {
                            track: 0,
                            data: p,
                            pts: f.pts,
                            dts: f.dts,
                            duration: f.duration,
                            keyframe: f.au.keyframe,
                        })
                        .unwrap();
                    }
                    let done = mux.end_segment();
                    done.writer.unwrap().commit().unwrap();
                    done.bytes
                })
            });
            g.finish();
        }
    }
}

fn playlist(c: &mut Criterion) {
    let mut g = c.benchmark_group("playlist_render");
    let seg = Dur90k::from_secs(4);
    let mut p = MediaPlaylist::new(
        PlaylistKind::Live {
            window: Dur90k(seg.0 * 10),
        },
        8,
    );
    let mut seq = 0u64;
    let mut push = |p: &mut MediaPlaylist| {
        let removed = p
            .push(PlaylistSegment {
                sequence: seq,
                uri: format!("{seq}.ts"),
                duration: seg,
                discontinuity: seq.is_multiple_of(50),
                pdt_ms: Some(1_700_000_000_000 + seq as i64 * 4000),
            })
            .unwrap();
        seq += 1;
        removed
    };
    for _ in 0..20 {
        push(&mut p);
    }
    assert_eq!(p.segments().count(), 10);
    g.throughput(Throughput::Bytes(p.render().len() as u64));
    g.bench_function("live_window_10", |b| {
        b.iter(|| {
            let removed = push(&mut p);
            (removed, p.render())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = stages, playlist
}
criterion_main!(benches);
