//! Giving memory the process no longer uses back to the system.
//!
//! ingestd's heap has transients: a new stream holds its first second of
//! video until it knows whether audio comes with it, and a burst from every
//! device at once fills the media queues. glibc's allocator keeps the pages
//! freed after such a peak (it returns only the top of each arena), so RSS
//! would stay at the high-water mark of the last restart or network hiccup:
//! at 1,000 streams starting within seconds, 70 kB per stream. A thread asks
//! glibc every few seconds to release free pages anywhere in its arenas
//! (`malloc_trim`), which brings RSS back to what the streams hold.

use std::time::{Duration, Instant};

use tracing::debug;

/// How often free heap pages are returned.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the trimming thread (a no-op where the allocator is not glibc's).
pub fn start_trimming() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                trim();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the heap-trim thread; RSS keeps its peaks");
        }
    }
}

/// Returns free heap pages to the system now; true when some were.
pub fn trim() -> bool {
    let started = Instant::now();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas under their locks
    // and releases free pages with madvise; it touches no memory we own.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let released = false;
    debug!(
        released,
        took_us = started.elapsed().as_micros() as u64,
        "heap trimmed"
    );
    released
}
