//! Access-unit assembly (ITU-T H.264 7.4.1.2.3), sans-IO.
//!
//! NAL units go in one at a time; complete access units (one coded picture
//! with its parameter sets and SEI) come out. A new access unit starts at an
//! AUD, SPS, PPS, SEI or prefix NAL that follows a picture's slices, or at a
//! slice whose `first_mb_in_slice` is 0. The assembler keeps the parameter
//! sets, reads the first slice header of each picture and computes its
//! picture order count, so timing downstream can restore display order.
//!
//! The access unit being collected is bounded in NAL units and bytes: slices
//! that never start a new picture (or endless SEI) would otherwise pile up.
//! An access unit over the bound is dropped and counted, and NAL units are
//! discarded until the next access unit begins.

use bytes::Bytes;

use crate::h264::{self, nal_type, ParamSets, PocState, SliceHeader, Sps};

/// One coded picture and the non-VCL NAL units that precede it.
#[derive(Debug, Clone, Default)]
pub struct AccessUnit {
    /// NAL units without start codes, in stream order.
    pub nals: Vec<Bytes>,
    /// Contains an IDR slice: decoding can start here.
    pub keyframe: bool,
    pub has_sps: bool,
    pub has_pps: bool,
    pub has_aud: bool,
    /// Picture order count within its IDR period, when the slice header and
    /// its parameter sets could be read.
    pub poc: Option<i64>,
    /// The SPS this picture uses changed size or profile from the previous
    /// one: decoders must be reset (a discontinuity in HLS terms).
    pub format_change: bool,
    /// Device capture time in milliseconds, when the transport carries one.
    pub capture_ms: Option<i64>,
    /// Bytes of NAL payload (without start codes).
    pub payload_bytes: usize,
}

impl AccessUnit {
    /// The access unit as Annex-B bytes: each NAL unit after a 4-byte start
    /// code, in stream order (what a JT/T 1078 frame or a file holds).
    pub fn to_annexb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_bytes + 4 * self.nals.len());
        for nal in &self.nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// Splits a whole Annex-B buffer (a file, a test fixture) into its access
/// units, in decode order.
pub fn split_access_units(annexb: &[u8]) -> Vec<AccessUnit> {
    let mut asm = AccessUnitAssembler::new();
    let mut units: Vec<AccessUnit> = crate::annexb::split_nals(annexb)
        .into_iter()
        .filter_map(|nal| asm.push(nal, None))
        .collect();
    units.extend(asm.flush());
    units
}

/// Counters of what the assembler could not use.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssemblerStats {
    pub access_units: u64,
    pub bad_parameter_sets: u64,
    pub bad_slice_headers: u64,
    pub orphan_nals: u64,
    /// Access units dropped for exceeding the NAL-count or byte bound.
    pub oversize_access_units: u64,
    /// NAL units thrown away with them (and until the next access unit).
    pub oversize_nals: u64,
}

/// Default bound on the NAL units of one access unit: a 1080p picture cut
/// into one slice per macroblock row has 68; a hostile stream, no limit.
pub const DEFAULT_MAX_AU_NALS: usize = 1024;
/// Default bound on the payload bytes of one access unit.
pub const DEFAULT_MAX_AU_BYTES: usize = 16 * 1024 * 1024;

/// Groups NAL units into access units.
#[derive(Debug)]
pub struct AccessUnitAssembler {
    current: AccessUnit,
    current_has_vcl: bool,
    params: ParamSets,
    poc: PocState,
    active_sps: Option<Sps>,
    /// Latest SPS and PPS NAL units seen, re-inserted before keyframes
    /// that lack them (devices often send them once).
    last_sps_nal: Option<Bytes>,
    last_pps_nal: Option<Bytes>,
    pending_format_change: bool,
    /// Emptied NAL lists handed back by [`AccessUnitAssembler::recycle`],
    /// so a warm stream builds access units without allocating.
    spare_nals: Vec<Vec<Bytes>>,
    stats: AssemblerStats,
    max_nals: usize,
    max_bytes: usize,
    /// The access unit in progress outgrew the bounds: its remaining NAL
    /// units are discarded until the next access unit begins.
    discarding: bool,
}

impl Default for AccessUnitAssembler {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_AU_NALS, DEFAULT_MAX_AU_BYTES)
    }
}

/// Emptied NAL lists kept for reuse: the frames in flight at once (reorder
/// depth plus one) rarely exceed this.
const MAX_SPARE_NAL_LISTS: usize = 8;

