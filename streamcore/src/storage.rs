//! Where segments and playlists go: a small trait and its filesystem and
//! in-memory implementations.
//!
//! The contract that keeps players safe across crashes: a segment is written
//! under a temporary name and renamed into place only once complete, and
//! only then may a playlist name it; a playlist is replaced atomically by
//! rename, so a reader sees the old or the new text, never a mix.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Receives one segment's bytes as the muxer produces them.
pub trait SegmentWriter: Write + Send {
    /// Makes the segment visible under its final name.
    fn commit(self: Box<Self>) -> io::Result<()>;
    /// Throws the partial segment away.
    fn abort(self: Box<Self>);
}

/// One stream's storage: segments and playlists by file name.
pub trait Storage: Send + Sync {
    fn begin_segment(&self, name: &str) -> io::Result<Box<dyn SegmentWriter>>;
    /// Replaces a playlist atomically.
    fn replace_playlist(&self, name: &str, text: &[u8]) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Reads a file back (a playlist when resuming); `None` if absent.
    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
}

/// Files in one directory per stream.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
    durable: bool,
}

const PART_SUFFIX: &str = ".part";

impl FsStorage {
    /// Uses `dir` (created if missing) and removes partial segments a
    /// crash may have left there. With `durable`, every segment and
    /// playlist is fsynced before it is renamed into place, which survives
    /// power loss at the cost of a sync per segment; without it, a process
    /// crash still never exposes a partial file.
    pub fn open(dir: impl Into<PathBuf>, durable: bool) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == &PART_SUFFIX[1..]) {
                tracing::info!(path = %path.display(), "removing partial file left by a crash");
                let _ = fs::remove_file(&path);
            }
        }
        Ok(FsStorage { dir, durable })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad file name {name:?}"),
            ));
        }
        Ok(self.dir.join(name))
    }
}

struct FsSegment {
    file: File,
    part: PathBuf,
    target: PathBuf,
    durable: bool,
}

impl Write for FsSegment {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl SegmentWriter for FsSegment {
    fn commit(self: Box<Self>) -> io::Result<()> {
        if self.durable {
            self.file.sync_all()?;
        }
        fs::rename(&self.part, &self.target)
    }
    fn abort(self: Box<Self>) {
        let _ = fs::remove_file(&self.part);
    }
}

impl Storage for FsStorage {
    fn begin_segment(&self, name: &str) -> io::Result<Box<dyn SegmentWriter>> {
        let target = self.path(name)?;
        let part = self.path(&format!("{name}{PART_SUFFIX}"))?;
        let file = File::create(&part)?;
        Ok(Box::new(FsSegment {
            file,
            part,
            target,
            durable: self.durable,
        }))
    }

    fn replace_playlist(&self, name: &str, text: &[u8]) -> io::Result<()> {
        let target = self.path(name)?;
        let part = self.path(&format!("{name}{PART_SUFFIX}"))?;
        let written = File::create(&part).and_then(|mut f| {
            f.write_all(text)?;
            if self.durable {
                f.sync_all()?;
            }
            fs::rename(&part, &target)
        });
        if written.is_err() {
            // Disk full: do not leave a truncated `.part` taking space.
            let _ = fs::remove_file(&part);
        }
        written
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        }
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(name)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Keeps everything in memory: for tests, benchmarks and embedders that
/// ship segments elsewhere themselves. Cloning shares the contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// When set, segment bytes are counted but not kept (benchmarks).
    discard_segments: bool,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts segment bytes without keeping them.
    pub fn discarding() -> Self {
        MemoryStorage {
            discard_segments: true,
            ..Self::default()
        }
    }

    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.files.lock().expect("poisoned").get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<_> = self
            .files
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

struct MemSegment {
    name: String,
    buf: Vec<u8>,
    len: u64,
    discard: bool,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

impl Write for MemSegment {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.len += buf.len() as u64;
        if !self.discard {
            self.buf.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SegmentWriter for MemSegment {
    fn commit(self: Box<Self>) -> io::Result<()> {
        let data = if self.discard {
            self.len.to_string().into_bytes()
        } else {
            self.buf
        };
        self.files.lock().expect("poisoned").insert(self.name, data);
        Ok(())
    }
    fn abort(self: Box<Self>) {}
}

impl Storage for MemoryStorage {
    fn begin_segment(&self, name: &str) -> io::Result<Box<dyn SegmentWriter>> {
        Ok(Box::new(MemSegment {
            name: name.to_string(),
            buf: Vec::new(),
            len: 0,
            discard: self.discard_segments,
            files: self.files.clone(),
        }))
    }

    fn replace_playlist(&self, name: &str, text: &[u8]) -> io::Result<()> {
        self.files
            .lock()
            .expect("poisoned")
            .insert(name.to_string(), text.to_vec());
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.files.lock().expect("poisoned").remove(name);
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.get(name))
    }
}
