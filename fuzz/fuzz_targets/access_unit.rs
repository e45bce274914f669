//! Access-unit assembly over an arbitrary Annex-B stream: no panic, every
//! NAL unit is accounted for (in an access unit, counted as orphan, or
//! counted as a bad parameter set), and every access unit holds a picture.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcore::access_unit::{AccessUnit, AccessUnitAssembler};
use streamcore::annexb::split_nals;
use streamcore::h264::{self, nal_type};

fn check(au: &AccessUnit) {
    assert!(!au.nals.is_empty());
    assert!(au.nals.iter().any(|n| h264::is_vcl(h264::nal_unit_type(n))));
    let idr = au
        .nals
        .iter()
        .any(|n| h264::nal_unit_type(n) == nal_type::IDR);
    assert_eq!(au.keyframe, idr);
    assert_eq!(
        au.payload_bytes,
        au.nals.iter().map(|n| n.len()).sum::<usize>()
    );
}

fuzz_target!(|data: &[u8]| {
    let nals = split_nals(data);
    let total = nals.len() as u64;
    let mut asm = AccessUnitAssembler::new();
    let mut in_aus = 0u64;
    let mut aus = 0u64;
    for (i, nal) in nals.into_iter().enumerate() {
        if let Some(au) = asm.push(nal, Some(i as i64)) {
            check(&au);
            in_aus += au.nals.len() as u64;
            aus += 1;
        }
    }
    if let Some(au) = asm.flush() {
        check(&au);
        in_aus += au.nals.len() as u64;
        aus += 1;
    }
    let s = asm.stats();
    assert_eq!(s.access_units, aus);
    assert_eq!(in_aus + s.orphan_nals + s.bad_parameter_sets, total);
});
