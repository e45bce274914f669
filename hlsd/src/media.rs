//! Where hlsd reads live playlists and segments: the data dir, which ingestd writes on the same
//! machine, or the object store every ingestd of a cluster uploads to (`--storage-url`).
//!
//! The store is shared by many hlsd and read by many viewers, so reads go through a cache that
//! keeps the store's bill independent of the audience: a segment never changes once published,
//! so it is fetched once and kept while the cache has room (bounded in bytes); a playlist
//! changes with every segment, so it is kept for a short time to live, and a viewer sees a new
//! segment at most that long after the store has it. Concurrent misses on one key wait for a
//! single request (single flight), so a thousand viewers arriving together on a fresh segment
//! cost one GET. [`StoreStats`] counts what reached the store, for `/metrics`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use streamcore::catalog::Segment;
use streamcore::layout::{self, StreamName};
use streamcore::storage::Storage;

use crate::streams::{self, StreamDir};

/// A playlist as read, with the time it was last written.
#[derive(Debug, Clone)]
pub struct PlaylistText {
    pub text: Bytes,
    pub modified: SystemTime,
}

/// A segment's bytes: a file of the data dir (sent with `pread`, never loaded whole), or a
/// copy from the store's cache.
#[derive(Debug)]
pub enum SegmentBody {
    File {
        file: std::fs::File,
        meta: std::fs::Metadata,
    },
    Cached {
        bytes: Bytes,
        modified: SystemTime,
    },
}

/// How the store's cache is sized.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Segment bytes kept.
    pub segment_bytes: u64,
    /// How long a playlist read from the store is served before it is read again.
    pub playlist_ttl: Duration,
}

/// Requests that reached the store, and what the cache saved.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub playlist_gets: AtomicU64,
    pub segment_gets: AtomicU64,
    /// Reads answered without a request (cached, or joined to one in flight).
    pub cache_hits: AtomicU64,
    pub bytes_read: AtomicU64,
    pub errors: AtomicU64,
}

/// The live media hlsd serves; cheap to clone.
#[derive(Clone)]
pub enum MediaSource {
    /// Files under this (canonical) data dir.
    DataDir(PathBuf),
    /// An object store, through a cache.
    Store(Arc<StoreReader>),
}

/// The store and its cache.
pub struct StoreReader {
    store: Arc<dyn Storage>,
    playlists: moka::future::Cache<String, Arc<PlaylistText>>,
    segments: moka::future::Cache<String, (Bytes, SystemTime)>,
    pub stats: StoreStats,
}

