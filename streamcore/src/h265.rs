//! H.265/HEVC syntax and access-unit assembly this remuxer needs (ITU-T
//! H.265 (08/2021)): the two-byte NAL unit header (7.3.1.2, Table 7-1), the
//! fields of video, sequence and picture parameter sets that locate and time
//! pictures (7.3.2.1, 7.3.2.2.1, 7.3.2.3.1, with profile_tier_level 7.3.3,
//! scaling_list_data 7.3.4, st_ref_pic_set 7.3.7 and VUI timing E.2.1 read
//! only to get past them), the slice segment header up to
//! `slice_pic_order_cnt_lsb` (7.3.6.1), picture order count (8.3.1), and
//! [`HevcSyntax`], H.265's part in access-unit assembly (7.4.2.4.4) for
//! [`HevcAssembler`], the [`VideoParser`](crate::codec::VideoParser) for
//! H.265, which also writes the muxer's packets.
//!
//! The RBSP is read through H.264's [`BitReader`]: emulation prevention is
//! the same in both standards (7.4.2). Everything here reads untrusted
//! bytes: values are range-checked before they size anything, arithmetic
//! is checked or saturating, and failures are errors that the assembler
//! counts, never panics.

use bytes::Bytes;

use crate::access_unit::{
    self, read_parameter_set, AccessUnit, Assembler, NalRead, NalSyntax, START_CODE,
};
use crate::codec::{TimingHints, VideoCodec};
// The unit tests drive the assembler through the trait, as the stream does.
#[cfg(test)]
use crate::codec::VideoParser;
use crate::error::{Error, Result};
use crate::h264::BitReader;
use crate::time::Dur90k;

/// NAL unit types used here (Table 7-1).
pub mod nal_type {
    pub const TRAIL_N: u8 = 0;
    pub const TRAIL_R: u8 = 1;
    pub const RADL_N: u8 = 6;
    pub const RADL_R: u8 = 7;
    pub const RASL_N: u8 = 8;
    pub const RASL_R: u8 = 9;
    pub const BLA_W_LP: u8 = 16;
    pub const BLA_W_RADL: u8 = 17;
    pub const BLA_N_LP: u8 = 18;
    pub const IDR_W_RADL: u8 = 19;
    pub const IDR_N_LP: u8 = 20;
    pub const CRA: u8 = 21;
    /// Last of the IRAP range (22 and 23 are reserved IRAP types).
    pub const RSV_IRAP_VCL23: u8 = 23;
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    pub const AUD: u8 = 35;
    pub const EOS: u8 = 36;
    pub const EOB: u8 = 37;
    pub const FD: u8 = 38;
    pub const PREFIX_SEI: u8 = 39;
    pub const SUFFIX_SEI: u8 = 40;
}

/// The NAL unit header (7.3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NalHeader {
    /// `nal_unit_type` (Table 7-1).
    pub nal_type: u8,
    /// `nuh_layer_id`: 0 for the base layer.
    pub layer_id: u8,
    /// `nuh_temporal_id_plus1 - 1`.
    pub temporal_id: u8,
}

impl NalHeader {
    /// Reads the header; `None` when the NAL unit is shorter than its
    /// header, sets `forbidden_zero_bit` or has `nuh_temporal_id_plus1` 0
    /// (both forbidden, so the bytes are not an H.265 NAL unit).
    pub fn parse(nal: &[u8]) -> Option<NalHeader> {
        let (&b0, &b1) = (nal.first()?, nal.get(1)?);
        let tid_plus1 = b1 & 0x07;
        if b0 & 0x80 != 0 || tid_plus1 == 0 {
            return None;
        }
        Some(NalHeader {
            nal_type: (b0 >> 1) & 0x3f,
            layer_id: ((b0 & 1) << 5) | (b1 >> 3),
            temporal_id: tid_plus1 - 1,
        })
    }
}

/// True for NAL units carrying slice segments (types 0-31).
pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < nal_type::VPS
}

/// Intra random access point: decoding can start here (types 16-23).
pub fn is_irap(nal_type: u8) -> bool {
    (nal_type::BLA_W_LP..=nal_type::RSV_IRAP_VCL23).contains(&nal_type)
}

/// IDR pictures, whose POC LSB is not sent (it is 0).
pub fn is_idr(nal_type: u8) -> bool {
    matches!(nal_type, nal_type::IDR_W_RADL | nal_type::IDR_N_LP)
}

fn is_bla(nal_type: u8) -> bool {
    (nal_type::BLA_W_LP..=nal_type::BLA_N_LP).contains(&nal_type)
}

/// RADL and RASL pictures, and sub-layer non-reference pictures (even types
/// below 15), cannot be prevTid0Pic (8.3.1).
fn can_anchor_poc(nal_type: u8) -> bool {
    let sub_layer_non_ref = nal_type <= 14 && nal_type.is_multiple_of(2);
    !sub_layer_non_ref && !(nal_type::RADL_N..=nal_type::RASL_R).contains(&nal_type)
}

fn bad(what: &'static str, detail: impl Into<String>) -> Error {
    Error::bitstream(what, detail)
}

/// The RBSP of a NAL unit of type `want`.
fn rbsp<'a>(nal: &'a [u8], want: u8, what: &'static str) -> Result<BitReader<'a>> {
    match NalHeader::parse(nal) {
        Some(h) if h.nal_type == want => Ok(BitReader::new(nal.get(2..).unwrap_or_default())),
        _ => Err(bad(what, format!("not a NAL unit of type {want}"))),
    }
}

/// A ue(v) that must not exceed `max`.
fn read_ue_max(r: &mut BitReader<'_>, max: u32, what: &'static str, field: &str) -> Result<u32> {
    let v = r.read_ue()?;
    if v > max {
        return Err(bad(what, format!("{field} {v} > {max}")));
    }
    Ok(v)
}

/// The fields of a video parameter set (7.3.2.1) kept here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vps {
    pub id: u32,
    /// `vps_max_sub_layers_minus1 + 1`.
    pub max_sub_layers: u32,
}

impl Vps {
    /// Parses a VPS NAL unit (header included).
    pub fn parse(nal: &[u8]) -> Result<Vps> {
        let mut r = rbsp(nal, nal_type::VPS, "VPS")?;
        let id = r.read_bits(4)?;
        r.skip_bits(2)?; // vps_base_layer_internal_flag, vps_base_layer_available_flag
        r.skip_bits(6)?; // vps_max_layers_minus1
        let max_sub_layers_minus1 = r.read_bits(3)?;
        if max_sub_layers_minus1 > 6 {
            return Err(bad("VPS", "vps_max_sub_layers_minus1 > 6"));
        }
        r.skip_bits(1 + 16)?; // temporal_id_nesting_flag, vps_reserved_0xffff_16bits
        Ok(Vps {
            id,
            max_sub_layers: max_sub_layers_minus1 + 1,
        })
    }
}

/// The fields of a sequence parameter set (7.3.2.2.1) that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub id: u32,
    pub vps_id: u32,
    /// `sps_max_sub_layers_minus1 + 1`.
    pub max_sub_layers: u32,
    pub general_profile_idc: u8,
    pub general_level_idc: u8,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    /// `pic_width_in_luma_samples` and `pic_height_in_luma_samples`.
    pub coded_width: u32,
    pub coded_height: u32,
    /// Display width and height (after the conformance window).
    pub width: u32,
    pub height: u32,
    pub bit_depth_luma: u32,
    pub bit_depth_chroma: u32,
    pub log2_max_pic_order_cnt_lsb: u32,
    /// `sps_max_dec_pic_buffering_minus1 + 1` of the highest sub-layer.
    pub max_dec_pic_buffering: u32,
    /// `sps_max_num_reorder_pics` of the highest sub-layer.
    pub max_num_reorder_pics: u32,
    /// `CtbLog2SizeY`.
    pub log2_ctb_size: u32,
    /// `PicSizeInCtbsY`, which sizes `slice_segment_address`.
    pub pic_size_in_ctbs: u64,
    /// VUI timing (`vui_num_units_in_tick`, `vui_time_scale`): one picture
    /// lasts `num_units_in_tick / time_scale` seconds.
    pub timing: Option<(u32, u32)>,
}

