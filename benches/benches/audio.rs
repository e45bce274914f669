//! Audio transcoding throughput (issue 16): device audio in, AAC-LC out,
//! through `streamcore::audio::AudioTranscoder`, per codec; and the cost of
//! audio beside video in one `LiveStream`.
//!
//! Run: `cargo bench -p benches --bench audio -- --warm-up-time 1 --measurement-time 5`
//!
//! Every input is 10 s of 8 kHz mono audio in the packets devices send
//! (40 ms each, 250 packets), a 1 kHz tone at the amplitude of ffmpeg's
//! `sine` source (1/8 of full scale, -18 dBFS):
//! - `g711a_tone`: G.711 A-law, 320 B a packet, encoded here from the
//!   sine (the reference A-law encoder, checked against streamcore's
//!   decoder);
//! - `g711a_noise`: 320 B packets of pseudo-random bytes, which decode to
//!   loud white noise (the hardest input for the AAC encoder);
//! - `g711a_speech`: `fixtures/audio/speech_g711a.raw`, when present;
//! - `g726_32_tone`: G.726 at 32 kbit/s, 160 B a packet, little-endian
//!   packing (`ffmpeg -c:a g726le -b:a 32k` from the `sine` source, made
//!   once into `<target>/bench-inputs/`);
//! - `ima_adpcm_tone`: IMA ADPCM, 164 B a packet (4 B of state + 160 B of
//!   codes, high nibble first), encoded here from the sine (the IMA
//!   reference encoder, checked against streamcore's decoder);
//! - `aac_passthrough`: AAC-LC at 8 kHz in ADTS (`ffmpeg -c:a aac -b:a
//!   16k -f adts` from the `sine` source), one ADTS frame a payload (79
//!   frames of 128 ms), passed through untouched.
//!
//! Every transcoding group runs twice, for AAC out at 32 kHz (`_32k`:
//! resampled 4x) and at 8 kHz (`_8k`: the devices' rate, no resampling),
//! whatever `AudioConfig::default()` says; 32 kbit/s, `aac_coder=fast`.
//!
//! Groups (elements = payloads pushed, so criterion prints payloads/s;
//! stream-seconds per core-second = 10 s / median):
//! - `audio_steady_*`: one transcoder reused across iterations, timestamps
//!   running on (the steady state of a live stream);
//! - `audio_fresh_*`: a new transcoder per 10 s, `finish` included (encoder
//!   set-up and drain);
//! - `audio_interleaved_*`: 1, 16 and 128 transcoders of `g711a_tone` fed
//!   in turn, packet by packet (many streams on one core);
//! - `stream_av`: a whole `LiveStream` into a discarding `MemoryStorage`,
//!   video frame by frame (`push_frame`, as ingestd feeds it) without and
//!   with a G.711A payload every 40 ms (`push_audio`), at both AAC rates.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use streamcore::audio::{adpcm, adts, g711, AudioCodec, AudioConfig, AudioTranscoder};
use streamcore::time::Ts90k;
use streamcore::{LiveStream, MemoryStorage, StreamConfig};

/// Seconds of audio in every input.
const SECONDS: i64 = 10;
/// Device samples per 40 ms packet.
const PACKET_SAMPLES: usize = 320;
const PACKETS: usize = (SECONDS as usize * 8000) / PACKET_SAMPLES;
/// 90 kHz ticks per 40 ms packet.
const PACKET_TICKS: i64 = 3600;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

/// 10 s of a 1 kHz sine at 8 kHz, amplitude 1/8 (ffmpeg's `sine` source).
fn tone_pcm() -> Vec<i16> {
    (0..SECONDS as usize * 8000)
        .map(|n| {
            let x = (2.0 * std::f64::consts::PI * 1000.0 * n as f64 / 8000.0).sin();
            (x * 32768.0 / 8.0).round() as i16
        })
        .collect()
}

/// ITU-T G.711 A-law encoder (the Sun reference `linear2alaw`).
fn linear_to_alaw(pcm: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff];
    let mut v = (pcm as i32) >> 3;
    let mask = if v >= 0 {
        0xd5
    } else {
        v = -v - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|&e| v <= e) else {
        return (0x7f ^ mask) as u8;
    };
    let mut a = (seg as i32) << 4;
    a |= if seg < 2 {
        (v >> 1) & 0xf
    } else {
        (v >> seg) & 0xf
    };
    (a ^ mask) as u8
}

// The IMA tables are the standard's; streamcore's decoder publishes them.
use streamcore::audio::adpcm::{INDEX_STEP as IMA_INDEX, STEP as IMA_STEP};

