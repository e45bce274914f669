//! H.264 syntax this remuxer needs (ITU-T H.264 (08/2021) sections 7.3 and
//! 8.2.1): NAL unit headers, sequence and picture parameter sets, the first
//! fields of slice headers, and picture order count (POC) types 0 and 2;
//! and [`H264Syntax`], H.264's part in access-unit assembly (7.4.1.2.3) for
//! [`AccessUnitAssembler`], which also writes the muxer's packets.
//!
//! Parsing reads the RBSP through [`BitReader`], which drops emulation
//! prevention bytes on the fly, so no unescaped copy of a NAL is made.

use bytes::Bytes;

use crate::access_unit::{
    self, read_parameter_set, AccessUnit, AccessUnitAssembler, NalRead, NalSyntax, START_CODE,
};
use crate::codec::{TimingHints, VideoCodec};
use crate::error::{Error, Result};

/// NAL unit types used here (Table 7-1).
pub mod nal_type {
    pub const SLICE: u8 = 1;
    pub const SLICE_PARTITION_A: u8 = 2;
    pub const SLICE_PARTITION_C: u8 = 4;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
    pub const END_OF_SEQUENCE: u8 = 10;
    pub const END_OF_STREAM: u8 = 11;
    pub const FILLER: u8 = 12;
}

/// `nal_unit_type` of a NAL unit (its first byte's low five bits).
pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// `nal_ref_idc` of a NAL unit.
pub fn nal_ref_idc(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| (b >> 5) & 3)
}

/// True for NAL units that carry slice data of a picture.
pub fn is_vcl(nal_type: u8) -> bool {
    (nal_type::SLICE..=nal_type::IDR).contains(&nal_type)
}

/// Reads bits of an RBSP, skipping emulation prevention bytes (00 00 03).
pub struct BitReader<'a> {
    data: &'a [u8],
    byte: usize,
    bit: u8,
    zeros: u8,
}

impl<'a> BitReader<'a> {
    /// Reads `data` from its first byte (pass the NAL without its header
    /// byte to read the RBSP).
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            byte: 0,
            bit: 0,
            zeros: 0,
        }
    }

    fn eof() -> Error {
        Error::bitstream("RBSP", "ran past the end of the NAL unit")
    }

    pub fn read_bit(&mut self) -> Result<u32> {
        if self.bit == 0 {
            // At a byte boundary: skip an emulation prevention byte.
            if self.zeros >= 2 && self.data.get(self.byte) == Some(&3) {
                self.byte += 1;
                self.zeros = 0;
            }
            let b = *self.data.get(self.byte).ok_or_else(Self::eof)?;
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
        }
        let b = self.data[self.byte];
        let v = (b >> (7 - self.bit)) & 1;
        self.bit += 1;
        if self.bit == 8 {
            self.bit = 0;
            self.byte += 1;
        }
        Ok(v as u32)
    }

    pub fn read_bits(&mut self, n: u8) -> Result<u32> {
        debug_assert!(n <= 32);
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | self.read_bit()? as u64;
        }
        Ok(v as u32)
    }

    pub fn read_flag(&mut self) -> Result<bool> {
        Ok(self.read_bit()? == 1)
    }

    pub fn skip_bits(&mut self, n: u32) -> Result<()> {
        for _ in 0..n {
            self.read_bit()?;
        }
        Ok(())
    }

    /// ue(v): unsigned Exp-Golomb.
    pub fn read_ue(&mut self) -> Result<u32> {
        let mut zeros = 0u8;
        while self.read_bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(Error::bitstream("Exp-Golomb code", "longer than 32 bits"));
            }
        }
        let rest = self.read_bits(zeros)? as u64;
        Ok(((1u64 << zeros) - 1 + rest) as u32)
    }

    /// se(v): signed Exp-Golomb.
    pub fn read_se(&mut self) -> Result<i32> {
        let k = self.read_ue()? as i64;
        Ok(if k % 2 == 1 {
            ((k + 1) / 2) as i32
        } else {
            (-(k / 2)) as i32
        })
    }
}