/// Largest picture this remuxer accepts, as for H.264.
const MAX_PIXELS: u64 = 8192 * 8192;
/// Entries of one short-term reference picture set: at most the DPB size
/// (A.4.2: 16) less the current picture.
const MAX_RPS_PICS: usize = 16;

impl Sps {
    /// Parses an SPS NAL unit (header included). What a slice header needs
    /// must parse; the VUI timing behind the reference picture sets is
    /// `None` when anything on the way there is unreadable.
    pub fn parse(nal: &[u8]) -> Result<Sps> {
        let mut r = rbsp(nal, nal_type::SPS, "SPS")?;
        let vps_id = r.read_bits(4)?;
        let max_sub_layers_minus1 = r.read_bits(3)?;
        if max_sub_layers_minus1 > 6 {
            return Err(bad("SPS", "sps_max_sub_layers_minus1 > 6"));
        }
        r.skip_bits(1)?; // sps_temporal_id_nesting_flag
        let (general_profile_idc, general_level_idc) =
            profile_tier_level(&mut r, max_sub_layers_minus1)?;
        let id = read_ue_max(&mut r, 15, "SPS", "sps_seq_parameter_set_id")?;
        let chroma_format_idc = read_ue_max(&mut r, 3, "SPS", "chroma_format_idc")?;
        let separate_colour_plane = chroma_format_idc == 3 && r.read_flag()?;
        let coded_width = r.read_ue()?;
        let coded_height = r.read_ue()?;
        if coded_width == 0
            || coded_height == 0
            || u64::from(coded_width) * u64::from(coded_height) > MAX_PIXELS
        {
            return Err(bad(
                "SPS",
                format!("picture size {coded_width}x{coded_height} outside 1x1 to 8192x8192"),
            ));
        }
        let (mut width, mut height) = (u64::from(coded_width), u64::from(coded_height));
        if r.read_flag()? {
            // conformance_window_flag: offsets in chroma samples (Table 6-1).
            let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
                (1, false) => (2, 2),
                (2, false) => (2, 1),
                _ => (1, 1),
            };
            let mut offsets = [0u64; 4];
            for o in &mut offsets {
                *o = u64::from(r.read_ue()?);
            }
            let [left, right, top, bottom] = offsets;
            let cut_w = (left + right) * sub_w;
            let cut_h = (top + bottom) * sub_h;
            if cut_w >= width || cut_h >= height {
                return Err(bad("SPS", "conformance window larger than the picture"));
            }
            width -= cut_w;
            height -= cut_h;
        }
        let bit_depth_luma = read_ue_max(&mut r, 8, "SPS", "bit_depth_luma_minus8")? + 8;
        let bit_depth_chroma = read_ue_max(&mut r, 8, "SPS", "bit_depth_chroma_minus8")? + 8;
        let log2_max_pic_order_cnt_lsb =
            read_ue_max(&mut r, 12, "SPS", "log2_max_pic_order_cnt_lsb_minus4")? + 4;
        // Only the highest sub-layer's values are kept: that is the whole
        // stream's reorder depth and DPB size.
        let ordering_for_all = r.read_flag()?;
        let first = if ordering_for_all {
            0
        } else {
            max_sub_layers_minus1
        };
        let (mut max_dec_pic_buffering, mut max_num_reorder_pics) = (1, 0);
        for _ in first..=max_sub_layers_minus1 {
            max_dec_pic_buffering =
                read_ue_max(&mut r, 15, "SPS", "sps_max_dec_pic_buffering_minus1")? + 1;
            max_num_reorder_pics = read_ue_max(&mut r, 15, "SPS", "sps_max_num_reorder_pics")?;
            r.read_ue()?; // sps_max_latency_increase_plus1
        }
        let log2_min_cb =
            read_ue_max(&mut r, 3, "SPS", "log2_min_luma_coding_block_size_minus3")? + 3;
        let log2_ctb_size = read_ue_max(
            &mut r,
            6 - log2_min_cb,
            "SPS",
            "log2_diff_max_min_luma_coding_block_size",
        )? + log2_min_cb;
        let ctbs = |samples: u32| u64::from(samples).div_ceil(1 << log2_ctb_size);
        let pic_size_in_ctbs = ctbs(coded_width) * ctbs(coded_height);
        let mut sps = Sps {
            id,
            vps_id,
            max_sub_layers: max_sub_layers_minus1 + 1,
            general_profile_idc,
            general_level_idc,
            chroma_format_idc,
            separate_colour_plane,
            coded_width,
            coded_height,
            width: width as u32,
            height: height as u32,
            bit_depth_luma,
            bit_depth_chroma,
            log2_max_pic_order_cnt_lsb,
            max_dec_pic_buffering,
            max_num_reorder_pics,
            log2_ctb_size,
            pic_size_in_ctbs,
            timing: None,
        };
        // Timing is a hint: an SPS whose tail is broken still locates and
        // orders pictures.
        if let Ok(timing) = sps_tail_timing(&mut r, log2_max_pic_order_cnt_lsb) {
            sps.timing = timing;
        }
        Ok(sps)
    }

    /// One picture's duration from VUI timing, when the rate is plausible
    /// (1 to 240 pictures per second); the timeline's default step.
    pub fn nominal_frame_duration(&self) -> Option<Dur90k> {
        let (units, scale) = self.timing?;
        if units == 0 || scale < units || scale / units > 240 {
            return None;
        }
        Dur90k::from_frame_rate(scale, units)
    }

    /// Pictures by which display order may lag decode order.
    pub fn reorder_depth(&self) -> u32 {
        self.max_num_reorder_pics.min(16)
    }

    /// True when a new SPS changes what a decoder must be reset for.
    pub fn changes_format(&self, other: &Sps) -> bool {
        self.width != other.width
            || self.height != other.height
            || self.chroma_format_idc != other.chroma_format_idc
            || self.separate_colour_plane != other.separate_colour_plane
            || self.bit_depth_luma != other.bit_depth_luma
            || self.bit_depth_chroma != other.bit_depth_chroma
    }
}

/// profile_tier_level(1, max_sub_layers_minus1) (7.3.3); returns
/// (general_profile_idc, general_level_idc).
fn profile_tier_level(r: &mut BitReader<'_>, max_sub_layers_minus1: u32) -> Result<(u8, u8)> {
    r.skip_bits(3)?; // general_profile_space, general_tier_flag
    let profile = r.read_bits(5)? as u8;
    // Compatibility flags (32), source and constraint flags (4 + 43 + 1).
    r.skip_bits(32 + 48)?;
    let level = r.read_bits(8)? as u8;
    let mut present = [(false, false); 6];
    for p in present.iter_mut().take(max_sub_layers_minus1 as usize) {
        *p = (r.read_flag()?, r.read_flag()?);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip_bits(2 * (8 - max_sub_layers_minus1))?; // reserved_zero_2bits
    }
    for &(profile_present, level_present) in present.iter().take(max_sub_layers_minus1 as usize) {
        if profile_present {
            r.skip_bits(88)?;
        }
        if level_present {
            r.skip_bits(8)?;
        }
    }
    Ok((profile, level))
}