/// IMA ADPCM packets as dashcams send them (payload type 26): the state the
/// packet starts from (predictor i16 LE, step index, 0), then two codes a
/// byte, high nibble first. The IMA reference encoder.
fn ima_packets(pcm: &[i16]) -> Vec<Vec<u8>> {
    let (mut pred, mut index) = (0i32, 0i32);
    pcm.chunks(PACKET_SAMPLES)
        .map(|chunk| {
            let mut p = Vec::with_capacity(4 + chunk.len() / 2);
            p.extend_from_slice(&(pred as i16).to_le_bytes());
            p.extend_from_slice(&[index as u8, 0]);
            let mut codes = chunk.iter().map(|&s| {
                let step = IMA_STEP[index as usize];
                let mut diff = s as i32 - pred;
                let mut code = 0u8;
                if diff < 0 {
                    code = 8;
                    diff = -diff;
                }
                let mut vpdiff = step >> 3;
                if diff >= step {
                    code |= 4;
                    diff -= step;
                    vpdiff += step;
                }
                if diff >= step >> 1 {
                    code |= 2;
                    diff -= step >> 1;
                    vpdiff += step >> 1;
                }
                if diff >= step >> 2 {
                    code |= 1;
                    vpdiff += step >> 2;
                }
                pred = if code & 8 != 0 {
                    pred - vpdiff
                } else {
                    pred + vpdiff
                }
                .clamp(i16::MIN as i32, i16::MAX as i32);
                index = (index + IMA_INDEX[(code & 7) as usize]).clamp(0, 88);
                code
            });
            while let (Some(hi), Some(lo)) = (codes.next(), codes.next()) {
                p.push(hi << 4 | lo);
            }
            p
        })
        .collect()
}

/// `<target>/bench-inputs/<name>`, made by the ffmpeg CLI from 10 s of the
/// 1 kHz `sine` source when missing.
fn ffmpeg_input(name: &str, codec_args: &[&str]) -> Option<Vec<u8>> {
    let dir = target_dir().join("bench-inputs");
    let path = dir.join(name);
    if !path.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        let tmp = dir.join(format!("{name}.tmp"));
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("sine=f=1000:sample_rate=8000:duration={SECONDS}"))
            .args(["-ac", "1"])
            .args(codec_args)
            .arg(&tmp)
            .status();
        match status {
            Ok(s) if s.success() => std::fs::rename(&tmp, &path).ok()?,
            other => {
                eprintln!("skipping {name}: ffmpeg failed ({other:?})");
                return None;
            }
        }
    }
    std::fs::read(&path).ok()
}

struct AudioInput {
    name: &'static str,
    codec: AudioCodec,
    /// (payload, 90 kHz offset from the start of the input)
    packets: Vec<(Vec<u8>, i64)>,
}

fn fixed(name: &'static str, codec: AudioCodec, bytes: &[u8], size: usize) -> AudioInput {
    assert_eq!(
        bytes.len() % size,
        0,
        "{name}: not whole {size}-byte packets"
    );
    AudioInput {
        name,
        codec,
        packets: bytes
            .chunks(size)
            .enumerate()
            .map(|(i, p)| (p.to_vec(), i as i64 * PACKET_TICKS))
            .collect(),
    }
}

