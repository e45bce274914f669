//! JT/T 1078 media packets: a sans-IO parser, a sub-package reassembler and
//! an encoder (used by the device simulator and the tests).
//!
//! Follows JT/T 1078-2016 section 5.5 (the RTP-like packet with the
//! `30 31 63 64` frame header) as `docs/jt1078.md` describes it:
//! video packets carry a timestamp and two interval fields, audio packets
//! have no interval fields, transparent data has no timestamp either.
//!
//! The parser owns no socket: [`Jt1078Parser::push`] appends bytes and
//! [`Jt1078Parser::pull`] yields events until `None`. Output is identical for
//! any chunking of the input because work happens only in `pull`, and a
//! resynchronisation is reported only once it completes (the next magic is
//! found). A bad header never ends the stream: the parser skips to the next
//! magic and counts the bytes it skipped.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use streamcore::codec::VideoCodec;
use tracing::debug;

/// The frame header every packet starts with ("01cd").
pub const MAGIC: [u8; 4] = *b"01cd";

/// Default upper bound on a packet body. Real devices send <= ~950 bytes; the
/// field is a u16, so without a bound one corrupt length could make the parser
/// swallow 64 KiB of good packets before noticing. 8 KiB is lenient enough for
/// every device seen while keeping a resync cheap.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024;

/// Default upper bound on a reassembled frame (an I-frame of a 1080p camera is
/// well below this).
pub const DEFAULT_MAX_FRAME: usize = 2 * 1024 * 1024;

/// Payload type of H.264 video.
pub const PT_H264: u8 = 98;
/// Payload type of H.265 video.
pub const PT_H265: u8 = 99;

/// High nibble of byte 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    IFrame,
    PFrame,
    BFrame,
    Audio,
    Transparent,
}

impl DataType {
    pub fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => DataType::IFrame,
            1 => DataType::PFrame,
            2 => DataType::BFrame,
            3 => DataType::Audio,
            4 => DataType::Transparent,
            _ => return None,
        })
    }
    pub fn nibble(self) -> u8 {
        match self {
            DataType::IFrame => 0,
            DataType::PFrame => 1,
            DataType::BFrame => 2,
            DataType::Audio => 3,
            DataType::Transparent => 4,
        }
    }
    pub fn is_video(self) -> bool {
        matches!(self, DataType::IFrame | DataType::PFrame | DataType::BFrame)
    }
    /// Length of the fixed header for this data type (up to and including the
    /// body length field).
    pub fn header_len(self) -> usize {
        match self {
            DataType::Audio => 26,
            DataType::Transparent => 18,
            _ => 30,
        }
    }
}

/// Low nibble of byte 15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubPackage {
    Atomic,
    First,
    Last,
    Middle,
}

impl SubPackage {
    pub fn from_nibble(n: u8) -> Option<Self> {
        Some(match n {
            0 => SubPackage::Atomic,
            1 => SubPackage::First,
            2 => SubPackage::Last,
            3 => SubPackage::Middle,
            _ => return None,
        })
    }
    pub fn nibble(self) -> u8 {
        match self {
            SubPackage::Atomic => 0,
            SubPackage::First => 1,
            SubPackage::Last => 2,
            SubPackage::Middle => 3,
        }
    }
}

/// A SIM number as carried in the packet (6 bytes BCD, 12 digits).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sim(pub [u8; 6]);

impl Sim {
    /// Parses up to 12 decimal digits (left-padded with zeros).
    pub fn parse(digits: &str) -> Option<Sim> {
        let mut b = [0u8; 6];
        crate::bcd::encode_into(digits, &mut b)?;
        Some(Sim(b))
    }
}

impl fmt::Display for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::bcd::to_string(&self.0))
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sim({self})")
    }
}