/// Reads the SPS from the transform block sizes to the VUI timing.
fn sps_tail_timing(r: &mut BitReader<'_>, log2_max_poc_lsb: u32) -> Result<Option<(u32, u32)>> {
    for _ in 0..4 {
        // Transform block sizes, transform hierarchy depths.
        r.read_ue()?;
    }
    if r.read_flag()? && r.read_flag()? {
        // scaling_list_enabled_flag, sps_scaling_list_data_present_flag
        skip_scaling_list_data(r)?;
    }
    r.skip_bits(2)?; // amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.read_flag()? {
        // pcm_enabled_flag: two bit depths, two sizes, loop filter flag
        r.skip_bits(8)?;
        r.read_ue()?;
        r.read_ue()?;
        r.skip_bits(1)?;
    }
    let num_sets = read_ue_max(r, 64, "SPS", "num_short_term_ref_pic_sets")?;
    let mut sets: Vec<RefPicSet> = Vec::with_capacity(num_sets as usize);
    for _ in 0..num_sets {
        let set = RefPicSet::parse(r, sets.last())?;
        sets.push(set);
    }
    if r.read_flag()? {
        // long_term_ref_pics_present_flag
        let n = read_ue_max(r, 32, "SPS", "num_long_term_ref_pics_sps")?;
        for _ in 0..n {
            r.skip_bits(log2_max_poc_lsb + 1)?;
        }
    }
    r.skip_bits(2)?; // sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    if !r.read_flag()? {
        return Ok(None); // no VUI
    }
    vui_timing(r)
}

fn skip_scaling_list_data(r: &mut BitReader<'_>) -> Result<()> {
    for size_id in 0..4u32 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _ in (0..6).step_by(step) {
            if !r.read_flag()? {
                r.read_ue()?; // scaling_list_pred_matrix_id_delta
                continue;
            }
            if size_id > 1 {
                r.read_se()?; // scaling_list_dc_coef_minus8
            }
            for _ in 0..(16u32 << (2 * size_id)).min(64) {
                r.read_se()?; // scaling_list_delta_coef
            }
        }
    }
    Ok(())
}

/// A short-term reference picture set of the SPS (7.3.7, 7.4.8): the POC
/// deltas are needed because a predicted set's syntax depends on how many
/// pictures the set it predicts from has.
#[derive(Debug, Default)]
struct RefPicSet {
    /// DeltaPocS0: negative, closest first.
    negative: Vec<i32>,
    /// DeltaPocS1: positive, closest first.
    positive: Vec<i32>,
}

impl RefPicSet {
    /// Reads set number `sets.len()` of the SPS; `previous` is the set
    /// before it, the only one an SPS set can predict from.
    fn parse(r: &mut BitReader<'_>, previous: Option<&RefPicSet>) -> Result<RefPicSet> {
        let predicted = match previous {
            Some(_) => r.read_flag()?,
            None => false,
        };
        let mut set = RefPicSet::default();
        if let (true, Some(reference)) = (predicted, previous) {
            let negative = r.read_flag()?;
            let abs = read_ue_max(r, (1 << 15) - 1, "SPS", "abs_delta_rps_minus1")? as i32 + 1;
            let delta_rps = if negative { -abs } else { abs };
            let n_neg = reference.negative.len();
            let n_ref = n_neg + reference.positive.len();
            // use_delta_flag for each picture of the reference set and the
            // reference picture itself (index n_ref).
            let mut flags = [false; MAX_RPS_PICS + 1];
            for u in flags.iter_mut().take(n_ref + 1) {
                let used_by_curr = r.read_flag()?;
                *u = used_by_curr || r.read_flag()?;
            }
            let use_delta = |i: usize| flags.get(i).copied().unwrap_or(false);
            // Equations 7-61 and 7-62.
            for (j, &d) in reference.positive.iter().enumerate().rev() {
                if d + delta_rps < 0 && use_delta(n_neg + j) {
                    set.negative.push(d + delta_rps);
                }
            }
            if delta_rps < 0 && use_delta(n_ref) {
                set.negative.push(delta_rps);
            }
            for (j, &d) in reference.negative.iter().enumerate() {
                if d + delta_rps < 0 && use_delta(j) {
                    set.negative.push(d + delta_rps);
                }
            }
            for (j, &d) in reference.negative.iter().enumerate().rev() {
                if d + delta_rps > 0 && use_delta(j) {
                    set.positive.push(d + delta_rps);
                }
            }
            if delta_rps > 0 && use_delta(n_ref) {
                set.positive.push(delta_rps);
            }
            for (j, &d) in reference.positive.iter().enumerate() {
                if d + delta_rps > 0 && use_delta(n_neg + j) {
                    set.positive.push(d + delta_rps);
                }
            }
        } else {
            let n_neg = read_ue_max(r, MAX_RPS_PICS as u32, "SPS", "num_negative_pics")?;
            let n_pos = read_ue_max(r, MAX_RPS_PICS as u32, "SPS", "num_positive_pics")?;
            let mut poc = 0i32;
            for _ in 0..n_neg {
                poc -= read_ue_max(r, (1 << 15) - 1, "SPS", "delta_poc_s0_minus1")? as i32 + 1;
                r.skip_bits(1)?; // used_by_curr_pic_s0_flag
                set.negative.push(poc);
            }
            poc = 0;
            for _ in 0..n_pos {
                poc += read_ue_max(r, (1 << 15) - 1, "SPS", "delta_poc_s1_minus1")? as i32 + 1;
                r.skip_bits(1)?; // used_by_curr_pic_s1_flag
                set.positive.push(poc);
            }
        }
        // Deltas stay within 16 * 2^16 in magnitude, far from overflow; the
        // count bound keeps `use_delta` indexing in range for the next set.
        if set.negative.len() + set.positive.len() > MAX_RPS_PICS {
            return Err(bad(
                "SPS",
                "short-term reference picture set over 16 pictures",
            ));
        }
        Ok(set)
    }
}

/// VUI parameters (E.2.1) up to the timing information.
fn vui_timing(r: &mut BitReader<'_>) -> Result<Option<(u32, u32)>> {
    if r.read_flag()? && r.read_bits(8)? == 255 {
        // aspect_ratio_info_present_flag, aspect_ratio_idc = EXTENDED_SAR
        r.skip_bits(32)?;
    }
    if r.read_flag()? {
        r.skip_bits(1)?; // overscan_appropriate_flag
    }
    if r.read_flag()? {
        // video_signal_type_present_flag: format, range; colour description
        r.skip_bits(4)?;
        if r.read_flag()? {
            r.skip_bits(24)?;
        }
    }
    if r.read_flag()? {
        // chroma_loc_info_present_flag
        r.read_ue()?;
        r.read_ue()?;
    }
    // neutral_chroma_indication_flag, field_seq_flag, frame_field_info_present_flag
    r.skip_bits(3)?;
    if r.read_flag()? {
        // default_display_window_flag
        for _ in 0..4 {
            r.read_ue()?;
        }
    }
    if !r.read_flag()? {
        return Ok(None);
    }
    let units = r.read_bits(32)?;
    let scale = r.read_bits(32)?;
    Ok(Some((units, scale)))
}

/// The fields of a picture parameter set (7.3.2.3.1) needed to read slice
/// segment headers up to the POC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pps {
    pub id: u32,
    pub sps_id: u32,
    pub dependent_slice_segments_enabled: bool,
    pub output_flag_present: bool,
    pub num_extra_slice_header_bits: u32,
}