fn audio_inputs() -> Vec<AudioInput> {
    let pcm = tone_pcm();
    let mut v = Vec::new();

    let alaw: Vec<u8> = pcm.iter().map(|&s| linear_to_alaw(s)).collect();
    // The encoder agrees with streamcore's decoder: A-law's error is at most
    // half a quantisation step, and a step is 1/16 to 1/32 of the magnitude
    // (8 at the smallest, in 16-bit units).
    let bad = pcm.iter().zip(&alaw).find(|&(&s, &c)| {
        (s as i32 - g711::alaw_to_linear(c) as i32).abs() > (s as i32).abs() / 32 + 8
    });
    assert!(bad.is_none(), "A-law encoder off at {bad:?}");
    v.push(fixed("g711a_tone", AudioCodec::G711A, &alaw, 320));

    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..alaw.len())
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    v.push(fixed("g711a_noise", AudioCodec::G711A, &noise, 320));

    let speech = repo_root().join("fixtures/audio/speech_g711a.raw");
    if let Ok(b) = std::fs::read(&speech) {
        // The first 10 s, or all of it when shorter.
        let n = (b.len() / 320).min(PACKETS) * 320;
        if n > 0 {
            v.push(fixed("g711a_speech", AudioCodec::G711A, &b[..n], 320));
        }
    }

    if let Some(b) = ffmpeg_input(
        "tone1k_g726le_32k_10s.raw",
        &["-c:a", "g726le", "-b:a", "32k", "-f", "g726le"],
    ) {
        v.push(fixed("g726_32_tone", AudioCodec::G726, &b, 160));
    }

    let ima = ima_packets(&pcm);
    let mut decoded = Vec::new();
    for p in &ima {
        adpcm::decode_packet(p, &mut decoded).unwrap();
    }
    let worst = pcm
        .iter()
        .zip(&decoded)
        .skip(8000) // the step size adapts over the first few ms
        .map(|(&s, &d)| (s as i32 - d as i32).abs())
        .max()
        .unwrap();
    assert!(worst < 1500, "IMA encoder off by {worst}");
    v.push(AudioInput {
        name: "ima_adpcm_tone",
        codec: AudioCodec::ImaAdpcm,
        packets: ima
            .into_iter()
            .enumerate()
            .map(|(i, p)| (p, i as i64 * PACKET_TICKS))
            .collect(),
    });

    if let Some(b) = ffmpeg_input(
        "tone1k_aac_8k_16k_10s.adts",
        &["-c:a", "aac", "-b:a", "16k", "-f", "adts"],
    ) {
        let mut packets = Vec::new();
        let mut rest = &b[..];
        let mut samples = 0i64;
        while !rest.is_empty() {
            let f = adts::parse_frame(rest).expect("ADTS from ffmpeg");
            let rate = f.config.sample_rate() as i64;
            packets.push((rest[..f.len].to_vec(), samples * 90_000 / rate));
            samples += 1024 * f.blocks as i64;
            rest = &rest[f.len..];
        }
        v.push(AudioInput {
            name: "aac_passthrough",
            codec: AudioCodec::Aac,
            packets,
        });
    }
    v
}

/// Pushes one pass of `input` at `base`; returns the ADTS bytes made.
fn pass(
    t: &mut AudioTranscoder,
    input: &AudioInput,
    base: i64,
    out: &mut Vec<streamcore::audio::AudioPacket>,
) -> usize {
    for (p, off) in &input.packets {
        t.push(input.codec, black_box(p), Some(Ts90k(base + off)), out)
            .expect("payload taken");
    }
    let n = out.iter().map(|p| p.data.len()).sum();
    out.clear();
    n
}

/// AAC output rates measured side by side: 32 kHz (resampled 4x; what
/// hls.js before 1.7 needs) and 8 kHz (the devices' own rate, no resampling).
const RATES: [u32; 2] = [32_000, 8_000];

fn config(rate: u32) -> AudioConfig {
    AudioConfig {
        sample_rate: rate,
        ..AudioConfig::default()
    }
}

fn transcode(c: &mut Criterion) {
    let inputs = audio_inputs();
    for input in &inputs {
        // A pass makes AAC: check once, outside the timing.
        let mut t = AudioTranscoder::new(config(RATES[0]));
        let mut out = Vec::new();
        assert!(
            pass(&mut t, input, 0, &mut out) > 0,
            "{}: no AAC out",
            input.name
        );
        assert_eq!(t.stats().rejected, 0);
    }

    for rate in RATES {
        let mut g = c.benchmark_group(format!("audio_steady_{}k", rate / 1000));
        for input in &inputs {
            g.throughput(Throughput::Elements(input.packets.len() as u64));
            g.bench_function(input.name, |b| {
                let mut t = AudioTranscoder::new(config(rate));
                let mut out = Vec::new();
                let mut base = 0i64;
                b.iter(|| {
                    let n = pass(&mut t, input, base, &mut out);
                    base += SECONDS * 90_000;
                    n
                });
                assert_eq!(
                    t.stats().restarts,
                    0,
                    "{}: the encoder restarted",
                    input.name
                );
                assert_eq!(t.stats().rejected, 0);
            });
        }
        g.finish();
    }

    for rate in RATES {
        let mut g = c.benchmark_group(format!("audio_fresh_{}k", rate / 1000));
        for input in &inputs {
            g.throughput(Throughput::Elements(input.packets.len() as u64));
            g.bench_function(input.name, |b| {
                let mut out = Vec::new();
                b.iter(|| {
                    let mut t = AudioTranscoder::new(config(rate));
                    let n = pass(&mut t, input, 0, &mut out);
                    t.finish(&mut out).unwrap();
                    n + out.drain(..).map(|p| p.data.len()).sum::<usize>()
                });
            });
        }
        g.finish();
    }
}

