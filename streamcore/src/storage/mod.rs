//! Where segments and playlists go: the [`Storage`] trait and its
//! filesystem and in-memory implementations, with the `s3` feature
//! [`s3::S3Storage`] for S3-compatible object stores, and
//! [`upload::UploadQueue`], which puts a local spill directory and background
//! uploads in front of a slow store; nothing above this module knows which
//! one it talks to.
//!
//! Keys are `/`-separated relative paths made of `[A-Za-z0-9._-]` parts
//! (the [`crate::layout`] keys, or plain file names for a store scoped to
//! one stream's directory). The contract that keeps players safe across
//! crashes: a segment is written under a temporary name and published under
//! its key only once complete ([`SegmentWriter::commit`]), and only then may
//! a playlist name it; a playlist is replaced atomically, so a reader sees
//! the old or the new text, never a mix. Retention lists keys and deletes
//! them through the same trait.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[cfg(feature = "s3")]
pub mod s3;
pub mod upload;

/// Receives one segment's bytes as the muxer produces them.
pub trait SegmentWriter: Write + Send {
    /// Makes the segment visible under its final key.
    fn commit(self: Box<Self>) -> io::Result<()>;
    /// Throws the partial segment away.
    fn abort(self: Box<Self>);
}

/// A stored object as [`Storage::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub bytes: u64,
    pub modified: SystemTime,
}

/// Segments and playlists by key.
pub trait Storage: Send + Sync {
    /// Starts writing a segment; nothing is visible under `key` until the
    /// writer commits.
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>>;
    /// Replaces a playlist atomically.
    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()>;
    /// Deletes an object; `Ok(false)` when there was none.
    fn remove(&self, key: &str) -> io::Result<bool>;
    /// Reads an object back (a playlist when resuming); `None` if absent.
    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>>;
    /// Reads an object back with the time it was last written (a reader of a shared store
    /// tells a live playlist from a stale one by it). The default says "now", for stores
    /// that do not know.
    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        Ok(self.read(key)?.map(|bytes| Fetched {
            bytes,
            modified: SystemTime::now(),
        }))
    }
    /// Every published object whose key starts with `prefix/` (everything
    /// for an empty prefix), in no particular order; partial segments are
    /// not listed.
    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>>;
}

/// An object read back by [`Storage::fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub modified: SystemTime,
}

/// Where a daemon keeps segments and playlists, as `--storage-url` names it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StorageLocation {
    /// The data dir (the default; also spelled `file:` or an empty URL).
    #[default]
    DataDir,
    /// An S3-compatible store: `s3://bucket[/prefix]`.
    S3(String),
}

impl StorageLocation {
    /// Parses a storage URL, checking an `s3://` URL's bucket and prefix.
    pub fn parse(url: &str) -> io::Result<Self> {
        match url.trim() {
            "" | "file:" | "file://" => Ok(StorageLocation::DataDir),
            url if url.starts_with("s3://") => {
                #[cfg(feature = "s3")]
                s3::parse_s3_url(url)?;
                Ok(StorageLocation::S3(url.to_owned()))
            }
            url => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "storage URL {url:?}: expected s3://bucket[/prefix], or nothing for the data dir"
                ),
            )),
        }
    }
}

impl std::fmt::Display for StorageLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StorageLocation::DataDir => f.write_str("the data dir"),
            StorageLocation::S3(url) => f.write_str(url),
        }
    }
}

/// Checks a key and splits it into its parts.
fn key_parts(key: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = key.split('/').collect();
    let valid = parts.iter().all(|p| {
        !p.is_empty()
            && *p != "."
            && *p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    });
    if valid {
        Ok(parts)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad storage key {key:?}"),
        ))
    }
}

/// Files under one directory: a stream's (keys are file names) or the whole
/// data dir (keys are [`crate::layout`] paths).
#[derive(Debug, Clone)]
pub struct FsStorage {
    /// Canonical, so symlinks pointing out of it can be recognised.
    root: PathBuf,
    durable: bool,
}

const PART_SUFFIX: &str = ".part";

