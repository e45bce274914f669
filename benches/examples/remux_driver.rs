//! A fixed amount of streamcore work for instruction-count profiling
//! (`valgrind --tool=callgrind`), where criterion's timing loop would make
//! the count depend on the machine's speed.
//!
//! Usage: `remux_driver <bytes|frames> <file.h264> <iterations>`
//! - `bytes`: `LiveStream::push_bytes` of the whole file, then `finish`
//!   (the criterion `whole_stream` group).
//! - `frames`: the file's access units one `push_frame` at a time with
//!   capture times 40 ms apart.
//! - `shared`: the same through `push_frame_bytes` (NAL units sliced from
//!   the frame's `Bytes`, no copy into the framer), as ingestd feeds them.
//!
//! Output goes to a discarding `MemoryStorage`. Compare two iteration
//! counts to subtract start-up: (I(n2) - I(n1)) / (n2 - n1) per pass.

use std::sync::Arc;

use streamcore::{LiveStream, MemoryStorage, StreamConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, mode, file, iterations] = &args[..] else {
        anyhow::bail!("usage: remux_driver <bytes|frames|shared> <file.h264> <iterations>");
    };
    let data = std::fs::read(file)?;
    let iterations: usize = iterations.parse()?;
    let aus = benches::access_units(&data);
    let shared: Vec<bytes::Bytes> = aus.iter().map(|a| bytes::Bytes::from(a.clone())).collect();
    let mut segments = 0;
    let mut stream = LiveStream::with_storage(
        "driver",
        Arc::new(MemoryStorage::discarding()),
        StreamConfig::default(),
    )?;
    let mut t = 1_700_000_000_000i64;
    for _ in 0..iterations {
        match mode.as_str() {
            "bytes" => {
                let mut s = LiveStream::with_storage(
                    "driver",
                    Arc::new(MemoryStorage::discarding()),
                    StreamConfig::default(),
                )?;
                segments += s.push_bytes(&data)?.len();
                segments += s.finish(true)?.len();
            }
            "frames" => {
                for au in &aus {
                    segments += stream.push_frame(au, Some(t))?.len();
                    t += 40;
                }
            }
            "shared" => {
                for au in &shared {
                    segments += stream.push_frame_bytes(au.clone(), Some(t))?.len();
                    t += 40;
                }
            }
            m => anyhow::bail!("unknown mode {m}"),
        }
    }
    println!(
        "{} bytes x {iterations}, {} access units each, {segments} segments",
        data.len(),
        aus.len()
    );
    Ok(())
}