/// One parsed packet. `body` is a zero-copy slice of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jt1078Packet {
    /// Byte 4 as sent (V/P/X/CC), kept so re-encoding is lossless.
    pub vpxcc: u8,
    pub marker: bool,
    pub payload_type: u8,
    pub seq: u16,
    pub sim: Sim,
    pub channel: u8,
    pub data_type: DataType,
    pub sub: SubPackage,
    /// Absent for transparent data.
    pub timestamp_ms: Option<u64>,
    /// Video only; real devices often send 0 or junk.
    pub last_i_interval_ms: Option<u16>,
    /// Video only.
    pub last_frame_interval_ms: Option<u16>,
    pub body: Bytes,
}

impl Jt1078Packet {
    /// Encoded size of this packet.
    pub fn encoded_len(&self) -> usize {
        self.data_type.header_len() + self.body.len()
    }

    /// Appends the wire form of this packet to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_slice(&MAGIC);
        out.put_u8(self.vpxcc);
        out.put_u8(((self.marker as u8) << 7) | (self.payload_type & 0x7f));
        out.put_u16(self.seq);
        out.put_slice(&self.sim.0);
        out.put_u8(self.channel);
        out.put_u8((self.data_type.nibble() << 4) | self.sub.nibble());
        if self.data_type != DataType::Transparent {
            out.put_u64(self.timestamp_ms.unwrap_or(0));
        }
        if self.data_type.is_video() {
            out.put_u16(self.last_i_interval_ms.unwrap_or(0));
            out.put_u16(self.last_frame_interval_ms.unwrap_or(0));
        }
        out.put_u16(self.body.len() as u16);
        out.put_slice(&self.body);
    }
}

/// Why the parser had to skip bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Bytes where a packet should start are not the magic.
    NoMagic,
    /// Data type or sub-package nibble out of range.
    BadType,
    /// Body length above the configured maximum.
    BodyTooLong,
}

/// What [`Jt1078Parser::pull`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jt1078Event {
    Packet(Jt1078Packet),
    /// The parser skipped `bytes` bytes (reported once the next magic is found).
    Resync {
        bytes: u64,
        reason: SkipReason,
    },
}

/// Parser counters; all monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParserCounters {
    pub packets: u64,
    /// Bytes of well-formed packets (headers included).
    pub bytes: u64,
    pub video_packets: u64,
    pub audio_packets: u64,
    pub transparent_packets: u64,
    /// Completed resynchronisations.
    pub resyncs: u64,
    pub resync_skipped_bytes: u64,
    /// Headers rejected (bad type or length); each starts a resync.
    pub parse_errors: u64,
}

/// Sans-IO JT/T 1078 packet parser.
#[derive(Debug)]
pub struct Jt1078Parser {
    buf: BytesMut,
    max_body: usize,
    /// `Some` while scanning for the next magic: bytes skipped so far and why.
    resync: Option<(u64, SkipReason)>,
    counters: ParserCounters,
}

impl Default for Jt1078Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Jt1078Parser {
    pub fn new() -> Self {
        Self::with_max_body(DEFAULT_MAX_BODY)
    }

