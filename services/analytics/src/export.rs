//! `export-raw`: raw events of a date range as NDJSON, one folder per UTC
//! day (`dt=YYYY-MM-DD/events.ndjson`), the Hive-style layout BigQuery,
//! ClickHouse and DuckDB read directly (load commands: `docs/analytics.md`).
//!
//! Rows are streamed from PostgreSQL and written through a buffer, so memory
//! stays flat whatever the day's size. Each file is written under a
//! temporary name and renamed when complete: a reader (or an upload job)
//! never sees half a day.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use futures::{StreamExt, pin_mut};
use keel_db::GenericClient;
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Database(#[from] keel_db::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One exported day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedDay {
    pub day: NaiveDate,
    pub path: PathBuf,
    pub rows: u64,
}

/// Writes every day `from..=to` (empty days as empty files, so a loader can
/// tell "nothing happened" from "not exported").
pub async fn export_raw(
    client: &impl GenericClient,
    from: NaiveDate,
    to: NaiveDate,
    dir: &Path,
) -> Result<Vec<ExportedDay>, ExportError> {
    // Streaming a whole day may outlast the service's per-statement budget.
    client
        .batch_execute("SET statement_timeout = 0")
        .await
        .map_err(keel_db::Error::from)?;
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        out.push(export_day(client, day, dir).await?);
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    Ok(out)
}

async fn export_day(
    client: &impl GenericClient,
    day: NaiveDate,
    dir: &Path,
) -> Result<ExportedDay, ExportError> {
    let folder = dir.join(format!("dt={}", day.format("%Y-%m-%d")));
    let path = folder.join("events.ndjson");
    let partial = folder.join(".events.ndjson.partial");
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Write { path, source }
    };
    tokio::fs::create_dir_all(&folder)
        .await
        .map_err(write_err(&folder))?;
    let file = tokio::fs::File::create(&partial)
        .await
        .map_err(write_err(&partial))?;
    let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);

    let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
    let end = start + chrono::TimeDelta::days(1);
    // The envelope's own field names, so the export reads like the bus.
    let rows = client
        .query_raw(
            "SELECT json_build_object(
                        'id', id, 'type', type, 'version', version,
                        'occurred_at', to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                        'user_id', user_id, 'data', data)::text
             FROM events
             WHERE occurred_at >= $1 AND occurred_at < $2
             ORDER BY occurred_at, id",
            [&start, &end],
        )
        .await
        .map_err(keel_db::Error::from)?;
    pin_mut!(rows);
    let mut count = 0u64;
    while let Some(row) = rows.next().await {
        let row = row.map_err(keel_db::Error::from)?;
        let line: &str = row.get(0);
        writer
            .write_all(line.as_bytes())
            .await
            .map_err(write_err(&partial))?;
        writer.write_all(b"\n").await.map_err(write_err(&partial))?;
        count += 1;
    }
    writer.flush().await.map_err(write_err(&partial))?;
    writer
        .into_inner()
        .sync_all()
        .await
        .map_err(write_err(&partial))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(write_err(&path))?;
    Ok(ExportedDay {
        day,
        path,
        rows: count,
    })
}
