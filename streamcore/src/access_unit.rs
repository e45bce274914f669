//! Access-unit assembly, sans-IO, shared by the codecs.
//!
//! NAL units go in one at a time; complete access units (one coded picture
//! with its parameter sets and SEI) come out. [`Assembler`] does what does
//! not depend on the codec: it collects the access unit in progress, ends
//! it where the codec says the next one begins (only once it holds a
//! picture's slices), reuses emptied NAL lists, keeps the SPS of the last
//! picture, marks the first picture after a format change, and bounds and
//! counts. A [`NalSyntax`] is the codec's part: it reads NAL unit headers,
//! parameter sets and the first slice header of each picture (its picture
//! order count, so timing downstream can restore display order), and
//! writes an access unit as the muxer's packet. H.264's is
//! [`crate::h264::H264Syntax`] (ITU-T H.264 7.4.1.2.3), making
//! [`AccessUnitAssembler`]; H.265's is [`crate::h265::HevcSyntax`] (ITU-T
//! H.265 7.4.2.4.4), making [`crate::h265::HevcAssembler`]. Each is its
//! codec's [`VideoParser`].
//!
//! The access unit being collected is bounded in NAL units and bytes: slices
//! that never start a new picture (or endless SEI) would otherwise pile up.
//! An access unit over the bound is dropped and counted, and NAL units are
//! discarded until the next access unit begins.

use bytes::Bytes;

use crate::codec::{TimingHints, VideoCodec, VideoParser};
use crate::error::{Error, Result};
use crate::h264::H264Syntax;

/// One coded picture and the non-VCL NAL units that precede it.
#[derive(Debug, Clone, Default)]
pub struct AccessUnit {
    /// NAL units without start codes, in stream order.
    pub nals: Vec<Bytes>,
    /// Contains an IDR slice (H.265: an IRAP picture's): decoding can start
    /// here.
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
    /// The buffer the NAL units were cut from, when the caller handed over
    /// a whole frame (`LiveStream::push_frame_bytes`): if the access unit
    /// lies in it exactly as the muxer wants it, the packet is a slice of
    /// it ([`packet_in_place`]) instead of a copy.
    pub source: Option<Bytes>,
}

/// The Annex-B start code written before each NAL unit.
pub(crate) const START_CODE: [u8; 4] = [0, 0, 0, 1];

impl AccessUnit {
    /// The access unit as Annex-B bytes: each NAL unit after a 4-byte start
    /// code, in stream order (what a JT/T 1078 frame or a file holds).
    pub fn to_annexb(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_bytes + 4 * self.nals.len());
        for nal in &self.nals {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
        out
    }
}

