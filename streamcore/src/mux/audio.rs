//! The libavcodec side of audio: G.726 decoding and AAC-LC encoding (with
//! libswresample raising the rate first), in-process.
//!
//! [`AacEncoder`] takes 16-bit PCM at the device's rate (resampled when the
//! output rate differs) and returns ADTS
//! frames (7-byte header, one raw data block each) stamped in output
//! samples, so the MPEG-TS muxer passes them through untouched and every
//! frame carries the same AudioSpecificConfig for the life of the stream.
//! FFmpeg's native `aac` encoder with its `fast` coder is used: the
//! `twoloop` default costs 2.2-3.9 times the CPU for no audible gain on
//! 8 kHz telephone-band input (BENCHMARKS.md).

use ffmpeg::ffi;
use ffmpeg::util::channel_layout::ChannelLayout;
use ffmpeg::util::format::sample::{Sample, Type as SampleType};
use ffmpeg_next as ffmpeg;

use super::init_ffmpeg;
use crate::audio::adts;
use crate::error::{Error, Result};

fn codec_error(codec: &'static str) -> impl Fn(ffmpeg::Error) -> Error {
    move |e| Error::Codec {
        codec,
        detail: e.to_string(),
    }
}

/// Byte order of G.726 code words in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum G726Packing {
    /// Code words from the least significant bit of each byte up
    /// (libavcodec `g726le`, "right-justified"): what most devices send.
    #[default]
    Le,
    /// Code words from the most significant bit down (RFC 3551 / libavcodec `g726`).
    Be,
}

impl std::str::FromStr for G726Packing {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "le" => Ok(G726Packing::Le),
            "be" => Ok(G726Packing::Be),
            _ => Err(Error::Config(format!(
                "G.726 packing {s:?}: expected \"le\" or \"be\""
            ))),
        }
    }
}

/// A libavcodec G.726 decoder at 8 kHz mono. Its state runs on across
/// packets, as the codec's does on the device.
pub struct G726Decoder {
    decoder: ffmpeg::decoder::Audio,
    frame: ffmpeg::frame::Audio,
    bits: u8,
}

impl G726Decoder {
    /// `bits` per sample: 2-5 (16-40 kbit/s).
    pub fn new(bits: u8, packing: G726Packing) -> Result<Self> {
        init_ffmpeg();
        let err = codec_error("G.726");
        if !(2..=5).contains(&bits) {
            return Err(Error::Codec {
                codec: "G.726",
                detail: format!("{bits} bits per sample (2-5 exist)"),
            });
        }
        let id = match packing {
            G726Packing::Le => ffmpeg::codec::Id::ADPCM_G726LE,
            G726Packing::Be => ffmpeg::codec::Id::ADPCM_G726,
        };
        let codec = ffmpeg::decoder::find(id).ok_or(Error::Codec {
            codec: "G.726",
            detail: "libavcodec has no G.726 decoder".into(),
        })?;
        let mut ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
        // SAFETY: `ctx` owns a freshly allocated, not yet opened
        // AVCodecContext; plain field stores before avcodec_open2, which
        // is where the G.726 decoder reads them.
        unsafe {
            let c = ctx.as_mut_ptr();
            (*c).sample_rate = 8000;
            (*c).bits_per_coded_sample = bits as i32;
            ffi::av_channel_layout_default(&mut (*c).ch_layout, 1);
        }
        let decoder = ctx.decoder().audio().map_err(err)?;
        Ok(G726Decoder {
            decoder,
            frame: ffmpeg::frame::Audio::empty(),
            bits,
        })
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// Decodes one packet's code words, appending 16-bit samples to `out`.
    pub fn decode(&mut self, payload: &[u8], out: &mut Vec<i16>) -> Result<()> {
        let err = codec_error("G.726");
        self.decoder
            .send_packet(&ffmpeg::Packet::copy(payload))
            .map_err(&err)?;
        while self.decoder.receive_frame(&mut self.frame).is_ok() {
            if self.frame.format() != Sample::I16(SampleType::Packed) {
                return Err(Error::Codec {
                    codec: "G.726",
                    detail: format!("unexpected sample format {:?}", self.frame.format()),
                });
            }
            out.extend_from_slice(&self.frame.plane::<i16>(0)[..self.frame.samples()]);
        }
        Ok(())
    }
}

/// One encoded AAC frame with its ADTS header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacFrame {
    /// Presentation time in output samples since the encoder started
    /// (negative for the encoder's priming frame).
    pub pts_samples: i64,
    pub adts: Vec<u8>,
}

/// PCM in, AAC-LC mono ADTS frames out.
pub struct AacEncoder {
    encoder: ffmpeg::encoder::Audio,
    resampler: Option<ffmpeg::software::resampling::Context>,
    input_rate: u32,
    output_rate: u32,
    sampling_index: u8,
    frame_size: usize,
    /// Output-rate samples waiting for a whole frame.
    pending: Vec<f32>,
    /// Scratch for the resampler's input and output.
    scratch_in: Vec<f32>,
    scratch_out: Vec<f32>,
    next_pts: i64,
    packet: ffmpeg::Packet,
}

