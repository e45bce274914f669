//! SPS and PPS parsing of arbitrary NAL units: no panic, and an accepted SPS
//! describes a picture within the documented limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcore::h264::{Pps, Sps};

fuzz_target!(|data: &[u8]| {
    // Both parsers check the NAL type; force it so every input is an SPS
    // (and a PPS) candidate.
    let mut nal = data.to_vec();
    if let Some(b) = nal.first_mut() {
        *b = (*b & 0xe0) | 7;
    }
    if let Ok(sps) = Sps::parse(&nal) {
        assert!(sps.width > 0 && sps.height > 0);
        assert!(sps.width as u64 * sps.height as u64 <= 8192 * 8192);
        assert!(sps.id <= 31);
        assert!(sps.log2_max_frame_num <= 16);
        assert!(sps.log2_max_pic_order_cnt_lsb <= 16);
        assert!(sps.reorder_depth() <= 16);
        let _ = sps.frame_rate();
        assert!(!sps.changes_format(&sps));
    }
    if let Some(b) = nal.first_mut() {
        *b = (*b & 0xe0) | 8;
    }
    if let Ok(pps) = Pps::parse(&nal) {
        assert!(pps.id <= 255 && pps.sps_id <= 31);
    }
});
