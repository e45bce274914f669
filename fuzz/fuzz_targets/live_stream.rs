//! Shared checks of the two LiveStream targets (a module, not a target).

use std::sync::Arc;

use streamcore::ll::{parse_file_name, LlFile, LowLatencyConfig};
use streamcore::playlist::{MediaPlaylist, PlaylistKind};
use streamcore::stream::PLAYLIST_NAME;
use streamcore::{Dur90k, LiveStream, MemoryStorage, StreamConfig, StreamEvent};

/// Short segments and a short window, so small inputs cut, slide and delete.
pub fn open() -> (LiveStream, MemoryStorage, PlaylistKind) {
    let window = Dur90k::from_secs(6);
    let cfg = StreamConfig {
        target_segment: Dur90k::from_secs(1),
        max_segment_secs: 2,
        live_window: Some(window),
        delete_grace: Dur90k::from_secs(1),
        clock: Arc::new(|| 1_700_000_000_000),
        // The low-latency rendition too: hostile input through the
        // fragmented-MP4 muxer and the part cutting.
        low_latency: Some(LowLatencyConfig::default()),
        ..StreamConfig::default()
    };
    let storage = MemoryStorage::new();
    let stream =
        LiveStream::with_storage("fuzz", Arc::new(storage.clone()), cfg).expect("stream opens");
    (stream, storage, PlaylistKind::Live { window })
}

/// Sequences of published segments run 0, 1, 2 ... without a gap.
pub fn check_events(events: &[StreamEvent], next: &mut u64) {
    for StreamEvent::SegmentPublished(s) in events {
        assert_eq!(s.sequence, *next, "segment sequence skipped");
        assert_eq!(s.file_name, format!("{}.ts", s.sequence));
        assert!(s.duration > Dur90k::ZERO, "empty segment {s:?}");
        assert!(s.keyframes >= 1 && s.frames >= s.keyframes);
        *next += 1;
    }
}

/// The stored playlist is the stream's own, readable, within its target
/// duration, and names only complete MPEG-TS segments that exist.
pub fn check_storage(stream: &LiveStream, storage: &MemoryStorage, kind: PlaylistKind) {
    let Some(text) = storage.get(PLAYLIST_NAME) else {
        assert_eq!(stream.playlist().segments().count(), 0);
        return;
    };
    let text = String::from_utf8(text).expect("playlist is UTF-8");
    assert_eq!(text, stream.playlist().render());
    let p = MediaPlaylist::parse(&text, kind).expect("own playlist parses");
    let target = p.target_duration() as i64;
    for s in p.segments() {
        assert!(
            (s.duration.0 + 45_000) / 90_000 <= target,
            "{s:?} over {target}"
        );
        let ts = storage
            .get(&s.uri)
            .unwrap_or_else(|| panic!("playlist names missing {}", s.uri));
        assert!(
            !ts.is_empty() && ts.len() % 188 == 0,
            "{} is not whole TS packets",
            s.uri
        );
        assert!(
            ts.chunks(188).all(|p| p[0] == 0x47),
            "{} lost TS sync",
            s.uri
        );
    }
    let st = stream.stats();
    assert!(st.frames_muxed <= st.access_units);
    check_low_latency(stream);
}

/// The low-latency playlist names only segments the MPEG-TS one has begun, and
/// every part and complete segment it names can be fetched.
fn check_low_latency(stream: &LiveStream) {
    let Some(store) = stream.low_latency() else {
        return;
    };
    let next = stream.playlist().next_sequence();
    store.read(|p| {
        let text = p.render(false);
        for line in text.lines() {
            let uri = match line.split_once("URI=\"") {
                Some((_, rest)) => rest.split('"').next().unwrap_or(""),
                None if !line.starts_with('#') && !line.is_empty() => line,
                None => continue,
            };
            match parse_file_name(uri) {
                Some(LlFile::Segment(n)) => {
                    assert!(n < next, "ll segment {n} beyond the TS playlist ({next})");
                    assert!(p.segment(n).is_some(), "{uri} listed but missing");
                }
                Some(LlFile::Part { msn, part }) => {
                    assert!(msn <= next, "part of segment {msn} beyond {next}");
                    if !line.starts_with("#EXT-X-PRELOAD-HINT") {
                        assert!(
                            matches!(p.part(msn, part), streamcore::ll::Fetch::Ready(_)),
                            "{uri} listed but missing"
                        );
                    }
                }
                Some(LlFile::Init(g)) => assert!(p.init(g).is_some(), "{uri} listed but missing"),
                other => panic!("unexpected URI {uri} ({other:?}) in {text}"),
            }
        }
    });
}