impl AacEncoder {
    /// An encoder from `input_rate` PCM to AAC-LC at `output_rate` and
    /// `bitrate` bits per second.
    pub fn new(input_rate: u32, output_rate: u32, bitrate: u32) -> Result<Self> {
        init_ffmpeg();
        let err = codec_error("AAC");
        let sampling_index = adts::sampling_index(output_rate).ok_or(Error::Config(format!(
            "AAC sample rate {output_rate} Hz is not one AAC defines"
        )))?;
        let codec = ffmpeg::encoder::find(ffmpeg::codec::Id::AAC).ok_or(Error::Codec {
            codec: "AAC",
            detail: "libavcodec has no AAC encoder".into(),
        })?;
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .audio()
            .map_err(&err)?;
        enc.set_rate(output_rate as i32);
        enc.set_format(Sample::F32(SampleType::Planar));
        enc.set_channel_layout(ChannelLayout::MONO);
        enc.set_channels(1);
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base((1, output_rate as i32));
        let mut opts = ffmpeg::Dictionary::new();
        opts.set("aac_coder", "fast");
        // The ADTS headers we write say AAC-LC: keep the encoder to it.
        opts.set("profile", "aac_low");
        let encoder = enc.open_with(opts).map_err(&err)?;
        let frame_size = encoder.frame_size() as usize;
        let resampler = if input_rate == output_rate {
            None
        } else {
            let flt = Sample::F32(SampleType::Packed);
            Some(
                ffmpeg::software::resampling::Context::get(
                    flt,
                    ChannelLayout::MONO,
                    input_rate,
                    flt,
                    ChannelLayout::MONO,
                    output_rate,
                )
                .map_err(codec_error("resampler"))?,
            )
        };
        Ok(AacEncoder {
            encoder,
            resampler,
            input_rate,
            output_rate,
            sampling_index,
            frame_size: frame_size.max(1),
            pending: Vec::with_capacity(4096),
            scratch_in: Vec::new(),
            scratch_out: Vec::new(),
            next_pts: 0,
            packet: ffmpeg::Packet::empty(),
        })
    }

    pub fn output_rate(&self) -> u32 {
        self.output_rate
    }

    /// Output samples per AAC frame (1024).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Feeds PCM at the input rate; appends the frames it completed.
    pub fn push(&mut self, pcm: &[i16], out: &mut Vec<AacFrame>) -> Result<()> {
        self.scratch_in.clear();
        self.scratch_in
            .extend(pcm.iter().map(|&s| s as f32 / 32768.0));
        self.resample(false)?;
        self.encode_pending(false, out)
    }

    /// Ends the stream: the samples still held are padded to a frame and
    /// encoded, and the encoder is drained. The encoder cannot be used after.
    pub fn finish(&mut self, out: &mut Vec<AacFrame>) -> Result<()> {
        self.scratch_in.clear();
        self.resample(true)?;
        self.encode_pending(true, out)?;
        self.encoder.send_eof().map_err(codec_error("AAC"))?;
        self.drain(out);
        Ok(())
    }

    fn resample(&mut self, flush: bool) -> Result<()> {
        let Some(swr) = self.resampler.as_mut() else {
            self.pending.extend_from_slice(&self.scratch_in);
            return Ok(());
        };
        let in_count = self.scratch_in.len();
        let capacity = in_count * self.output_rate as usize / self.input_rate as usize + 256;
        self.scratch_out.resize(capacity, 0.0);
        let out_ptr = self.scratch_out.as_mut_ptr() as *mut u8;
        let in_ptr = self.scratch_in.as_ptr() as *const u8;
        // SAFETY: `swr` is an initialised SwrContext for packed mono f32 on
        // both sides, so each side has one plane: one pointer each, to
        // buffers of `capacity` (out) and `in_count` (in) f32 samples that
        // live across the call. A null input with count 0 asks for the
        // samples held in the resampler's delay line (flush).
        let produced = unsafe {
            let mut out_planes = [out_ptr];
            let in_planes = [in_ptr];
            let (inp, n) = if flush && in_count == 0 {
                (std::ptr::null(), 0)
            } else {
                (in_planes.as_ptr(), in_count as i32)
            };
            ffi::swr_convert(
                swr.as_mut_ptr(),
                out_planes.as_mut_ptr(),
                capacity as i32,
                inp as *mut *const u8,
                n,
            )
        };
        if produced < 0 {
            return Err(Error::Codec {
                codec: "resampler",
                detail: ffmpeg::Error::from(produced).to_string(),
            });
        }
        self.pending
            .extend_from_slice(&self.scratch_out[..produced as usize]);
        Ok(())
    }

    fn encode_pending(&mut self, pad_last: bool, out: &mut Vec<AacFrame>) -> Result<()> {
        let n = self.frame_size;
        if pad_last && !self.pending.len().is_multiple_of(n) {
            let padded = self.pending.len().next_multiple_of(n);
            self.pending.resize(padded, 0.0);
        }
        let whole = self.pending.len() / n * n;
        let mut consumed = 0;
        while consumed < whole {
            let mut frame =
                ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), n, ChannelLayout::MONO);
            frame.set_rate(self.output_rate);
            frame.plane_mut::<f32>(0)[..n].copy_from_slice(&self.pending[consumed..consumed + n]);
            frame.set_pts(Some(self.next_pts));
            self.next_pts += n as i64;
            consumed += n;
            self.encoder
                .send_frame(&frame)
                .map_err(codec_error("AAC"))?;
            self.drain(out);
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<AacFrame>) {
        while self.encoder.receive_packet(&mut self.packet).is_ok() {
            let Some(raw) = self.packet.data() else {
                continue;
            };
            let mut frame = Vec::with_capacity(adts::HEADER_BYTES + raw.len());
            adts::write_header(&mut frame, self.sampling_index, 1, raw.len());
            frame.extend_from_slice(raw);
            out.push(AacFrame {
                pts_samples: self.packet.pts().unwrap_or(self.next_pts),
                adts: frame,
            });
        }
    }
}
