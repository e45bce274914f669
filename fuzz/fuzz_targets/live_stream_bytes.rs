//! A whole `LiveStream` fed Annex-B bytes in fuzzer-chosen chunks through
//! `push_bytes` into `MemoryStorage`: no panic, no error, and after every
//! push the stored playlist keeps its invariants (see live_stream.rs).
#![no_main]

mod common;
mod live_stream;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (_, chunks) = common::chunked(input);
    let (mut stream, storage, kind) = live_stream::open();
    let mut next = 0;
    for c in &chunks {
        let ev = stream.push_bytes(c).expect("push_bytes");
        live_stream::check_events(&ev, &mut next);
        live_stream::check_storage(&stream, &storage, kind);
    }
    let ev = stream.finish(true).expect("finish");
    live_stream::check_events(&ev, &mut next);
    live_stream::check_storage(&stream, &storage, kind);
    assert!(stream.playlist().is_ended());
});
