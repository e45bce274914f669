//! Annex-B framer: the NAL units found when the stream arrives in
//! fuzzer-chosen chunks (pulling after every chunk), each copied in or
//! handed over as `Bytes` as the data's length decides, equal those of the
//! one-shot split, and every NAL unit is well-formed: non-empty, no start
//! code inside, no trailing zero byte.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use streamcore::annexb::{split_nals, AnnexBFramer};

fuzz_target!(|input: &[u8]| {
    let (data, chunks) = common::chunked(input);
    let whole = split_nals(data);
    let mut one_shot = AnnexBFramer::new();
    one_shot.push(data);
    one_shot.finish();
    while one_shot.pull().is_some() {}

    let mut f = AnnexBFramer::new();
    let mut got = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        // A pattern of copied and shared chunks that changes with the input.
        if (data.len() >> (i % 8)) & 1 == 1 {
            f.push_shared(bytes::Bytes::copy_from_slice(c));
        } else {
            f.push(c);
        }
        while let Some(n) = f.pull() {
            got.push(n);
        }
    }
    f.finish();
    while let Some(n) = f.pull() {
        got.push(n);
    }
    assert_eq!(got, whole, "chunking changed the NAL units");
    assert_eq!(
        f.skipped_bytes(),
        one_shot.skipped_bytes(),
        "chunking changed the skipped count"
    );
    let payload: usize = whole.iter().map(|n| n.len()).sum();
    assert!(payload + f.skipped_bytes() as usize <= data.len());
    for nal in &whole {
        assert!(!nal.is_empty());
        assert_ne!(nal.last(), Some(&0), "trailing zero kept");
        assert!(
            !nal.windows(3).any(|w| w == [0, 0, 1]),
            "start code inside a NAL"
        );
    }
});
