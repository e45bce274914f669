//! Annex-B byte-stream framing (ITU-T H.264 Annex B), sans-IO.
//!
//! `push` any chunk of bytes, then `pull` NAL units until `None`. Start codes
//! of three or four bytes, start codes split across chunks and trailing zero
//! bytes all give the same NAL units whatever the chunking: a NAL unit is only
//! released once the start code after it has been seen (or on `finish`).
//! NAL units come out as `Bytes` slices of one shared buffer, without their
//! start code and without trailing zero bytes, so no copy is made per NAL.
//!
//! [`push_shared`](AnnexBFramer::push_shared) takes a chunk the caller
//! already holds as `Bytes` and scans it in place: the NAL units that lie
//! wholly in it are slices of it, and only a NAL unit cut by the chunk's end
//! is copied (into the framer's buffer, to be completed by the next chunk).
//!
//! Buffers are recycled: when the current buffer is full, it is reclaimed in
//! place if every NAL unit cut from it has been dropped downstream, else a
//! spare buffer whose NAL units are all gone takes over. A warm stream thus
//! pushes frames without allocating (a new buffer is made only when frames
//! held for reordering pin more buffers than the pool has, or a push is
//! larger than any buffer).
//!
//! A NAL unit still waiting for its end is bounded ([`DEFAULT_MAX_NAL`],
//! configurable): one start code followed by endless bytes would otherwise
//! grow the buffer without limit. An overlong NAL unit is dropped and
//! counted, and the framer resynchronises at the next start code.

use std::sync::OnceLock;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

const START_CODE: &[u8] = &[0, 0, 1];

/// Smallest buffer the framer allocates; a push larger than this gets a
/// buffer of its own size.
const MIN_BUFFER: usize = 32 * 1024;
/// Spent buffers kept for reuse: enough for the frames a reorder depth of a
/// few pictures keeps alive, few enough to bound memory per stream.
const MAX_SPARE: usize = 4;
/// Default bound on one NAL unit: above the largest slice a 4K intra
/// picture at broadcast bitrates needs, far below what a hostile sender
/// could make a stream hold.
pub const DEFAULT_MAX_NAL: usize = 4 * 1024 * 1024;

fn start_code_finder() -> &'static Finder<'static> {
    static FINDER: OnceLock<Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| Finder::new(START_CODE))
}

/// Splits an Annex-B byte stream into NAL units.
#[derive(Debug)]
pub struct AnnexBFramer {
    /// Pending bytes copied in. While `shared` holds bytes, `buf` is empty
    /// or ends with a start code, so no NAL unit spans the two.
    buf: BytesMut,
    /// Pending bytes of a chunk given as `Bytes`, after those of `buf`.
    /// Offsets (`nal_start`, `scan_from`) are into `buf` while it holds
    /// bytes, else into `shared`.
    shared: Bytes,
    /// Earlier buffers, some of whose NAL units may still be alive
    /// downstream; reused once they are all dropped.
    spare: Vec<BytesMut>,
    /// `buf` is an allocated buffer (not the initial empty one).
    allocated: bool,
    /// Offset in `buf` where the current NAL unit's payload begins, once a
    /// start code has been seen.
    nal_start: Option<usize>,
    /// Offset from which to search for the next start code; bytes before it
    /// are known not to begin one.
    scan_from: usize,
    /// Bytes discarded before the first start code.
    skipped: u64,
    finished: bool,
    /// Longest NAL unit accepted, in bytes.
    max_nal: usize,
    /// An overlong NAL unit is being thrown away until the next start code.
    discarding: bool,
    /// NAL units dropped for exceeding `max_nal`, and their bytes.
    oversize_nals: u64,
    oversize_bytes: u64,
}

impl Default for AnnexBFramer {
    fn default() -> Self {
        Self::with_max_nal(DEFAULT_MAX_NAL)
    }
}

