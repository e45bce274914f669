//! JT/T 1078 parser and reassembler against real device captures (third-party files, found
//! through `fixtures/captures.rs`; each test skips, saying so, when they are absent).

use bytes::BytesMut;
use ingestd::jt1078::*;
use proptest::prelude::*;

use crate::common;

/// The 24 s device capture, or `None` after reporting that `test` skipped it.
fn capture(test: &str) -> Option<Vec<u8>> {
    let path = common::capture("jt1078_capture_24s.bin", test)?;
    Some(std::fs::read(path).unwrap())
}

fn events_in_chunks(data: &[u8], cuts: &[usize]) -> (Vec<Jt1078Event>, ParserCounters) {
    let mut p = Jt1078Parser::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let c = c.clamp(start, data.len());
        p.push(&data[start..c]);
        start = c;
        while let Some(e) = p.pull() {
            out.push(e);
        }
    }
    (out, *p.counters())
}

fn packets(events: Vec<Jt1078Event>) -> Vec<Jt1078Packet> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Jt1078Event::Packet(p) => Some(p),
            Jt1078Event::Resync { .. } => None,
        })
        .collect()
}

fn frames(pkts: Vec<Jt1078Packet>) -> (Vec<Jt1078Frame>, ReassemblyCounters) {
    let mut r = Reassembler::default();
    let f = pkts.into_iter().filter_map(|p| r.push(p)).collect();
    (f, *r.counters())
}

