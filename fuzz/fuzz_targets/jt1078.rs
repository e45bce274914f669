//! JT/T 1078 parser and reassembler. The input arrives in fuzzer-chosen
//! chunks; events must equal those of the one-shot parse, no byte may be
//! counted twice, every packet must re-encode to bytes that parse back to
//! it, and reassembled frames never exceed the reassembler's bound.
#![no_main]

mod common;

use bytes::BytesMut;
use ingestd::jt1078::{Jt1078Event, Jt1078Frame, Jt1078Parser, Reassembler};
use libfuzzer_sys::fuzz_target;

/// Small enough that the fuzzer reaches it with multi-packet frames.
const MAX_FRAME: usize = 3000;

fn run(chunks: &[&[u8]]) -> (Vec<Jt1078Event>, Vec<Jt1078Frame>, Jt1078Parser) {
    let mut p = Jt1078Parser::with_max_body(2048);
    let mut r = Reassembler::new(MAX_FRAME);
    let mut events = Vec::new();
    let mut frames = Vec::new();
    for c in chunks {
        p.push(c);
        while let Some(e) = p.pull() {
            if let Jt1078Event::Packet(pkt) = &e {
                if let Some(f) = r.push(pkt.clone()) {
                    assert!(f.data.len() <= MAX_FRAME, "frame over max_frame");
                    frames.push(f);
                }
            }
            events.push(e);
        }
    }
    let rc = *r.counters();
    assert_eq!(rc.frames, frames.len() as u64);
    assert!(rc.oversize_frames <= rc.dropped_frames);
    (events, frames, p)
}

fuzz_target!(|input: &[u8]| {
    let (data, chunks) = common::chunked(input);
    let (events, frames, parser) = run(&chunks);
    let (events1, frames1, parser1) = run(&[data]);
    assert_eq!(events, events1, "chunking changed the events");
    assert_eq!(frames, frames1, "chunking changed the frames");
    assert_eq!(parser.counters(), parser1.counters());
    assert_eq!(parser.buffered(), parser1.buffered());

    let c = parser.counters();
    assert!(c.bytes + c.resync_skipped_bytes + parser.buffered() as u64 <= data.len() as u64);
    for e in &events {
        if let Jt1078Event::Packet(pkt) = e {
            assert!(pkt.body.len() <= 2048);
            let mut wire = BytesMut::new();
            pkt.encode(&mut wire);
            assert_eq!(wire.len(), pkt.encoded_len());
            let mut again = Jt1078Parser::with_max_body(2048);
            again.push(&wire);
            assert_eq!(
                again.pull(),
                Some(e.clone()),
                "re-encoded packet parses differently"
            );
            assert_eq!(again.pull(), None);
        }
    }
});