impl AnnexBFramer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A framer that drops NAL units longer than `max_nal` bytes.
    pub fn with_max_nal(max_nal: usize) -> Self {
        AnnexBFramer {
            buf: BytesMut::new(),
            shared: Bytes::new(),
            spare: Vec::new(),
            allocated: false,
            nal_start: None,
            scan_from: 0,
            skipped: 0,
            finished: false,
            max_nal: max_nal.max(1),
            discarding: false,
            oversize_nals: 0,
            oversize_bytes: 0,
        }
    }

    /// NAL units dropped for exceeding the bound.
    pub fn oversize_nals(&self) -> u64 {
        self.oversize_nals
    }

    /// Bytes of the NAL units dropped for exceeding the bound.
    pub fn oversize_bytes(&self) -> u64 {
        self.oversize_bytes
    }

    /// Counts bytes thrown away while no NAL unit is open: garbage before
    /// the first start code, or the rest of an overlong NAL unit.
    fn count_unframed(&mut self, n: usize) {
        if self.discarding {
            self.oversize_bytes += n as u64;
        } else {
            self.skipped += n as u64;
        }
    }

    /// Drops the first `len` bytes of `buf` (the open NAL unit) as overlong.
    fn drop_oversize(&mut self, len: usize) {
        self.count_oversize(len);
        let _ = self.buf.split_to(len);
    }

    /// Counts an overlong NAL unit of `len` bytes as dropped.
    fn count_oversize(&mut self, len: usize) {
        self.oversize_nals += 1;
        self.oversize_bytes += len as u64;
        tracing::debug!(
            bytes = len,
            max = self.max_nal,
            "NAL unit over the bound dropped"
        );
    }

    /// Appends bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.finished = false;
        self.copy_shared_into_buf();
        self.make_room(bytes.len());
        self.buf.extend_from_slice(bytes);
    }

    /// Appends a chunk of the stream the caller holds as `Bytes`: NAL units
    /// that lie wholly in it come out as slices of it, without a copy. The
    /// same NAL units and counts as [`push`](Self::push) of the same bytes.
    pub fn push_shared(&mut self, chunk: Bytes) {
        self.finished = false;
        // The last chunk may not have been pulled to its end.
        self.copy_shared_into_buf();
        if self.buf.is_empty() {
            self.shared = chunk;
            return;
        }
        // A NAL unit (or garbage) in `buf` goes on into the chunk: copy the
        // chunk up to the first start code, so `buf` ends with one.
        match first_start_code_end(&self.buf, &chunk) {
            Some(cut) => {
                self.make_room(cut);
                self.buf.extend_from_slice(&chunk[..cut]);
                self.shared = chunk.slice(cut..);
            }
            None => {
                self.make_room(chunk.len());
                self.buf.extend_from_slice(&chunk);
            }
        }
    }

    /// Moves what is left of `shared` to the end of `buf`, where the offsets
    /// keep their meaning (they are into `buf` once it holds bytes).
    fn copy_shared_into_buf(&mut self) {
        if self.shared.is_empty() {
            return;
        }
        let rest = std::mem::take(&mut self.shared);
        self.make_room(rest.len());
        self.buf.extend_from_slice(&rest);
    }

    /// Forgets any partial NAL unit and the end-of-input mark (the source
    /// broke), keeping the buffers and the skipped-byte count.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.shared = Bytes::new();
        self.nal_start = None;
        self.scan_from = 0;
        self.finished = false;
        self.discarding = false;
    }

    /// Ensures `additional` bytes fit after the pending ones without
    /// allocating when a recycled buffer can take them.
    fn make_room(&mut self, additional: usize) {
        // In place: free room, or the buffer is ours alone again.
        if self.buf.try_reclaim(additional) {
            return;
        }
        let need = self.buf.len() + additional;
        let reusable = self.spare.iter_mut().position(|b| {
            b.clear();
            b.try_reclaim(need)
        });
        let mut next = match reusable {
            Some(i) => self.spare.swap_remove(i),
            // Doubling: a NAL unit growing over many pushes is copied a
            // logarithmic number of times, not once per push.
            None => BytesMut::with_capacity(need.max(MIN_BUFFER).max(2 * self.buf.len())),
        };
        next.extend_from_slice(&self.buf);
        let mut old = std::mem::replace(&mut self.buf, next);
        old.clear();
        if std::mem::replace(&mut self.allocated, true) && self.spare.len() < MAX_SPARE {
            self.spare.push(old);
        }
    }

    /// Marks the end of the input: the last NAL unit is released by `pull`.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Nothing is buffered: no partial NAL unit waits for more bytes.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.shared.is_empty()
    }

    /// Bytes that preceded the first start code and were thrown away.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// Returns the next complete NAL unit, if any.
    pub fn pull(&mut self) -> Option<Bytes> {
        if !self.buf.is_empty() || self.shared.is_empty() {
            if let Some(nal) = self.pull_copied() {
                return Some(nal);
            }
            if self.shared.is_empty() || !self.buf.is_empty() {
                return None;
            }
        }
        self.pull_shared()
    }

    /// [`pull`](Self::pull) from `shared` (`buf` is empty): the same rules
    /// as [`pull_copied`](Self::pull_copied), NAL units sliced out of the
    /// chunk. What remains of the chunk without a start code after it moves
    /// to `buf`, to be completed by the next push.
    fn pull_shared(&mut self) -> Option<Bytes> {
        loop {
            let found = start_code_finder()
                .find(&self.shared[self.scan_from..])
                .map(|i| i + self.scan_from);
            let Some(at) = found else {
                // No start code in what is left: it moves to `buf`, where
                // the copying path's rules apply (the input's end, a NAL
                // unit the next push completes, the bound).
                self.copy_shared_into_buf();
                if !self.finished {
                    // Known to hold no start code: only its end needs a look.
                    let open = self.nal_start.unwrap_or(0);
                    self.scan_from = self.buf.len().saturating_sub(2).max(open);
                }
                return self.pull_copied();
            };
            let nal = match self.nal_start {
                None => {
                    self.count_unframed(at);
                    self.discarding = false;
                    None
                }
                Some(start) => {
                    let end = trim_zeros(&self.shared, start, at);
                    if end - start > self.max_nal {
                        self.count_oversize(at);
                        None
                    } else {
                        Some(self.shared.slice(start..end))
                    }
                }
            };
            self.shared.advance(at + 3);
            self.nal_start = Some(0);
            self.scan_from = 0;
            if let Some(nal) = nal.filter(|n| !n.is_empty()) {
                return Some(nal);
            }
        }
    }

    /// [`pull`](Self::pull) from `buf`.
    fn pull_copied(&mut self) -> Option<Bytes> {
        // With a chunk waiting in `shared`, `buf` is not the input's end.
        let finished = self.finished && self.shared.is_empty();
        loop {
            let found = start_code_finder()
                .find(&self.buf[self.scan_from..])
                .map(|i| i + self.scan_from);
            match (found, self.nal_start) {
                (Some(at), None) => {
                    self.count_unframed(at);
                    self.discarding = false;
                    let _ = self.buf.split_to(at + 3);
                    self.nal_start = Some(0);
                    self.scan_from = 0;
                }
                (Some(at), Some(start)) => {
                    let end = trim_zeros(&self.buf, start, at);
                    if end - start > self.max_nal {
                        self.drop_oversize(at);
                        let _ = self.buf.split_to(3);
                        self.nal_start = Some(0);
                        self.scan_from = 0;
                        continue;
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
                    if finished {
                        let Some(start) = start else {
                            // No start code in the whole stream: all of it
                            // was garbage, counted the same whatever the
                            // chunking (a pull before `finish` counts it).
                            self.count_unframed(self.buf.len());
                            self.buf.clear();
                            self.scan_from = 0;
                            self.discarding = false;
                            return None;
                        };
                        let end = trim_zeros(&self.buf, start, self.buf.len());
                        if end - start > self.max_nal {
                            let len = self.buf.len();
                            self.drop_oversize(len);
                            self.nal_start = None;
                            self.scan_from = 0;
                            return None;
                        }
                        let nal = self.buf.split().freeze().slice(start..end);
                        self.nal_start = None;
                        self.scan_from = 0;
                        return (!nal.is_empty()).then_some(nal);
                    }
                    let start = match start {
                        // The open NAL unit outgrew the bound (its trailing
                        // zeros, which a complete NAL would shed, count):
                        // drop it and discard until the next start code.
                        Some(start) if self.buf.len() - start > self.max_nal + 2 => {
                            let len = self.buf.len() - 2;
                            debug_assert_eq!(start, 0, "cuts leave the open NAL at 0");
                            self.drop_oversize(len);
                            self.nal_start = None;
                            self.discarding = true;
                            None
                        }
                        s => s,
                    };
                    if start.is_none() {
                        // Keep two bytes: they may begin a start code.
                        let keep = self.buf.len().min(2);
                        let drop = self.buf.len() - keep;
                        self.count_unframed(drop);
                        let _ = self.buf.split_to(drop);
                    }
                    self.scan_from = self.buf.len().saturating_sub(2).max(start.unwrap_or(0));
                    return None;
                }
            }
        }
    }
}

