//! JT/T 808 framer, body decoders and the per-connection session. The input
//! arrives in fuzzer-chosen chunks: parser events and session replies must
//! equal those of the one-shot run; every reply the session writes must
//! parse back as a valid frame (no error events); decoded locations,
//! recording lists (0x1205) and platform media commands (read as a
//! simulated device reads them) re-encode losslessly.
#![no_main]

mod common;

use bytes::BytesMut;
use ingestd::jt808::{
    decode_body, Body, DeviceClock, DevicePolicy, Jt808Event, Jt808Parser, Jt808Session,
    Location, PlatformCommand, ResourceList,
};
use libfuzzer_sys::fuzz_target;

fn parse(chunks: &[&[u8]]) -> Vec<Jt808Event> {
    let mut p = Jt808Parser::new();
    let mut ev = Vec::new();
    for c in chunks {
        p.push(c);
        while let Some(e) = p.pull() {
            ev.push(e);
        }
    }
    ev
}

/// `enforce`: the default policy (refusals until 0x0102); otherwise every message is
/// handled, so the fuzzer reaches every reply without guessing an auth code.
fn session(chunks: &[&[u8]], enforce: bool) -> (Vec<String>, BytesMut) {
    let policy = if enforce {
        DevicePolicy::authenticated()
    } else {
        DevicePolicy::open()
    };
    let mut s = Jt808Session::new("fuzz-secret").with_policy(policy);
    let mut out = BytesMut::new();
    let mut ev = Vec::new();
    for c in chunks {
        s.push(c);
        while let Some(e) = s.poll(&mut out) {
            ev.push(format!("{e:?}"));
        }
    }
    (ev, out)
}

fuzz_target!(|input: &[u8]| {
    let (data, chunks) = common::chunked(input);
    let events = parse(&chunks);
    assert_eq!(events, parse(&[data]), "chunking changed the parser events");

    for e in &events {
        if let Jt808Event::Message(m) = e {
            match decode_body(m) {
                Ok(Body::Location(l)) => roundtrip(&l),
                Ok(Body::LocationBatch(b)) => b.items.iter().for_each(roundtrip),
                Ok(Body::ResourceList(l)) => {
                    let again =
                        ResourceList::decode(&l.encode(DeviceClock::UTC8), DeviceClock::UTC8)
                            .expect("re-encoded list decodes");
                    assert_eq!(again, l);
                }
                _ => {}
            }
            // Any body read as a platform media command (as devsim does).
            let clock = DeviceClock::UTC8;
            if let Ok(c) = PlatformCommand::decode(m.header.msg_id | 0x9000, &m.body, clock) {
                let again = PlatformCommand::decode(c.msg_id(), &c.encode_body(clock), clock)
                    .expect("re-encoded command decodes");
                assert_eq!(again, c);
            }
        }
    }

    for enforce in [false, true] {
        let (sev, replies) = session(&chunks, enforce);
        let (sev1, replies1) = session(&[data], enforce);
        assert_eq!(sev, sev1, "chunking changed the session events");
        assert_eq!(replies, replies1, "chunking changed the replies");
        let mut p = Jt808Parser::new();
        p.push(&replies);
        while let Some(e) = p.pull() {
            match e {
                Jt808Event::Message(m) => assert!(m.header.msg_id >= 0x8000, "reply {m:?}"),
                other => panic!("reply did not parse: {other:?}"),
            }
        }
        assert_eq!(p.counters().skipped_bytes, 0);
    }
});

fn roundtrip(l: &Location) {
    let again = Location::decode(&l.encode()).expect("re-encoded location decodes");
    assert_eq!(&again, l);
}