impl AccessUnitAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler that drops access units of more than `max_nals` NAL
    /// units or `max_bytes` payload bytes.
    pub fn with_limits(max_nals: usize, max_bytes: usize) -> Self {
        AccessUnitAssembler {
            current: AccessUnit::default(),
            current_has_vcl: false,
            params: ParamSets::default(),
            poc: PocState::default(),
            active_sps: None,
            last_sps_nal: None,
            last_pps_nal: None,
            pending_format_change: false,
            spare_nals: Vec::new(),
            stats: AssemblerStats::default(),
            max_nals: max_nals.max(1),
            max_bytes: max_bytes.max(1),
            discarding: false,
        }
    }

    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// The active SPS (of the last completed picture).
    pub fn active_sps(&self) -> Option<&Sps> {
        self.active_sps.as_ref()
    }

    /// Cached SPS and PPS NAL units, for keyframes sent without them.
    pub fn cached_parameter_sets(&self) -> (Option<&Bytes>, Option<&Bytes>) {
        (self.last_sps_nal.as_ref(), self.last_pps_nal.as_ref())
    }

    /// Adds a NAL unit; returns the access unit it completed, if any.
    pub fn push(&mut self, nal: Bytes, capture_ms: Option<i64>) -> Option<AccessUnit> {
        let t = h264::nal_unit_type(&nal);
        // While discarding, the dropped picture counts as "had slices": the
        // next picture's first NAL unit ends the discard.
        let had_vcl = self.current_has_vcl || self.discarding;
        let begins_new = if h264::is_vcl(t) {
            had_vcl
                && SliceHeader::first_mb(&nal)
                    .map(|mb| mb == 0)
                    .unwrap_or(false)
        } else {
            had_vcl
                && matches!(
                    t,
                    nal_type::AUD | nal_type::SPS | nal_type::PPS | nal_type::SEI | 14..=18
                )
        };
        if self.discarding {
            if !begins_new {
                self.stats.oversize_nals += 1;
                return None;
            }
            self.discarding = false;
        }
        let done = if begins_new { self.take() } else { None };
        if self.current.nals.len() >= self.max_nals
            || self.current.payload_bytes + nal.len() > self.max_bytes
        {
            self.drop_oversize();
            return done;
        }
        self.add(nal, t, capture_ms);
        done
    }

    /// Throws the access unit in progress away (with the NAL unit that did
    /// not fit) and discards until the next one begins.
    fn drop_oversize(&mut self) {
        self.stats.oversize_access_units += 1;
        self.stats.oversize_nals += self.current.nals.len() as u64 + 1;
        tracing::debug!(
            nals = self.current.nals.len(),
            bytes = self.current.payload_bytes,
            "access unit over the bound dropped"
        );
        let next = AccessUnit {
            nals: self.spare_nals.pop().unwrap_or_default(),
            ..AccessUnit::default()
        };
        let dropped = std::mem::replace(&mut self.current, next);
        self.recycle_nals(dropped.nals);
        self.current_has_vcl = false;
        self.discarding = true;
    }

    /// Completes the access unit in progress (end of a frame or stream).
    pub fn flush(&mut self) -> Option<AccessUnit> {
        // A frame boundary from the transport ends any discard too.
        self.discarding = false;
        self.take()
    }

    /// Hands back an access unit that has been used up, so its NAL list
    /// can hold a later picture's NAL units (and its NAL units, slices of
    /// the framer's buffers, are released now rather than later).
    pub fn recycle(&mut self, au: AccessUnit) {
        self.recycle_nals(au.nals);
    }

    fn recycle_nals(&mut self, mut nals: Vec<Bytes>) {
        if self.spare_nals.len() < MAX_SPARE_NAL_LISTS && nals.capacity() > 0 {
            nals.clear();
            self.spare_nals.push(nals);
        }
    }

    fn add(&mut self, nal: Bytes, t: u8, capture_ms: Option<i64>) {
        if self.current.nals.is_empty() || self.current.capture_ms.is_none() {
            self.current.capture_ms = capture_ms;
        }
        match t {
            nal_type::SPS => match h264::Sps::parse(&nal) {
                Ok(sps) => {
                    self.current.has_sps = true;
                    cache_parameter_set(&mut self.last_sps_nal, &nal);
                    if let Some(old) = self.params.put_sps(sps.clone()) {
                        if old.changes_format(&sps) {
                            self.pending_format_change = true;
                        }
                    } else if let Some(active) = &self.active_sps {
                        if active.changes_format(&sps) {
                            self.pending_format_change = true;
                        }
                    }
                }
                Err(e) => {
                    self.stats.bad_parameter_sets += 1;
                    tracing::warn!(error = %e, "dropping unparsable SPS");
                    return;
                }
            },
            nal_type::PPS => match h264::Pps::parse(&nal) {
                Ok(pps) => {
                    self.current.has_pps = true;
                    cache_parameter_set(&mut self.last_pps_nal, &nal);
                    self.params.put_pps(pps);
                }
                Err(e) => {
                    self.stats.bad_parameter_sets += 1;
                    tracing::warn!(error = %e, "dropping unparsable PPS");
                    return;
                }
            },
            nal_type::AUD => self.current.has_aud = true,
            _ if h264::is_vcl(t) => {
                if !self.current_has_vcl {
                    self.current_has_vcl = true;
                    self.read_first_slice(&nal);
                }
                if t == nal_type::IDR {
                    self.current.keyframe = true;
                }
            }
            _ => {}
        }
        self.current.payload_bytes += nal.len();
        self.current.nals.push(nal);
    }

    fn read_first_slice(&mut self, nal: &[u8]) {
        let parsed = SliceHeader::parse(nal, &self.params).and_then(|sh| {
            let pps = self
                .params
                .pps(sh.pps_id)
                .expect("checked by SliceHeader::parse");
            let sps = self
                .params
                .sps(pps.sps_id)
                .expect("checked by SliceHeader::parse");
            let poc = self.poc.compute(sps, &sh)?;
            Ok((poc, sps.clone()))
        });
        match parsed {
            Ok((poc, sps)) => {
                self.current.poc = Some(poc);
                if let Some(active) = &self.active_sps {
                    if active.changes_format(&sps) {
                        self.pending_format_change = true;
                    }
                }
                if self.active_sps.as_ref() != Some(&sps) {
                    self.active_sps = Some(sps);
                }
                if self.pending_format_change {
                    self.current.format_change = true;
                    self.pending_format_change = false;
                }
            }
            Err(e) => {
                self.stats.bad_slice_headers += 1;
                tracing::debug!(error = %e, "slice header unreadable (no parameter sets yet?)");
            }
        }
    }

    fn take(&mut self) -> Option<AccessUnit> {
        if self.current.nals.is_empty() {
            return None;
        }
        let has_vcl = std::mem::replace(&mut self.current_has_vcl, false);
        let next = AccessUnit {
            nals: self.spare_nals.pop().unwrap_or_default(),
            ..AccessUnit::default()
        };
        let au = std::mem::replace(&mut self.current, next);
        if !has_vcl {
            // Parameter sets or SEI with no picture after them: keep the
            // parameter sets (already cached), drop the rest.
            self.stats.orphan_nals += au.nals.len() as u64;
            self.recycle_nals(au.nals);
            return None;
        }
        self.stats.access_units += 1;
        Some(au)
    }
}