/// `end` moved back over the zero bytes that end `data[start..end]`
/// (trailing_zero_8bits, or the first byte of a 4-byte start code).
fn trim_zeros(data: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && data[end - 1] == 0 {
        end -= 1;
    }
    end
}

/// Where the first start code that ends in `chunk` ends, as an index into
/// `chunk`, counting one that begins in the last bytes of `before`.
fn first_start_code_end(before: &[u8], chunk: &[u8]) -> Option<usize> {
    let tail = &before[before.len().saturating_sub(2)..];
    // `n` bytes of the start code at the end of `tail`, the rest in `chunk`.
    let straddles = |n: usize| {
        n <= tail.len()
            && chunk.len() >= 3 - n
            && tail[tail.len() - n..]
                .iter()
                .chain(&chunk[..3 - n])
                .eq(START_CODE.iter())
    };
    if straddles(2) {
        Some(1)
    } else if straddles(1) {
        Some(2)
    } else {
        start_code_finder().find(chunk).map(|at| at + 3)
    }
}

/// The NAL units of one complete Annex-B buffer (a whole frame), as slices
/// of it: no copy. The same units, and the same skipped-byte count, as
/// [`AnnexBFramer`] gives for the buffer pushed whole and finished.
#[derive(Debug, Clone)]
pub struct FrameNals {
    data: Bytes,
    scan_from: usize,
    nal_start: Option<usize>,
    skipped: u64,
    done: bool,
}

