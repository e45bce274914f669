//! Heap allocations per access unit in steady state, counted by a global
//! allocator that wraps the system one (this test binary only).
//!
//! Claim under test (issue 2, Benchmarks): once a stream is warm, pushing
//! frames through `LiveStream::push_frame` allocates nothing per access
//! unit; what remains is per segment (file name, segment writer, playlist
//! text, the published event) and is amortised over a segment's ~100
//! frames.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use streamcore::{LiveStream, MemoryStorage, StreamConfig, StreamEvent};

use crate::common;

struct Counting;

thread_local! {
    // Per thread, so the test harness's own threads do not count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches only a const-initialised
// thread-local `Cell`, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn push_frame_allocates_nothing_per_access_unit_in_steady_state() {
    // No B-frames: each frame leaves the timeline at the next push.
    steady_state("baseline.h264");
}

#[test]
fn push_frame_with_b_frames_allocates_nothing_per_access_unit() {
    // A B-pyramid (reorder depth 2): frames stay alive in the timeline for
    // two more pushes, pinning their framer buffers and NAL lists.
    steady_state("high_b3.h264");
}

/// Loops a fixture's access units (with capture times 40 ms apart) into a
/// stream and counts the allocations of 2,500 pushes after a warm-up.
fn steady_state(fixture: &str) {
    // 250 access units of 320x240 at 25 fps, 2 s GOP, each as Annex-B.
    let aus = common::access_units(&std::fs::read(common::fixture(fixture)).unwrap());
    assert_eq!(aus.len(), 250);
    let storage = MemoryStorage::discarding();
    let mut stream =
        LiveStream::with_storage("alloc", Arc::new(storage), StreamConfig::default()).unwrap();
    let t0 = 1_700_000_000_000i64;
    let mut i = 0usize;
    let mut push = |stream: &mut LiveStream| {
        let au = &aus[i % aus.len()];
        let events = stream.push_frame(au, Some(t0 + 40 * i as i64)).unwrap();
        i += 1;
        events
    };

    // Warm-up: 60 s, so the live window (24 s) has filled and slid, old
    // segments have been deleted after their grace, and every reused
    // buffer and pool has reached its working size (with B-frames the
    // framer's buffer pool takes a while to reach the three buffers that
    // frames held for reordering can pin at once).
    const WARM_UP: usize = 1500;
    for _ in 0..WARM_UP {
        push(&mut stream);
    }

    const N: usize = 2500; // 100 s: 25 segments of 4 s
    let mut quiet_pushes = 0u64;
    let mut quiet_allocs = 0u64;
    let mut segment_allocs = Vec::new();
    let before = allocs();
    for _ in 0..N {
        let a = allocs();
        let events = push(&mut stream);
        let used = allocs() - a;
        let published = events
            .iter()
            .filter(|e| matches!(e, StreamEvent::SegmentPublished(_)))
            .count();
        drop(events);
        if published == 0 {
            quiet_pushes += 1;
            quiet_allocs += used;
        } else {
            segment_allocs.push(used);
        }
    }
    let total = allocs() - before;

    assert_eq!(segment_allocs.len(), N / 100, "one segment per 4 s");
    // A push that publishes no segment allocates nothing at all: no
    // per-frame buffer, NAL list, timing or muxer allocation.
    assert_eq!(
        quiet_allocs, 0,
        "{quiet_allocs} allocations in {quiet_pushes} frames that published nothing"
    );
    // The pushes that close a segment pay for it: the next file name and
    // writer, the playlist entry and text, the event, deleting the segment
    // that left the window. Bounded per segment, not per frame.
    let worst = *segment_allocs.iter().max().unwrap();
    assert!(worst <= 40, "a segment boundary cost {worst} allocations");
    let per_au = total as f64 / N as f64;
    assert!(
        per_au < 0.5,
        "{total} allocations for {N} access units ({per_au:.3} per AU)"
    );
    eprintln!(
        "{total} allocations for {N} access units ({per_au:.3} per AU); per segment: {segment_allocs:?}"
    );
    // Everything pushed was muxed, but for the frames the timeline still
    // holds: the reorder depth's worth, plus the last one, which waits for
    // its successor to know its duration.
    let stats = stream.stats();
    let held = (WARM_UP + N) as u64 - stats.frames_muxed;
    assert!(held <= 8, "{held} frames not muxed");
    assert_eq!(stats.dropped_before_keyframe, 0);
}
