//! Slice-header parsing and picture order count with parameter sets taken
//! from the same input: the input is an Annex-B stream; its SPS and PPS go
//! into `ParamSets`, every slice is parsed against them and its POC computed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcore::annexb::split_nals;
use streamcore::h264::{self, nal_type, ParamSets, PocState, Pps, SliceHeader, Sps};

fuzz_target!(|data: &[u8]| {
    let mut params = ParamSets::default();
    let mut poc = PocState::default();
    for nal in split_nals(data) {
        match h264::nal_unit_type(&nal) {
            nal_type::SPS => {
                if let Ok(sps) = Sps::parse(&nal) {
                    params.put_sps(sps);
                }
            }
            nal_type::PPS => {
                if let Ok(pps) = Pps::parse(&nal) {
                    params.put_pps(pps);
                }
            }
            t if h264::is_vcl(t) => {
                let first = SliceHeader::first_mb(&nal);
                if let Ok(sh) = SliceHeader::parse(&nal, &params) {
                    assert_eq!(first.ok(), Some(sh.first_mb_in_slice));
                    assert!(sh.slice_type <= 9);
                    assert_eq!(sh.idr, t == nal_type::IDR);
                    let pps = params.pps(sh.pps_id).expect("parse checked the PPS");
                    let sps = params.sps(pps.sps_id).expect("parse checked the SPS");
                    assert!(sh.frame_num < 1 << sps.log2_max_frame_num);
                    if let Ok(p) = poc.compute(sps, &sh) {
                        if sh.idr && sps.pic_order_cnt_type == 2 {
                            assert_eq!(p, 0);
                        }
                    }
                }
            }
            _ => {}
        }
    }
});