impl FrameNals {
    pub fn new(data: Bytes) -> Self {
        FrameNals {
            data,
            scan_from: 0,
            nal_start: None,
            skipped: 0,
            done: false,
        }
    }

    /// Bytes before the first start code (so far).
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped
    }

    /// `start..end` with the trailing zero bytes (before the next start
    /// code, or at the end) left out.
    fn trimmed(&self, start: usize, end: usize) -> Option<Bytes> {
        let end = trim_zeros(&self.data, start, end);
        (end > start).then(|| self.data.slice(start..end))
    }
}

impl Iterator for FrameNals {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        while !self.done {
            let found = start_code_finder()
                .find(&self.data[self.scan_from..])
                .map(|i| i + self.scan_from);
            match (found, self.nal_start) {
                (Some(at), start) => {
                    self.nal_start = Some(at + 3);
                    self.scan_from = at + 3;
                    match start {
                        None => self.skipped += at as u64,
                        Some(start) => {
                            if let Some(nal) = self.trimmed(start, at) {
                                return Some(nal);
                            }
                        }
                    }
                }
                (None, None) => {
                    self.skipped += self.data.len() as u64;
                    self.done = true;
                }
                (None, Some(start)) => {
                    self.done = true;
                    return self.trimmed(start, self.data.len());
                }
            }
        }
        None
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