impl Pps {
    /// Parses a PPS NAL unit (header included).
    pub fn parse(nal: &[u8]) -> Result<Pps> {
        let mut r = rbsp(nal, nal_type::PPS, "PPS")?;
        let id = read_ue_max(&mut r, 63, "PPS", "pps_pic_parameter_set_id")?;
        let sps_id = read_ue_max(&mut r, 15, "PPS", "pps_seq_parameter_set_id")?;
        let dependent_slice_segments_enabled = r.read_flag()?;
        let output_flag_present = r.read_flag()?;
        let num_extra_slice_header_bits = r.read_bits(3)?;
        Ok(Pps {
            id,
            sps_id,
            dependent_slice_segments_enabled,
            output_flag_present,
            num_extra_slice_header_bits,
        })
    }
}

/// The leading fields of a slice segment header (7.3.6.1), up to
/// `slice_pic_order_cnt_lsb`. A dependent slice segment carries none of the
/// fields after its address: they are its picture's, and read as defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceHeader {
    pub nal_type: u8,
    pub first_slice_segment_in_pic: bool,
    /// Sent for IRAP pictures only.
    pub no_output_of_prior_pics: bool,
    pub pps_id: u32,
    pub dependent_slice_segment: bool,
    pub slice_segment_address: u32,
    /// 0 = B, 1 = P, 2 = I.
    pub slice_type: u32,
    pub pic_output: bool,
    /// 0 for IDR pictures, which do not send it.
    pub pic_order_cnt_lsb: u32,
}

impl SliceHeader {
    /// `first_slice_segment_in_pic_flag`, which needs no parameter set.
    pub fn first_in_picture(nal: &[u8]) -> bool {
        nal.get(2).is_some_and(|b| b & 0x80 != 0)
    }

    /// Parses the slice segment header of a VCL NAL unit.
    pub fn parse(nal: &[u8], params: &ParamSets) -> Result<SliceHeader> {
        const WHAT: &str = "slice header";
        let h = NalHeader::parse(nal)
            .filter(|h| is_vcl(h.nal_type))
            .ok_or_else(|| bad(WHAT, "not a VCL NAL unit"))?;
        let mut r = BitReader::new(nal.get(2..).unwrap_or_default());
        let first_slice_segment_in_pic = r.read_flag()?;
        let no_output_of_prior_pics = is_irap(h.nal_type) && r.read_flag()?;
        let pps_id = read_ue_max(&mut r, 63, WHAT, "slice_pic_parameter_set_id")?;
        let pps = params
            .pps(pps_id)
            .ok_or_else(|| bad(WHAT, format!("references missing PPS {pps_id}")))?;
        let sps = params.sps(pps.sps_id).ok_or_else(|| {
            bad(
                WHAT,
                format!("PPS {pps_id} references missing SPS {}", pps.sps_id),
            )
        })?;
        let mut sh = SliceHeader {
            nal_type: h.nal_type,
            first_slice_segment_in_pic,
            no_output_of_prior_pics,
            pps_id,
            dependent_slice_segment: false,
            slice_segment_address: 0,
            slice_type: 2,
            pic_output: true,
            pic_order_cnt_lsb: 0,
        };
        if !first_slice_segment_in_pic {
            if pps.dependent_slice_segments_enabled {
                sh.dependent_slice_segment = r.read_flag()?;
            }
            // Ceil(Log2(PicSizeInCtbsY)) bits; the SPS bounds the size to
            // well under 2^32 CTBs.
            let bits = u64::BITS - sps.pic_size_in_ctbs.saturating_sub(1).leading_zeros();
            sh.slice_segment_address = r.read_bits(bits.min(32) as u8)?;
            if u64::from(sh.slice_segment_address) >= sps.pic_size_in_ctbs {
                return Err(bad(WHAT, "slice_segment_address outside the picture"));
            }
        }
        if sh.dependent_slice_segment {
            return Ok(sh);
        }
        r.skip_bits(pps.num_extra_slice_header_bits)?;
        sh.slice_type = read_ue_max(&mut r, 2, WHAT, "slice_type")?;
        if pps.output_flag_present {
            sh.pic_output = r.read_flag()?;
        }
        if sps.separate_colour_plane {
            r.skip_bits(2)?; // colour_plane_id
        }
        if !is_idr(h.nal_type) {
            sh.pic_order_cnt_lsb = r.read_bits(sps.log2_max_pic_order_cnt_lsb as u8)?;
        }
        Ok(sh)
    }
}

/// Parameter sets received, by id.
#[derive(Debug, Default, Clone)]
pub struct ParamSets {
    vps: Vec<Option<Vps>>,
    sps: Vec<Option<Sps>>,
    pps: Vec<Option<Pps>>,
}

/// Stores `v` at `id`, growing the table (ids are range-checked by the
/// parsers: at most 64 entries); returns what it replaced.
fn put<T>(table: &mut Vec<Option<T>>, id: u32, v: T) -> Option<T> {
    let i = id as usize;
    if table.len() <= i {
        table.resize_with(i + 1, || None);
    }
    table.get_mut(i).and_then(|slot| slot.replace(v))
}

impl ParamSets {
    /// The VPS with this id, if one was received.
    pub fn vps(&self, id: u32) -> Option<&Vps> {
        self.vps.get(id as usize)?.as_ref()
    }

    /// The SPS with this id, if one was received.
    pub fn sps(&self, id: u32) -> Option<&Sps> {
        self.sps.get(id as usize)?.as_ref()
    }

    /// The PPS with this id, if one was received.
    pub fn pps(&self, id: u32) -> Option<&Pps> {
        self.pps.get(id as usize)?.as_ref()
    }

    /// Stores a VPS under its id.
    pub fn put_vps(&mut self, vps: Vps) {
        put(&mut self.vps, vps.id, vps);
    }

    /// Stores an SPS; returns the SPS it replaced under the same id.
    pub fn put_sps(&mut self, sps: Sps) -> Option<Sps> {
        put(&mut self.sps, sps.id, sps)
    }

    /// Stores a PPS under its id.
    pub fn put_pps(&mut self, pps: Pps) {
        put(&mut self.pps, pps.id, pps);
    }
}

/// Picture order count decoding (8.3.1) for the base layer.
#[derive(Debug, Default, Clone)]
pub struct PocState {
    /// (slice_pic_order_cnt_lsb, PicOrderCntMsb) of prevTid0Pic.
    prev_tid0: Option<(i64, i64)>,
    /// An IRAP picture has been seen: a CRA is the start of the bitstream
    /// (NoRaslOutputFlag = 1) only before the first one.
    irap_seen: bool,
    /// An end-of-sequence NAL unit came: the next picture starts afresh.
    after_eos: bool,
}

impl PocState {
    /// `PicOrderCntVal` of the picture whose first slice segment is `sh`,
    /// with temporal id `temporal_id`.
    pub fn compute(&mut self, sps: &Sps, sh: &SliceHeader, temporal_id: u8) -> i64 {
        let t = sh.nal_type;
        let irap = is_irap(t);
        let no_rasl_output = irap && (is_idr(t) || is_bla(t) || !self.irap_seen || self.after_eos);
        self.irap_seen |= irap;
        self.after_eos = false;
        let lsb = i64::from(sh.pic_order_cnt_lsb);
        let msb = if no_rasl_output {
            0
        } else {
            let (prev_lsb, prev_msb) = self.prev_tid0.unwrap_or((0, 0));
            let max_lsb = 1i64 << sps.log2_max_pic_order_cnt_lsb.min(16);
            if lsb < prev_lsb && prev_lsb - lsb >= max_lsb / 2 {
                prev_msb.saturating_add(max_lsb)
            } else if lsb > prev_lsb && lsb - prev_lsb > max_lsb / 2 {
                prev_msb.saturating_sub(max_lsb)
            } else {
                prev_msb
            }
        };
        if temporal_id == 0 && can_anchor_poc(t) {
            self.prev_tid0 = Some((lsb, msb));
        }
        msb.saturating_add(lsb)
    }

