//! A whole `LiveStream` fed frames as JT/T 1078 delivers them: each frame
//! carries a device capture time that the device, not we, chose (the u64
//! packet timestamp cast to i64, so any value), with source breaks in
//! between. No panic, no error, playlist invariants after every step.
//!
//! Input: records of `[op][len u16][capture mode/value][len bytes]`; op 0xff
//! marks a source break, op 0xfe finishes without ENDLIST.
#![no_main]

mod common;
mod live_stream;

use common::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let (mut stream, storage, kind) = live_stream::open();
    let mut next = 0;
    let mut clock: i64 = 1_700_000_000_000;
    let mut steps = 0;
    while !r.is_empty() && steps < 400 {
        steps += 1;
        let op = r.u8();
        let ev = match op {
            0xff => stream.mark_break().expect("mark_break"),
            0xfe => stream.finish(false).expect("finish"),
            _ => {
                let len = (r.u16() % 8192) as usize;
                let capture = match op & 3 {
                    0 => None,
                    // A plausible step: 0 to 255 ms, usually 40.
                    1 => {
                        clock = clock.wrapping_add(r.u8() as i64);
                        Some(clock)
                    }
                    // A signed jump of up to +-32 s.
                    2 => {
                        clock = clock.wrapping_add(r.u16() as i16 as i64);
                        Some(clock)
                    }
                    // Anything at all.
                    _ => {
                        clock = r.u64() as i64;
                        Some(clock)
                    }
                };
                let frame = r.bytes(len);
                stream.push_frame(frame, capture).expect("push_frame")
            }
        };
        live_stream::check_events(&ev, &mut next);
        live_stream::check_storage(&stream, &storage, kind);
    }
    let ev = stream.finish(true).expect("finish");
    live_stream::check_events(&ev, &mut next);
    live_stream::check_storage(&stream, &storage, kind);
});
