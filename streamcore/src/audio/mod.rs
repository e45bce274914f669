//! Audio as dashcams send it, transcoded to what browsers play: G.711
//! A-law/µ-law, G.726 (16-40 kbit/s, either bit packing) and IMA ADPCM in,
//! AAC-LC out through libavcodec; AAC (ADTS) passed through untouched.
//!
//! [`AudioTranscoder`] is one stream's audio: payloads (with any HiSilicon
//! frame header still on) and their place on the stream's 90 kHz timeline
//! in, ADTS packets with PTS out. Timestamps come from the device, not
//! from counting samples, so a gap stays a gap instead of turning into
//! drift: input that follows on within [`CONTIGUOUS`] is treated as
//! contiguous; a short gap is filled with silence and a short overlap is
//! trimmed, so the encoder's samples and the timeline agree to within that
//! tolerance; anything larger restarts the encoder at the new time. The
//! output's AudioSpecificConfig is fixed by the first frame and never
//! changes for the transcoder's life: frames that would change it (a
//! passthrough stream switching rate, a switch between AAC and a codec we
//! transcode) are refused and counted.
//!
//! Submodules are sans-IO: [`g711`] and [`adpcm`] decode in Rust (tables
//! and the IMA reference algorithm); [`adts`] frames AAC. G.726 and the AAC
//! encoder are libavcodec's, in [`crate::mux::audio`].

pub mod adpcm;
pub mod adts;
pub mod g711;

use crate::error::Result;
use crate::mux::audio::{AacEncoder, AacFrame, G726Decoder};
use crate::time::{Dur90k, Ts90k, TICKS_PER_SECOND};

pub use crate::mux::audio::G726Packing;
pub use adts::AdtsConfig;

/// Sample rate of every telephone-band codec devices send.
pub const DEVICE_RATE: u32 = 8000;

/// Input this close to where the previous input ended is contiguous (20 ms:
/// half a typical packet, and half the A/V offset we promise).
pub const CONTIGUOUS: Dur90k = Dur90k(1800);

/// Gaps and overlaps up to this long are bridged with silence or trimmed;
/// longer ones restart the encoder at the new time.
pub const MAX_BRIDGE: Dur90k = Dur90k(90_000);

/// An audio codec as devices send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    /// G.711 A-law, 8 kHz.
    G711A,
    /// G.711 µ-law, 8 kHz.
    G711U,
    /// G.726 ADPCM, 8 kHz; the bit rate follows from the packet length.
    G726,
    /// IMA ADPCM with the decoder state at the start of each packet.
    ImaAdpcm,
    /// AAC in ADTS frames: passed through.
    Aac,
}

impl AudioCodec {
    /// The codec of a JT/T 1078-2016 payload type (table 12), for the
    /// audio codecs we handle.
    pub fn from_jt1078_payload_type(pt: u8) -> Option<Self> {
        match pt {
            6 => Some(AudioCodec::G711A),
            7 => Some(AudioCodec::G711U),
            8 => Some(AudioCodec::G726),
            19 => Some(AudioCodec::Aac),
            26 => Some(AudioCodec::ImaAdpcm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::G711A => "G.711A",
            AudioCodec::G711U => "G.711U",
            AudioCodec::G726 => "G.726",
            AudioCodec::ImaAdpcm => "IMA ADPCM",
            AudioCodec::Aac => "AAC",
        }
    }
}

/// How a stream's audio is transcoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioConfig {
    /// Mux audio at all (off: audio is counted and dropped).
    pub enabled: bool,
    /// AAC output sample rate (Hz). 8 kHz input is resampled to it.
    pub sample_rate: u32,
    /// AAC bit rate (bits per second).
    pub bitrate: u32,
    /// G.726 bit packing, when the device does not use the usual one.
    pub g726_packing: G726Packing,
}

/// The output sample rate by default: the devices' own 8 kHz, so nothing
/// is resampled and the encoder runs a quarter as many frames as at 32 kHz
/// (BENCHMARKS.md). AAC-LC at 8 kHz mono plays with sound in Chromium
/// through hls.js 1.7 and natively (hlsd's browser test listens to it);
/// reports of silent 8 kHz AAC concern older hls.js, which announced
/// low-rate AAC as HE-AAC. `AudioConfig::sample_rate` raises it when a
/// player needs more (libswresample converts).
pub const DEFAULT_SAMPLE_RATE: u32 = DEVICE_RATE;

impl Default for AudioConfig {
    fn default() -> Self {
        AudioConfig {
            enabled: true,
            sample_rate: DEFAULT_SAMPLE_RATE,
            bitrate: 32_000,
            g726_packing: G726Packing::Le,
        }
    }
}

