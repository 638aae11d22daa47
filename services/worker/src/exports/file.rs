//! Building one export file: `COPY ... TO STDOUT` streamed through a row
//! counter, optional gzip and SHA-256 into object storage. Memory stays at
//! a batch plus the storage writer's parts, whatever the file's size.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use flate2::write::GzEncoder;
use futures::StreamExt;
use keel_commerce::exports::{Compression, Export, Lease, Written};
use keel_db::{Client, Pool};
use keel_files::{ObjectWriter, Storage};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::exports::rows::RowCounter;

/// COPY delivers about one row per chunk; hashing, compressing and writing
/// 64 KiB at a time keeps the per-chunk overhead out of the loop.
const BATCH: usize = 64 * 1024;

/// Why a file could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("reading the rows failed: {0}")]
    Database(#[from] keel_db::Error),
    #[error("writing the file failed: {0}")]
    Storage(#[from] keel_files::Error),
    #[error("compressing the file failed: {0}")]
    Compression(#[source] std::io::Error),
    /// The export's lease went to another builder mid-file: this one stops
    /// (its upload aborted) and leaves the export to the new holder.
    #[error("the export's lease was taken over by another builder")]
    Superseded,
}

impl From<tokio_postgres::Error> for BuildError {
    fn from(error: tokio_postgres::Error) -> Self {
        BuildError::Database(error.into())
    }
}

impl BuildError {
    /// What the user reads in the export's `error`: what went wrong in
    /// their terms, never a path, SQL or a server's message.
    pub fn user_message(&self) -> &'static str {
        match self {
            BuildError::Database(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) =>
            {
                "The export took too long to build; narrow the filter and request it again."
            }
            BuildError::Database(_) => {
                "The rows could not be read from the database; please request the export again."
            }
            BuildError::Storage(_) | BuildError::Compression(_) | BuildError::Superseded => {
                "The export file could not be written to storage; please request the export again."
            }
        }
    }
}

/// How a file is built.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub progress_interval: Duration,
    pub statement_timeout: Duration,
}

/// Streams `export`'s rows into its object and returns what was written.
/// On error the upload is aborted: a previous object under the key (none,
/// normally) stays as it was.
///
/// `lease` is the builder's hold on the export: progress is recorded only
/// while it is current, and once `superseded` is cancelled (the lease was
/// lost) the build stops with [`BuildError::Superseded`].
pub async fn build(
    client: &mut Client,
    pool: &Pool,
    storage: &Storage,
    export: &Export,
    lease: &Lease,
    superseded: &CancellationToken,
    options: &BuildOptions,
) -> Result<Written, BuildError> {
    let writer = storage.writer(&export.object_key)?;
    let mut sink = Sink::new(writer, export.compression);
    let building = Building {
        pool,
        export,
        lease,
        superseded,
        options,
    };
    let rows = match copy_into(client, &building, &mut sink).await {
        Ok(rows) => rows,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    let (bytes, sha256) = sink.finish().await?;
    Ok(Written {
        rows,
        bytes: i64::try_from(bytes).unwrap_or(i64::MAX),
        sha256,
    })
}

/// What one build works with.
struct Building<'a> {
    pool: &'a Pool,
    export: &'a Export,
    lease: &'a Lease,
    superseded: &'a CancellationToken,
    options: &'a BuildOptions,
}

async fn copy_into(
    client: &mut Client,
    building: &Building<'_>,
    sink: &mut Sink,
) -> Result<i64, BuildError> {
    let Building {
        pool,
        export,
        lease,
        superseded,
        options,
    } = *building;
    // One transaction: one snapshot for the whole file, and a statement
    // timeout of its own (the pool's is sized for requests).
    let tx = client.transaction().await.map_err(keel_db::Error::from)?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = {}",
        options.statement_timeout.as_millis()
    ))
    .await?;
    let stream = tx
        .copy_out(&keel_commerce::exports::rows::copy_statement(export))
        .await?;
    let mut stream = std::pin::pin!(stream);
    let mut counter = RowCounter::new(export.format);
    let mut batch = BytesMut::with_capacity(BATCH);
    let mut last_progress = Instant::now();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        counter.feed(&chunk);
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH {
            if superseded.is_cancelled() {
                return Err(BuildError::Superseded);
            }
            let full = std::mem::replace(&mut batch, BytesMut::with_capacity(BATCH));
            sink.write(full.freeze()).await?;
            if last_progress.elapsed() >= options.progress_interval {
                report_progress(pool, lease, counter.rows()).await;
                last_progress = Instant::now();
            }
        }
    }
    if superseded.is_cancelled() {
        return Err(BuildError::Superseded);
    }
    if !batch.is_empty() {
        sink.write(batch.freeze()).await?;
    }
    tx.commit().await?;
    Ok(counter.rows())
}

/// Progress goes over another connection (the COPY's transaction is not
/// visible to anyone until it ends); a failed update is only logged.
async fn report_progress(pool: &Pool, lease: &Lease, rows: i64) {
    let updated = match pool.get().await {
        Ok(client) => keel_commerce::exports::leases::progress(&client, lease, rows)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = updated {
        tracing::debug!(export_id = %lease.export_id, error, "progress update failed");
    }
}

/// Where the bytes go: gzip (optional), then SHA-256 and size over exactly
/// what is stored, then the object writer.
struct Sink {
    writer: ObjectWriter,
    gzip: Option<GzEncoder<Vec<u8>>>,
    hasher: Sha256,
    bytes: u64,
}

impl Sink {
    fn new(writer: ObjectWriter, compression: Compression) -> Self {
        let gzip = match compression {
            Compression::None => None,
            Compression::Gzip => Some(GzEncoder::new(
                Vec::with_capacity(BATCH),
                flate2::Compression::default(),
            )),
        };
        Self {
            writer,
            gzip,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    async fn write(&mut self, plain: Bytes) -> Result<(), BuildError> {
        let stored = match &mut self.gzip {
            None => plain,
            Some(encoder) => {
                encoder.write_all(&plain).map_err(BuildError::Compression)?;
                Bytes::from(std::mem::take(encoder.get_mut()))
            }
        };
        self.store(stored).await
    }

    async fn store(&mut self, bytes: Bytes) -> Result<(), BuildError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.hasher.update(&bytes);
        self.bytes += bytes.len() as u64;
        self.writer.write(bytes).await?;
        Ok(())
    }

    /// Flushes the compressor, completes the object; `(size, hex sha256)`.
    async fn finish(mut self) -> Result<(u64, String), BuildError> {
        if let Some(encoder) = self.gzip.take() {
            let rest = encoder.finish().map_err(BuildError::Compression)?;
            if let Err(e) = self.store(Bytes::from(rest)).await {
                let _ = self.writer.abort().await;
                return Err(e);
            }
        }
        let sha256 = hex::encode(self.hasher.finalize());
        self.writer.finish().await?;
        Ok((self.bytes, sha256))
    }

    async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, "aborting a partial export upload failed");
        }
    }
}
