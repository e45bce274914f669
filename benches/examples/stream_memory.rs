//! What one live stream keeps in memory between frames: N `LiveStream`s
//! fed the same 720p access units round-robin (as a media worker sees
//! them), heap still held and RSS grown, per stream.
//!
//! Usage: `stream_memory <file.h264> <streams> [seconds]`
//!
//! Each stream writes real segment files under a fresh directory in
//! `/dev/shm` (`FsStorage`, like ingestd with a local data dir). The heap
//! count is Rust's (this binary's global allocator); libavformat allocates
//! through libc directly, so RSS is printed beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use bytes::Bytes;
use streamcore::{LiveStream, StreamConfig};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to the system allocator with the caller's
// arguments; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, n, secs) = match &args[..] {
        [_, f, n] => (f, n.parse::<usize>()?, 12),
        [_, f, n, s] => (f, n.parse::<usize>()?, s.parse::<usize>()?),
        _ => anyhow::bail!("usage: stream_memory <file.h264> <streams> [seconds]"),
    };
    let aus: Vec<Bytes> = benches::access_units(&std::fs::read(file)?)
        .into_iter()
        .map(Bytes::from)
        .collect();
    let dir = tempfile_dir()?;
    let cfg = StreamConfig::default();
    let (heap0, rss0) = (LIVE.load(Relaxed), rss_bytes());
    let mut streams = (0..n)
        .map(|i| LiveStream::open(&format!("s{i}"), &dir.join(format!("s{i}")), cfg.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut t = 1_700_000_000_000i64;
    // Streams start at different points of the GOP, as devices do.
    for f in 0..secs * 25 {
        for (i, s) in streams.iter_mut().enumerate() {
            let au = &aus[(f + i * 7) % aus.len()];
            s.push_frame_bytes(au.clone(), Some(t + (i as i64 * 7)))?;
        }
        t += 40;
    }
    let (heap1, rss1) = (LIVE.load(Relaxed), rss_bytes());
    println!(
        "{n} streams, {secs} s: heap held {:.1} KiB per stream, RSS grown {:.1} KiB per stream",
        (heap1 - heap0) as f64 / n as f64 / 1024.0,
        (rss1 - rss0) as f64 / n as f64 / 1024.0
    );
    for s in &mut streams {
        s.finish(true)?;
    }
    drop(streams);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir =
        std::path::Path::new("/dev/shm").join(format!("stream_memory.{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
