//! [`S3Storage`]: segments and playlists in an S3-compatible object store (AWS S3, MinIO, Ceph
//! RGW, Garage, moto...) through the `object_store` crate, under the same keys as on disk
//! (`live/<stream>/<n>.ts`, playlists), so a deployment can move between the two.
//!
//! The publish contract of [`Storage`] maps onto S3 directly: a segment is muxed into a
//! staging file on local disk and PUT whole at [`SegmentWriter::commit`], and a PUT is atomic
//! (the object is there, complete, or not at all), so a playlist written after the commit never
//! names a missing or partial object; a playlist is one PUT too, which replaces the old text
//! atomically. Staging on disk rather than in memory keeps a stream's memory independent of
//! its segment size, and leaves the bytes on disk if the store is unreachable.
//!
//! The trait is blocking; the client is async. Each storage owns a small tokio runtime that
//! runs the requests; a call blocks its thread until the answer (callers on an async runtime
//! use `spawn_blocking`, as they do for file IO).

use std::fs;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{key_parts, Fetched, SegmentWriter, StagedSegment, Storage, StoredObject};

/// An S3 bucket (and optional key prefix) as a [`Storage`].
pub struct S3Storage {
    client: Client,
    /// Prepended to every key, without slashes at either end; empty for the bucket's root.
    prefix: String,
    staging: PathBuf,
    /// Drives the client; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What a request needs, shared with the segment writers: the client, the runtime that drives
/// it, and the bucket's name for error messages.
#[derive(Clone)]
struct Client {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Handle,
    bucket: Arc<str>,
}

impl Client {
    /// Runs a request on the storage's runtime and waits for it. A channel rather than
    /// `block_on`, so a call made on some other runtime's thread blocks instead of panicking.
    fn run<T: Send + 'static>(
        &self,
        request: impl std::future::Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(request.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the storage runtime stopped"))?
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    io::Error::new(io::ErrorKind::NotFound, e.to_string())
                }
                e => io::Error::other(format!("s3://{}: {e}", self.bucket)),
            })
    }

    fn put(&self, path: ObjectPath, bytes: Vec<u8>) -> io::Result<()> {
        let store = self.store.clone();
        self.run(async move { store.put(&path, PutPayload::from(bytes)).await })
            .map(drop)
    }
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Storage(s3://{}/{})", self.client.bucket, self.prefix)
    }
}

impl Drop for S3Storage {
    fn drop(&mut self) {
        // A runtime dropped the ordinary way blocks on its workers, which panics when the
        // storage is dropped inside async code.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// `s3://bucket[/prefix]` split into the bucket and the prefix (no slashes at its ends).
pub fn parse_s3_url(url: &str) -> io::Result<(String, String)> {
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("storage URL {url:?}: {why} (expected s3://bucket[/prefix])"),
        )
    };
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| invalid("not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !bucket_ok {
        return Err(invalid("the bucket name must be 3-63 of [a-z0-9.-]"));
    }
    let prefix = prefix.trim_matches('/');
    if !prefix.is_empty() {
        key_parts(prefix).map_err(|_| invalid("the prefix must be parts of [A-Za-z0-9._-]"))?;
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

impl S3Storage {
    /// `s3://bucket[/prefix]` with credentials, region and endpoint from the standard variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP`...). Segments are staged in `staging` (created if missing; staging
    /// files a crash left there are removed).
    pub fn from_env(url: &str, staging: impl Into<PathBuf>) -> io::Result<Self> {
        Self::with_builder(
            url,
            AmazonS3Builder::from_env().with_retry(retry_config()),
            staging,
        )
    }

    /// As [`S3Storage::from_env`], with the `AWS_*` settings given as name/value pairs
    /// (as the environment spells them) instead of read from the environment: a daemon
    /// reads them once at start, and a test passes its server's without touching the
    /// process environment. Names that are not S3 settings are ignored.
    pub fn from_vars(
        url: &str,
        vars: impl IntoIterator<Item = (String, String)>,
        staging: impl Into<PathBuf>,
    ) -> io::Result<Self> {
        let mut builder = AmazonS3Builder::new();
        for (name, value) in vars {
            if !name.starts_with("AWS_") {
                continue;
            }
            if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(key, value);
            }
        }
        Self::with_builder(url, builder.with_retry(retry_config()), staging)
    }

    /// As [`S3Storage::from_env`], with the client settings given by the caller (the bucket is
    /// taken from `url`).
    pub fn with_builder(
        url: &str,
        builder: AmazonS3Builder,
        staging: impl Into<PathBuf>,
    ) -> io::Result<Self> {
        let (bucket, prefix) = parse_s3_url(url)?;
        // object_store's client has no crypto provider of its own in this build (no aws-lc-rs):
        // TLS to the store runs on ring's. Already installed (by hlsd's TLS or an earlier
        // storage) is fine. ring lacks the post-quantum key exchange, hence the deprecation;
        // aws-lc-rs has it but needs cmake, which this build avoids (as hlsd's TLS does).
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = builder
            .with_bucket_name(&bucket)
            .build()
            .map_err(|e| io::Error::other(format!("s3://{bucket}: {e}")))?;
        let staging = staging.into();
        fs::create_dir_all(&staging)?;
        for entry in fs::read_dir(&staging)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == STAGING_EXTENSION) {
                let _ = fs::remove_file(&path);
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-storage")
            .enable_all()
            .build()?;
        Ok(S3Storage {
            client: Client {
                store: Arc::new(store),
                runtime: runtime.handle().clone(),
                bucket: bucket.into(),
            },
            prefix,
            staging,
            runtime: Some(runtime),
        })
    }

    /// The object path of `key`.
    fn object(&self, key: &str) -> io::Result<ObjectPath> {
        key_parts(key)?;
        Ok(if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        })
    }
}