    /// An end-of-sequence (or end-of-bitstream) NAL unit: the next IRAP
    /// picture resets the POC.
    pub fn end_of_sequence(&mut self) {
        self.after_eos = true;
    }
}

/// Splits a whole H.265 Annex-B buffer (a file, a test fixture) into its
/// access units, in decode order.
pub fn split_access_units(annexb: &[u8]) -> Vec<AccessUnit> {
    HevcAssembler::split(annexb)
}

/// The H.265 assembler: groups NAL units into access units (7.4.2.4.4),
/// bounded and counted as [`Assembler`] does for both codecs.
///
/// Only the base layer (`nuh_layer_id` 0) is parsed and delimits access
/// units; NAL units of other layers ride along in the access unit.
pub type HevcAssembler = Assembler<HevcSyntax>;

/// H.265's part in access-unit assembly (7.4.2.4.4): the parameter sets by
/// id, the POC state, and the latest VPS, SPS and PPS NAL units,
/// re-inserted before keyframes that lack them.
#[derive(Debug, Default)]
pub struct HevcSyntax {
    params: ParamSets,
    poc: PocState,
    /// The access unit in progress carries a VPS / an SPS; `has_sps` is set
    /// only with both, so that a keyframe lacking either gets the cached
    /// ones.
    current_has_vps: bool,
    current_has_sps: bool,
    last_vps_nal: Option<Bytes>,
    last_sps_nal: Option<Bytes>,
    last_pps_nal: Option<Bytes>,
}

/// Our access-unit delimiter: type 35, layer 0, temporal id 0, pic_type 2
/// (any slice type), then the RBSP stop bit.
pub(crate) const HEVC_AUD: [u8; 7] = [0, 0, 0, 1, 0x46, 0x01, 0x50];

impl NalSyntax for HevcSyntax {
    const CODEC: VideoCodec = VideoCodec::H265;
    type Header = NalHeader;
    type Sps = Sps;

    fn header(nal: &[u8]) -> Option<NalHeader> {
        NalHeader::parse(nal)
    }

    /// A base-layer VPS, SPS, PPS, AUD, prefix SEI or reserved type
    /// 41..=44 or 48..=55, or the first slice segment of a base-layer
    /// picture.
    fn begins_access_unit(h: NalHeader, nal: &[u8]) -> bool {
        h.layer_id == 0
            && if is_vcl(h.nal_type) {
                SliceHeader::first_in_picture(nal)
            } else {
                matches!(
                    h.nal_type,
                    nal_type::VPS
                        | nal_type::SPS
                        | nal_type::PPS
                        | nal_type::AUD
                        | nal_type::PREFIX_SEI
                        | 41..=44
                        | 48..=55
                )
            }
    }

    // Per NAL unit: inlined into the assembler's loop, where the returned
    // `NalRead` folds away (as a call, callgrind counted ~30 more
    // instructions per access unit).
    #[inline]
    fn read(&mut self, nal: &Bytes, h: NalHeader, au: &mut AccessUnit) -> NalRead<Sps> {
        // Parameter sets and slices of other layers have other syntax
        // (F.7.3): they are carried, not read.
        if h.layer_id != 0 {
            return NalRead::Carried;
        }
        let read = match h.nal_type {
            nal_type::VPS => {
                read_parameter_set(nal, "VPS", Vps::parse, &mut self.last_vps_nal, |vps| {
                    self.current_has_vps = true;
                    self.params.put_vps(vps);
                    NalRead::Carried
                })
            }
            nal_type::SPS => {
                read_parameter_set(nal, "SPS", Sps::parse, &mut self.last_sps_nal, |sps| {
                    self.current_has_sps = true;
                    let replaced = self.params.put_sps(sps.clone());
                    NalRead::Sps { replaced, sps }
                })
            }
            nal_type::PPS => {
                read_parameter_set(nal, "PPS", Pps::parse, &mut self.last_pps_nal, |pps| {
                    au.has_pps = true;
                    self.params.put_pps(pps);
                    NalRead::Carried
                })
            }
            nal_type::AUD => {
                au.has_aud = true;
                NalRead::Carried
            }
            // After the end of a sequence or bitstream the next picture
            // starts one.
            nal_type::EOS | nal_type::EOB => {
                self.poc.end_of_sequence();
                NalRead::Carried
            }
            t if is_vcl(t) => {
                if is_irap(t) {
                    au.keyframe = true;
                }
                NalRead::Slice
            }
            _ => NalRead::Carried,
        };
        au.has_sps = self.current_has_vps && self.current_has_sps;
        read
    }

    // Per picture, inlined for the same reason as `read`.
    #[inline]
    fn first_slice(&mut self, nal: &[u8], h: NalHeader) -> Result<(i64, &Sps)> {
        let sh = SliceHeader::parse(nal, &self.params)?;
        if sh.dependent_slice_segment {
            return Err(bad(
                "slice header",
                "picture begins with a dependent slice segment",
            ));
        }
        let sps = self
            .params
            .pps(sh.pps_id)
            .and_then(|pps| self.params.sps(pps.sps_id))
            .ok_or_else(|| bad("slice header", "parameter sets vanished"))?;
        Ok((self.poc.compute(sps, &sh, h.temporal_id), sps))
    }

    fn next_access_unit(&mut self) {
        self.current_has_vps = false;
        self.current_has_sps = false;
    }

    fn changes_format(old: &Sps, new: &Sps) -> bool {
        old.changes_format(new)
    }

    fn timing_hints(sps: &Sps) -> TimingHints {
        TimingHints {
            nominal_frame: sps.nominal_frame_duration(),
            reorder_depth: sps.reorder_depth(),
        }
    }

    fn has_parameter_sets(&self) -> bool {
        self.cached_parameter_sets().iter().all(Option::is_some)
    }

    fn packet_in_place(&self, au: &AccessUnit) -> Option<Bytes> {
        if au.keyframe && !(au.has_sps && au.has_pps) {
            return None;
        }
        access_unit::packet_in_place(au, |nal| {
            NalHeader::parse(nal).is_some_and(|h| h.nal_type == nal_type::AUD)
        })
    }

