//! Audio read back by FFmpeg and measured without it, as an independent
//! check of what we mux: decoding to mono f32 through the `ffmpeg` CLI
//! (codec and rate from `ffprobe`), the dominant frequency (our own
//! radix-2 FFT over up to 1 s from the middle, refined by Goertzel
//! evaluations of the same windowed samples), and the RMS level in dBFS.
//! Standard library only; needs the `ffmpeg` and `ffprobe` CLIs.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mono f32 samples as FFmpeg decoded them, at the stream's own rate.
#[derive(Debug)]
pub struct DecodedAudio {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// The input stream's codec as ffprobe names it (`pcm_alaw`,
    /// `adpcm_g726le`, `aac`, ...).
    pub codec: String,
    /// What `ffmpeg -v error` printed while decoding (empty when clean):
    /// decode errors that did not stop it.
    pub stderr: String,
}

/// What to give FFmpeg as input: a path (`Path`, `PathBuf`), a URL or path
/// (`str`, `String`), or complete input arguments ending in `-i INPUT`
/// (`[String]`, `[&str]`, `Vec<String>`, arrays), e.g.
/// `["-f", "alaw", "-ar", "8000", "-ac", "1", "-i", path]` for a raw fixture.
pub trait FfmpegInput {
    fn input_args(&self) -> Vec<String>;
}

impl FfmpegInput for Path {
    fn input_args(&self) -> Vec<String> {
        vec!["-i".into(), self.display().to_string()]
    }
}

impl FfmpegInput for PathBuf {
    fn input_args(&self) -> Vec<String> {
        self.as_path().input_args()
    }
}

impl FfmpegInput for str {
    fn input_args(&self) -> Vec<String> {
        vec!["-i".into(), self.to_string()]
    }
}

impl FfmpegInput for String {
    fn input_args(&self) -> Vec<String> {
        self.as_str().input_args()
    }
}

impl FfmpegInput for [String] {
    fn input_args(&self) -> Vec<String> {
        self.to_vec()
    }
}

impl FfmpegInput for [&str] {
    fn input_args(&self) -> Vec<String> {
        self.iter().map(|s| s.to_string()).collect()
    }
}

impl FfmpegInput for Vec<String> {
    fn input_args(&self) -> Vec<String> {
        self.clone()
    }
}

impl<const N: usize> FfmpegInput for [String; N] {
    fn input_args(&self) -> Vec<String> {
        self.to_vec()
    }
}

impl<const N: usize> FfmpegInput for [&str; N] {
    fn input_args(&self) -> Vec<String> {
        self.as_slice().input_args()
    }
}

/// Decodes the input's first audio stream (`a:0`): see
/// [`decode_stream_with_ffmpeg`].
pub fn decode_with_ffmpeg<I: FfmpegInput + ?Sized>(input: &I) -> Result<DecodedAudio, String> {
    decode_stream_with_ffmpeg(input, "a:0")
}