    /// `max_body` bounds the body length field (see [`DEFAULT_MAX_BODY`]).
    pub fn with_max_body(max_body: usize) -> Self {
        Jt1078Parser {
            buf: BytesMut::with_capacity(4096),
            max_body,
            resync: None,
            counters: ParserCounters::default(),
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes held but not yet returned (a partial packet or unsynced tail).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn counters(&self) -> &ParserCounters {
        &self.counters
    }

    /// A spare-capacity buffer for reading from a socket without an extra copy:
    /// read into the returned `BytesMut` and the bytes count as pushed.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    fn start_resync(&mut self, reason: SkipReason) {
        if reason != SkipReason::NoMagic {
            self.counters.parse_errors += 1;
        }
        // Skip one byte so the current (bad) magic is not found again.
        self.buf.advance(1);
        self.resync = Some((1, reason));
    }

    pub fn pull(&mut self) -> Option<Jt1078Event> {
        loop {
            if let Some((skipped, reason)) = self.resync {
                match memchr::memmem::find(&self.buf, &MAGIC) {
                    Some(i) => {
                        self.buf.advance(i);
                        let bytes = skipped + i as u64;
                        self.resync = None;
                        self.counters.resyncs += 1;
                        self.counters.resync_skipped_bytes += bytes;
                        debug!(bytes, ?reason, "jt1078 resync");
                        return Some(Jt1078Event::Resync { bytes, reason });
                    }
                    None => {
                        // Keep a possible partial magic at the end.
                        let n = self.buf.len().saturating_sub(MAGIC.len() - 1);
                        self.buf.advance(n);
                        self.resync = Some((skipped + n as u64, reason));
                        return None;
                    }
                }
            }
            let b = &self.buf[..];
            // The whole magic in one compare when present (this runs per
            // packet; a slice compare is a memcmp call).
            let magic_ok = match b.first_chunk::<4>() {
                Some(m) => u32::from_ne_bytes(*m) == u32::from_ne_bytes(MAGIC),
                None => b[..] == MAGIC[..b.len()],
            };
            if !magic_ok {
                self.start_resync(SkipReason::NoMagic);
                continue;
            }
            if b.len() < 16 {
                return None;
            }
            let (Some(data_type), Some(sub)) = (
                DataType::from_nibble(b[15] >> 4),
                SubPackage::from_nibble(b[15] & 0x0f),
            ) else {
                self.start_resync(SkipReason::BadType);
                continue;
            };
            let hlen = data_type.header_len();
            if b.len() < hlen {
                return None;
            }
            let body_len = u16::from_be_bytes([b[hlen - 2], b[hlen - 1]]) as usize;
            if body_len > self.max_body {
                self.start_resync(SkipReason::BodyTooLong);
                continue;
            }
            if b.len() < hlen + body_len {
                return None;
            }
            let mut sim = [0u8; 6];
            sim.copy_from_slice(&b[8..14]);
            let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
            let timestamp_ms = (data_type != DataType::Transparent)
                .then(|| u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")));
            let (last_i, last_f) = if data_type.is_video() {
                (Some(u16_at(24)), Some(u16_at(26)))
            } else {
                (None, None)
            };
            let (vpxcc, m_pt, seq, channel) = (b[4], b[5], u16_at(6), b[14]);
            let mut pkt = self.buf.split_to(hlen + body_len).freeze();
            pkt.advance(hlen);
            let c = &mut self.counters;
            c.packets += 1;
            c.bytes += (hlen + body_len) as u64;
            match data_type {
                DataType::Audio => c.audio_packets += 1,
                DataType::Transparent => c.transparent_packets += 1,
                _ => c.video_packets += 1,
            }
            return Some(Jt1078Event::Packet(Jt1078Packet {
                vpxcc,
                marker: m_pt & 0x80 != 0,
                payload_type: m_pt & 0x7f,
                seq,
                sim: Sim(sim),
                channel,
                data_type,
                sub,
                timestamp_ms,
                last_i_interval_ms: last_i,
                last_frame_interval_ms: last_f,
                body: pkt,
            }));
        }
    }
}

/// A complete frame: the concatenated bodies of one atomic packet or one
/// first..middle..last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jt1078Frame {
    pub sim: Sim,
    pub channel: u8,
    pub data_type: DataType,
    pub payload_type: u8,
    /// Timestamp of the frame's first packet.
    pub timestamp_ms: Option<u64>,
    /// Sequence number of the frame's first packet.
    pub first_seq: u16,
    pub packets: u32,
    pub data: Bytes,
}

/// Reassembly counters; all monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReassemblyCounters {
    pub frames: u64,
    pub i_frames: u64,
    pub audio_frames: u64,
    /// Frames lost: broken runs (missing first/middle, sequence gap, a new
    /// first before the last) plus oversize frames.
    pub dropped_frames: u64,
    /// The subset of `dropped_frames` that exceeded the size bound.
    pub oversize_frames: u64,
    /// Middle/last packets with no frame in progress, ignored.
    pub orphan_packets: u64,
    /// Packets of a SIM + channel beyond the first [`MAX_STREAMS`] this
    /// reassembler saw, ignored.
    pub refused_packets: u64,
}