impl FsStorage {
    /// Uses `dir` (created if missing) and removes partial files a crash
    /// may have left directly in it. With `durable`, every segment and
    /// playlist is fsynced before it is renamed into place, which survives
    /// power loss at the cost of a sync per segment; without it, a process
    /// crash still never exposes a partial file.
    pub fn open(dir: impl Into<PathBuf>, durable: bool) -> io::Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let root = dir.canonicalize()?;
        for entry in fs::read_dir(&root)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == &PART_SUFFIX[1..]) {
                tracing::info!(path = %path.display(), "removing partial file left by a crash");
                let _ = fs::remove_file(&path);
            }
        }
        Ok(FsStorage { root, durable })
    }

    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The file of `key`, refusing keys that name nothing we own: bad
    /// characters, `..`, or a directory that resolves (through a symlink)
    /// outside the root.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let parts = key_parts(key)?;
        let mut path = self.root.clone();
        path.extend(&parts);
        if parts.len() > 1 {
            // The deepest directory that exists decides where the key leads.
            let existing = path
                .ancestors()
                .skip(1)
                .find_map(|dir| dir.canonicalize().ok());
            if !existing.is_some_and(|real| real.starts_with(&self.root)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("storage key {key:?} leads outside {}", self.root.display()),
                ));
            }
        }
        Ok(path)
    }

    /// The path of `key` with its directory created.
    fn writable_path(&self, key: &str) -> io::Result<PathBuf> {
        let path = self.path(key)?;
        if key.contains('/') {
            fs::create_dir_all(path.parent().expect("a nested key has a parent"))?;
        }
        Ok(path)
    }

    fn list_into(&self, dir: &Path, key: &str, out: &mut Vec<StoredObject>) -> io::Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let child = if key.is_empty() {
                name.clone()
            } else {
                format!("{key}/{name}")
            };
            if key_parts(&child).is_err() || name.ends_with(PART_SUFFIX) {
                continue;
            }
            // Symlinks are not followed: what they point to is not ours.
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                self.list_into(&entry.path(), &child, out)?;
            } else if file_type.is_file() {
                let meta = entry.metadata()?;
                out.push(StoredObject {
                    key: child,
                    bytes: meta.len(),
                    modified: meta.modified()?,
                });
            }
        }
        Ok(())
    }
}

/// How a staged segment becomes visible: given the finished file and its path.
type Publish = Box<dyn FnOnce(File, &Path) -> io::Result<()> + Send>;

/// A segment muxed into a local file under a temporary name and handed to its storage's
/// `publish` at commit: the file system renames it into place, an object store uploads it.
/// A failed publish or an abort removes the file.
pub(crate) struct StagedSegment {
    file: File,
    path: PathBuf,
    publish: Publish,
}

impl StagedSegment {
    pub(crate) fn create(
        path: PathBuf,
        publish: impl FnOnce(File, &Path) -> io::Result<()> + Send + 'static,
    ) -> io::Result<Self> {
        Ok(StagedSegment {
            // Readable too: an object store uploads from it.
            file: fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?,
            path,
            publish: Box::new(publish),
        })
    }
}

impl Write for StagedSegment {
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

impl SegmentWriter for StagedSegment {
    fn commit(self: Box<Self>) -> io::Result<()> {
        let StagedSegment {
            file,
            path,
            publish,
        } = *self;
        let published = publish(file, &path);
        if published.is_err() {
            // Disk full or store down: do not leave the bytes taking space.
            let _ = fs::remove_file(&path);
        }
        published
    }
    fn abort(self: Box<Self>) {
        let _ = fs::remove_file(&self.path);
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

impl Storage for FsStorage {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        let target = self.writable_path(key)?;
        let durable = self.durable;
        let segment = StagedSegment::create(part_path(&target), move |file, part| {
            if durable {
                file.sync_all()?;
            }
            fs::rename(part, &target)
        })?;
        Ok(Box::new(segment))
    }

    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        let target = self.writable_path(key)?;
        let part = part_path(&target);
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

    fn remove(&self, key: &str) -> io::Result<bool> {
        match fs::remove_file(self.path(key)?) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path(key)?) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        let read = File::open(self.path(key)?).and_then(|mut f| {
            let modified = f.metadata()?.modified()?;
            let mut bytes = Vec::new();
            io::Read::read_to_end(&mut f, &mut bytes)?;
            Ok(Fetched { bytes, modified })
        });
        match read {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        let mut out = Vec::new();
        if prefix.is_empty() {
            self.list_into(&self.root, "", &mut out)?;
        } else {
            let dir = self.path(prefix)?;
            // A symlinked prefix directory is not ours either.
            if fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                self.list_into(&dir, prefix, &mut out)?;
            }
        }
        Ok(out)
    }
}

/// One stream's view of a shared storage: its keys are `<prefix>/<key>` there. A node-wide
/// store (one object-store client, one [`upload::UploadQueue`]) serves every stream through
/// these, as one data dir serves every stream's directory.
#[derive(Clone)]
pub struct Scoped {
    inner: Arc<dyn Storage>,
    prefix: String,
}

impl std::fmt::Debug for Scoped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scoped({})", self.prefix)
    }
}