/// Decodes one audio stream of `input` (`stream`: an FFmpeg stream
/// specifier within input 0, e.g. `a:0`) to mono f32 at its own rate:
/// `ffprobe -select_streams STREAM` for the codec name and sample rate,
/// then `ffmpeg -v error INPUT -map 0:STREAM -ac 1 -ar RATE -f f32le -`.
/// `Err` when either fails or finds no such stream; decode errors that do
/// not stop FFmpeg are in [`DecodedAudio::stderr`].
pub fn decode_stream_with_ffmpeg<I: FfmpegInput + ?Sized>(
    input: &I,
    stream: &str,
) -> Result<DecodedAudio, String> {
    let args = input.input_args();
    let probe = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(&args)
        .args(["-select_streams", stream])
        .args(["-show_entries", "stream=codec_name,sample_rate"])
        .args(["-of", "default=noprint_wrappers=1"])
        .output()
        .map_err(|e| format!("cannot run ffprobe: {e} (install ffmpeg)"))?;
    let text = String::from_utf8_lossy(&probe.stdout);
    if !probe.status.success() {
        return Err(format!(
            "ffprobe {args:?} failed: {}",
            String::from_utf8_lossy(&probe.stderr)
        ));
    }
    // An HLS input lists its streams once per program: take the first.
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let codec = field("codec_name")
        .ok_or_else(|| format!("ffprobe {args:?}: no stream {stream} ({text:?})"))?;
    let sample_rate: u32 = field("sample_rate")
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .ok_or_else(|| format!("ffprobe {args:?}: no sample rate for {stream} ({text:?})"))?;
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-v", "error"])
        .args(&args)
        .args(["-map", &format!("0:{stream}"), "-ac", "1"])
        .args(["-ar", &sample_rate.to_string(), "-f", "f32le", "-"])
        .output()
        .map_err(|e| format!("cannot run ffmpeg: {e} (install ffmpeg)"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(format!("ffmpeg {args:?} failed: {stderr}"));
    }
    let samples = out
        .stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(DecodedAudio {
        samples,
        sample_rate,
        codec,
        stderr,
    })
}

/// Lowest frequency [`dominant_frequency`] considers (below it: DC, rumble).
pub const MIN_FREQUENCY: f64 = 20.0;

/// The strongest frequency in `samples` (at `rate` Hz), between
/// [`MIN_FREQUENCY`] and `rate / 2`, measured over up to 1 s from the
/// middle (mean removed, Hann window): the peak bin of a zero-padded FFT,
/// then a golden-section search of the windowed spectrum (Goertzel at
/// arbitrary frequencies) within one bin of it. A pure tone comes out
/// within about 0.01 Hz; 10 s at 48 kHz takes milliseconds even unoptimised
/// (only the middle second is read). NaN for silence or fewer than 16
/// samples.
pub fn dominant_frequency(samples: &[f32], rate: u32) -> f64 {
    let n = samples.len().min(rate as usize);
    if n < 16 || rate == 0 {
        return f64::NAN;
    }
    let start = (samples.len() - n) / 2;
    let x = &samples[start..start + n];
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let w: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let hann = 0.5 - 0.5 * (2.0 * PI * i as f64 / (n - 1) as f64).cos();
            (v as f64 - mean) * hann
        })
        .collect();
    // Coarse: FFT zero-padded to at least twice the window.
    let size = (2 * n).next_power_of_two();
    let mut re = w.clone();
    re.resize(size, 0.0);
    let mut im = vec![0.0; size];
    fft(&mut re, &mut im);
    let bin_hz = rate as f64 / size as f64;
    let first = ((MIN_FREQUENCY / bin_hz).ceil() as usize).max(1);
    let Some((peak, power)) = (first..size / 2)
        .map(|k| (k, re[k] * re[k] + im[k] * im[k]))
        .max_by(|a, b| a.1.total_cmp(&b.1))
    else {
        return f64::NAN;
    };
    if power <= 0.0 {
        return f64::NAN;
    }
    // Fine: the true peak lies within one bin of the peak bin; the Hann main
    // lobe (+-2 bins of the unpadded window, +-4 here) is unimodal there.
    let nyquist = rate as f64 / 2.0;
    let (mut lo, mut hi) = (
        (peak as f64 - 1.0) * bin_hz,
        ((peak as f64 + 1.0) * bin_hz).min(nyquist),
    );
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut a, mut b) = (hi - g * (hi - lo), lo + g * (hi - lo));
    let (mut pa, mut pb) = (goertzel(&w, rate, a), goertzel(&w, rate, b));
    while hi - lo > 1e-4 {
        if pa >= pb {
            hi = b;
            (b, pb) = (a, pa);
            a = hi - g * (hi - lo);
            pa = goertzel(&w, rate, a);
        } else {
            lo = a;
            (a, pa) = (b, pb);
            b = lo + g * (hi - lo);
            pb = goertzel(&w, rate, b);
        }
    }
    (lo + hi) / 2.0
}

