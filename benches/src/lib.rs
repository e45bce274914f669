//! Benchmarks and load tools for the video backbone, and the simulated
//! dashcam's SD card `devsim` plays recordings from ([`sdcard`]).

pub mod sdcard;

/// The access units of an Annex-B H.264 stream, each as Annex-B bytes with
/// 4-byte start codes: what a device sends as one JT/T 1078 frame.
pub fn access_units(data: &[u8]) -> Vec<Vec<u8>> {
    use streamcore::access_unit::AccessUnitAssembler;
    let mut asm = AccessUnitAssembler::new();
    let mut out = Vec::new();
    let mut encode = |au: streamcore::access_unit::AccessUnit| {
        let mut v = Vec::new();
        for n in au.nals {
            v.extend_from_slice(&[0, 0, 0, 1]);
            v.extend_from_slice(&n);
        }
        out.push(v);
    };
    for nal in streamcore::annexb::split_nals(data) {
        if let Some(au) = asm.push(nal, None) {
            encode(au);
        }
    }
    if let Some(au) = asm.flush() {
        encode(au);
    }
    out
}