/// Distinct SIM + channel pairs one reassembler (one connection) follows.
/// A device sends a few channels per connection; without a bound, a peer
/// inventing a SIM per `First` packet would hold up to a frame bound of
/// memory per invented key.
pub const MAX_STREAMS: usize = 8;

#[derive(Debug)]
struct Partial {
    data_type: DataType,
    payload_type: u8,
    timestamp_ms: Option<u64>,
    first_seq: u16,
    last_seq: u16,
    packets: u32,
    data: BytesMut,
}

/// Joins sub-packages into frames, one run in progress per SIM + channel +
/// (audio or not), since audio and video of a channel interleave.
#[derive(Debug)]
pub struct Reassembler {
    max_frame: usize,
    // foldhash rather than SipHash: these maps are hashed for every packet
    // (about 14 per 720p frame) and hold at most MAX_STREAMS keys each, so
    // SipHash's flooding resistance buys nothing here.
    partial: foldhash::HashMap<(Sim, u8, bool), Partial>,
    /// Last packet sequence seen per SIM + channel, of any data type: some
    /// devices share one counter between audio and video, others keep two.
    last_seq: foldhash::HashMap<(Sim, u8), u16>,
    counters: ReassemblyCounters,
    /// Size of the last multi-packet I-frame and other frame: a new frame's
    /// buffer is made that large (plus a margin) at once, rather than grown
    /// by doubling, which copies a keyframe several times.
    size_hint: [usize; 2],
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Reassembler {
    /// Whether packets of this SIM + channel are followed: it is one of the
    /// first [`MAX_STREAMS`] pairs seen (or there is room for it).
    pub fn admits(&self, sim: Sim, channel: u8) -> bool {
        self.last_seq.len() < MAX_STREAMS || self.last_seq.contains_key(&(sim, channel))
    }

    pub fn new(max_frame: usize) -> Self {
        Reassembler {
            max_frame,
            partial: Default::default(),
            last_seq: Default::default(),
            counters: ReassemblyCounters::default(),
            size_hint: [0; 2],
        }
    }

    pub fn counters(&self) -> &ReassemblyCounters {
        &self.counters
    }

    fn emit(&mut self, f: Jt1078Frame) -> Option<Jt1078Frame> {
        self.counters.frames += 1;
        match f.data_type {
            DataType::IFrame => self.counters.i_frames += 1,
            DataType::Audio => self.counters.audio_frames += 1,
            _ => {}
        }
        Some(f)
    }

    fn drop_partial(&mut self, key: &(Sim, u8, bool), why: &'static str) {
        if let Some(p) = self.partial.remove(key) {
            self.counters.dropped_frames += 1;
            debug!(sim = %key.0, channel = key.1, first_seq = p.first_seq, why, "jt1078 frame dropped");
        }
    }

    /// Feeds one packet; returns a frame when one completes.
    pub fn push(&mut self, p: Jt1078Packet) -> Option<Jt1078Frame> {
        if !self.admits(p.sim, p.channel) {
            self.counters.refused_packets += 1;
            return None;
        }
        let key = (p.sim, p.channel, p.data_type == DataType::Audio);
        let prev_any = self.last_seq.insert((p.sim, p.channel), p.seq);
        match p.sub {
            SubPackage::Atomic | SubPackage::First => {
                self.drop_partial(&key, "new frame before last sub-package");
                if p.body.len() > self.max_frame {
                    self.counters.dropped_frames += 1;
                    self.counters.oversize_frames += 1;
                    return None;
                }
                if p.sub == SubPackage::Atomic {
                    return self.emit(Jt1078Frame {
                        sim: p.sim,
                        channel: p.channel,
                        data_type: p.data_type,
                        payload_type: p.payload_type,
                        timestamp_ms: p.timestamp_ms,
                        first_seq: p.seq,
                        packets: 1,
                        data: p.body,
                    });
                }
                let hint = self.size_hint[(p.data_type == DataType::IFrame) as usize];
                let capacity = (p.body.len() * 8).max(hint + hint / 4).min(self.max_frame);
                let head = frame_head(p.data_type, p.payload_type, &p.body);
                let mut data = BytesMut::with_capacity(capacity + head.len());
                data.extend_from_slice(head);
                data.extend_from_slice(&p.body);
                self.partial.insert(
                    key,
                    Partial {
                        data_type: p.data_type,
                        payload_type: p.payload_type,
                        timestamp_ms: p.timestamp_ms,
                        first_seq: p.seq,
                        last_seq: p.seq,
                        packets: 1,
                        data,
                    },
                );
                None
            }
            SubPackage::Middle | SubPackage::Last => {
                let Some(part) = self.partial.get_mut(&key) else {
                    self.counters.orphan_packets += 1;
                    return None;
                };
                let in_sequence = p.seq == part.last_seq.wrapping_add(1)
                    || prev_any.map(|s| s.wrapping_add(1)) == Some(p.seq);
                if !in_sequence || p.data_type != part.data_type {
                    self.drop_partial(&key, "sequence gap inside frame");
                    self.counters.orphan_packets += 1;
                    return None;
                }
                if part.data.len() + p.body.len() > self.max_frame {
                    self.drop_partial(&key, "frame too large");
                    self.counters.oversize_frames += 1;
                    return None;
                }
                part.data.extend_from_slice(&p.body);
                part.last_seq = p.seq;
                part.packets += 1;
                if p.sub == SubPackage::Middle {
                    return None;
                }
                let part = self.partial.remove(&key).expect("present");
                self.size_hint[(part.data_type == DataType::IFrame) as usize] = part.data.len();
                self.emit(Jt1078Frame {
                    sim: p.sim,
                    channel: p.channel,
                    data_type: part.data_type,
                    payload_type: part.payload_type,
                    timestamp_ms: part.timestamp_ms,
                    first_seq: part.first_seq,
                    packets: part.packets,
                    data: part.data.freeze(),
                })
            }
        }
    }
}

/// What a reassembled frame's buffer begins with: an access-unit delimiter
/// when the frame is Annex-B video of a codec the muxer takes and has none.
/// Written here, in front of bytes about to be copied anyway, it lets the
/// muxer take the frame as it is (`VideoParser::packet_in_place`) rather
/// than copy it once more to put a delimiter in front. A one-packet frame
/// is not copied here, so it gets none (the muxer path adds it).
fn frame_head(data_type: DataType, payload_type: u8, body: &[u8]) -> &'static [u8] {
    let codec = match payload_type {
        _ if !data_type.is_video() => return &[],
        PT_H264 => VideoCodec::H264,
        PT_H265 => VideoCodec::H265,
        _ => return &[],
    };
    match codec.first_nal_is_delimiter(body) {
        Some(false) => codec.access_unit_delimiter(),
        // Not Annex-B (nothing to put a delimiter in front of), or it has one.
        None | Some(true) => &[],
    }
}