/// |DTFT|^2 of `x` at `freq` (any frequency, not only bin centres).
fn goertzel(x: &[f64], rate: u32, freq: f64) -> f64 {
    let c = 2.0 * (2.0 * PI * freq / rate as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// In-place iterative radix-2 complex FFT; `re.len()` a power of two.
fn fft(re: &mut [f64], im: &mut [f64]) {
    let n = re.len();
    assert!(n.is_power_of_two() && im.len() == n);
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let twiddle: Vec<(f64, f64)> = (0..n / 2)
        .map(|k| {
            let a = -2.0 * PI * k as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .collect();
    let mut len = 2;
    while len <= n {
        let stride = n / len;
        for s in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (wr, wi) = twiddle[k * stride];
                let (a, b) = (s + k, s + k + len / 2);
                let tr = re[b] * wr - im[b] * wi;
                let ti = re[b] * wi + im[b] * wr;
                re[b] = re[a] - tr;
                im[b] = im[a] - ti;
                re[a] += tr;
                im[a] += ti;
            }
        }
        len <<= 1;
    }
}

/// RMS level in dB relative to full scale (a sample of 1.0): -3.01 dBFS
/// for a full-scale sine, -15.05 for one of peak 0.25. -inf for silence or
/// no samples.
pub fn rms_dbfs(samples: &[f32]) -> f64 {
    if samples.is_empty() {
        return f64::NEG_INFINITY;
    }
    let mean_square =
        samples.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / samples.len() as f64;
    10.0 * mean_square.log10()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn sine(freq: f64, rate: u32, secs: f64, amp: f64, phase: f64) -> Vec<f32> {
        (0..(secs * rate as f64) as usize)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64 + phase).sin()) as f32)
            .collect()
    }

    /// Deterministic noise, uniform in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f64 / (1u64 << 23) as f64 - 1.0) as f32
            })
            .collect()
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/audio")
            .join(name)
    }

    #[test]
    fn pure_tones_within_a_small_fraction_of_a_percent() {
        let mut worst: f64 = 0.0;
        for rate in [8000u32, 16_000, 44_100, 48_000] {
            for freq in [100.0, 440.0, 997.0, 1000.0, 1234.5, 2500.0, 3900.0, 3999.0] {
                if freq > 0.49 * rate as f64 {
                    continue;
                }
                for (secs, phase) in [(10.0, 0.0), (2.0, 1.0), (0.1, 2.5)] {
                    let f = dominant_frequency(&sine(freq, rate, secs, 0.25, phase), rate);
                    let err = (f - freq).abs() / freq;
                    worst = worst.max(err);
                    assert!(
                        err < 0.005,
                        "{freq} Hz at {rate} Hz over {secs} s: measured {f}"
                    );
                }
            }
        }
        // Far better than the 0.5 % promised.
        assert!(worst < 1e-4, "worst relative error {worst:e}");
    }

    #[test]
    fn strongest_of_two_tones_in_noise() {
        let rate = 8000;
        let a = sine(697.0, rate, 3.0, 0.3, 0.0);
        let b = sine(1209.0, rate, 3.0, 0.1, 0.7);
        let n = noise(a.len(), 7);
        let x: Vec<f32> = (0..a.len()).map(|i| a[i] + b[i] + 0.1 * n[i]).collect();
        let f = dominant_frequency(&x, rate);
        assert!((f - 697.0).abs() < 0.5, "{f}");
        // With a DC offset too (removed before the analysis).
        let y: Vec<f32> = x.iter().map(|v| v + 0.3).collect();
        assert!((dominant_frequency(&y, rate) - 697.0).abs() < 0.5);
    }

    #[test]
    fn nothing_to_measure_is_nan() {
        assert!(dominant_frequency(&[], 8000).is_nan());
        assert!(dominant_frequency(&[0.1; 8], 8000).is_nan());
        assert!(dominant_frequency(&vec![0.0; 8000], 8000).is_nan());
    }

    #[test]
    fn ten_seconds_at_48k_quickly() {
        let x = sine(1000.0, 48_000, 10.0, 0.25, 0.3);
        let t = Instant::now();
        let f = dominant_frequency(&x, 48_000);
        let took = t.elapsed();
        eprintln!("dominant_frequency of 10 s at 48 kHz: {took:?}");
        assert!((f - 1000.0).abs() < 0.01, "{f}");
        // Generous (machines under load): a full-length DFT would take minutes.
        assert!(took.as_secs_f64() < 5.0, "{took:?}");
    }

    #[test]
    fn rms_levels() {
        // Peak 0.25: -12.04 dBFS peak, -15.05 dBFS RMS.
        let x = sine(1000.0, 48_000, 1.0, 0.25, 0.0);
        assert!(
            (rms_dbfs(&x) - (-15.0515)).abs() < 0.001,
            "{}",
            rms_dbfs(&x)
        );
        let full = sine(997.0, 48_000, 1.0, 1.0, 0.0);
        assert!((rms_dbfs(&full) - (-3.0103)).abs() < 0.001);
        let square: Vec<f32> = (0..800)
            .map(|i| if i % 8 < 4 { 0.5 } else { -0.5 })
            .collect();
        assert!((rms_dbfs(&square) - (-6.0206)).abs() < 0.001);
        assert_eq!(rms_dbfs(&[]), f64::NEG_INFINITY);
        assert_eq!(rms_dbfs(&[0.0; 100]), f64::NEG_INFINITY);
    }

    #[test]
    fn fft_matches_a_direct_dft() {
        let x = noise(64, 3);
        let (mut re, mut im) = (
            x.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            vec![0.0; 64],
        );
        fft(&mut re, &mut im);
        for k in 0..64 {
            let (mut r, mut i) = (0.0, 0.0);
            for (n, &v) in x.iter().enumerate() {
                let a = -2.0 * PI * (k * n) as f64 / 64.0;
                r += v as f64 * a.cos();
                i += v as f64 * a.sin();
            }
            assert!(
                (re[k] - r).abs() < 1e-9 && (im[k] - i).abs() < 1e-9,
                "bin {k}"
            );
        }
    }

    #[test]
    fn g711a_fixture_decoded_by_ffmpeg() {
        let path = fixture("tone1k_g711a.raw");
        let input = [
            "-f",
            "alaw",
            "-ar",
            "8000",
            "-ac",
            "1",
            "-i",
            path.to_str().unwrap(),
        ];
        let d = decode_with_ffmpeg(&input).expect("ffmpeg decodes the A-law fixture");
        assert_eq!((d.codec.as_str(), d.sample_rate), ("pcm_alaw", 8000));
        assert_eq!(d.samples.len(), 80_000, "250 packets of 320 samples");
        assert!(d.stderr.is_empty(), "{}", d.stderr);
        let f = dominant_frequency(&d.samples, d.sample_rate);
        assert!((f - 1000.0).abs() < 1.0, "{f}");
        // Source: -15.05 dBFS RMS; A-law's quantisation moves it slightly.
        let level = rms_dbfs(&d.samples);
        assert!((level + 15.05).abs() < 0.3, "{level}");
    }

    #[test]
    fn aac_fixture_by_path_and_by_stream() {
        let path = fixture("tone1k_aac.adts");
        let d = decode_with_ffmpeg(path.as_path()).expect("ffmpeg decodes the ADTS fixture");
        assert_eq!((d.codec.as_str(), d.sample_rate), ("aac", 16_000));
        assert_eq!(d.samples.len(), 156 * 1024, "156 AAC frames");
        assert!((dominant_frequency(&d.samples, 16_000) - 1000.0).abs() < 1.0);
        let level = rms_dbfs(&d.samples[16_000..d.samples.len() - 16_000]);
        assert!((level + 15.05).abs() < 0.5, "{level}");
        let s = decode_stream_with_ffmpeg(path.to_str().unwrap(), "a:0").unwrap();
        assert_eq!(s.samples, d.samples);
        assert!(decode_stream_with_ffmpeg(&path, "a:1").is_err());
    }

    #[test]
    fn missing_input_is_an_error() {
        let e = decode_with_ffmpeg(Path::new("/nonexistent/audio.wav")).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }
}