impl Scoped {
    pub fn new(inner: Arc<dyn Storage>, prefix: &str) -> io::Result<Self> {
        key_parts(prefix)?;
        Ok(Scoped {
            inner,
            prefix: prefix.to_owned(),
        })
    }

    fn outer(&self, key: &str) -> io::Result<String> {
        key_parts(key)?;
        Ok(format!("{}/{key}", self.prefix))
    }
}

impl Storage for Scoped {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        self.inner.begin_segment(&self.outer(key)?)
    }
    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        self.inner.replace_playlist(&self.outer(key)?, text)
    }
    fn remove(&self, key: &str) -> io::Result<bool> {
        self.inner.remove(&self.outer(key)?)
    }
    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        self.inner.read(&self.outer(key)?)
    }
    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        self.inner.fetch(&self.outer(key)?)
    }
    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        let outer = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            self.outer(prefix)?
        };
        let strip = format!("{}/", self.prefix);
        Ok(self
            .inner
            .list(&outer)?
            .into_iter()
            .filter_map(|o| {
                let key = o.key.strip_prefix(&strip)?.to_owned();
                Some(StoredObject { key, ..o })
            })
            .collect())
    }
}

#[derive(Debug, Clone)]
struct MemObject {
    bytes: Vec<u8>,
    modified: SystemTime,
}

/// Keeps everything in memory: for tests, benchmarks and embedders that
/// ship segments elsewhere themselves. Cloning shares the contents.
#[derive(Debug, Clone, Default)]
pub struct MemoryStorage {
    files: Arc<Mutex<HashMap<String, MemObject>>>,
    /// When set, segment bytes are counted but not kept (benchmarks).
    discard_segments: bool,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts segment bytes without keeping them: a segment reads back as
    /// its length in decimal.
    pub fn discarding() -> Self {
        MemoryStorage {
            discard_segments: true,
            ..Self::default()
        }
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.files
            .lock()
            .expect("poisoned")
            .get(key)
            .map(|o| o.bytes.clone())
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

    fn put(&self, key: String, bytes: Vec<u8>) {
        let modified = SystemTime::now();
        self.files
            .lock()
            .expect("poisoned")
            .insert(key, MemObject { bytes, modified });
    }
}

struct MemSegment {
    key: String,
    buf: Vec<u8>,
    len: u64,
    storage: MemoryStorage,
}

impl Write for MemSegment {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.len += buf.len() as u64;
        if !self.storage.discard_segments {
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
        let data = if self.storage.discard_segments {
            self.len.to_string().into_bytes()
        } else {
            self.buf
        };
        self.storage.put(self.key, data);
        Ok(())
    }
    fn abort(self: Box<Self>) {}
}

impl Storage for MemoryStorage {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        key_parts(key)?;
        Ok(Box::new(MemSegment {
            key: key.to_string(),
            buf: Vec::new(),
            len: 0,
            storage: self.clone(),
        }))
    }

    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        key_parts(key)?;
        self.put(key.to_string(), text.to_vec());
        Ok(())
    }

    fn remove(&self, key: &str) -> io::Result<bool> {
        key_parts(key)?;
        Ok(self.files.lock().expect("poisoned").remove(key).is_some())
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        key_parts(key)?;
        Ok(self.get(key))
    }

    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        key_parts(key)?;
        let files = self.files.lock().expect("poisoned");
        Ok(files.get(key).map(|o| Fetched {
            bytes: o.bytes.clone(),
            modified: o.modified,
        }))
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        let files = self.files.lock().expect("poisoned");
        Ok(files
            .iter()
            .filter(|(k, _)| {
                prefix.is_empty()
                    || k.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .map(|(k, o)| StoredObject {
                key: k.clone(),
                bytes: o.bytes.len() as u64,
                modified: o.modified,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The contract every implementation keeps: tests/it/object_storage.rs.

    #[test]
    fn keys_never_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStorage::open(dir.path(), false).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("1.ts"), b"not ours").unwrap();
        std::fs::create_dir_all(dir.path().join("live")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("live/evil")).unwrap();
        assert!(store.remove("live/evil/1.ts").is_err());
        assert!(store.read("live/evil/1.ts").is_err());
        assert!(
            store.list("live").unwrap().is_empty(),
            "symlinks not followed"
        );
        assert!(store.list("live/evil").unwrap().is_empty());
        assert!(outside.path().join("1.ts").exists());
    }

    #[test]
    fn partial_files_of_a_crash_are_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("3.ts.part"), b"half").unwrap();
        let store = FsStorage::open(dir.path(), false).unwrap();
        assert!(!dir.path().join("3.ts.part").exists());
        assert!(store.list("").unwrap().is_empty());
    }
}