/// Many streams' transcoders on one core, as in the daemon: `n` transcoders
/// take packet i in turn, then packet i + 1. The per-stream cost rises with
/// `n` once the encoders' state no longer fits in the caches (libavcodec's
/// AAC encoder keeps a 512 KiB quantisation cost cache per instance).
fn interleaved(c: &mut Criterion) {
    let inputs = audio_inputs();
    let input = inputs
        .iter()
        .find(|i| i.name == "g711a_tone")
        .expect("made above");
    for rate in RATES {
        let mut g = c.benchmark_group(format!("audio_interleaved_{}k", rate / 1000));
        g.sample_size(10);
        for n in [1usize, 16, 128] {
            g.throughput(Throughput::Elements((n * input.packets.len()) as u64));
            g.bench_function(format!("g711a_tone_x{n}"), |b| {
                let mut ts: Vec<AudioTranscoder> =
                    (0..n).map(|_| AudioTranscoder::new(config(rate))).collect();
                let mut out = Vec::new();
                let mut base = 0i64;
                b.iter(|| {
                    let mut bytes = 0usize;
                    for (p, off) in &input.packets {
                        for t in ts.iter_mut() {
                            t.push(input.codec, black_box(p), Some(Ts90k(base + off)), &mut out)
                                .expect("payload taken");
                            bytes += out.drain(..).map(|a| a.data.len()).sum::<usize>();
                        }
                    }
                    base += SECONDS * 90_000;
                    bytes
                });
                assert!(ts.iter().all(|t| t.stats().restarts == 0));
            });
        }
        g.finish();
    }
}

/// Video + G.711A audio through one `LiveStream`, frame by frame.
fn stream_av(c: &mut Criterion) {
    let mut videos = vec![(
        "baseline",
        std::fs::read(repo_root().join("fixtures/baseline.h264")).expect("committed fixture"),
    )];
    // Made by the streamcore bench (and benches/load/run.sh).
    if let Ok(b) = std::fs::read(target_dir().join("bench-inputs/720p25_2700k_10s.h264")) {
        videos.insert(0, ("720p25_2700k", b));
    }
    let pcm = tone_pcm();
    let alaw: Vec<u8> = pcm.iter().map(|&s| linear_to_alaw(s)).collect();
    let audio: Vec<&[u8]> = alaw.chunks(320).collect();
    let t0 = 1_700_000_000_000i64;
    let mut g = c.benchmark_group("stream_av");
    for (name, data) in &videos {
        let frames: Vec<Vec<u8>> = streamcore::access_unit::split_access_units(data)
            .iter()
            .map(|au| au.to_annexb())
            .collect();
        assert_eq!(frames.len(), PACKETS, "{name}: 250 frames expected");
        g.throughput(Throughput::Bytes(data.len() as u64));
        let arms = [None, Some(RATES[0]), Some(RATES[1])];
        for rate in arms {
            let id = match rate {
                None => format!("{name}/video"),
                Some(r) => format!("{name}/video+g711a_{}k", r / 1000),
            };
            let cfg = StreamConfig {
                audio: config(rate.unwrap_or(RATES[0])),
                ..StreamConfig::default()
            };
            g.bench_function(id, |b| {
                b.iter_batched(
                    || {
                        LiveStream::with_storage(
                            "bench",
                            Arc::new(MemoryStorage::discarding()),
                            cfg.clone(),
                        )
                        .unwrap()
                    },
                    |mut s| {
                        let mut events = Vec::new();
                        for (i, f) in frames.iter().enumerate() {
                            let ms = t0 + i as i64 * 40;
                            events.extend(s.push_frame(black_box(f), Some(ms)).unwrap());
                            if rate.is_some() {
                                events.extend(
                                    s.push_audio(AudioCodec::G711A, audio[i], Some(ms)).unwrap(),
                                );
                            }
                        }
                        events.extend(s.finish(true).unwrap());
                        assert!(!events.is_empty());
                        if let Some(r) = rate {
                            // 10 s is 312 AAC frames at 32 kHz, 78 at 8 kHz;
                            // those past the last video frame may be
                            // dropped at finish.
                            let st = s.stats();
                            let want = (r as u64 * SECONDS as u64 / 1024) * 9 / 10;
                            assert!(st.audio_frames_muxed > want, "{st:?}");
                            assert_eq!(st.audio_rejected, 0);
                        }
                        (s, events)
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = transcode, interleaved, stream_av
}
criterion_main!(benches);