/// The payload without a HiSilicon frame header (`00 01 LL 00`, LL the
/// length of the rest in 16-bit words), and whether one was there. The
/// header is recognised by its whole shape, not its first bytes alone.
pub fn strip_hisilicon(payload: &[u8]) -> (&[u8], bool) {
    match payload {
        [0x00, 0x01, words, 0x00, rest @ ..] if *words as usize * 2 == rest.len() => (rest, true),
        _ => (payload, false),
    }
}

/// G.726 bits per sample from the length of a 40 ms (320-sample) packet:
/// 80/120/160/200 bytes are 16/24/32/40 kbit/s.
pub fn g726_bits_for_packet(len: usize) -> Option<u8> {
    match len {
        80 => Some(2),
        120 => Some(3),
        160 => Some(4),
        200 => Some(5),
        _ => None,
    }
}

/// One AAC frame (ADTS) placed on the stream's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioPacket {
    pub pts: Ts90k,
    pub duration: Dur90k,
    pub data: Vec<u8>,
}

/// Why a payload was refused (counted; the stream goes on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioReject {
    #[error("audio muxing is disabled")]
    Disabled,
    #[error("empty payload")]
    Empty,
    #[error("{0} payload of {1} bytes cannot be decoded")]
    BadPayload(&'static str, usize),
    #[error("AAC payload is not ADTS: {0}")]
    NotAdts(String),
    #[error("{from} after {to}: the stream's AAC configuration cannot change")]
    ConfigChange { from: String, to: String },
    #[error("{0}")]
    Codec(String),
}

/// Counters of one stream's audio.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AudioStats {
    pub payloads: u64,
    pub rejected: u64,
    pub frames_out: u64,
    /// Device samples of silence inserted to bridge short gaps.
    pub silence_samples: u64,
    /// Device samples trimmed where input overlapped what came before.
    pub trimmed_samples: u64,
    /// Encoder restarts at a gap or jump too long to bridge.
    pub restarts: u64,
}

enum Output {
    Encode(Box<Encoding>),
    Passthrough { next_pts: Option<Ts90k> },
}

struct Encoding {
    encoder: AacEncoder,
    /// Timeline position of the encoder's first input sample.
    epoch: Ts90k,
    /// Device samples fed since `epoch`.
    fed: u64,
}

impl Encoding {
    fn expected(&self) -> Ts90k {
        Ts90k(
            self.epoch
                .0
                .saturating_add(samples_to_ticks(self.fed as i64, DEVICE_RATE).0),
        )
    }
}

fn samples_to_ticks(samples: i64, rate: u32) -> Dur90k {
    Dur90k((samples as i128 * TICKS_PER_SECOND as i128 / rate as i128) as i64)
}

fn ticks_to_samples(d: Dur90k, rate: u32) -> i64 {
    (d.0 as i128 * rate as i128 / TICKS_PER_SECOND as i128) as i64
}

/// One stream's audio, from device payloads to AAC on the timeline.
///
/// ```
/// use streamcore::audio::{AudioCodec, AudioConfig, AudioTranscoder};
/// use streamcore::Ts90k;
///
/// let mut audio = AudioTranscoder::new(AudioConfig::default());
/// let mut out = Vec::new();
/// // 1 s of G.711 A-law silence (0xd5) in 40 ms packets, 3600 ticks apart.
/// for i in 0..25 {
///     audio.push(AudioCodec::G711A, &[0xd5; 320], Some(Ts90k(i * 3600)), &mut out)?;
/// }
/// audio.finish(&mut out)?;
/// assert_eq!(audio.output_config().unwrap().sample_rate(), 8000);
/// // ADTS frames of 1024 samples at 8 kHz, 11520 ticks apart, from t = 0
/// // (the first one is the encoder's priming, a frame earlier).
/// assert!(out.windows(2).all(|w| w[1].pts.0 - w[0].pts.0 == 11520));
/// assert_eq!(out[1].pts, Ts90k(0));
/// assert!(out.iter().all(|p| p.data[0] == 0xff));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct AudioTranscoder {
    cfg: AudioConfig,
    output: Option<Output>,
    /// The output configuration, fixed by the first payload taken and kept
    /// across `finish` (a later encoder has the same).
    fixed: Option<(AdtsConfig, bool)>,
    g726: Option<G726Decoder>,
    pcm: Vec<i16>,
    encoded: Vec<AacFrame>,
    stats: AudioStats,
}

impl AudioTranscoder {
    pub fn new(cfg: AudioConfig) -> Self {
        AudioTranscoder {
            cfg,
            output: None,
            fixed: None,
            g726: None,
            pcm: Vec::with_capacity(640),
            encoded: Vec::new(),
            stats: AudioStats::default(),
        }
    }

    pub fn stats(&self) -> AudioStats {
        self.stats
    }

    /// An encoder or passthrough is running: the next payload follows on
    /// from the last one when it carries no time of its own.
    pub fn is_running(&self) -> bool {
        self.output.is_some()
    }

