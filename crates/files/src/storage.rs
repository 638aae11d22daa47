//! [`Storage`]: put, stream and delete objects by key, whatever the backend.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};
use crate::settings::{Backend, StorageSettings};

/// A handle on the configured object store (cheap to clone).
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// The local backend's directory (its staging files are swept by
    /// walking it); `None` for S3.
    local_root: Option<PathBuf>,
    part_size: usize,
    upload_concurrency: usize,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("store", &self.store.to_string())
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Opens the configured backend. A local root is created when missing;
    /// S3 is not contacted until the first request.
    pub fn new(settings: &StorageSettings) -> Result<Self> {
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match settings.backend {
            Backend::Local => {
                let directory = |source| Error::Directory {
                    path: settings.root.display().to_string(),
                    source,
                };
                std::fs::create_dir_all(&settings.root).map_err(directory)?;
                let root = std::fs::canonicalize(&settings.root).map_err(directory)?;
                local_root = Some(root.clone());
                // Deleting an object also removes directories it leaves
                // empty, so retention does not accumulate empty folders.
                Arc::new(
                    LocalFileSystem::new_with_prefix(root)
                        .map_err(Error::Backend)?
                        .with_automatic_cleanup(true),
                )
            }
            Backend::S3 => {
                let s3 = settings.s3.as_ref().ok_or_else(|| {
                    Error::Backend(object_store::Error::Generic {
                        store: "S3",
                        source: "backend = \"s3\" without an [s3] table".into(),
                    })
                })?;
                let mut builder = AmazonS3Builder::from_env()
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_allow_http(s3.allow_http)
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style);
                if let Some(endpoint) = s3.endpoint.as_deref().filter(|e| !e.is_empty()) {
                    builder = builder.with_endpoint(endpoint);
                }
                if let (Some(id), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                    builder = builder
                        .with_access_key_id(id.expose_secret())
                        .with_secret_access_key(secret.expose_secret());
                }
                Arc::new(builder.build().map_err(Error::Backend)?)
            }
        };
        Ok(Self {
            store,
            local_root,
            part_size: settings.part_size,
            upload_concurrency: settings.upload_concurrency,
        })
    }

    /// A writer for `key`. Nothing is visible under the key until
    /// [`ObjectWriter::finish`]; then the whole object replaces any previous
    /// one at once (a local rename, or S3's single PUT / multipart
    /// completion), so readers never see a partial file.
    pub fn writer(&self, key: &str) -> Result<ObjectWriter> {
        let path = path(key)?;
        let inner = BufWriter::with_capacity(self.store.clone(), path, self.part_size)
            .with_max_concurrency(self.upload_concurrency);
        Ok(ObjectWriter {
            inner,
            key: key.to_owned(),
            written: 0,
        })
    }

    /// Streams the object under `key`, with its size known before the first
    /// byte ([`Error::NotFound`] when there is none).
    pub async fn open(&self, key: &str) -> Result<Download> {
        let result = self
            .store
            .get(&path(key)?)
            .await
            .map_err(|e| Error::from_store(key, e))?;
        let size = result.meta.size;
        let owned_key = key.to_owned();
        let stream = result
            .into_stream()
            .map_err(move |e| Error::from_store(&owned_key, e))
            .boxed();
        Ok(Download { size, stream })
    }

    /// Removes the object under `key`; removing a missing one succeeds, so
    /// retention can simply run again after a crash.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::Backend(e)),
        }
    }

    /// True when an object exists under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&path(key)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(Error::Backend(e)),
        }
    }
}

impl Storage {
    /// The complete objects under `prefix` (a `/`-separated key prefix),
    /// in no particular order. Uploads in progress are not listed.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let prefix = match path(prefix) {
            Ok(prefix) => prefix,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        self.store
            .list(Some(&prefix))
            .map(|meta| {
                let meta = meta.map_err(Error::Backend)?;
                Ok(ObjectInfo {
                    key: meta.location.to_string(),
                    size: meta.size,
                    last_modified: meta.last_modified,
                })
            })
            .boxed()
    }

    /// Removes the staging files of uploads that stopped (a process killed
    /// mid-write) and were not touched for `older_than`; returns how many.
    ///
    /// Local backend: an upload is written to `{key}#{n}` next to its key
    /// and renamed on completion (object_store's convention, which hides
    /// those files from listings), so such a file last modified long ago is
    /// an upload nobody will finish. A live upload writes its file at
    /// least once per part, so choose `older_than` well above the longest
    /// pause between two parts. S3: incomplete multipart uploads are not
    /// listed by this crate; the bucket's lifecycle rule
    /// `AbortIncompleteMultipartUpload` removes them (ADR 0025), and this
    /// returns 0.
    pub async fn remove_stale_staging(&self, older_than: Duration) -> Result<usize> {
        let Some(root) = self.local_root.clone() else {
            return Ok(0);
        };
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        tokio::task::spawn_blocking(move || remove_staging_under(&root, cutoff))
            .await
            .map_err(|e| Error::Directory {
                path: "(staging sweep)".to_owned(),
                source: std::io::Error::other(e),
            })?
    }
}

/// Walks `dir` removing staging files last modified before `cutoff`.
fn remove_staging_under(dir: &std::path::Path, cutoff: SystemTime) -> Result<usize> {
    let io = |source| Error::Directory {
        path: dir.display().to_string(),
        source,
    };
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // Removed meanwhile (automatic cleanup of an emptied directory).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io)?;
        let file_type = entry.file_type().map_err(io)?;
        let entry_path = entry.path();
        if file_type.is_dir() {
            removed += remove_staging_under(&entry_path, cutoff)?;
            continue;
        }
        if !file_type.is_file() || !is_staging_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let modified = entry.metadata().and_then(|m| m.modified()).map_err(io)?;
        if modified < cutoff {
            match std::fs::remove_file(&entry_path) {
                Ok(()) => removed += 1,
                // Completed or removed by someone else meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    Ok(removed)
}

/// `name#digits`: object_store's local staging file of an upload of `name`.
fn is_staging_name(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((base, suffix)) => {
            !base.is_empty() && !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// A stored object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

/// An object's content as a stream, and its size.
pub struct Download {
    pub size: u64,
    pub stream: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A streaming write of one object. Memory stays bounded by the part size
/// and upload concurrency, whatever the object's size.
pub struct ObjectWriter {
    inner: BufWriter,
    key: String,
    written: u64,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("key", &self.key)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl ObjectWriter {
    /// Appends `bytes` (without copying them). Waits when the uploads in
    /// flight are at the concurrency limit: back-pressure on the producer.
    pub async fn write(&mut self, bytes: Bytes) -> Result<()> {
        self.written += bytes.len() as u64;
        self.inner
            .put(bytes)
            .await
            .map_err(|e| Error::from_store(&self.key, e))
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the object: from here on it is visible under its key.
    pub async fn finish(mut self) -> Result<u64> {
        use tokio::io::AsyncWriteExt;
        self.inner.shutdown().await.map_err(|e| {
            Error::Backend(object_store::Error::Generic {
                store: "writer",
                source: Box::new(e),
            })
        })?;
        Ok(self.written)
    }

    /// Gives up: parts already uploaded are discarded and nothing appears
    /// under the key (a previous object under it stays).
    pub async fn abort(mut self) -> Result<()> {
        self.inner
            .abort()
            .await
            .map_err(|e| Error::from_store(&self.key, e))
    }
}

/// `key` as an object path: `/`-separated segments, none empty, `.` or `..`.
fn path(key: &str) -> Result<Path> {
    Path::parse(key).map_err(|e| Error::InvalidKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}