/// object_store retries a failing request for up to 3 minutes by default; a queue in front
/// ([`super::upload::UploadQueue`]) retries on its own, and the operator should hear of an
/// outage in seconds, not minutes.
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        max_retries: 3,
        retry_timeout: std::time::Duration::from_secs(15),
        ..Default::default()
    }
}

/// The `AWS_*` variables of the environment, for [`S3Storage::from_vars`].
pub fn aws_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(name, _)| name.starts_with("AWS_"))
        .collect()
}

const STAGING_EXTENSION: &str = "staging";

fn staging_name(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    dir.join(format!(
        "{}-{}.{STAGING_EXTENSION}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Storage for S3Storage {
    fn begin_segment(&self, key: &str) -> io::Result<Box<dyn SegmentWriter>> {
        let (object, client) = (self.object(key)?, self.client.clone());
        // One PUT of the whole file: the object appears complete or not at all.
        let segment = StagedSegment::create(staging_name(&self.staging), move |mut file, path| {
            let mut bytes = Vec::new();
            file.seek(io::SeekFrom::Start(0))?;
            file.read_to_end(&mut bytes)?;
            client.put(object, bytes)?;
            let _ = fs::remove_file(path);
            Ok(())
        })?;
        Ok(Box::new(segment))
    }

    fn replace_playlist(&self, key: &str, text: &[u8]) -> io::Result<()> {
        self.client.put(self.object(key)?, text.to_vec())
    }

    fn remove(&self, key: &str) -> io::Result<bool> {
        let (store, path) = (self.client.store.clone(), self.object(key)?);
        // S3 answers a delete of a missing key with success; a HEAD first tells the two apart
        // (retention counts what it removed).
        let head = {
            let (store, path) = (store.clone(), path.clone());
            self.client.run(async move { store.head(&path).await })
        };
        match head {
            Ok(_) => self
                .client
                .run(async move { store.delete(&path).await })
                .map(|_| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.fetch(key)?.map(|f| f.bytes))
    }

    fn fetch(&self, key: &str) -> io::Result<Option<Fetched>> {
        let (store, path) = (self.client.store.clone(), self.object(key)?);
        let got = self.client.run(async move {
            let got = store.get(&path).await?;
            let modified = SystemTime::from(got.meta.last_modified);
            Ok((got.bytes().await?, modified))
        });
        match got {
            Ok((bytes, modified)) => Ok(Some(Fetched {
                bytes: bytes.to_vec(),
                modified,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<StoredObject>> {
        let root = match (self.prefix.is_empty(), prefix.is_empty()) {
            (true, true) => None,
            (false, true) => Some(ObjectPath::from(self.prefix.as_str())),
            (_, false) => Some(self.object(prefix)?),
        };
        let store = self.client.store.clone();
        let metas = self
            .client
            .run(async move { store.list(root.as_ref()).try_collect::<Vec<_>>().await })?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let key = m.location.as_ref().strip_prefix(&strip)?.to_owned();
                key_parts(&key).ok()?;
                Some(StoredObject {
                    key,
                    bytes: m.size,
                    modified: SystemTime::from(m.last_modified),
                })
            })
            .collect())
    }
}