impl StoreReader {
    pub fn new(store: Arc<dyn Storage>, cache: CacheConfig) -> StoreReader {
        StoreReader {
            store,
            playlists: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache.playlist_ttl)
                .build(),
            segments: moka::future::Cache::builder()
                .max_capacity(cache.segment_bytes)
                .weigher(|key: &String, (bytes, _): &(Bytes, SystemTime)| {
                    u32::try_from(bytes.len() + key.len()).unwrap_or(u32::MAX)
                })
                .build(),
            stats: StoreStats::default(),
        }
    }

    /// One GET of `key`, off the async threads (the storage API blocks).
    async fn get(&self, key: String, counter: &AtomicU64) -> io::Result<(Bytes, SystemTime)> {
        counter.fetch_add(1, Relaxed);
        let store = self.store.clone();
        let fetched = tokio::task::spawn_blocking(move || store.fetch(&key))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r);
        match fetched {
            Ok(Some(f)) => {
                self.stats
                    .bytes_read
                    .fetch_add(f.bytes.len() as u64, Relaxed);
                Ok((Bytes::from(f.bytes), f.modified))
            }
            // Not cached: a missing object may appear any moment.
            Ok(None) => Err(io::ErrorKind::NotFound.into()),
            Err(e) => {
                self.stats.errors.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    async fn playlist(&self, stream: &str) -> io::Result<Option<PlaylistText>> {
        let key = layout::playlist_key(stream);
        let mut loaded = false;
        let got = self
            .playlists
            .try_get_with(key.clone(), async {
                loaded = true;
                let (text, modified) = self.get(key, &self.stats.playlist_gets).await?;
                Ok::<_, io::Error>(Arc::new(PlaylistText { text, modified }))
            })
            .await;
        if !loaded {
            self.stats.cache_hits.fetch_add(1, Relaxed);
        }
        match got {
            Ok(p) => Ok(Some((*p).clone())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }

    async fn segment(&self, key: String) -> io::Result<Option<(Bytes, SystemTime)>> {
        let mut loaded = false;
        let got = self
            .segments
            .try_get_with(key.clone(), async {
                loaded = true;
                self.get(key, &self.stats.segment_gets).await
            })
            .await;
        if !loaded {
            self.stats.cache_hits.fetch_add(1, Relaxed);
        }
        match got {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

impl MediaSource {
    /// A stream's live playlist; `None` when it has none.
    pub async fn playlist(&self, stream: &str) -> io::Result<Option<PlaylistText>> {
        match self {
            MediaSource::DataDir(dir) => {
                let (dir, stream) = (dir.clone(), stream.to_owned());
                blocking_io(move || {
                    let opened = open_live_file(&dir, &stream, layout::PLAYLIST_FILE);
                    let (mut f, meta) = match opened {
                        Ok(v) => v,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    let mut text = Vec::with_capacity(meta.len() as usize);
                    io::Read::read_to_end(&mut f, &mut text)?;
                    Ok(Some(PlaylistText {
                        text: Bytes::from(text),
                        modified: meta.modified()?,
                    }))
                })
                .await
            }
            MediaSource::Store(reader) => reader.playlist(stream).await,
        }
    }

    /// A segment (`<n>.ts`) of a stream; `None` when it is not there.
    pub async fn segment(&self, stream: &str, file: &str) -> io::Result<Option<SegmentBody>> {
        match self {
            MediaSource::DataDir(dir) => {
                let (dir, stream, file) = (dir.clone(), stream.to_owned(), file.to_owned());
                blocking_io(move || match open_live_file(&dir, &stream, &file) {
                    Ok((file, meta)) => Ok(Some(SegmentBody::File { file, meta })),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e),
                })
                .await
            }
            MediaSource::Store(reader) => {
                let key = format!("{}/{file}", layout::stream_key(stream));
                Ok(reader
                    .segment(key)
                    .await?
                    .map(|(bytes, modified)| SegmentBody::Cached { bytes, modified }))
            }
        }
    }

    /// Every stream that has a playlist, by name. The data dir is scanned; a store is not
    /// (listing it walks every segment kept), so there the streams are `candidates` (the
    /// catalog's), and only those with a playlist are returned.
    pub async fn streams(
        &self,
        candidates: Vec<String>,
        live_timeout: Duration,
    ) -> io::Result<Vec<StreamDir>> {
        match self {
            MediaSource::DataDir(dir) => {
                let dir = dir.clone();
                blocking_io(move || streams::scan_streams(&dir, live_timeout)).await
            }
            MediaSource::Store(_) => {
                // A few reads in flight at a time: enough to hide the store's latency, few
                // enough not to flood it when the catalog names thousands of streams.
                let permits = Arc::new(tokio::sync::Semaphore::new(16));
                let mut reads = tokio::task::JoinSet::new();
                for name in candidates {
                    let Some(parsed) = StreamName::parse(&name) else {
                        continue;
                    };
                    let (this, permits) = (self.clone(), permits.clone());
                    reads.spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        let read = this.playlist(&name).await;
                        (parsed, read)
                    });
                }
                let now = SystemTime::now();
                let mut out = Vec::new();
                while let Some(joined) = reads.join_next().await {
                    let (name, read) = joined.map_err(io::Error::other)?;
                    match read {
                        Ok(Some(p)) => out.extend(StreamDir::from_playlist(
                            name,
                            &String::from_utf8_lossy(&p.text),
                            p.modified,
                            now,
                            live_timeout,
                        )),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(stream = %name, error = %e, "reading a playlist from the store")
                        }
                    }
                }
                out.sort_by_key(|s| s.name.to_string());
                Ok(out)
            }
        }
    }

    /// Files holding `rows`' segments, in order, for a remux. From a store they are downloaded
    /// into `scratch` first. A row whose segment is missing (or names a file outside the data
    /// dir) is the error `Err(path)`. Blocking.
    pub fn segment_files(&self, rows: &[Segment], scratch: &Path) -> Result<Vec<PathBuf>, String> {
        let mut out = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            match self {
                MediaSource::DataDir(dir) => {
                    // Only a file whose canonical path stays in the data dir (not a planted
                    // symlink) is read.
                    let path = std::fs::canonicalize(dir.join(&row.path))
                        .ok()
                        .filter(|p| p.starts_with(dir))
                        .ok_or_else(|| row.path.clone())?;
                    out.push(path);
                }
                MediaSource::Store(reader) => {
                    let fetched = reader.store.fetch(&row.path);
                    reader.stats.segment_gets.fetch_add(1, Relaxed);
                    let Ok(Some(f)) = fetched else {
                        return Err(row.path.clone());
                    };
                    reader
                        .stats
                        .bytes_read
                        .fetch_add(f.bytes.len() as u64, Relaxed);
                    let path = scratch.join(format!("{i:06}.ts"));
                    std::fs::write(&path, &f.bytes).map_err(|_| row.path.clone())?;
                    out.push(path);
                }
            }
        }
        Ok(out)
    }

    /// The store's counters, when reading from one.
    pub fn store_stats(&self) -> Option<&StoreStats> {
        match self {
            MediaSource::DataDir(_) => None,
            MediaSource::Store(reader) => Some(&reader.stats),
        }
    }
}

async fn blocking_io<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Opens `DATA/live/<stream>/<file>` for reading after validating both names, and refuses
/// anything whose canonical path leaves the data dir (e.g. a symlink planted in a stream dir).
pub(crate) fn open_live_file(
    data_dir: &Path,
    stream: &str,
    file: &str,
) -> io::Result<(std::fs::File, std::fs::Metadata)> {
    let path = layout::stream_dir(data_dir, stream).join(file);
    let canon = std::fs::canonicalize(&path)?;
    if !canon.starts_with(data_dir) {
        tracing::warn!(path = %path.display(), "refusing a file outside the data dir");
        return Err(io::Error::new(io::ErrorKind::NotFound, "outside data dir"));
    }
    let f = std::fs::File::open(&canon)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "not a file"));
    }
    Ok((f, meta))
}
