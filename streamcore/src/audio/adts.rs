//! ADTS (ISO/IEC 14496-3 1.A.2): the self-describing AAC framing MPEG-TS
//! carries. Parsed for AAC passthrough (JT/T 1078 payload type 19), written
//! for what our encoder produces.

/// Bytes of a header without CRC.
pub const HEADER_BYTES: usize = 7;

/// Sample rates by sampling-frequency index (indices 13-15 are not rates).
const RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The sampling-frequency index of `rate`, if AAC defines one.
pub fn sampling_index(rate: u32) -> Option<u8> {
    RATES.iter().position(|&r| r == rate).map(|i| i as u8)
}

/// What an ADTS header says about the stream: the fields of the
/// AudioSpecificConfig a player builds from it. Players break when this
/// changes within a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AdtsConfig {
    /// Audio object type minus one (1 = AAC-LC).
    pub profile: u8,
    pub sampling_index: u8,
    pub channels: u8,
}

impl AdtsConfig {
    pub fn sample_rate(&self) -> u32 {
        RATES[self.sampling_index as usize]
    }
}

/// One ADTS frame found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdtsFrame {
    pub config: AdtsConfig,
    /// Header plus payload.
    pub len: usize,
    /// Raw data blocks in the frame (1024 samples each).
    pub blocks: u8,
}

/// Why bytes are not an ADTS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdtsError {
    NoSync,
    Truncated,
    BadLength,
    /// Sampling-frequency index 13-15, or a channel configuration of 0
    /// (defined in-band, which MPEG-TS players do not support).
    Unsupported,
}

/// Parses the ADTS frame at the start of `buf`.
pub fn parse_frame(buf: &[u8]) -> Result<AdtsFrame, AdtsError> {
    let Some(h) = buf.first_chunk::<HEADER_BYTES>() else {
        return Err(if buf.len() >= 2 && is_sync(buf) {
            AdtsError::Truncated
        } else {
            AdtsError::NoSync
        });
    };
    if !is_sync(buf) {
        return Err(AdtsError::NoSync);
    }
    let protection_absent = h[1] & 1 != 0;
    let profile = h[2] >> 6;
    let sampling_index = (h[2] >> 2) & 0x0f;
    let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
    let len = (((h[3] & 0x03) as usize) << 11) | ((h[4] as usize) << 3) | ((h[5] as usize) >> 5);
    let blocks = (h[6] & 0x03) + 1;
    let header = if protection_absent { 7 } else { 9 };
    if sampling_index as usize >= RATES.len() || channels == 0 {
        return Err(AdtsError::Unsupported);
    }
    if len <= header {
        return Err(AdtsError::BadLength);
    }
    if len > buf.len() {
        return Err(AdtsError::Truncated);
    }
    Ok(AdtsFrame {
        config: AdtsConfig {
            profile,
            sampling_index,
            channels,
        },
        len,
        blocks,
    })
}

fn is_sync(buf: &[u8]) -> bool {
    // 12-bit syncword, then MPEG-4 or -2 id, and layer 00.
    buf[0] == 0xff && buf[1] & 0xf6 == 0xf0
}

/// Appends an ADTS header (AAC-LC, no CRC, one raw data block) for a
/// payload of `payload_len` bytes.
pub fn write_header(out: &mut Vec<u8>, sampling_index: u8, channels: u8, payload_len: usize) {
    let len = payload_len + HEADER_BYTES;
    let profile_lc = 1u8;
    out.extend_from_slice(&[
        0xff,
        0xf1, // MPEG-4, layer 0, no CRC
        (profile_lc << 6) | (sampling_index << 2) | (channels >> 2),
        ((channels & 3) << 6) | ((len >> 11) as u8 & 0x03),
        (len >> 3) as u8,
        ((len as u8 & 0x07) << 5) | 0x1f, // buffer fullness 0x7ff: variable rate
        0xfc,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_header_parses_back() {
        let mut f = Vec::new();
        write_header(&mut f, sampling_index(16000).unwrap(), 1, 300);
        f.resize(307, 0);
        let p = parse_frame(&f).unwrap();
        assert_eq!(p.len, 307);
        assert_eq!(p.blocks, 1);
        assert_eq!(
            p.config,
            AdtsConfig {
                profile: 1,
                sampling_index: 8,
                channels: 1
            }
        );
        assert_eq!(p.config.sample_rate(), 16000);
        assert_eq!(parse_frame(&f[..100]), Err(AdtsError::Truncated));
        assert_eq!(parse_frame(&f[..5]), Err(AdtsError::Truncated));
        assert_eq!(parse_frame(&[0x00; 10]), Err(AdtsError::NoSync));
        let mut bad = f.clone();
        bad[2] |= 0x0f << 2;
        assert_eq!(parse_frame(&bad), Err(AdtsError::Unsupported));
    }
}