    fn write_packet(&self, au: &AccessUnit, out: &mut Vec<u8>) {
        out.clear();
        // Our own AUD first: libavformat would otherwise copy the packet to
        // insert one.
        out.extend_from_slice(&HEVC_AUD);
        let is_kind = |nal: &Bytes, kind: u8| {
            NalHeader::parse(nal).is_some_and(|h| h.layer_id == 0 && h.nal_type == kind)
        };
        let kinds = [nal_type::VPS, nal_type::SPS, nal_type::PPS];
        let insert = au.keyframe && !(au.has_sps && au.has_pps);
        if insert {
            // VPS, SPS, PPS in this order (a decoder reading a PPS wants
            // its SPS already): the keyframe's own where it has them (its
            // slices were coded with those), the cached ones for the kinds
            // it lacks.
            for (kind, cached) in kinds.into_iter().zip(self.cached_parameter_sets()) {
                let mut own = au.nals.iter().filter(|n| is_kind(n, kind)).peekable();
                if own.peek().is_some() {
                    for nal in own {
                        out.extend_from_slice(&START_CODE);
                        out.extend_from_slice(nal);
                    }
                } else if let Some(nal) = cached {
                    out.extend_from_slice(&START_CODE);
                    out.extend_from_slice(nal);
                }
            }
        }
        for nal in &au.nals {
            let written = insert && kinds.iter().any(|&k| is_kind(nal, k));
            if written || NalHeader::parse(nal).is_some_and(|h| h.nal_type == nal_type::AUD) {
                continue;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
    }
}

impl HevcSyntax {
    /// Cached VPS, SPS and PPS NAL units, for keyframes sent without them.
    fn cached_parameter_sets(&self) -> [Option<&Bytes>; 3] {
        [
            self.last_vps_nal.as_ref(),
            self.last_sps_nal.as_ref(),
            self.last_pps_nal.as_ref(),
        ]
    }
}

impl HevcAssembler {
    /// Cached VPS, SPS and PPS NAL units, for keyframes sent without them.
    pub fn cached_parameter_sets(&self) -> [Option<&Bytes>; 3] {
        self.syntax().cached_parameter_sets()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/");
        std::fs::read(format!("{path}{name}")).unwrap()
    }

    /// Packs a string of '0'/'1' into bytes, padding with the RBSP stop bit.
    fn bits_to_bytes(bits: &str) -> Vec<u8> {
        let mut bits = format!("{bits}1");
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        bits.as_bytes()
            .chunks(8)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap())
            .collect()
    }

    #[test]
    fn nal_header_fields() {
        // VPS: type 32, layer 0, temporal_id_plus1 1.
        assert_eq!(
            NalHeader::parse(&[0x40, 0x01]),
            Some(NalHeader {
                nal_type: 32,
                layer_id: 0,
                temporal_id: 0
            })
        );
        // IDR_W_RADL (19), layer 0, tid 0: 0x26 0x01.
        assert_eq!(NalHeader::parse(&[0x26, 0x01]).unwrap().nal_type, 19);
        // TRAIL_N at temporal id 2 of layer 1: type 0, layer 1 = (0, 0b00001), tid+1 = 3.
        assert_eq!(
            NalHeader::parse(&[0x00, 0x0b]),
            Some(NalHeader {
                nal_type: 0,
                layer_id: 1,
                temporal_id: 2
            })
        );
        // Layer id's top bit lives in the first byte.
        assert_eq!(NalHeader::parse(&[0x01, 0x01]).unwrap().layer_id, 32);
        // Forbidden bit, temporal_id_plus1 = 0, too short.
        assert_eq!(NalHeader::parse(&[0xc0, 0x01]), None);
        assert_eq!(NalHeader::parse(&[0x40, 0x00]), None);
        assert_eq!(NalHeader::parse(&[0x40]), None);
        // Our AUD is a valid AUD.
        let aud = NalHeader::parse(&HEVC_AUD[4..]).unwrap();
        assert_eq!((aud.nal_type, aud.layer_id, aud.temporal_id), (35, 0, 0));
        assert!(is_irap(16) && is_irap(23) && !is_irap(15) && !is_irap(24));
        assert!(is_vcl(31) && !is_vcl(32));
    }

    #[test]
    fn emulation_prevention_is_removed() {
        // pps id 0, sps id 0, then flags; with "00 00 03" inserted where the
        // RBSP has two zero bytes.
        let mut pps = vec![0x44, 0x01];
        pps.extend(bits_to_bytes("1" /* pps id 0 */));
        assert_eq!(Pps::parse(&pps).unwrap().id, 0);
        // ue(v) 65535 (16 zeros, 1, 16 zeros): its first two bytes are
        // zero, so the NAL unit carries them escaped.
        let bits = format!("{}1{}", "0".repeat(16), "0".repeat(16)); // 65535
        let raw = bits_to_bytes(&bits); // 00 00 80 00 ...
        assert_eq!(&raw[..2], &[0, 0]);
        let mut escaped = vec![0x44, 0x01, 0, 0, 3];
        escaped.extend(&raw[2..]);
        let err = Pps::parse(&escaped).unwrap_err().to_string();
        assert!(err.contains("65535 > 63"), "{err}");
    }

    fn fixture_units(name: &str) -> (Vec<AccessUnit>, HevcAssembler) {
        let data = fixture(name);
        let mut asm = HevcAssembler::new();
        let mut units: Vec<AccessUnit> = crate::annexb::split_nals(&data)
            .into_iter()
            .filter_map(|nal| asm.push(nal, None))
            .collect();
        units.extend(asm.flush());
        (units, asm)
    }

    /// Checks the fixture's structure; returns the POCs and the SPS.
    fn check_fixture(name: &str) -> (Vec<i64>, Sps) {
        let (units, asm) = fixture_units(name);
        let stats = asm.stats();
        assert_eq!(units.len(), 250, "{name}: 10 s at 25 fps");
        assert_eq!(stats.access_units, 250);
        assert_eq!(
            (
                stats.bad_parameter_sets,
                stats.bad_slice_headers,
                stats.orphan_nals
            ),
            (0, 0, 0),
            "{name}"
        );
        let keyframes: Vec<usize> = (0..units.len()).filter(|&i| units[i].keyframe).collect();
        assert_eq!(keyframes, [0, 50, 100, 150, 200], "{name}");
        for &k in &keyframes {
            assert!(units[k].has_sps && units[k].has_pps, "{name}: AU {k}");
        }
        assert!(units.iter().all(|u| !u.format_change));
        let sps = asm.active_sps().unwrap().clone();
        assert_eq!((sps.width, sps.height), (320, 240));
        assert_eq!((sps.chroma_format_idc, sps.bit_depth_luma), (1, 8));
        assert_eq!(sps.timing, Some((1, 25)), "x265 writes VUI timing");
        assert_eq!(sps.nominal_frame_duration(), Some(Dur90k(3600)));
        let pocs: Vec<i64> = units.iter().map(|u| u.poc.expect("POC")).collect();
        (pocs, sps)
    }

    /// The display slot of each picture of a GOP must be reachable within
    /// the reorder depth: no picture is preceded in decode order by more
    /// than `reorder` pictures of its GOP that display after it.
    fn max_reorder(gop: &[i64]) -> usize {
        (0..gop.len())
            .map(|i| gop[..i].iter().filter(|&&p| p > gop[i]).count())
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn fixture_without_b_frames() {
        let (pocs, sps) = check_fixture("hevc_nob.h265");
        // Display order is decode order, and the POC runs on across the
        // CRA keyframes (they do not reset it; only the first IDR does).
        assert_eq!(pocs, (0..250).collect::<Vec<i64>>());
        assert_eq!(sps.reorder_depth(), 0);
    }

    #[test]
    fn fixture_with_b_frames() {
        let (pocs, sps) = check_fixture("hevc_b.h265");
        assert!(sps.reorder_depth() >= 1, "{sps:?}");
        for gop in pocs.chunks(50) {
            // Every keyframe is an IDR: each GOP's POCs are a permutation
            // of 0..50, i.e. sorting them restores display order.
            let mut sorted = gop.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..50).collect::<Vec<i64>>());
            assert_ne!(gop, &sorted[..], "B-frames reorder");
            let needed = max_reorder(gop);
            assert!(needed >= 1 && needed <= sps.reorder_depth() as usize);
        }
    }