    /// The AAC configuration of the output, once the first payload fixed it.
    pub fn output_config(&self) -> Option<AdtsConfig> {
        self.fixed.map(|(config, _)| config)
    }

    fn encoder_config(&self) -> AdtsConfig {
        AdtsConfig {
            profile: 1,
            sampling_index: adts::sampling_index(self.cfg.sample_rate).unwrap_or(5),
            channels: 1,
        }
    }

    /// Takes one payload of `codec` whose first sample belongs at `pts`
    /// (`None`: right after the previous one); appends finished AAC frames
    /// to `out`. A refused payload changes nothing else.
    pub fn push(
        &mut self,
        codec: AudioCodec,
        payload: &[u8],
        pts: Option<Ts90k>,
        out: &mut Vec<AudioPacket>,
    ) -> Result<(), AudioReject> {
        self.stats.payloads += 1;
        let r = self.push_inner(codec, payload, pts, out);
        if r.is_err() {
            self.stats.rejected += 1;
        }
        r
    }

    fn push_inner(
        &mut self,
        codec: AudioCodec,
        payload: &[u8],
        pts: Option<Ts90k>,
        out: &mut Vec<AudioPacket>,
    ) -> Result<(), AudioReject> {
        if !self.cfg.enabled {
            return Err(AudioReject::Disabled);
        }
        let (data, _) = strip_hisilicon(payload);
        if data.is_empty() {
            return Err(AudioReject::Empty);
        }
        if codec == AudioCodec::Aac {
            return self.pass_through(data, pts, out);
        }
        if let Some((config, true)) = self.fixed {
            return Err(AudioReject::ConfigChange {
                from: codec.name().into(),
                to: format!("AAC passthrough at {} Hz", config.sample_rate()),
            });
        }
        self.pcm.clear();
        self.decode(codec, data)?;
        self.encode(pts, out)
    }

    fn decode(&mut self, codec: AudioCodec, data: &[u8]) -> Result<(), AudioReject> {
        let bad = || AudioReject::BadPayload(codec.name(), data.len());
        match codec {
            AudioCodec::G711A => self
                .pcm
                .extend(data.iter().map(|&c| g711::alaw_to_linear(c))),
            AudioCodec::G711U => self
                .pcm
                .extend(data.iter().map(|&c| g711::ulaw_to_linear(c))),
            AudioCodec::ImaAdpcm => {
                adpcm::decode_packet(data, &mut self.pcm).map_err(|_| bad())?;
                if self.pcm.is_empty() {
                    return Err(bad());
                }
            }
            AudioCodec::G726 => {
                let bits = match (g726_bits_for_packet(data.len()), &self.g726) {
                    (Some(b), _) => b,
                    // Another length from a device already known: a short
                    // last packet of the same rate.
                    (None, Some(d)) => d.bits(),
                    (None, None) => return Err(bad()),
                };
                if self.g726.as_ref().map(|d| d.bits()) != Some(bits) {
                    self.g726 = Some(
                        G726Decoder::new(bits, self.cfg.g726_packing)
                            .map_err(|e| AudioReject::Codec(e.to_string()))?,
                    );
                }
                let d = self.g726.as_mut().expect("set above");
                d.decode(data, &mut self.pcm)
                    .map_err(|e| AudioReject::Codec(e.to_string()))?;
            }
            AudioCodec::Aac => unreachable!("passed through"),
        }
        Ok(())
    }