/// The fields of a sequence parameter set (7.3.2.1.1) that matter here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sps {
    pub id: u32,
    pub profile_idc: u8,
    pub constraint_flags: u8,
    pub level_idc: u8,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub log2_max_frame_num: u32,
    pub pic_order_cnt_type: u32,
    pub log2_max_pic_order_cnt_lsb: u32,
    pub frame_mbs_only: bool,
    pub max_num_ref_frames: u32,
    /// Display width and height after cropping.
    pub width: u32,
    pub height: u32,
    /// VUI timing: `time_scale / (2 * num_units_in_tick)` frames per second.
    pub timing: Option<(u32, u32)>,
    /// VUI bitstream restriction: the reorder depth, when the encoder says.
    pub max_num_reorder_frames: Option<u32>,
}

/// Largest picture this remuxer accepts (8K is 33,177,600 pixels); a
/// hostile SPS claiming 65535x65535 macroblocks is refused.
const MAX_PIXELS: u64 = 8192 * 8192;

impl Sps {
    /// Parses an SPS NAL unit (header byte included).
    pub fn parse(nal: &[u8]) -> Result<Sps> {
        if nal_unit_type(nal) != nal_type::SPS || nal.len() < 4 {
            return Err(Error::bitstream("SPS", "not an SPS NAL unit"));
        }
        let profile_idc = nal[1];
        let constraint_flags = nal[2];
        let level_idc = nal[3];
        let mut r = BitReader::new(&nal[4..]);
        let id = r.read_ue()?;
        if id > 31 {
            return Err(Error::bitstream(
                "SPS",
                format!("seq_parameter_set_id {id} > 31"),
            ));
        }
        let mut chroma_format_idc = 1;
        let mut separate_colour_plane = false;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.read_ue()?;
            if chroma_format_idc > 3 {
                return Err(Error::bitstream("SPS", "chroma_format_idc > 3"));
            }
            if chroma_format_idc == 3 {
                separate_colour_plane = r.read_flag()?;
            }
            r.read_ue()?; // bit_depth_luma_minus8
            r.read_ue()?; // bit_depth_chroma_minus8
            r.read_flag()?; // qpprime_y_zero_transform_bypass_flag
            if r.read_flag()? {
                // seq_scaling_matrix_present_flag
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.read_flag()? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        // Range-check the coded value before adding 4: a corrupt ue(v) can
        // be as large as 2^32 - 2 and the sum would overflow.
        let log2_max_frame_num = r.read_ue()?.saturating_add(4);
        if log2_max_frame_num > 16 {
            return Err(Error::bitstream("SPS", "log2_max_frame_num > 16"));
        }
        let pic_order_cnt_type = r.read_ue()?;
        let mut log2_max_pic_order_cnt_lsb = 0;
        match pic_order_cnt_type {
            0 => {
                log2_max_pic_order_cnt_lsb = r.read_ue()?.saturating_add(4);
                if log2_max_pic_order_cnt_lsb > 16 {
                    return Err(Error::bitstream("SPS", "log2_max_pic_order_cnt_lsb > 16"));
                }
            }
            1 => {
                r.read_flag()?; // delta_pic_order_always_zero_flag
                r.read_se()?; // offset_for_non_ref_pic
                r.read_se()?; // offset_for_top_to_bottom_field
                let n = r.read_ue()?;
                if n > 255 {
                    return Err(Error::bitstream(
                        "SPS",
                        "num_ref_frames_in_pic_order_cnt_cycle > 255",
                    ));
                }
                for _ in 0..n {
                    r.read_se()?;
                }
            }
            2 => {}
            t => return Err(Error::bitstream("SPS", format!("pic_order_cnt_type {t}"))),
        }
        let max_num_ref_frames = r.read_ue()?;
        r.read_flag()?; // gaps_in_frame_num_value_allowed_flag
        let width_mbs = r.read_ue()? as u64 + 1;
        let height_map_units = r.read_ue()? as u64 + 1;
        let frame_mbs_only = r.read_flag()?;
        if !frame_mbs_only {
            r.read_flag()?; // mb_adaptive_frame_field_flag
        }
        r.read_flag()?; // direct_8x8_inference_flag
        let frame_height_mbs = height_map_units * if frame_mbs_only { 1 } else { 2 };
        let mut width = width_mbs * 16;
        let mut height = frame_height_mbs * 16;
        // Both can be near 2^37, so their product may not fit in a u64.
        if width.saturating_mul(height) > MAX_PIXELS {
            return Err(Error::bitstream(
                "SPS",
                format!("picture size {width}x{height} exceeds the 8192x8192 limit"),
            ));
        }
        if r.read_flag()? {
            // frame_cropping_flag
            let (crop_x, crop_y) = match (chroma_format_idc, separate_colour_plane) {
                (0, _) | (_, true) => (1, 2 - frame_mbs_only as u64),
                (1, _) => (2, 2 * (2 - frame_mbs_only as u64)),
                (2, _) => (2, 2 - frame_mbs_only as u64),
                _ => (1, 2 - frame_mbs_only as u64),
            };
            let left = r.read_ue()? as u64;
            let right = r.read_ue()? as u64;
            let top = r.read_ue()? as u64;
            let bottom = r.read_ue()? as u64;
            let cut_w = (left + right) * crop_x;
            let cut_h = (top + bottom) * crop_y;
            if cut_w >= width || cut_h >= height {
                return Err(Error::bitstream("SPS", "cropping larger than the picture"));
            }
            width -= cut_w;
            height -= cut_h;
        }
        let mut sps = Sps {
            id,
            profile_idc,
            constraint_flags,
            level_idc,
            chroma_format_idc,
            separate_colour_plane,
            log2_max_frame_num,
            pic_order_cnt_type,
            log2_max_pic_order_cnt_lsb,
            frame_mbs_only,
            max_num_ref_frames,
            width: width as u32,
            height: height as u32,
            timing: None,
            max_num_reorder_frames: None,
        };
        if r.read_flag()? {
            // A broken VUI should not make the whole SPS unusable: the
            // fields before it are what decoding needs.
            let _ = parse_vui(&mut r, &mut sps);
        }
        Ok(sps)
    }

    /// Nominal frame rate from VUI timing, as (num, den) frames per second.
    pub fn frame_rate(&self) -> Option<(u32, u32)> {
        let (units, scale) = self.timing?;
        if units == 0 || scale == 0 {
            return None;
        }
        Some((scale, units.checked_mul(2)?))
    }

    /// One frame's duration at the VUI frame rate, when that rate is
    /// plausible (1 to 240 frames per second); the timeline's default step.
    pub fn nominal_frame_duration(&self) -> Option<crate::time::Dur90k> {
        self.frame_rate()
            .filter(|&(n, d)| d > 0 && n / d <= 240 && n >= d)
            .and_then(|(n, d)| crate::time::Dur90k::from_frame_rate(n, d))
    }

    /// Frames by which display order may lag decode order. From the VUI when
    /// present; zero for profiles without B-slices; otherwise the DPB size
    /// bound from `max_num_ref_frames` (an upper bound: more delay, never a
    /// wrong order).
    pub fn reorder_depth(&self) -> u32 {
        if let Some(n) = self.max_num_reorder_frames {
            return n.min(16);
        }
        let intra_only = self.constraint_flags & 0x10 != 0
            && matches!(self.profile_idc, 44 | 100 | 110 | 122 | 244);
        match self.profile_idc {
            66 => 0,
            _ if intra_only => 0,
            _ => self.max_num_ref_frames.min(16),
        }
    }

    /// True when a new SPS changes what a decoder must be reset for.
    pub fn changes_format(&self, other: &Sps) -> bool {
        self.width != other.width
            || self.height != other.height
            || self.profile_idc != other.profile_idc
            || self.chroma_format_idc != other.chroma_format_idc
            || self.frame_mbs_only != other.frame_mbs_only
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<()> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r.read_se()?;
            // delta_scale is -128..=127 (7.4.2.1.1); a larger one is a
            // corrupt SPS, and would overflow the sum below.
            if !(-128..=127).contains(&delta) {
                return Err(Error::bitstream("SPS", "delta_scale outside -128..=127"));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

fn skip_hrd(r: &mut BitReader<'_>) -> Result<()> {
    let count = r.read_ue()? + 1;
    if count > 32 {
        return Err(Error::bitstream("HRD", "cpb_cnt_minus1 > 31"));
    }
    r.read_bits(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..count {
        r.read_ue()?;
        r.read_ue()?;
        r.read_flag()?;
    }
    r.read_bits(20)?; // four 5-bit lengths
    Ok(())
}

fn parse_vui(r: &mut BitReader<'_>, sps: &mut Sps) -> Result<()> {
    if r.read_flag()? {
        // aspect_ratio_info_present_flag
        if r.read_bits(8)? == 255 {
            r.read_bits(32)?; // sar_width, sar_height
        }
    }
    if r.read_flag()? {
        r.read_flag()?; // overscan_appropriate_flag
    }
    if r.read_flag()? {
        // video_signal_type_present_flag
        r.read_bits(4)?;
        if r.read_flag()? {
            r.read_bits(24)?;
        }
    }
    if r.read_flag()? {
        r.read_ue()?;
        r.read_ue()?;
    }
    if r.read_flag()? {
        // timing_info_present_flag
        let units = r.read_bits(32)?;
        let scale = r.read_bits(32)?;
        r.read_flag()?; // fixed_frame_rate_flag
        sps.timing = Some((units, scale));
    }
    let nal_hrd = r.read_flag()?;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.read_flag()?;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.read_flag()?; // low_delay_hrd_flag
    }
    r.read_flag()?; // pic_struct_present_flag
    if r.read_flag()? {
        // bitstream_restriction_flag
        r.read_flag()?;
        r.read_ue()?;
        r.read_ue()?;
        r.read_ue()?;
        r.read_ue()?;
        sps.max_num_reorder_frames = Some(r.read_ue()?);
        r.read_ue()?; // max_dec_frame_buffering
    }
    Ok(())
}

/// The fields of a picture parameter set (7.3.2.2) needed to read slice
/// headers up to the picture order count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pps {
    pub id: u32,
    pub sps_id: u32,
    pub bottom_field_pic_order_in_frame_present: bool,
}

impl Pps {
    pub fn parse(nal: &[u8]) -> Result<Pps> {
        if nal_unit_type(nal) != nal_type::PPS || nal.len() < 2 {
            return Err(Error::bitstream("PPS", "not a PPS NAL unit"));
        }
        let mut r = BitReader::new(&nal[1..]);
        let id = r.read_ue()?;
        let sps_id = r.read_ue()?;
        if id > 255 || sps_id > 31 {
            return Err(Error::bitstream(
                "PPS",
                format!("ids out of range ({id}, {sps_id})"),
            ));
        }
        r.read_flag()?; // entropy_coding_mode_flag
        let bottom_field_pic_order_in_frame_present = r.read_flag()?;
        Ok(Pps {
            id,
            sps_id,
            bottom_field_pic_order_in_frame_present,
        })
    }
}

/// The leading fields of a slice header (7.3.3) up to the POC syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceHeader {
    pub first_mb_in_slice: u32,
    pub slice_type: u32,
    pub pps_id: u32,
    pub frame_num: u32,
    pub field_pic: bool,
    pub bottom_field: bool,
    pub idr: bool,
    pub nal_ref_idc: u8,
    pub pic_order_cnt_lsb: u32,
    pub delta_pic_order_cnt_bottom: i32,
}

impl SliceHeader {
    /// Reads just `first_mb_in_slice`, which needs no parameter set.
    pub fn first_mb(nal: &[u8]) -> Result<u32> {
        BitReader::new(nal.get(1..).unwrap_or_default()).read_ue()
    }

    pub fn parse(nal: &[u8], params: &ParamSets) -> Result<SliceHeader> {
        let t = nal_unit_type(nal);
        let mut r = BitReader::new(nal.get(1..).unwrap_or_default());
        let first_mb_in_slice = r.read_ue()?;
        let slice_type = r.read_ue()?;
        if slice_type > 9 {
            return Err(Error::bitstream(
                "slice header",
                format!("slice_type {slice_type}"),
            ));
        }
        let pps_id = r.read_ue()?;
        let pps = params.pps(pps_id).ok_or_else(|| {
            Error::bitstream("slice header", format!("references missing PPS {pps_id}"))
        })?;
        let sps = params.sps(pps.sps_id).ok_or_else(|| {
            Error::bitstream(
                "slice header",
                format!("PPS {pps_id} references missing SPS {}", pps.sps_id),
            )
        })?;
        if sps.separate_colour_plane {
            r.read_bits(2)?;
        }
        let frame_num = r.read_bits(sps.log2_max_frame_num as u8)?;
        let (mut field_pic, mut bottom_field) = (false, false);
        if !sps.frame_mbs_only {
            field_pic = r.read_flag()?;
            if field_pic {
                bottom_field = r.read_flag()?;
            }
        }
        let idr = t == nal_type::IDR;
        if idr {
            r.read_ue()?; // idr_pic_id
        }
        let mut pic_order_cnt_lsb = 0;
        let mut delta_pic_order_cnt_bottom = 0;
        if sps.pic_order_cnt_type == 0 {
            pic_order_cnt_lsb = r.read_bits(sps.log2_max_pic_order_cnt_lsb as u8)?;
            if pps.bottom_field_pic_order_in_frame_present && !field_pic {
                delta_pic_order_cnt_bottom = r.read_se()?;
            }
        }
        Ok(SliceHeader {
            first_mb_in_slice,
            slice_type,
            pps_id,
            frame_num,
            field_pic,
            bottom_field,
            idr,
            nal_ref_idc: nal_ref_idc(nal),
            pic_order_cnt_lsb,
            delta_pic_order_cnt_bottom,
        })
    }
}

/// Active parameter sets, by id.
#[derive(Debug, Default, Clone)]
pub struct ParamSets {
    sps: Vec<Option<Sps>>,
    pps: Vec<Option<Pps>>,
}

impl ParamSets {
    pub fn sps(&self, id: u32) -> Option<&Sps> {
        self.sps.get(id as usize)?.as_ref()
    }

    pub fn pps(&self, id: u32) -> Option<&Pps> {
        self.pps.get(id as usize)?.as_ref()
    }

    /// Stores an SPS; returns the SPS it replaced under the same id.
    pub fn put_sps(&mut self, sps: Sps) -> Option<Sps> {
        let i = sps.id as usize;
        if self.sps.len() <= i {
            self.sps.resize(i + 1, None);
        }
        self.sps[i].replace(sps)
    }

    pub fn put_pps(&mut self, pps: Pps) {
        let i = pps.id as usize;
        if self.pps.len() <= i {
            self.pps.resize(i + 1, None);
        }
        self.pps[i] = Some(pps);
    }
}

/// Picture order count decoding (8.2.1) for POC types 0 and 2. Type 1 is
/// refused with a clear error; no encoder we have met in the field uses it.
#[derive(Debug, Default, Clone)]
pub struct PocState {
    prev_poc_msb: i64,
    prev_poc_lsb: i64,
    prev_frame_num: u32,
    prev_frame_num_offset: i64,
}

impl PocState {
    /// POC of a picture (of its top field for frames), in its IDR period.
    pub fn compute(&mut self, sps: &Sps, sh: &SliceHeader) -> Result<i64> {
        match sps.pic_order_cnt_type {
            0 => {
                if sh.idr {
                    self.prev_poc_msb = 0;
                    self.prev_poc_lsb = 0;
                }
                let max_lsb = 1i64 << sps.log2_max_pic_order_cnt_lsb;
                let lsb = sh.pic_order_cnt_lsb as i64;
                let msb = if lsb < self.prev_poc_lsb && self.prev_poc_lsb - lsb >= max_lsb / 2 {
                    self.prev_poc_msb + max_lsb
                } else if lsb > self.prev_poc_lsb && lsb - self.prev_poc_lsb > max_lsb / 2 {
                    self.prev_poc_msb - max_lsb
                } else {
                    self.prev_poc_msb
                };
                let top = msb + lsb;
                let poc = if sh.field_pic {
                    top
                } else {
                    top.min(top + sh.delta_pic_order_cnt_bottom as i64)
                };
                if sh.nal_ref_idc != 0 {
                    self.prev_poc_msb = msb;
                    self.prev_poc_lsb = lsb;
                }
                Ok(poc)
            }
            2 => {
                let max_frame_num = 1i64 << sps.log2_max_frame_num;
                let offset = if sh.idr {
                    0
                } else if self.prev_frame_num > sh.frame_num {
                    self.prev_frame_num_offset + max_frame_num
                } else {
                    self.prev_frame_num_offset
                };
                let poc = if sh.idr {
                    0
                } else if sh.nal_ref_idc == 0 {
                    2 * (offset + sh.frame_num as i64) - 1
                } else {
                    2 * (offset + sh.frame_num as i64)
                };
                self.prev_frame_num = sh.frame_num;
                self.prev_frame_num_offset = offset;
                Ok(poc)
            }
            t => Err(Error::Unsupported(format!(
                "pic_order_cnt_type {t}: only POC types 0 and 2 are supported"
            ))),
        }
    }
}

/// H.264's part in access-unit assembly (7.4.1.2.3): the parameter sets
/// by id, the POC state, and the latest SPS and PPS NAL units, re-inserted
/// before keyframes that lack them (devices often send them once).
#[derive(Debug, Default)]
pub struct H264Syntax {
    params: ParamSets,
    poc: PocState,
    last_sps_nal: Option<Bytes>,
    last_pps_nal: Option<Bytes>,
}

/// Our access-unit delimiter: primary_pic_type 7 (any slice type), then the
/// RBSP stop bit.
pub(crate) const H264_AUD: [u8; 6] = [0, 0, 0, 1, nal_type::AUD, 0xf0];

impl NalSyntax for H264Syntax {
    const CODEC: VideoCodec = VideoCodec::H264;
    /// `nal_unit_type`.
    type Header = u8;
    type Sps = Sps;

    fn header(nal: &[u8]) -> Option<u8> {
        Some(nal_unit_type(nal))
    }

    /// An AUD, SPS, PPS, SEI or prefix NAL unit (types 14 to 18), or a
    /// slice whose `first_mb_in_slice` is 0.
    fn begins_access_unit(t: u8, nal: &[u8]) -> bool {
        if is_vcl(t) {
            SliceHeader::first_mb(nal)
                .map(|mb| mb == 0)
                .unwrap_or(false)
        } else {
            matches!(
                t,
                nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI | 14..=18
            )
        }
    }

    // Per NAL unit: inlined into the assembler's loop, where the returned
    // `NalRead` folds away (as a call, callgrind counted ~30 more
    // instructions per access unit).
    #[inline]
    fn read(&mut self, nal: &Bytes, t: u8, au: &mut AccessUnit) -> NalRead<Sps> {
        match t {
            nal_type::SPS => {
                read_parameter_set(nal, "SPS", Sps::parse, &mut self.last_sps_nal, |sps| {
                    au.has_sps = true;
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
            _ if is_vcl(t) => {
                if t == nal_type::IDR {
                    au.keyframe = true;
                }
                NalRead::Slice
            }
            _ => NalRead::Carried,
        }
    }

    // Per picture, inlined for the same reason as `read`.
    #[inline]
    fn first_slice(&mut self, nal: &[u8], _: u8) -> Result<(i64, &Sps)> {
        let sh = SliceHeader::parse(nal, &self.params)?;
        let pps = self
            .params
            .pps(sh.pps_id)
            .expect("checked by SliceHeader::parse");
        let sps = self
            .params
            .sps(pps.sps_id)
            .expect("checked by SliceHeader::parse");
        Ok((self.poc.compute(sps, &sh)?, sps))
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
        self.last_sps_nal.is_some()
    }

    fn packet_in_place(&self, au: &AccessUnit) -> Option<Bytes> {
        if au.keyframe && !(au.has_sps && au.has_pps) {
            return None;
        }
        access_unit::packet_in_place(au, |nal| nal_unit_type(nal) == nal_type::AUD)
    }

    fn write_packet(&self, au: &AccessUnit, out: &mut Vec<u8>) {
        out.clear();
        // Our own AUD: libavformat would otherwise copy the packet to
        // insert one.
        out.extend_from_slice(&H264_AUD);
        let insert_params = au.keyframe && !(au.has_sps && au.has_pps);
        if insert_params {
            if let (Some(sps), Some(pps)) = (&self.last_sps_nal, &self.last_pps_nal) {
                for nal in [sps, pps] {
                    out.extend_from_slice(&START_CODE);
                    out.extend_from_slice(nal);
                }
            }
        }
        for nal in &au.nals {
            let t = nal_unit_type(nal);
            if t == nal_type::AUD || (insert_params && (t == nal_type::SPS || t == nal_type::PPS)) {
                continue;
            }
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
    }
}

impl AccessUnitAssembler {
    /// Cached SPS and PPS NAL units, for keyframes sent without them.
    pub fn cached_parameter_sets(&self) -> (Option<&Bytes>, Option<&Bytes>) {
        let syntax = self.syntax();
        (syntax.last_sps_nal.as_ref(), syntax.last_pps_nal.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_and_emulation_prevention() {
        // 1 -> 0, 010 -> 1, 011 -> 2, 00100 -> 3
        let mut r = BitReader::new(&[0b1010_0110, 0b0100_0000]);
        assert_eq!(r.read_ue().unwrap(), 0);
        assert_eq!(r.read_ue().unwrap(), 1);
        assert_eq!(r.read_ue().unwrap(), 2);
        assert_eq!(r.read_ue().unwrap(), 3);
        // 00 00 03 01: the 03 is skipped, so the third byte read is 01.
        let mut r = BitReader::new(&[0, 0, 3, 1]);
        assert_eq!(r.read_bits(24).unwrap(), 1);
        assert!(r.read_bit().is_err());
    }

    #[test]
    fn signed_exp_golomb() {
        // ue 1 -> +1, ue 2 -> -1
        let mut r = BitReader::new(&[0b0100_1100]);
        assert_eq!(r.read_se().unwrap(), 1);
        assert_eq!(r.read_se().unwrap(), -1);
    }

    /// Found by the `h264_sps` fuzz target: a scaling list whose
    /// delta_scale is near i32::MAX overflowed `last + delta + 256`.
    #[test]
    fn fuzz_regression_sps_scaling_delta_overflow() {
        // High profile, sps id 0, chroma 1, bit depths 0, no bypass,
        // seq_scaling_matrix_present, list 0 present, then delta_scale =
        // se(v) with code number 2^32 - 3 (+(2^31 - 1)).
        let mut bits = String::from("101011011");
        bits += &format!("{}1{}", "0".repeat(31), "1".repeat(30) + "0");
        while !bits.len().is_multiple_of(8) {
            bits.push('1');
        }
        let mut nal = vec![0x67, 100, 0, 40];
        for chunk in bits.as_bytes().chunks(8) {
            nal.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap());
        }
        let err = Sps::parse(&nal).unwrap_err().to_string();
        assert!(err.contains("delta_scale"), "{err}");
        // The fuzzer's own input.
        let crash = [
            0xe7, 0x2c, 0xe7, 0x38, 0x92, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01, 0xff, 0xff,
            0xff, 0x21, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x67,
        ];
        assert!(Sps::parse(&crash).is_err());
    }

    /// Found by the `h264_sps` fuzz target: log2_max_frame_num_minus4 of
    /// 2^32 - 2 overflowed the `+ 4` before the range check.
    #[test]
    fn fuzz_regression_sps_log2_max_frame_num_overflow() {
        // Baseline, sps id 0, log2_max_frame_num_minus4 = 2^32 - 2.
        let mut bits = String::from("1");
        bits += &format!("{}1{}", "0".repeat(31), "1".repeat(31));
        // The same in log2_max_pic_order_cnt_lsb_minus4 (poc type 0).
        let mut poc_bits = String::from("1"); // sps id 0
        poc_bits += "1"; // log2_max_frame_num_minus4 = 0
        poc_bits += "1"; // pic_order_cnt_type = 0
        poc_bits += &format!("{}1{}", "0".repeat(31), "1".repeat(31));
        for (bits, want) in [
            (bits, "log2_max_frame_num"),
            (poc_bits, "log2_max_pic_order_cnt_lsb"),
        ] {
            let mut bits = bits;
            while !bits.len().is_multiple_of(8) {
                bits.push('1');
            }
            let mut nal = vec![0x67, 66, 0, 30];
            for chunk in bits.as_bytes().chunks(8) {
                nal.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap());
            }
            let err = Sps::parse(&nal).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    /// Found in review while fuzzing: width and height in macroblocks are
    /// ue(v) values up to 2^32 - 1, and the pixel count overflowed a u64.
    #[test]
    fn fuzz_regression_sps_picture_size_overflow() {
        let mut bits = String::new();
        bits += "1"; // sps id 0
        bits += "1"; // log2_max_frame_num_minus4 = 0
        bits += "011"; // poc type 2
        bits += "010"; // max refs 1
        bits += "0"; // gaps
        let huge = format!("{}1{}", "0".repeat(31), "1".repeat(31)); // 2^32 - 2
        bits += &huge; // width in MBs - 1
        bits += &huge; // height in map units - 1
        bits += "0"; // frame_mbs_only = 0 doubles the height
        bits += "1"; // mb_adaptive_frame_field
        bits += "1"; // direct_8x8
        bits += "00"; // no crop, no vui
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let mut nal = vec![0x67, 77, 0, 30];
        for chunk in bits.as_bytes().chunks(8) {
            nal.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap());
        }
        let err = Sps::parse(&nal).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }

    #[test]
    fn huge_sps_is_refused() {
        // profile 66, level 30, id 0, log2_max_frame_num 4, poc type 2,
        // refs 1, gaps 0, width/height in MBs as large as ue(v) allows.
        let mut bits = String::new();
        bits += "1"; // sps id 0
        bits += "1"; // log2_max_frame_num_minus4 = 0
        bits += "011"; // poc type 2
        bits += "010"; // max refs 1
        bits += "0"; // gaps
        let big = format!("{}1{}", "0".repeat(12), "1".repeat(12)); // 8190
        bits += &big;
        bits += &big;
        bits += "1"; // frame_mbs_only
        bits += "1"; // direct_8x8
        bits += "0"; // no crop
        bits += "0"; // no vui
        while !bits.len().is_multiple_of(8) {
            bits.push('0');
        }
        let mut nal = vec![0x67, 66, 0, 30];
        for chunk in bits.as_bytes().chunks(8) {
            nal.push(u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 2).unwrap());
        }
        let err = Sps::parse(&nal).unwrap_err().to_string();
        assert!(err.contains("exceeds"), "{err}");
    }
}