    /// One start code, then endless bytes: the pending NAL unit is dropped
    /// at the bound instead of growing, counted, and the framer resyncs at
    /// the next start code, whatever the chunking.
    #[test]
    fn overlong_nal_is_dropped_and_the_framer_resyncs() {
        let mut data = vec![0, 0, 1, 0x41];
        data.extend(std::iter::repeat_n(0x55u8, 10_000));
        data.extend_from_slice(&[0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 7]);
        for chunk in [1, 7, 100, 4096, data.len()] {
            let mut f = AnnexBFramer::with_max_nal(1000);
            let mut out = Vec::new();
            let mut peak = 0;
            for c in data.chunks(chunk) {
                f.push(c);
                while let Some(n) = f.pull() {
                    out.push(n.to_vec());
                }
                peak = peak.max(f.buf.len());
            }
            f.finish();
            while let Some(n) = f.pull() {
                out.push(n.to_vec());
            }
            assert_eq!(out, vec![vec![0x09, 0xf0], vec![0x41, 7]], "chunk {chunk}");
            assert_eq!(f.oversize_nals(), 1, "chunk {chunk}");
            assert_eq!(f.oversize_bytes(), 10_001, "chunk {chunk}");
            assert_eq!(f.skipped_bytes(), 0);
            assert!(peak <= 1000 + 3 + chunk, "chunk {chunk}: held {peak}");
        }
        // At the bound exactly, a NAL unit passes.
        let mut f = AnnexBFramer::with_max_nal(4);
        f.push(&[0, 0, 1, 1, 2, 3, 4, 0, 0, 1, 1, 2, 3, 4, 5]);
        f.finish();
        assert_eq!(f.pull().unwrap().as_ref(), &[1, 2, 3, 4]);
        assert!(f.pull().is_none());
        assert_eq!(f.oversize_nals(), 1);
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

    #[test]
    fn recycled_buffers_never_overwrite_live_nal_units() {
        // Frames of varying size pushed one at a time, some NAL units kept
        // alive (as frames held for reordering are) while the buffers
        // rotate: every kept NAL unit must still read as it was cut.
        let mut f = AnnexBFramer::new();
        let mut kept: Vec<(Bytes, Vec<u8>)> = Vec::new();
        for i in 0..2000u32 {
            let len = 1 + (i as usize * 7919) % 9000;
            let body: Vec<u8> = (0..len)
                .map(|j| 0x20 + ((i as usize + j) % 200) as u8)
                .collect();
            let mut frame = vec![0, 0, 0, 1, 0x41];
            frame.extend_from_slice(&body);
            f.push(&frame);
            f.finish();
            let nal = f.pull().unwrap();
            assert_eq!(&nal[1..], &body[..]);
            assert!(f.pull().is_none());
            if i % 3 == 0 {
                kept.push((nal, body));
            }
            if kept.len() > 4 {
                let (nal, body) = kept.remove(0);
                assert_eq!(&nal[1..], &body[..]);
            }
        }
        assert!(f.spare.len() <= MAX_SPARE);
    }

    #[test]
    fn a_buffer_is_reused_once_its_nal_units_are_dropped() {
        let mut f = AnnexBFramer::new();
        let frame = [0, 0, 0, 1, 0x41, 1, 2, 3];
        f.push(&frame);
        f.finish();
        let first = f.pull().unwrap().as_ptr() as usize;
        // The first NAL unit is dropped: the next frames land in the same
        // allocation, which is reclaimed from its start when it fills up.
        let mut wrapped = false;
        for _ in 0..(3 * MIN_BUFFER / frame.len()) {
            f.push(&frame);
            f.finish();
            let nal = f.pull().unwrap();
            assert_eq!(nal.as_ref(), &[0x41, 1, 2, 3]);
            let at = nal.as_ptr() as usize;
            assert!((first..first + MIN_BUFFER).contains(&at));
            wrapped |= at == first;
        }
        assert!(wrapped);
        assert!(f.spare.is_empty());
    }

    /// `FrameNals` (no copy) and the framer (copying) agree on any buffer:
    /// start-code-rich noise, with 3- and 4-byte codes, empty units, zeros.
    #[test]
    fn frame_nals_match_the_framer() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let len = (next() % 64) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % 6 {
                    0..=2 => 0,
                    3 => 1,
                    _ => next() as u8,
                })
                .collect();
            let mut framer = AnnexBFramer::new();
            framer.push(&data);
            framer.finish();
            let copied: Vec<Bytes> = std::iter::from_fn(|| framer.pull()).collect();
            let mut shared = FrameNals::new(Bytes::from(data.clone()));
            let sliced: Vec<Bytes> = shared.by_ref().collect();
            assert_eq!(sliced, copied, "{data:?}");
            assert_eq!(shared.skipped_bytes(), framer.skipped_bytes(), "{data:?}");
            assert!(framer.is_empty());
        }
    }
}
