//! Property tests (proptest) for chunking invariance: the Annex-B framer and
//! a whole LiveStream give the same output whatever split points the input
//! arrives with and whether it is copied in or handed over as `Bytes`.
//! The fuzz targets `annexb_framer` and `live_stream_bytes`
//! check the same on arbitrary bytes; these run in every `cargo test`.

use crate::common;

use std::sync::{Arc, OnceLock};

use common::*;
use proptest::prelude::*;
use streamcore::annexb::{split_nals, AnnexBFramer, DEFAULT_MAX_NAL};
use streamcore::{LiveStream, MemoryStorage, StreamConfig};

/// Cuts `data` at the given points (taken modulo its length, any order).
fn chunks<'a>(data: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
    let mut p: Vec<usize> = points.iter().map(|&i| i % (data.len() + 1)).collect();
    p.push(0);
    p.push(data.len());
    p.sort_unstable();
    p.windows(2).map(|w| &data[w[0]..w[1]]).collect()
}

fn frame_chunked(parts: &[&[u8]]) -> (Vec<bytes::Bytes>, u64) {
    let (nals, skipped, _) = frame_mixed(AnnexBFramer::new(), parts, 0, !0);
    (nals, skipped)
}

/// Frames `parts`, chunk `i` given as `Bytes` (`push_shared`) when bit `i`
/// of `shared` is set, else copied (`push`), and pulled after it when bit
/// `i` of `pulls` is set. Returns the NAL units, the skipped bytes and the
/// overlong NAL units dropped (count, bytes).
fn frame_mixed(
    mut f: AnnexBFramer,
    parts: &[&[u8]],
    shared: u64,
    pulls: u64,
) -> (Vec<bytes::Bytes>, u64, (u64, u64)) {
    let mut out = Vec::new();
    for (i, c) in parts.iter().enumerate() {
        if shared >> (i % 64) & 1 == 1 {
            f.push_shared(bytes::Bytes::copy_from_slice(c));
        } else {
            f.push(c);
        }
        if pulls >> (i % 64) & 1 == 1 {
            out.extend(std::iter::from_fn(|| f.pull()));
        }
    }
    f.finish();
    out.extend(std::iter::from_fn(|| f.pull()));
    (
        out,
        f.skipped_bytes(),
        (f.oversize_nals(), f.oversize_bytes()),
    )
}

/// Bytes rich in the values start codes are made of.
fn start_code_soup() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![4 => Just(0u8), 2 => Just(1u8), 1 => Just(3u8), 2 => any::<u8>()],
        0..600,
    )
}

/// The first 48 KiB of the baseline fixture: SPS, PPS, an IDR and P slices.
fn baseline_head() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut d = std::fs::read(fixture("baseline.h264")).unwrap();
        d.truncate(48 * 1024);
        d
    })
}

/// All output files of a LiveStream fed `parts` through `push_bytes`, or
/// `push_bytes_shared` for chunk `i` when bit `i` of `shared` is set.
fn remux(parts: &[&[u8]], shared: u64) -> Vec<(String, Vec<u8>)> {
    let storage = MemoryStorage::new();
    let cfg = StreamConfig {
        clock: Arc::new(|| 1_700_000_000_000),
        ..Default::default()
    };
    let mut s = LiveStream::with_storage("p", Arc::new(storage.clone()), cfg).unwrap();
    for (i, c) in parts.iter().enumerate() {
        if shared >> (i % 64) & 1 == 1 {
            s.push_bytes_shared(bytes::Bytes::copy_from_slice(c))
                .unwrap();
        } else {
            s.push_bytes(c).unwrap();
        }
    }
    s.finish(true).unwrap();
    storage
        .names()
        .into_iter()
        .map(|n| (n.clone(), storage.get(&n).unwrap()))
        .collect()
}

fn whole_fixture_remux() -> &'static Vec<(String, Vec<u8>)> {
    static OUT: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    OUT.get_or_init(|| {
        let data = std::fs::read(fixture("baseline.h264")).unwrap();
        remux(&[&data], 0)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn annexb_framer_any_split_points_on_noise(
        data in start_code_soup(),
        points in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (got, skipped) = frame_chunked(&chunks(&data, &points));
        let (whole, whole_skipped) = frame_chunked(&[&data]);
        prop_assert_eq!(&got, &split_nals(&data));
        prop_assert_eq!(got, whole);
        prop_assert_eq!(skipped, whole_skipped);
    }

    /// Chunks given as `Bytes` and chunks copied in, pulled after or not,
    /// under a NAL bound small enough to cut: the same NAL units and counts
    /// as the same chunks all copied in; and without a bound, as the whole
    /// input at once.
    #[test]
    fn annexb_framer_shared_and_copied_chunks_agree(
        data in start_code_soup(),
        points in proptest::collection::vec(any::<usize>(), 0..12),
        shared in any::<u64>(),
        pulls in any::<u64>(),
        max_nal in prop_oneof![Just(DEFAULT_MAX_NAL), 1usize..40],
    ) {
        let framer = || AnnexBFramer::with_max_nal(max_nal);
        let parts = chunks(&data, &points);
        let got = frame_mixed(framer(), &parts, shared, pulls);
        prop_assert_eq!(&got, &frame_mixed(framer(), &parts, 0, pulls));
        if max_nal == DEFAULT_MAX_NAL {
            prop_assert_eq!(got, frame_mixed(framer(), &[&data], 0, 0));
        }
    }

    #[test]
    fn annexb_framer_any_split_points_on_a_fixture(
        points in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let data = baseline_head();
        let (got, _) = frame_chunked(&chunks(data, &points));
        let want = split_nals(data);
        prop_assert!(want.len() > 10);
        prop_assert_eq!(got, want);
    }
}

proptest! {
    // Each case remuxes a whole fixture (about 15 s of video).
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn live_stream_push_bytes_any_split_points(
        points in proptest::collection::vec(any::<usize>(), 1..24),
        shared in any::<u64>(),
    ) {
        let data = std::fs::read(fixture("baseline.h264")).unwrap();
        let got = remux(&chunks(&data, &points), shared);
        let want = whole_fixture_remux();
        prop_assert!(want.len() >= 3, "playlist and segments");
        prop_assert!(&got == want, "split points {:?} changed the output", points);
    }
}
