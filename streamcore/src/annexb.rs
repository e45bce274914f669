//! Annex-B byte-stream framing (ITU-T H.264 Annex B), sans-IO.
//!
//! `push` any chunk of bytes, then `pull` NAL units until `None`. Start codes
//! of three or four bytes, start codes split across chunks and trailing zero
//! bytes all give the same NAL units whatever the chunking: a NAL unit is only
//! released once the start code after it has been seen (or on `finish`).
//! NAL units come out as `Bytes` slices of one shared buffer, without their
//! start code and without trailing zero bytes, so no copy is made per NAL.

use bytes::{Bytes, BytesMut};

const START_CODE: &[u8] = &[0, 0, 1];

/// Splits an Annex-B byte stream into NAL units.
#[derive(Debug, Default)]
pub struct AnnexBFramer {
    buf: BytesMut,
    /// Offset in `buf` where the current NAL unit's payload begins, once a
    /// start code has been seen.
    nal_start: Option<usize>,
    /// Offset from which to search for the next start code; bytes before it
    /// are known not to begin one.
    scan_from: usize,
    /// Bytes discarded before the first start code.
    skipped: u64,
    finished: bool,
}

impl AnnexBFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.finished = false;
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the end of the input: the last NAL unit is released by `pull`.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Bytes that preceded the first start code and were thrown away.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Returns the next complete NAL unit, if any.
    pub fn pull(&mut self) -> Option<Bytes> {
        loop {
            let found = memchr::memmem::find(&self.buf[self.scan_from..], START_CODE)
                .map(|i| i + self.scan_from);
            match (found, self.nal_start) {
                (Some(at), None) => {
                    self.skipped += at as u64;
                    let _ = self.buf.split_to(at + 3);
                    self.nal_start = Some(0);
                    self.scan_from = 0;
                }
                (Some(at), Some(start)) => {
                    let mut end = at;
                    while end > start && self.buf[end - 1] == 0 {
                        end -= 1;
                    }
                    let nal = self.buf.split_to(end).freeze().slice(start..);
                    // Drop the zeros and the start code that follow the NAL.
                    let _ = self.buf.split_to(at - end + 3);
                    self.nal_start = Some(0);
                    self.scan_from = 0;
                    if !nal.is_empty() {
                        return Some(nal);
                    }
                }
                (None, start) => {
                    if self.finished {
                        let Some(start) = start else {
                            // No start code in the whole stream: all of it
                            // was garbage, counted the same whatever the
                            // chunking (a pull before `finish` counts it).
                            self.skipped += self.buf.len() as u64;
                            self.buf.clear();
                            self.scan_from = 0;
                            return None;
                        };
                        let mut end = self.buf.len();
                        while end > start && self.buf[end - 1] == 0 {
                            end -= 1;
                        }
                        let nal = self.buf.split().freeze().slice(start..end);
                        self.nal_start = None;
                        self.scan_from = 0;
                        return (!nal.is_empty()).then_some(nal);
                    }
                    if start.is_none() {
                        // Keep two bytes: they may begin a start code.
                        let keep = self.buf.len().min(2);
                        let drop = self.buf.len() - keep;
                        self.skipped += drop as u64;
                        let _ = self.buf.split_to(drop);
                    }
                    self.scan_from = self.buf.len().saturating_sub(2).max(start.unwrap_or(0));
                    return None;
                }
            }
        }
    }
}

/// Splits a complete in-memory Annex-B buffer into NAL units (a convenience
/// over [`AnnexBFramer`] for whole frames and tests).
pub fn split_nals(data: &[u8]) -> Vec<Bytes> {
    let mut framer = AnnexBFramer::new();
    framer.push(data);
    framer.finish();
    std::iter::from_fn(|| framer.pull()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut f = AnnexBFramer::new();
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(n) = f.pull() {
                out.push(n.to_vec());
            }
        }
        f.finish();
        while let Some(n) = f.pull() {
            out.push(n.to_vec());
        }
        out
    }

    #[test]
    fn three_and_four_byte_start_codes_and_trailing_zeros() {
        let data = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 0, 1, 0x65, 9, 9, 0, 0,
        ];
        let want = vec![vec![0x67, 1, 2], vec![0x68, 3], vec![0x65, 9, 9]];
        assert_eq!(collect(&[&data]), want);
        let bytes: Vec<&[u8]> = data.chunks(1).collect();
        assert_eq!(collect(&bytes), want);
    }

    #[test]
    fn leading_garbage_is_skipped_and_counted() {
        let mut f = AnnexBFramer::new();
        f.push(&[7, 7, 7, 0, 0, 1, 0x09, 0xf0]);
        f.finish();
        assert_eq!(f.pull().unwrap().as_ref(), &[0x09, 0xf0]);
        assert_eq!(f.skipped_bytes(), 3);
        assert!(f.pull().is_none());
    }

    /// Found by the `annexb_framer` fuzz target: bytes without any start
    /// code were counted as skipped when pulled before `finish`, but not
    /// when the whole buffer was pushed and finished at once.
    #[test]
    fn fuzz_regression_annexb_skipped_count_chunking() {
        let garbage = [7u8; 100];
        let mut one_shot = AnnexBFramer::new();
        one_shot.push(&garbage);
        one_shot.finish();
        assert!(one_shot.pull().is_none());
        let mut chunked = AnnexBFramer::new();
        for c in garbage.chunks(7) {
            chunked.push(c);
            assert!(chunked.pull().is_none());
        }
        chunked.finish();
        assert!(chunked.pull().is_none());
        assert_eq!(one_shot.skipped_bytes(), 100);
        assert_eq!(chunked.skipped_bytes(), 100);
    }

    #[test]
    fn nothing_is_released_before_the_next_start_code() {
        let mut f = AnnexBFramer::new();
        f.push(&[0, 0, 1, 0x41, 5, 6]);
        assert!(f.pull().is_none());
        f.push(&[0, 0]);
        assert!(f.pull().is_none());
        f.push(&[1, 0x41]);
        assert_eq!(f.pull().unwrap().as_ref(), &[0x41, 5, 6]);
    }
}
