//! The cost floor of the load benchmark (issue 6): a receiver that does only
//! what every design must do with a device's bytes, and nothing else.
//!
//! It accepts TCP connections, reads each one into a 64 KiB buffer on the
//! same tokio runtime as ingestd, and writes the bytes unchanged into files
//! of about one segment each (64 KiB buffered writes, like ingestd's AVIO
//! buffer). No parsing, no muxing, no playlists, no catalog. Whatever CPU it
//! needs per stream, any receive-then-store design needs at least as much:
//! ingestd and `ffmpeg -c copy -f hls` both do this work plus their own.
//!
//! It prints `listening ADDR` once bound. Connection k writes
//! `OUT/c<k>/<n>.ts`; on SIGTERM or Ctrl-C it prints
//! `total: connections C bytes B files F` and exits.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use anyhow::Context;
use bytes::BytesMut;
use clap::Parser;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(
    name = "recvfloor",
    about = "Receive TCP streams and store their bytes unchanged: the floor a remuxing server cannot go below"
)]
struct Args {
    /// Address to accept device connections on.
    #[arg(long)]
    listen: SocketAddr,
    /// Directory for the per-connection folders.
    #[arg(long)]
    out: PathBuf,
    /// Start a new file after this many bytes (default: 4 s at 2.7 Mbit/s).
    #[arg(long, default_value_t = 1_350_000)]
    file_bytes: u64,
}

#[derive(Default)]
struct Totals {
    connections: AtomicU64,
    bytes: AtomicU64,
    files: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // For whoever started us with port 0.
    println!("listening {}", listener.local_addr()?);
    let totals = Arc::new(Totals::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut next = 0u64;
    loop {
        tokio::select! {
            r = listener.accept() => {
                let (sock, _) = r?;
                let dir = args.out.join(format!("c{next}"));
                next += 1;
                totals.connections.fetch_add(1, Relaxed);
                let totals = totals.clone();
                let file_bytes = args.file_bytes;
                tokio::spawn(async move {
                    if let Err(e) = store(sock, dir, file_bytes, &totals).await {
                        eprintln!("connection ended: {e:#}");
                    }
                });
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    println!(
        "total: connections {} bytes {} files {}",
        totals.connections.load(Relaxed),
        totals.bytes.load(Relaxed),
        totals.files.load(Relaxed)
    );
    Ok(())
}

async fn store(
    mut sock: TcpStream,
    dir: PathBuf,
    file_bytes: u64,
    totals: &Totals,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&dir)?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut file = None;
    let mut in_file = 0u64;
    let mut index = 0u64;
    loop {
        buf.clear();
        let n = sock.read_buf(&mut buf).await?;
        if n == 0 {
            break;
        }
        totals.bytes.fetch_add(n as u64, Relaxed);
        if file.is_none() {
            let f = std::fs::File::create(dir.join(format!("{index}.ts")))?;
            file = Some(std::io::BufWriter::with_capacity(64 * 1024, f));
            totals.files.fetch_add(1, Relaxed);
            index += 1;
        }
        // The writes are synchronous, as ingestd's muxer's are: a write
        // into the page cache does not wait for the disk.
        let w = file.as_mut().expect("opened above");
        w.write_all(&buf)?;
        in_file += n as u64;
        if in_file >= file_bytes {
            file.take().expect("opened above").flush()?;
            in_file = 0;
        }
    }
    if let Some(mut f) = file {
        f.flush()?;
    }
    Ok(())
}
