//! Property tests: arbitrary bytes never panic the parsers, every input byte
//! is accounted for, and output does not depend on chunking.

use ingestd::jt1078::{Jt1078Event, Jt1078Parser, Reassembler};
use ingestd::jt808::{Jt808Event, Jt808Parser, Jt808Session};
use proptest::prelude::*;

fn run1078(data: &[u8], chunk: usize) -> (Vec<Jt1078Event>, u64, u64, usize) {
    let mut p = Jt1078Parser::new();
    let mut r = Reassembler::new(4096);
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        p.push(c);
        while let Some(e) = p.pull() {
            if let Jt1078Event::Packet(pk) = &e {
                let _ = r.push(pk.clone());
            }
            ev.push(e);
        }
    }
    let c = *p.counters();
    (ev, c.bytes, c.resync_skipped_bytes, p.buffered())
}

fn run808(data: &[u8], chunk: usize) -> Vec<Jt808Event> {
    let mut p = Jt808Parser::new();
    let mut ev = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        p.push(c);
        while let Some(e) = p.pull() {
            ev.push(e);
        }
    }
    ev
}

/// Bytes biased towards the interesting values (magic, flags, escapes).
fn noisy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            any::<u8>(),
            Just(0x7e),
            Just(0x7d),
            Just(0x30),
            Just(0x31),
            Just(0x63),
            Just(0x64),
            Just(0x00)
        ],
        0..2000,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn jt1078_arbitrary_bytes(data in noisy(), chunk in 1usize..64) {
        let all = run1078(&data, data.len().max(1));
        let (_, good, skipped, pending) = all.clone();
        // No byte is counted twice: packets + reported skips + pending.
        prop_assert!(good + skipped + pending as u64 <= data.len() as u64);
        prop_assert_eq!(run1078(&data, chunk), all);
    }

    #[test]
    fn jt808_arbitrary_bytes(data in noisy(), chunk in 1usize..64) {
        let all = run808(&data, data.len().max(1));
        prop_assert_eq!(run808(&data, chunk), all);
        // The session never panics and its replies are well-formed frames.
        let mut s = Jt808Session::new("k");
        s.push(&data);
        let mut out = bytes::BytesMut::new();
        while s.poll(&mut out).is_some() {}
        if !out.is_empty() {
            prop_assert_eq!(out[0], 0x7e);
            prop_assert_eq!(out[out.len() - 1], 0x7e);
        }
    }
}