/// Settings for [`packetize`].
#[derive(Debug, Clone, Copy)]
pub struct PacketizeParams {
    pub sim: Sim,
    pub channel: u8,
    pub data_type: DataType,
    pub payload_type: u8,
    pub timestamp_ms: u64,
    pub last_i_interval_ms: u16,
    pub last_frame_interval_ms: u16,
    /// Largest body per packet (devices use 950).
    pub max_body: usize,
}

/// Splits one frame into packets (atomic, or first/middle/last) and appends
/// them to `out`. `seq` is the connection's packet counter, advanced per packet.
/// Returns the number of packets written.
pub fn packetize(p: &PacketizeParams, seq: &mut u16, frame: &[u8], out: &mut BytesMut) -> usize {
    let max_body = p.max_body.max(1);
    let chunks: Vec<&[u8]> = if frame.is_empty() {
        vec![frame]
    } else {
        frame.chunks(max_body).collect()
    };
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let sub = match (n, i) {
            (1, _) => SubPackage::Atomic,
            (_, 0) => SubPackage::First,
            (_, i) if i == n - 1 => SubPackage::Last,
            _ => SubPackage::Middle,
        };
        let pkt = Jt1078Packet {
            vpxcc: 0x81,
            marker: i == n - 1,
            payload_type: p.payload_type,
            seq: *seq,
            sim: p.sim,
            channel: p.channel,
            data_type: p.data_type,
            sub,
            timestamp_ms: (p.data_type != DataType::Transparent).then_some(p.timestamp_ms),
            last_i_interval_ms: p.data_type.is_video().then_some(p.last_i_interval_ms),
            last_frame_interval_ms: p.data_type.is_video().then_some(p.last_frame_interval_ms),
            body: Bytes::copy_from_slice(chunk),
        };
        pkt.encode(out);
        *seq = seq.wrapping_add(1);
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(dt: DataType, sub: SubPackage, seq: u16, body: &[u8]) -> Jt1078Packet {
        Jt1078Packet {
            vpxcc: 0x81,
            marker: false,
            payload_type: if dt == DataType::Audio { 6 } else { PT_H264 },
            seq,
            sim: Sim::parse("13800000001").unwrap(),
            channel: 2,
            data_type: dt,
            sub,
            timestamp_ms: (dt != DataType::Transparent).then_some(1000 + seq as u64),
            last_i_interval_ms: dt.is_video().then_some(0),
            last_frame_interval_ms: dt.is_video().then_some(40),
            body: Bytes::copy_from_slice(body),
        }
    }

    /// A multi-packet Annex-B video frame is reassembled behind the codec's
    /// access-unit delimiter (so the muxer can take it without a copy);
    /// a frame with its own, audio, and bytes that are not Annex-B are
    /// reassembled as they came.
    #[test]
    fn reassembled_video_frames_begin_with_a_delimiter() {
        use DataType::*;
        use SubPackage::*;
        let mut r = Reassembler::default();
        let slice = [0u8, 0, 0, 1, 0x41, 0x9a, 0x01];
        let mut frame = |dt, pt, first: &[u8], seq: u16| {
            let mut a = pkt(dt, First, seq, first);
            let mut b = pkt(dt, Last, seq + 1, &[0x55, 0x66]);
            (a.payload_type, b.payload_type) = (pt, pt);
            assert!(r.push(a).is_none());
            r.push(b).expect("complete").data
        };
        let h264 = frame(PFrame, PT_H264, &slice, 1);
        assert_eq!(
            &h264[..],
            [
                VideoCodec::H264.access_unit_delimiter(),
                &slice[..],
                &[0x55, 0x66]
            ]
            .concat()
        );
        let h265 = frame(IFrame, PT_H265, &slice, 3);
        assert!(h265.starts_with(VideoCodec::H265.access_unit_delimiter()));
        let own = [0u8, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x41];
        assert_eq!(
            &frame(PFrame, PT_H264, &own, 5)[..],
            [&own[..], &[0x55, 0x66]].concat()
        );
        assert_eq!(
            &frame(Audio, 6, &slice, 7)[..],
            [&slice[..], &[0x55, 0x66]].concat()
        );
        assert_eq!(&frame(PFrame, PT_H264, b"ab", 9)[..], b"ab\x55\x66");
        assert_eq!(
            &frame(PFrame, 200, &slice, 11)[..],
            [&slice[..], &[0x55, 0x66]].concat()
        );
    }

    fn parse_all(data: &[u8]) -> Vec<Jt1078Event> {
        let mut p = Jt1078Parser::new();
        p.push(data);
        std::iter::from_fn(|| p.pull()).collect()
    }

    #[test]
    fn encode_parse_roundtrip_all_types() {
        let pkts = vec![
            pkt(DataType::IFrame, SubPackage::First, 1, b"abc"),
            pkt(
                DataType::Audio,
                SubPackage::Atomic,
                2,
                &[0, 1, 0x52, 0, 9, 9],
            ),
            pkt(DataType::Transparent, SubPackage::Atomic, 3, b"xyz"),
            pkt(DataType::IFrame, SubPackage::Last, 4, b""),
        ];
        let mut wire = BytesMut::new();
        for p in &pkts {
            p.encode(&mut wire);
        }
        // Audio header is 26 bytes, transparent 18.
        assert_eq!(wire.len(), 33 + 32 + 21 + 30);
        let got: Vec<_> = parse_all(&wire)
            .into_iter()
            .map(|e| match e {
                Jt1078Event::Packet(p) => p,
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(got, pkts);
    }

    #[test]
    fn bad_type_and_length_resync() {
        let mut wire = BytesMut::new();
        pkt(DataType::PFrame, SubPackage::Atomic, 1, b"one").encode(&mut wire);
        let bad_start = wire.len();
        pkt(DataType::PFrame, SubPackage::Atomic, 2, b"two").encode(&mut wire);
        wire[bad_start + 15] = 0x70; // data type 7
        let long_start = wire.len();
        pkt(DataType::PFrame, SubPackage::Atomic, 3, b"three").encode(&mut wire);
        wire[long_start + 28] = 0xff; // body length 0xff05
        pkt(DataType::PFrame, SubPackage::Atomic, 4, b"four").encode(&mut wire);
        let ev = parse_all(&wire);
        let mut p = Jt1078Parser::new();
        p.push(&wire);
        while p.pull().is_some() {}
        assert_eq!(ev.len(), 4, "{ev:?}");
        assert!(matches!(&ev[0], Jt1078Event::Packet(p) if p.seq == 1));
        assert_eq!(
            ev[1],
            Jt1078Event::Resync {
                bytes: 33,
                reason: SkipReason::BadType
            }
        );
        assert_eq!(
            ev[2],
            Jt1078Event::Resync {
                bytes: 35,
                reason: SkipReason::BodyTooLong
            }
        );
        assert!(matches!(&ev[3], Jt1078Event::Packet(p) if p.seq == 4));
        assert_eq!(p.counters().parse_errors, 2);
        assert_eq!(p.counters().resync_skipped_bytes, 68);
    }

    #[test]
    fn reassembly_rules() {
        let mut r = Reassembler::new(10);
        use DataType::*;
        use SubPackage::*;
        // Good run.
        assert!(r.push(pkt(IFrame, First, 1, b"ab")).is_none());
        assert!(r.push(pkt(IFrame, Middle, 2, b"cd")).is_none());
        let f = r.push(pkt(IFrame, Last, 3, b"e")).unwrap();
        assert_eq!(&f.data[..], b"abcde");
        assert_eq!((f.packets, f.first_seq, f.timestamp_ms), (3, 1, Some(1001)));
        // Middle without first: orphan.
        assert!(r.push(pkt(PFrame, Middle, 4, b"x")).is_none());
        assert_eq!(r.counters().orphan_packets, 1);
        // New first before last: the old run is dropped.
        assert!(r.push(pkt(PFrame, First, 5, b"x")).is_none());
        assert!(r.push(pkt(PFrame, First, 6, b"y")).is_none());
        assert_eq!(r.counters().dropped_frames, 1);
        // Sequence gap inside a run.
        assert!(r.push(pkt(PFrame, Last, 8, b"z")).is_none());
        assert_eq!(r.counters().dropped_frames, 2);
        // Oversize.
        assert!(r.push(pkt(PFrame, First, 9, b"123456")).is_none());
        assert!(r.push(pkt(PFrame, Last, 10, b"789012")).is_none());
        assert_eq!(r.counters().oversize_frames, 1);
        assert_eq!(r.counters().dropped_frames, 3);
        // Audio interleaved with a video run does not break it.
        assert!(r.push(pkt(PFrame, First, 11, b"v1")).is_none());
        let a = r.push(pkt(Audio, Atomic, 12, b"aa")).unwrap();
        assert_eq!(a.data_type, Audio);
        // Audio and video share the sequence counter here (12 was audio).
        let v = r.push(pkt(PFrame, Last, 13, b"v2")).unwrap();
        assert_eq!(&v.data[..], b"v1v2");
        // Separate counters: audio 100, then video continues at 15.
        assert!(r.push(pkt(PFrame, First, 14, b"w1")).is_none());
        assert!(r.push(pkt(Audio, Atomic, 100, b"aa")).is_some());
        assert!(r.push(pkt(PFrame, Last, 15, b"w2")).is_some());
        assert_eq!(r.counters().frames, 5);
        assert_eq!(r.counters().dropped_frames, 3);
    }

    /// One connection inventing a SIM per `First` packet: only the first
    /// `MAX_STREAMS` keys hold partial frames, the rest are refused and
    /// counted, and the admitted ones still complete.
    #[test]
    fn partial_frames_are_capped_per_connection() {
        let mut r = Reassembler::new(1024);
        let mut seq = 0;
        let mut with_sim = |sim: u64, sub: SubPackage| {
            let mut p = pkt(DataType::PFrame, sub, seq, &[0x41; 100]);
            seq += 1;
            p.sim = Sim::parse(&format!("{:012}", 13_900_000_000 + sim)).unwrap();
            p
        };
        for sim in 0..1000 {
            assert!(r.push(with_sim(sim, SubPackage::First)).is_none());
        }
        assert_eq!(r.partial.len(), MAX_STREAMS);
        assert_eq!(r.last_seq.len(), MAX_STREAMS);
        assert_eq!(r.counters().refused_packets, 1000 - MAX_STREAMS as u64);
        assert_eq!(r.counters().dropped_frames, 0);
        // An admitted key completes its frame (the refused ones never
        // touched its sequence).
        let mut last = with_sim(7, SubPackage::Last);
        last.seq = 8;
        // Sequence 7 was key 7's First packet.
        assert_eq!(r.push(last).map(|f| f.data.len()), Some(200));
        assert!(r.push(with_sim(999, SubPackage::Atomic)).is_none());
        assert_eq!(r.counters().refused_packets, 1001 - MAX_STREAMS as u64);
        assert!(r.admits(Sim::parse("013900000000").unwrap(), 2));
        assert!(!r.admits(Sim::parse("013900000999").unwrap(), 2));
    }

    #[test]
    fn packetize_roundtrip() {
        let frame: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let params = PacketizeParams {
            sim: Sim::parse("012345678999").unwrap(),
            channel: 1,
            data_type: DataType::IFrame,
            payload_type: PT_H264,
            timestamp_ms: 42,
            last_i_interval_ms: 0,
            last_frame_interval_ms: 40,
            max_body: 950,
        };
        let mut out = BytesMut::new();
        let mut seq = 65535;
        assert_eq!(packetize(&params, &mut seq, &frame, &mut out), 3);
        assert_eq!(seq, 2);
        let mut r = Reassembler::default();
        let frames: Vec<_> = parse_all(&out)
            .into_iter()
            .filter_map(|e| match e {
                Jt1078Event::Packet(p) => r.push(p),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0].data[..], &frame[..]);
        assert_eq!(frames[0].sim.to_string(), "012345678999");
    }
}
