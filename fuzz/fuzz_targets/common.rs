//! Input conventions shared by the fuzz targets.
//!
//! Chunked targets read their input as `[n][n x u16 cut][data...]`: the low
//! four bits of the first byte say how many cut points follow (big-endian
//! u16, taken modulo the data length + 1), the rest is the byte stream. A
//! seed made by prefixing a capture with one zero byte is fed in one piece.

#![allow(dead_code)]

/// Splits `input` into the data and the chunks the fuzzer chose for it.
pub fn chunked(input: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&n, rest)) = input.split_first() else {
        return (&[], Vec::new());
    };
    let n = (n & 0x0f) as usize;
    let cut_bytes = (2 * n).min(rest.len());
    let (cuts, data) = rest.split_at(cut_bytes);
    let mut points: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]) as usize % (data.len() + 1))
        .collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    let chunks = points.windows(2).map(|w| &data[w[0]..w[1]]).collect();
    (data, chunks)
}

/// Reads big-endian integers and byte runs off the front of an input;
/// missing bytes read as zero so every input is usable.
pub struct Reader<'a> {
    pub data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        ((self.u32() as u64) << 32) | self.u32() as u64
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}
