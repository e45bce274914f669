//! Remuxes an Annex-B H.264 file into an HLS event playlist in a directory:
//! `cargo run -p streamcore --example remux -- input.h264 out-dir`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, input, out] = &args[..] else {
        return Err("usage: remux INPUT.h264 OUT_DIR".into());
    };
    let cfg = streamcore::StreamConfig {
        event_playlist: true,
        keep_segments: true,
        ..Default::default()
    };
    let mut stream = streamcore::LiveStream::open("remux", std::path::Path::new(out), cfg)?;
    let data = std::fs::read(input)?;
    let mut n = stream.push_bytes(&data)?.len();
    n += stream.finish(true)?.len();
    eprintln!("{n} segments; {:?}", stream.stats());
    Ok(())
}