    /// Places the decoded samples in `self.pcm` on the timeline and encodes
    /// them.
    fn encode(
        &mut self,
        pts: Option<Ts90k>,
        out: &mut Vec<AudioPacket>,
    ) -> Result<(), AudioReject> {
        let mut skip = 0usize;
        let restart_at = match (&self.output, pts) {
            (None, p) => Some(p.unwrap_or(Ts90k(0))),
            (Some(Output::Encode(e)), Some(p)) => {
                // Any i64 may come in: saturate rather than overflow.
                let diff = Dur90k(p.0.saturating_sub(e.expected().0));
                if diff.0.unsigned_abs() <= CONTIGUOUS.0 as u64 {
                    None
                } else if diff > Dur90k::ZERO && diff <= MAX_BRIDGE {
                    let silence = ticks_to_samples(diff, DEVICE_RATE) as usize;
                    self.stats.silence_samples += silence as u64;
                    let mut pcm = std::mem::take(&mut self.pcm);
                    pcm.splice(0..0, std::iter::repeat_n(0i16, silence));
                    self.pcm = pcm;
                    None
                } else if diff < Dur90k::ZERO && diff.0 >= -MAX_BRIDGE.0 {
                    skip = (ticks_to_samples(Dur90k(-diff.0), DEVICE_RATE) as usize)
                        .min(self.pcm.len());
                    self.stats.trimmed_samples += skip as u64;
                    None
                } else {
                    Some(p)
                }
            }
            (Some(Output::Encode(_)), None) => None,
            (Some(Output::Passthrough { .. }), _) => unreachable!("checked by the caller"),
        };
        if let Some(epoch) = restart_at {
            if let Some(Output::Encode(old)) = self.output.take() {
                self.stats.restarts += 1;
                let mut old = old;
                let r = old.encoder.finish(&mut self.encoded);
                self.emit(&old, out);
                r.map_err(|e| AudioReject::Codec(e.to_string()))?;
            }
            let encoder = AacEncoder::new(DEVICE_RATE, self.cfg.sample_rate, self.cfg.bitrate)
                .map_err(|e| AudioReject::Codec(e.to_string()))?;
            self.fixed = Some((self.encoder_config(), false));
            self.output = Some(Output::Encode(Box::new(Encoding {
                encoder,
                epoch,
                fed: 0,
            })));
        }
        let Some(Output::Encode(e)) = self.output.as_mut() else {
            unreachable!("an encoder was made above")
        };
        let pcm = &self.pcm[skip..];
        e.fed += pcm.len() as u64;
        let r = e.encoder.push(pcm, &mut self.encoded);
        let (epoch, rate, frame) = (e.epoch, e.encoder.output_rate(), e.encoder.frame_size());
        self.emit_with(epoch, rate, frame, out);
        r.map_err(|e| AudioReject::Codec(e.to_string()))
    }

    fn emit(&mut self, e: &Encoding, out: &mut Vec<AudioPacket>) {
        self.emit_with(
            e.epoch,
            e.encoder.output_rate(),
            e.encoder.frame_size(),
            out,
        );
    }

    fn emit_with(&mut self, epoch: Ts90k, rate: u32, frame: usize, out: &mut Vec<AudioPacket>) {
        let duration = samples_to_ticks(frame as i64, rate);
        for f in self.encoded.drain(..) {
            self.stats.frames_out += 1;
            out.push(AudioPacket {
                pts: Ts90k(
                    epoch
                        .0
                        .saturating_add(samples_to_ticks(f.pts_samples, rate).0),
                ),
                duration,
                data: f.adts,
            });
        }
    }

    fn pass_through(
        &mut self,
        mut data: &[u8],
        pts: Option<Ts90k>,
        out: &mut Vec<AudioPacket>,
    ) -> Result<(), AudioReject> {
        // Parse the whole payload before emitting anything: a payload is
        // taken or refused as one.
        let mut frames = Vec::new();
        let mut config = match self.fixed {
            Some((config, true)) => Some(config),
            Some((_, false)) => {
                return Err(AudioReject::ConfigChange {
                    from: "AAC passthrough".into(),
                    to: "transcoded audio".into(),
                })
            }
            None => None,
        };
        while !data.is_empty() {
            let f = adts::parse_frame(data).map_err(|e| AudioReject::NotAdts(format!("{e:?}")))?;
            match config {
                Some(c) if c != f.config => {
                    return Err(AudioReject::ConfigChange {
                        from: format!("{:?}", f.config),
                        to: format!("{c:?}"),
                    })
                }
                _ => config = Some(f.config),
            }
            frames.push((&data[..f.len], f.blocks));
            data = &data[f.len..];
        }
        let config = config.expect("at least one frame");
        let next = match &self.output {
            Some(Output::Passthrough { next_pts, .. }) => *next_pts,
            _ => None,
        };
        let mut t = match (next, pts) {
            (Some(n), Some(p)) if p.0.saturating_sub(n.0).unsigned_abs() <= CONTIGUOUS.0 as u64 => {
                n
            }
            (_, Some(p)) => p,
            (Some(n), None) => n,
            (None, None) => Ts90k(0),
        };
        for (bytes, blocks) in frames {
            let duration = samples_to_ticks(1024 * blocks as i64, config.sample_rate());
            self.stats.frames_out += 1;
            out.push(AudioPacket {
                pts: t,
                duration,
                data: bytes.to_vec(),
            });
            t = Ts90k(t.0.saturating_add(duration.0));
        }
        self.fixed = Some((config, true));
        self.output = Some(Output::Passthrough { next_pts: Some(t) });
        Ok(())
    }

    /// The stream ended: encodes what the encoder holds. The next payload
    /// starts a new encoder (same configuration).
    pub fn finish(&mut self, out: &mut Vec<AudioPacket>) -> Result<(), AudioReject> {
        match self.output.take() {
            Some(Output::Encode(mut e)) => {
                let r = e.encoder.finish(&mut self.encoded);
                self.emit(&e, out);
                r.map_err(|e| AudioReject::Codec(e.to_string()))
            }
            other => {
                self.output = other;
                Ok(())
            }
        }
    }
}