    #[test]
    fn packets_start_with_our_aud_and_keyframes_get_parameter_sets() {
        let (units, asm) = fixture_units("hevc_b.h265");
        let mut out = Vec::new();
        // Strip the parameter sets of the second keyframe's access unit.
        let mut key = units[50].clone();
        key.nals
            .retain(|n| !matches!(NalHeader::parse(n).unwrap().nal_type, 32..=34));
        key.has_sps = false;
        key.has_pps = false;
        asm.write_packet(&key, &mut out);
        let types = |out: &[u8]| -> Vec<u8> {
            crate::annexb::split_nals(out)
                .iter()
                .map(|n| NalHeader::parse(n).unwrap().nal_type)
                .collect()
        };
        assert!(out.starts_with(&HEVC_AUD));
        let t = types(&out);
        assert_eq!(&t[..5], &[35, 32, 33, 34, 39], "{t:?}");
        assert_eq!(t.iter().filter(|&&x| x == 35).count(), 1);
        // Only the missing kinds come from the cache, and the order stays
        // VPS, SPS, PPS: a keyframe that lacks the PPS keeps its own VPS
        // and SPS.
        let mut key = units[100].clone();
        key.nals
            .retain(|n| NalHeader::parse(n).unwrap().nal_type != nal_type::PPS);
        key.has_pps = false;
        asm.write_packet(&key, &mut out);
        let t = types(&out);
        assert_eq!(&t[..5], &[35, 32, 33, 34, 39], "{t:?}");
        // A keyframe with everything, and a non-keyframe: written as is.
        for au in [&units[150], &units[151]] {
            asm.write_packet(au, &mut out);
            assert!(out.starts_with(&HEVC_AUD));
            assert_eq!(
                out.len(),
                HEVC_AUD.len() + au.payload_bytes + 4 * au.nals.len()
            );
        }
        assert!(asm.has_parameter_sets());
        assert_eq!(
            asm.timing_hints(),
            TimingHints {
                nominal_frame: Some(Dur90k(3600)),
                reorder_depth: asm.active_sps().unwrap().reorder_depth(),
            }
        );
    }

    #[test]
    fn input_auds_are_dropped_and_delimit_access_units() {
        let (units, _) = fixture_units("hevc_nob.h265");
        let mut asm = HevcAssembler::new();
        let aud = Bytes::from_static(&[0x46, 0x01, 0x10]);
        let mut out = Vec::new();
        let mut got = Vec::new();
        for au in &units[..3] {
            got.extend(asm.push(aud.clone(), None));
            for nal in &au.nals {
                got.extend(asm.push(nal.clone(), None));
            }
        }
        got.extend(asm.flush());
        assert_eq!(got.len(), 3);
        for (au, want) in got.iter().zip(&units) {
            assert!(au.has_aud);
            assert_eq!(au.nals.len(), want.nals.len() + 1);
            asm.write_packet(au, &mut out);
            assert_eq!(
                out.len(),
                HEVC_AUD.len() + want.payload_bytes + 4 * want.nals.len()
            );
        }
    }

    /// ue(v) as a bit string.
    fn ue(v: u32) -> String {
        let x = format!("{:b}", u64::from(v) + 1);
        format!("{}{x}", "0".repeat(x.len() - 1))
    }

    fn nal(header: [u8; 2], bits: &str) -> Bytes {
        let mut v = header.to_vec();
        v.extend(bits_to_bytes(&bits.replace(' ', "")));
        Bytes::from(v)
    }

    fn synthetic_vps() -> Bytes {
        nal(
            [0x40, 0x01],
            &format!("0000 11 000000 000 1 {}", "1".repeat(16)),
        )
    }

    /// A minimal SPS (Main, 8-bit 4:2:0, 16x16 CTBs, 8-bit POC LSB), cut
    /// off after the coding block sizes: its timing is unknown.
    fn synthetic_sps(width: u32, height: u32) -> Bytes {
        let ptl = format!("000 00001 {} 01011101", "0".repeat(80));
        let bits = format!(
            "0000 000 1 {ptl} {} {} {} {} 0 {} {} {} 1 {} {} {} {} {}",
            ue(0),
            ue(1),
            ue(width),
            ue(height),
            ue(0),
            ue(0),
            ue(4),
            ue(1),
            ue(0),
            ue(0),
            ue(0),
            ue(1)
        );
        nal([0x42, 0x01], &bits)
    }

    fn synthetic_pps() -> Bytes {
        nal([0x44, 0x01], &format!("{} {} 0 0 000", ue(0), ue(0)))
    }

    fn idr() -> Bytes {
        // first slice, no_output_of_prior_pics 0, PPS 0, I slice.
        nal([0x26, 0x01], &format!("1 0 {} {}", ue(0), ue(2)))
    }

    fn trail(lsb: u8) -> Bytes {
        nal([0x02, 0x01], &format!("1 {} {} {lsb:08b}", ue(0), ue(1)))
    }

    #[test]
    fn synthetic_stream_format_change_and_parameter_set_flags() {
        let mut a = HevcAssembler::new();
        let mut units = Vec::new();
        let stream = [
            synthetic_vps(),
            synthetic_sps(320, 240),
            synthetic_pps(),
            idr(),
            trail(1),
            // SPS without VPS: has_sps stays false, the cached VPS is used.
            synthetic_sps(320, 240),
            synthetic_pps(),
            idr(),
            trail(1),
            synthetic_vps(),
            synthetic_sps(640, 480),
            synthetic_pps(),
            idr(),
            trail(1),
            trail(2),
        ];
        for n in stream {
            units.extend(a.push(n, None));
        }
        units.extend(a.flush());
        let stats = a.stats();
        assert_eq!(
            (
                stats.access_units,
                stats.bad_parameter_sets,
                stats.bad_slice_headers
            ),
            (7, 0, 0),
            "{stats:?}"
        );
        let flags: Vec<_> = units
            .iter()
            .map(|u| (u.keyframe, u.has_sps, u.has_pps, u.format_change, u.poc))
            .collect();
        assert_eq!(
            flags,
            [
                (true, true, true, false, Some(0)),
                (false, false, false, false, Some(1)),
                (true, false, true, false, Some(0)),
                (false, false, false, false, Some(1)),
                (true, true, true, true, Some(0)),
                (false, false, false, false, Some(1)),
                (false, false, false, false, Some(2)),
            ]
        );
        let sps = a.active_sps().unwrap();
        assert_eq!((sps.width, sps.height, sps.timing), (640, 480, None));
        assert_eq!(a.timing_hints().nominal_frame, None);
        // The keyframe without its VPS gets the cached one, first.
        let mut out = Vec::new();
        a.write_packet(&units[2], &mut out);
        let types: Vec<u8> = crate::annexb::split_nals(&out)
            .iter()
            .map(|n| NalHeader::parse(n).unwrap().nal_type)
            .collect();
        assert_eq!(types, [35, 32, 33, 34, 19]);
    }