/// `au` as the muxer's packet, sliced out of `au.source` without a copy,
/// when the bytes there are already what [`VideoParser::write_packet`]
/// would build: an access-unit delimiter first (`is_aud`), then the other
/// NAL units in order, each behind a start code, with nothing between them
/// but the start codes and trailing zero bytes, and no second delimiter.
/// The codec decides beforehand whether parameter sets must be inserted
/// (which rules this out). `None` when any of that does not hold.
pub(crate) fn packet_in_place(au: &AccessUnit, is_aud: impl Fn(&[u8]) -> bool) -> Option<Bytes> {
    let source = au.source.as_ref()?;
    let (first, rest) = au.nals.split_first()?;
    if !is_aud(first) || rest.iter().any(|n| is_aud(n)) {
        return None;
    }
    // Where a NAL unit lies in `source`, if it lies in it at all (plain
    // address arithmetic: nothing is read outside `source`).
    let base = source.as_ptr() as usize;
    let span = |nal: &Bytes| {
        let start = (nal.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(nal.len())?;
        (end <= source.len()).then_some((start, end))
    };
    let (first_start, mut end) = span(first)?;
    let packet_start = [4, 3]
        .into_iter()
        .filter_map(|n| first_start.checked_sub(n))
        .find(|&at| is_start_code(&source[at..first_start]))?;
    for nal in rest {
        let (start, nal_end) = span(nal)?;
        let gap = source.get(end..start)?;
        // Zero bytes, then 00 00 01: trailing zeros and one start code.
        if gap.len() < 3 || gap[gap.len() - 1] != 1 || gap[..gap.len() - 1].iter().any(|&b| b != 0)
        {
            return None;
        }
        end = nal_end;
    }
    Some(source.slice(packet_start..end))
}

fn is_start_code(b: &[u8]) -> bool {
    b == [0, 0, 1] || b == [0, 0, 0, 1]
}

/// Splits a whole H.264 Annex-B buffer (a file, a test fixture) into its
/// access units, in decode order.
pub fn split_access_units(annexb: &[u8]) -> Vec<AccessUnit> {
    AccessUnitAssembler::split(annexb)
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

/// A codec's part in access-unit assembly: how its NAL units delimit
/// access units, what its parameter sets and first slice headers say, and
/// how an access unit is written for the muxer. [`Assembler`] calls it and
/// does the rest.
pub trait NalSyntax: Default + std::fmt::Debug + Send {
    /// The codec, as [`VideoParser::codec`] reports it.
    const CODEC: VideoCodec;
    /// What is read of every NAL unit first (its type; for H.265 its layer
    /// and temporal id too).
    type Header: Copy;
    /// A sequence parameter set: the picture format and timing.
    type Sps: Clone + PartialEq + std::fmt::Debug + Send;

    /// The header of `nal`; `None` when the bytes cannot be a NAL unit of
    /// this codec (the assembler drops them, counted as orphans).
    fn header(nal: &[u8]) -> Option<Self::Header>;
    /// Whether `nal` begins the next access unit. Asked only once the
    /// access unit in progress holds a picture's slices.
    fn begins_access_unit(h: Self::Header, nal: &[u8]) -> bool;
    /// Reads `nal`, about to join `au`, into the parameter-set state, and
    /// sets the flags of `au` it decides (keyframe, parameter sets, AUD).
    fn read(&mut self, nal: &Bytes, h: Self::Header, au: &mut AccessUnit) -> NalRead<Self::Sps>;
    /// Reads the first slice of a picture: its picture order count and the
    /// SPS it uses.
    fn first_slice(&mut self, nal: &[u8], h: Self::Header) -> Result<(i64, &Self::Sps)>;
    /// The access unit in progress was completed or dropped: what the
    /// syntax keeps per access unit starts over.
    fn next_access_unit(&mut self) {}
    /// A decoder must be reset going from pictures of `old` to those of
    /// `new`.
    fn changes_format(old: &Self::Sps, new: &Self::Sps) -> bool;
    /// What `sps` says about timing.
    fn timing_hints(sps: &Self::Sps) -> TimingHints;
    /// As [`VideoParser::has_parameter_sets`].
    fn has_parameter_sets(&self) -> bool;
    /// As [`VideoParser::write_packet`].
    fn write_packet(&self, au: &AccessUnit, out: &mut Vec<u8>);
    /// As [`VideoParser::packet_in_place`].
    fn packet_in_place(&self, au: &AccessUnit) -> Option<Bytes>;
}

/// What [`NalSyntax::read`] made of a NAL unit.
#[derive(Debug)]
pub enum NalRead<S> {
    /// Joins the access unit; nothing more for the assembler to do.
    Carried,
    /// A slice of the picture: the access unit's first has its header read.
    Slice,
    /// A sequence parameter set, stored in place of `replaced` (the one of
    /// the same id before it): whether it changes the format is the
    /// assembler's to track.
    Sps { replaced: Option<S>, sps: S },
    /// A parameter set that could not be parsed: dropped and counted.
    Unusable { kind: &'static str, error: Error },
}

/// Groups NAL units into access units, with `C` reading them.
#[derive(Debug)]
pub struct Assembler<C: NalSyntax> {
    /// The access unit being collected. Crate-visible for the codec
    /// modules' unit tests, which check the bounds on it.
    pub(crate) current: AccessUnit,
    current_has_vcl: bool,
    syntax: C,
    /// The SPS of the last picture whose first slice header was read.
    active_sps: Option<C::Sps>,
    /// An SPS that changes the format has arrived: the next picture that
    /// is read is marked.
    pending_format_change: bool,
    /// Emptied NAL lists handed back by [`Assembler::recycle`], so a warm
    /// stream builds access units without allocating.
    spare_nals: Vec<Vec<Bytes>>,
    stats: AssemblerStats,
    max_nals: usize,
    max_bytes: usize,
    /// The access unit in progress outgrew the bounds: its remaining NAL
    /// units are discarded until the next access unit begins.
    discarding: bool,
}

/// The H.264 assembler.
pub type AccessUnitAssembler = Assembler<H264Syntax>;

impl<C: NalSyntax> Default for Assembler<C> {
    fn default() -> Self {
        Self::with_limits(DEFAULT_MAX_AU_NALS, DEFAULT_MAX_AU_BYTES)
    }
}

/// Emptied NAL lists kept for reuse: the frames in flight at once (reorder
/// depth plus one) rarely exceed this.
const MAX_SPARE_NAL_LISTS: usize = 8;

impl<C: NalSyntax> Assembler<C> {
    /// An assembler with the default bounds.
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler that drops access units of more than `max_nals` NAL
    /// units or `max_bytes` payload bytes.
    pub fn with_limits(max_nals: usize, max_bytes: usize) -> Self {
        Assembler {
            current: AccessUnit::default(),
            current_has_vcl: false,
            syntax: C::default(),
            active_sps: None,
            pending_format_change: false,
            spare_nals: Vec::new(),
            stats: AssemblerStats::default(),
            max_nals: max_nals.max(1),
            max_bytes: max_bytes.max(1),
            discarding: false,
        }
    }

    /// Splits a whole Annex-B buffer (a file, a test fixture) into its
    /// access units, in decode order.
    pub fn split(annexb: &[u8]) -> Vec<AccessUnit> {
        let mut asm = Self::new();
        let mut units: Vec<AccessUnit> = crate::annexb::split_nals(annexb)
            .into_iter()
            .filter_map(|nal| asm.push(nal, None))
            .collect();
        units.extend(asm.flush());
        units
    }

    /// What could not be used so far.
    pub fn stats(&self) -> AssemblerStats {
        self.stats
    }

    /// The active SPS (of the last picture whose slice header was read).
    pub fn active_sps(&self) -> Option<&C::Sps> {
        self.active_sps.as_ref()
    }

    /// The codec's state: its parameter sets.
    pub(crate) fn syntax(&self) -> &C {
        &self.syntax
    }

    /// Adds a NAL unit (without start code); returns the access unit it
    /// completed, if any.
    pub fn push(&mut self, nal: Bytes, capture_ms: Option<i64>) -> Option<AccessUnit> {
        let Some(h) = C::header(&nal) else {
            // Not a NAL unit of this codec (a forbidden header): a decoder
            // could only choke on it.
            self.stats.orphan_nals += 1;
            return None;
        };
        // While discarding, the dropped picture counts as "had slices": the
        // next picture's first NAL unit ends the discard.
        let had_vcl = self.current_has_vcl || self.discarding;
        let begins_new = had_vcl && C::begins_access_unit(h, &nal);
        if self.discarding {
            if !begins_new {
                self.stats.oversize_nals += 1;
                return None;
            }
            self.discarding = false;
        }
        let done = if begins_new { self.take() } else { None };
        if self.current.nals.len() >= self.max_nals
            || self.current.payload_bytes.saturating_add(nal.len()) > self.max_bytes
        {
            self.drop_oversize();
            return done;
        }
        self.add(nal, h, capture_ms);
        done
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
        // `au.source` goes with `au`: a spare list must not pin a frame.
        self.recycle_nals(au.nals);
    }

    fn recycle_nals(&mut self, mut nals: Vec<Bytes>) {
        if self.spare_nals.len() < MAX_SPARE_NAL_LISTS && nals.capacity() > 0 {
            nals.clear();
            self.spare_nals.push(nals);
        }
    }

    /// Replaces the access unit in progress with an empty one (on a spare
    /// NAL list) and returns it.
    fn replace_current(&mut self) -> AccessUnit {
        let next = AccessUnit {
            nals: self.spare_nals.pop().unwrap_or_default(),
            ..AccessUnit::default()
        };
        self.current_has_vcl = false;
        self.syntax.next_access_unit();
        std::mem::replace(&mut self.current, next)
    }

    /// Throws the access unit in progress away (with the NAL unit that did
    /// not fit) and discards until the next one begins.
    fn drop_oversize(&mut self) {
        self.stats.oversize_access_units += 1;
        self.stats.oversize_nals += self.current.nals.len() as u64 + 1;
        tracing::debug!(
            codec = %C::CODEC,
            nals = self.current.nals.len(),
            bytes = self.current.payload_bytes,
            "access unit over the bound dropped"
        );
        let dropped = self.replace_current();
        self.recycle_nals(dropped.nals);
        self.discarding = true;
    }

    fn add(&mut self, nal: Bytes, h: C::Header, capture_ms: Option<i64>) {
        if self.current.nals.is_empty() || self.current.capture_ms.is_none() {
            self.current.capture_ms = capture_ms;
        }
        match self.syntax.read(&nal, h, &mut self.current) {
            NalRead::Carried => {}
            NalRead::Slice => {
                if !self.current_has_vcl {
                    self.current_has_vcl = true;
                    self.read_first_slice(&nal, h);
                }
            }
            NalRead::Sps { replaced, sps } => {
                // Against the SPS of the same id, or else the active one: a
                // stream may switch SPS ids along with the format.
                if let Some(old) = replaced.as_ref().or(self.active_sps.as_ref()) {
                    if C::changes_format(old, &sps) {
                        self.pending_format_change = true;
                    }
                }
            }
            NalRead::Unusable { kind, error } => {
                self.stats.bad_parameter_sets += 1;
                tracing::warn!(codec = %C::CODEC, error = %error, "dropping unparsable {kind}");
                return;
            }
        }
        self.current.payload_bytes += nal.len();
        self.current.nals.push(nal);
    }

    fn read_first_slice(&mut self, nal: &[u8], h: C::Header) {
        match self.syntax.first_slice(nal, h) {
            Ok((poc, sps)) => {
                self.current.poc = Some(poc);
                if let Some(active) = &self.active_sps {
                    if C::changes_format(active, sps) {
                        self.pending_format_change = true;
                    }
                }
                // Cloned only when it changed.
                if self.active_sps.as_ref() != Some(sps) {
                    self.active_sps = Some(sps.clone());
                }
                if self.pending_format_change {
                    self.current.format_change = true;
                    self.pending_format_change = false;
                }
            }
            Err(e) => {
                self.stats.bad_slice_headers += 1;
                tracing::debug!(
                    codec = %C::CODEC,
                    error = %e,
                    "slice header unreadable (no parameter sets yet?)"
                );
            }
        }
    }

    fn take(&mut self) -> Option<AccessUnit> {
        if self.current.nals.is_empty() {
            return None;
        }
        let has_vcl = self.current_has_vcl;
        let au = self.replace_current();
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

impl<C: NalSyntax> VideoParser for Assembler<C> {
    fn codec(&self) -> VideoCodec {
        C::CODEC
    }

    fn push(&mut self, nal: Bytes, capture_ms: Option<i64>) -> Option<AccessUnit> {
        Assembler::push(self, nal, capture_ms)
    }

    fn flush(&mut self) -> Option<AccessUnit> {
        Assembler::flush(self)
    }

    fn recycle(&mut self, au: AccessUnit) {
        Assembler::recycle(self, au)
    }

    fn has_parameter_sets(&self) -> bool {
        self.syntax.has_parameter_sets()
    }

    fn timing_hints(&self) -> TimingHints {
        self.active_sps
            .as_ref()
            .map(C::timing_hints)
            .unwrap_or_default()
    }

    fn write_packet(&self, au: &AccessUnit, out: &mut Vec<u8>) {
        self.syntax.write_packet(au, out)
    }

    fn packet_in_place(&self, au: &AccessUnit) -> Option<Bytes> {
        self.syntax.packet_in_place(au)
    }

    fn stats(&self) -> AssemblerStats {
        self.stats
    }
}

/// Reads a parameter set NAL unit for a [`NalSyntax::read`]: when `parse`
/// accepts it, keeps its bytes in `cache` (the latest of its kind, for
/// keyframes sent without it) and returns what `store` makes of the set;
/// else it is unusable.
pub(crate) fn read_parameter_set<T, S>(
    nal: &Bytes,
    kind: &'static str,
    parse: fn(&[u8]) -> Result<T>,
    cache: &mut Option<Bytes>,
    store: impl FnOnce(T) -> NalRead<S>,
) -> NalRead<S> {
    match parse(nal) {
        Ok(set) => {
            cache_parameter_set(cache, nal);
            store(set)
        }
        Err(error) => NalRead::Unusable { kind, error },
    }
}

/// Keeps a copy of a parameter set NAL unit, made only when it changed: a
/// slice of the framer's buffer would pin that whole buffer until the next
/// parameter set arrives, and devices repeat identical ones at every
/// keyframe.
fn cache_parameter_set(cache: &mut Option<Bytes>, nal: &Bytes) {
    if cache.as_deref() != Some(&nal[..]) {
        *cache = Some(Bytes::copy_from_slice(nal));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annexb::FrameNals;

    /// The muxer gets a slice of the frame only when the frame's bytes are
    /// exactly the packet `write_packet` would build; anything else is
    /// copied.
    #[test]
    fn packet_in_place_only_for_a_delimited_contiguous_unit() {
        let frame = Bytes::from_static(&[
            0, 0, 0, 1, 0x09, 0xf0, // AUD
            0, 0, 1, 0x41, 0x9a, 0x01, 0, 0, // P slice, trailing zeros
            0, 0, 0, 1, 0x41, 0x9b, 0x02, // P slice
        ]);
        let nals: Vec<Bytes> = FrameNals::new(frame.clone()).collect();
        assert_eq!(nals.len(), 3);
        let au = |nals: Vec<Bytes>, source: Option<Bytes>| AccessUnit {
            nals,
            source,
            ..AccessUnit::default()
        };
        let syntax = H264Syntax::default();
        let whole = au(nals.clone(), Some(frame.clone()));
        let packet = syntax.packet_in_place(&whole).expect("in place");
        assert_eq!(packet.as_ptr(), frame.as_ptr(), "a slice, not a copy");
        assert_eq!(packet.len(), frame.len());

        // No frame to slice, or NAL units copied out of it.
        assert!(syntax.packet_in_place(&au(nals.clone(), None)).is_none());
        let copies = nals.iter().map(|n| Bytes::copy_from_slice(n)).collect();
        assert!(syntax
            .packet_in_place(&au(copies, Some(frame.clone())))
            .is_none());
        // A NAL unit left out: its bytes would be in the packet.
        let gap = vec![nals[0].clone(), nals[2].clone()];
        assert!(syntax
            .packet_in_place(&au(gap, Some(frame.clone())))
            .is_none());
        // No delimiter first.
        let headless = nals[1..].to_vec();
        assert!(syntax
            .packet_in_place(&au(headless, Some(frame.clone())))
            .is_none());
        // A keyframe without parameter sets gets the cached ones inserted.
        let mut key = au(nals.clone(), Some(frame.clone()));
        key.keyframe = true;
        assert!(syntax.packet_in_place(&key).is_none());
        key.has_sps = true;
        key.has_pps = true;
        assert!(syntax.packet_in_place(&key).is_some());
        // A second delimiter would be dropped by `write_packet`.
        let twice = Bytes::from_static(&[
            0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41, 0x9a,
        ]);
        let nals = FrameNals::new(twice.clone()).collect();
        assert!(syntax.packet_in_place(&au(nals, Some(twice))).is_none());
    }

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