#[test]
fn capture_24s_parses_into_documented_packets_and_frames() {
    let Some(data) = capture("capture_24s_parses_into_documented_packets_and_frames") else {
        return;
    };
    let (ev, c) = events_in_chunks(&data, &[]);
    assert_eq!(
        ev.len(),
        1634,
        "no resync events expected on a clean capture"
    );
    assert_eq!(c.packets, 1634);
    assert_eq!(c.bytes, data.len() as u64);
    assert_eq!(
        (c.resyncs, c.resync_skipped_bytes, c.parse_errors),
        (0, 0, 0)
    );
    let pkts = packets(ev);
    for p in &pkts {
        assert_eq!(p.sim.to_string(), "132570034500");
        assert_eq!(p.channel, 1);
        assert_eq!(p.payload_type, PT_H264);
    }
    let (fr, rc) = frames(pkts);
    // Counted independently from the capture: 22 I-frames (first..last runs),
    // 603 sub-packaged and 6 atomic P-frames.
    assert_eq!(rc.frames, 631);
    assert_eq!(rc.i_frames, 22);
    assert_eq!((rc.dropped_frames, rc.orphan_packets), (0, 0));
    assert_eq!(fr.len(), 631);
    let first = &fr[0];
    assert_eq!(first.data_type, DataType::IFrame);
    // A sub-packaged frame comes behind the muxer's AUD (written by the
    // reassembler); an I-frame of this device then starts with its SPS
    // (NAL type 7).
    let aud = streamcore::codec::VideoCodec::H264.access_unit_delimiter();
    assert_eq!(&first.data[..aud.len()], aud);
    assert_eq!(&first.data[aud.len()..aud.len() + 5], &[0, 0, 0, 1, 0x67]);
    for f in fr.iter().filter(|f| f.data_type == DataType::IFrame) {
        assert!(f
            .data
            .windows(5)
            .any(|w| w == [0, 0, 0, 1, 0x65] || w[1..] == [0, 0, 1, 0x65]));
    }
    let ts: Vec<u64> = fr.iter().map(|f| f.timestamp_ms.unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(ts[ts.len() - 1] - ts[0], 21_000);
    let multi = fr.iter().filter(|f| f.packets > 1).count();
    assert_eq!(multi, 625);
    assert!(fr
        .iter()
        .all(|f| f.data.starts_with(aud) == (f.packets > 1)));
    let body_total: usize = fr.iter().map(|f| f.data.len()).sum();
    assert_eq!(body_total, data.len() - 1634 * 30 + multi * aud.len());
}

#[test]
fn one_byte_at_a_time_equals_all_at_once() {
    let Some(data) = capture("one_byte_at_a_time_equals_all_at_once") else {
        return;
    };
    let all = events_in_chunks(&data, &[]);
    let cuts: Vec<usize> = (1..data.len()).collect();
    let bytewise = events_in_chunks(&data, &cuts);
    assert_eq!(all, bytewise);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn random_splits_equal_all_at_once(mut cuts in proptest::collection::vec(0usize..1_264_716, 0..400)) {
        let Some(data) = capture("random_splits_equal_all_at_once") else {
        return Ok(());
    };
        cuts.sort_unstable();
        let all = events_in_chunks(&data, &[]);
        prop_assert_eq!(all, events_in_chunks(&data, &cuts));
    }

    #[test]
    fn garbage_is_chunking_invariant(garbage in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..1634, mut cuts in proptest::collection::vec(0usize..20_000, 0..50)) {
        let Some(data) = capture("garbage_is_chunking_invariant") else {
        return Ok(());
    };
        let offsets = packet_offsets(&data);
        let mut input = data[..offsets[at]].to_vec();
        input.extend_from_slice(&garbage);
        input.extend_from_slice(&data[offsets[at]..offsets[at] + 20_000.min(data.len() - offsets[at])]);
        cuts.sort_unstable();
        let all = events_in_chunks(&input, &[]);
        let chunked = events_in_chunks(&input, &cuts);
        prop_assert_eq!(&all, &chunked);
        // Every input byte is either inside a packet or counted as skipped
        // (the input ends on a packet boundary, or in a pending partial packet).
        let c = all.1;
        prop_assert!(c.bytes + c.resync_skipped_bytes <= input.len() as u64);
    }
}

fn packet_offsets(data: &[u8]) -> Vec<usize> {
    let (ev, _) = events_in_chunks(data, &[]);
    let mut off = 0;
    let mut v = Vec::new();
    for p in packets(ev) {
        v.push(off);
        off += p.encoded_len();
    }
    v
}

#[test]
fn garbage_and_truncated_packet_mid_frame_recover() {
    let Some(data) = capture("garbage_and_truncated_packet_mid_frame_recover") else {
        return;
    };
    let offs = packet_offsets(&data);
    let reference = frames(packets(events_in_chunks(&data, &[]).0)).0;

    // Packet 100 onwards after garbage that contains a partial magic; packet
    // 300 is cut in half (a middle or last of some frame).
    let garbage = b"\x00\x0101c garbage 01cd\xff\xff 0";
    let mut input = data[..offs[100]].to_vec();
    input.extend_from_slice(garbage);
    input.extend_from_slice(&data[offs[100]..offs[300]]);
    let half = (offs[301] - offs[300]) / 2;
    input.extend_from_slice(&data[offs[300]..offs[300] + half]);
    input.extend_from_slice(&data[offs[301]..]);

    let (ev, c) = events_in_chunks(&input, &[]);
    // Everything is accounted for: good packets plus skipped bytes.
    assert_eq!(c.bytes + c.resync_skipped_bytes, input.len() as u64);
    assert!(c.resyncs >= 2, "{c:?}");
    assert!(c.resync_skipped_bytes >= garbage.len() as u64);
    let (got, rc) = frames(packets(ev.clone()));
    assert!(rc.dropped_frames + rc.orphan_packets >= 1, "{rc:?}");
    // All frames from before the damage and all after the damaged region come
    // out intact; at most the two frames touched by the damage are lost.
    assert!(
        got.len() >= reference.len() - 2,
        "{} vs {}",
        got.len(),
        reference.len()
    );
    let tail = 200;
    assert_eq!(got[got.len() - tail..], reference[reference.len() - tail..]);
    // Same under byte-by-byte feeding.
    let cuts: Vec<usize> = (1..input.len()).step_by(7).collect();
    assert_eq!(events_in_chunks(&input, &cuts), (ev, c));
}

/// Reads a CSV capture: `time,SIM,sequence,channel,label,sub-package label,hex`.
fn csv_rows(name: &str) -> Option<Vec<Vec<String>>> {
    let path = common::capture(name, "csv_captures_match_their_labels")?;
    let text = std::fs::read_to_string(path).expect("readable csv");
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().split(',').map(str::to_string).collect())
            .collect(),
    )
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn csv_captures_match_their_labels() {
    for name in ["jt1078_1.txt", "JT1078_2.txt"] {
        let Some(rows) = csv_rows(name) else {
            continue;
        };
        assert!(rows.len() >= 8, "{name}");
        let mut stream = BytesMut::new();
        for row in &rows {
            assert_eq!(row.len(), 7, "{name}: {row:?}");
            let raw = hex(&row[6]);
            let (ev, c) = events_in_chunks(&raw, &[]);
            assert_eq!(c.packets, 1, "{name}: one packet per row");
            let p = packets(ev).pop().unwrap();
            assert_eq!(p.encoded_len(), raw.len());
            assert_eq!(p.sim.to_string(), row[1]);
            assert_eq!(p.seq.to_string(), row[2]);
            assert_eq!(p.channel.to_string(), row[3]);
            let want_type = match row[4].as_str() {
                "视频I帧" => DataType::IFrame,
                "视频P帧" => DataType::PFrame,
                other => panic!("unknown label {other}"),
            };
            assert_eq!(p.data_type, want_type, "{name} seq {}", row[2]);
            let want_sub = match row[5].as_str() {
                "原子包_不可被拆分" => SubPackage::Atomic,
                "分包处理时的第一个包" => SubPackage::First,
                "分包处理时的中间包" => SubPackage::Middle,
                "分包处理时的最后一个包" => SubPackage::Last,
                other => panic!("unknown sub-package label {other}"),
            };
            assert_eq!(p.sub, want_sub, "{name} seq {}", row[2]);
            // Re-encoding is lossless.
            let mut re = BytesMut::new();
            p.encode(&mut re);
            assert_eq!(&re[..], &raw[..]);
            stream.extend_from_slice(&raw);
        }
        // The rows concatenated form a valid stream; the frames reassemble.
        let (ev, c) = events_in_chunks(&stream, &[]);
        assert_eq!(c.packets as usize, rows.len());
        let (fr, _) = frames(packets(ev));
        assert!(!fr.is_empty());
        let firsts = rows
            .iter()
            .filter(|r| r[5] == "分包处理时的第一个包" || r[5] == "原子包_不可被拆分")
            .count();
        assert!(fr.len() <= firsts);
        assert_eq!(fr[0].data_type, DataType::IFrame);
    }
}