    #[test]
    fn poc_follows_8_3_1() {
        let sps = Sps {
            log2_max_pic_order_cnt_lsb: 4,
            ..Sps::parse(&synthetic_sps(64, 64)).unwrap()
        };
        let sh = |nal_type, lsb| SliceHeader {
            nal_type,
            first_slice_segment_in_pic: true,
            no_output_of_prior_pics: false,
            pps_id: 0,
            dependent_slice_segment: false,
            slice_segment_address: 0,
            slice_type: 1,
            pic_output: true,
            pic_order_cnt_lsb: lsb,
        };
        use super::nal_type::*;
        let mut p = PocState::default();
        let mut poc = |t, lsb, tid| p.compute(&sps, &sh(t, lsb), tid);
        assert_eq!(poc(IDR_N_LP, 0, 0), 0);
        // Forwards past MaxPicOrderCntLsb (16).
        assert_eq!(poc(TRAIL_R, 6, 0), 6);
        assert_eq!(poc(TRAIL_R, 12, 0), 12);
        assert_eq!(poc(TRAIL_R, 2, 0), 18);
        // A sub-layer non-reference picture is not prevTid0Pic: had it
        // become the anchor (LSB 9), LSB 1 next would read as 33, not 17.
        assert_eq!(poc(TRAIL_N, 9, 0), 25);
        assert_eq!(poc(TRAIL_R, 1, 0), 17);
        // Nor is a picture of temporal id 1 (LSB 0 would read as 32).
        assert_eq!(poc(TRAIL_R, 9, 1), 25);
        assert_eq!(poc(TRAIL_R, 0, 0), 16);
        // A CRA that is not the first picture continues the count, and so
        // do its leading pictures (displayed before it), which are no
        // anchor: had the RADL one been (LSB 2), LSB 12 would read as 12.
        assert_eq!(poc(CRA, 4, 0), 20);
        assert_eq!(poc(RASL_R, 3, 0), 19);
        assert_eq!(poc(RADL_R, 2, 0), 18);
        assert_eq!(poc(TRAIL_R, 12, 0), 28);
        // After an end of sequence, a CRA starts afresh.
        p.end_of_sequence();
        let mut poc = |t, lsb, tid| p.compute(&sps, &sh(t, lsb), tid);
        assert_eq!(poc(CRA, 14, 0), 14);
        // A BLA resets; an IDR's LSB is 0.
        assert_eq!(poc(BLA_W_LP, 5, 0), 5);
        assert_eq!(poc(IDR_W_RADL, 0, 0), 0);
        // Backwards across the wrap.
        assert_eq!(poc(TRAIL_R, 15, 0), -1);
        // A stream that starts with a CRA: NoRaslOutputFlag 1, MSB 0.
        let mut p = PocState::default();
        assert_eq!(p.compute(&sps, &sh(CRA, 9), 0), 9);
    }

    /// The SPS of `hevc_nob.h265`.
    fn sps_nal_for_tests() -> Bytes {
        let (units, _) = fixture_units("hevc_nob.h265");
        units[0]
            .nals
            .iter()
            .find(|n| NalHeader::parse(n).unwrap().nal_type == nal_type::SPS)
            .unwrap()
            .clone()
    }

    #[test]
    fn hostile_parameter_sets_are_refused() {
        // SPS: vps 0, max_sub_layers_minus1 0, nesting 1, a zeroed PTL,
        // sps id 0, chroma 1, then a 65535 x 65535 picture.
        let big = format!("{}1{}", "0".repeat(16), "0".repeat(16));
        let bits = format!("0000 000 1 {} 1 010 {big} {big}", "0".repeat(96)).replace(' ', "");
        let mut nal = vec![0x42, 0x01];
        nal.extend(bits_to_bytes(&bits));
        let err = Sps::parse(&nal).unwrap_err().to_string();
        assert!(err.contains("picture size"), "{err}");
        // Out-of-range ids.
        let mut pps = vec![0x44, 0x01];
        pps.extend(bits_to_bytes(&format!("{}{}", ue(0), ue(16))));
        assert!(Pps::parse(&pps)
            .unwrap_err()
            .to_string()
            .contains("pps_seq_parameter_set_id"));
        // The wrong NAL type, a truncated VPS.
        assert!(Sps::parse(&[0x40, 0x01, 0xff]).is_err());
        assert!(Vps::parse(&[0x40, 0x01, 0x0c]).is_err());
        // Every truncation of the fixture's SPS is an error or a smaller
        // SPS, never a panic; the whole SPS parses.
        let sps = sps_nal_for_tests();
        for n in 0..sps.len() {
            let _ = Sps::parse(&sps[..n]);
        }
        assert!(Sps::parse(&sps).is_ok());
    }

    #[test]
    fn access_unit_is_bounded_and_the_assembler_resyncs() {
        let mut a = HevcAssembler::with_limits(16, 1 << 20);
        // TRAIL_R slices: first_slice_segment_in_pic_flag 1, then 0.
        let first = Bytes::from_static(&[0x02, 0x01, 0x80, 0x00]);
        let other = Bytes::from_static(&[0x02, 0x01, 0x00, 0x00]);
        assert!(a.push(first.clone(), None).is_none());
        for _ in 0..1000 {
            assert!(a.push(other.clone(), None).is_none());
            assert!(a.current.nals.len() <= 16);
        }
        assert_eq!(a.stats().oversize_access_units, 1);
        assert_eq!(a.stats().oversize_nals, 1001);
        assert!(a.push(first.clone(), None).is_none());
        assert!(a.push(other.clone(), None).is_none());
        let au = a.push(first, None).expect("picture completed");
        assert_eq!(au.nals.len(), 2);
        assert_eq!(a.stats().access_units, 1);
        // The byte bound: endless prefix SEI before any slice.
        let mut b = HevcAssembler::with_limits(1 << 20, 1000);
        let sei = Bytes::from(vec![0x4e, 0x01, 0x05, 0x01]);
        for _ in 0..1000 {
            assert!(b.push(sei.clone(), None).is_none());
            assert!(b.current.payload_bytes <= 1000);
        }
        assert!(b.stats().oversize_access_units >= 1);
        // Forbidden headers are dropped and counted.
        assert!(b.push(Bytes::from_static(&[0x80, 0x01]), None).is_none());
        assert!(b.push(Bytes::from_static(&[0x02]), None).is_none());
        assert_eq!(b.stats().orphan_nals, 2);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// Runs NAL units through an assembler and writes every access unit.
        fn run(nals: Vec<Vec<u8>>) {
            let mut a = HevcAssembler::with_limits(64, 1 << 16);
            let mut out = Vec::new();
            for nal in nals {
                let nal = Bytes::from(nal);
                let _ = Vps::parse(&nal);
                let _ = Sps::parse(&nal);
                let _ = Pps::parse(&nal);
                if let Some(au) = a.push(nal, Some(0)) {
                    a.write_packet(&au, &mut out);
                    let _ = a.timing_hints();
                    a.recycle(au);
                }
            }
            if let Some(au) = a.flush() {
                a.write_packet(&au, &mut out);
            }
        }

        /// A random NAL unit behind a plausible header, so the parsers
        /// past the header are reached.
        fn nal() -> impl Strategy<Value = Vec<u8>> {
            (
                prop_oneof![0u8..=23, 32u8..=40, Just(33u8), Just(34u8), 0u8..64],
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..48),
            )
                .prop_map(|(t, tid, body)| {
                    let mut v = vec![t << 1, (tid + 1) & 7];
                    v.extend(body);
                    v
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn random_nal_units_never_panic(
                nals in proptest::collection::vec(
                    prop_oneof![nal(), proptest::collection::vec(any::<u8>(), 0..16)],
                    0..64,
                )
            ) {
                run(nals);
            }

            /// The fixture's own NAL units, truncated and bit-flipped: the
            /// parsers get deep into real syntax before the damage.
            #[test]
            fn damaged_fixture_never_panics(
                cuts in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..40)
            ) {
                let data = fixture("hevc_b.h265");
                let nals = crate::annexb::split_nals(&data[..40_000]);
                let mut damaged: Vec<Vec<u8>> = nals.iter().map(|n| n.to_vec()).collect();
                for (which, at, flip) in cuts {
                    let i = which % damaged.len();
                    let n = &mut damaged[i];
                    if n.is_empty() {
                        continue;
                    }
                    let at = at % n.len();
                    if flip == 0 {
                        n.truncate(at);
                    } else {
                        n[at] ^= flip;
                    }
                }
                run(damaged);
            }
        }
    }
}