/// Keeps a copy of a parameter set NAL unit, made only when it changed: a
/// slice of the framer's buffer would pin that whole buffer until the next
/// parameter set arrives, and devices repeat identical ones at every IDR.
fn cache_parameter_set(cache: &mut Option<Bytes>, nal: &Bytes) {
    if cache.as_deref() != Some(&nal[..]) {
        *cache = Some(Bytes::copy_from_slice(nal));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slices that never begin a new picture (`first_mb_in_slice` != 0)
    /// used to pile up in one access unit without bound.
    #[test]
    fn access_unit_is_bounded_and_the_assembler_resyncs() {
        let mut a = AccessUnitAssembler::with_limits(16, 1 << 20);
        // Non-IDR slice NAL (type 1); first byte of the header 0x80 is
        // ue(0) = first_mb 0, 0x40 is ue(1) = first_mb 1.
        let first = Bytes::from_static(&[0x41, 0x80, 0x00]);
        let other = Bytes::from_static(&[0x41, 0x40, 0x00]);
        assert!(a.push(first.clone(), None).is_none());
        for _ in 0..10_000 {
            assert!(a.push(other.clone(), None).is_none());
            assert!(a.current.nals.len() <= 16);
        }
        assert_eq!(a.stats().oversize_access_units, 1);
        assert_eq!(a.stats().oversize_nals, 10_001);
        // The next picture starts a clean access unit.
        assert!(a.push(first.clone(), None).is_none());
        assert!(a.push(other.clone(), None).is_none());
        let au = a.push(first, None).expect("picture completed");
        assert_eq!(au.nals.len(), 2);
        assert_eq!(a.stats().access_units, 1);
        // The byte bound too: endless SEI before any slice.
        let mut b = AccessUnitAssembler::with_limits(1 << 20, 1000);
        let sei = Bytes::from(vec![0x06; 100]);
        for _ in 0..100 {
            assert!(b.push(sei.clone(), None).is_none());
            assert!(b.current.payload_bytes <= 1000);
        }
        assert!(b.stats().oversize_access_units >= 1);
    }
}
