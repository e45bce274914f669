//! A whole `LiveStream` fed frames as JT/T 1078 delivers them: each frame
//! carries a device capture time that the device, not we, chose (the u64
//! packet timestamp cast to i64, so any value), with source breaks in
//! between. No panic, no error, playlist invariants after every step.
//!
//! Audio payloads are pushed between the frames (every codec's
//! depacketizer and decoder: G.711, G.726, IMA ADPCM, AAC/ADTS, HiSilicon
//! headers): refused ones are counted, never an error.
//!
//! Input: records of `[op][len u16][capture mode/value][len bytes]`; op 0xff
//! marks a source break, op 0xfe finishes without ENDLIST; ops 0xa0-0xbf
//! push the bytes as audio of codec `(op >> 2) % 5` instead of a frame.
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
                if op & 0xe0 == 0xa0 {
                    use streamcore::audio::AudioCodec::*;
                    let codec = [G711A, G711U, G726, ImaAdpcm, Aac][(op as usize >> 2) % 5];
                    stream
                        .push_audio(codec, &frame[..frame.len().min(2048)], capture)
                        .expect("push_audio")
                } else {
                    stream.push_frame(frame, capture).expect("push_frame")
                }
            }
        };
        live_stream::check_events(&ev, &mut next);
        live_stream::check_storage(&stream, &storage, kind);
    }
    let ev = stream.finish(true).expect("finish");
    live_stream::check_events(&ev, &mut next);
    live_stream::check_storage(&stream, &storage, kind);
});
