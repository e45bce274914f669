//! IMA (DVI) ADPCM as dashcams send it in JT/T 1078 payload type 26: each
//! packet carries the decoder state it starts from (predictor as int16
//! little-endian, step index, one reserved byte), then 4-bit codes, the
//! high nibble of each byte first. No libavcodec decoder reads this layout
//! (its IMA variants put the state or the nibble order elsewhere), so it is
//! decoded here; the algorithm is the IMA ADPCM reference (step table of 89
//! entries, index adaptation by the code's magnitude).

/// Bytes of decoder state before the codes.
pub const STATE_BYTES: usize = 4;

/// The IMA step sizes (index 0-88).
pub const STEP: [i32; 89] = [
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60, 66,
    73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371, 408, 449,
    494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707, 1878, 2066, 2272,
    2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132, 7845, 8630, 9493,
    10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623, 27086, 29794, 32767,
];

/// How a code's magnitude moves the step index.
pub const INDEX_STEP: [i32; 8] = [-1, -1, -1, -1, 2, 4, 6, 8];

/// Why a packet could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdpcmError {
    /// Shorter than its state.
    Truncated,
    /// A step index outside the table (0-88): not IMA ADPCM, or corrupt.
    BadStepIndex(u8),
}

/// Decodes one packet (state, then codes) into `out` (appended): two
/// samples per code byte.
pub fn decode_packet(payload: &[u8], out: &mut Vec<i16>) -> Result<(), AdpcmError> {
    let Some((state, codes)) = payload.split_first_chunk::<STATE_BYTES>() else {
        return Err(AdpcmError::Truncated);
    };
    let mut predictor = i16::from_le_bytes([state[0], state[1]]) as i32;
    let mut index = state[2];
    if index as usize >= STEP.len() {
        return Err(AdpcmError::BadStepIndex(index));
    }
    out.reserve(codes.len() * 2);
    for &byte in codes {
        for code in [byte >> 4, byte & 0x0f] {
            let step = STEP[index as usize];
            let mut diff = step >> 3;
            if code & 4 != 0 {
                diff += step;
            }
            if code & 2 != 0 {
                diff += step >> 1;
            }
            if code & 1 != 0 {
                diff += step >> 2;
            }
            predictor = if code & 8 != 0 {
                predictor - diff
            } else {
                predictor + diff
            }
            .clamp(i16::MIN as i32, i16::MAX as i32);
            index = (index as i32 + INDEX_STEP[(code & 7) as usize]).clamp(0, 88) as u8;
            out.push(predictor as i16);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_where_decoding_starts() {
        let mut out = Vec::new();
        // Predictor 1000, index 0 (step 7); code 0 adds step/8 = 0.
        decode_packet(&[0xe8, 0x03, 0, 0, 0x00], &mut out).unwrap();
        assert_eq!(out, vec![1000, 1000]);
        out.clear();
        // Code 7 (high nibble) at step 7: 0 + 7 + 3 + 1 = 11, index -> 8;
        // then code 0x8 (low nibble) at step 16: subtracts 16 >> 3.
        decode_packet(&[0, 0, 0, 0, 0x78], &mut out).unwrap();
        assert_eq!(out, vec![11, 9]);
    }

    #[test]
    fn refuses_bad_state() {
        let mut out = Vec::new();
        assert_eq!(
            decode_packet(&[1, 2, 3], &mut out),
            Err(AdpcmError::Truncated)
        );
        assert_eq!(
            decode_packet(&[0, 0, 89, 0, 0x12], &mut out),
            Err(AdpcmError::BadStepIndex(89))
        );
        assert!(out.is_empty());
    }

    /// The predictor saturates instead of wrapping on hostile codes.
    #[test]
    fn saturates() {
        let mut out = Vec::new();
        decode_packet(&[0xff, 0x7f, 88, 0, 0x77, 0x77], &mut out).unwrap();
        assert!(out.iter().all(|&s| s == i16::MAX));
    }
}
