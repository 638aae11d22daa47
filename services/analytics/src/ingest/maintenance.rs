//! Partitions created ahead and dropped past retention, on a schedule.

use std::time::Duration;

use chrono::{NaiveDate, Utc};
use keel_db::{GenericClient, Pool};
use tokio_util::sync::CancellationToken;

use crate::settings::RetentionSettings;

/// Creates the partitions of yesterday to `ahead` days after `today` and
/// drops those wholly older than `today - retention_days`. Returns the
/// dropped partitions' names.
pub async fn maintain(
    client: &impl GenericClient,
    today: NaiveDate,
    settings: &RetentionSettings,
) -> keel_db::Result<Vec<String>> {
    let ahead = i32::try_from(settings.partitions_ahead).unwrap_or(i32::MAX);
    let retention = i32::try_from(settings.raw_days).unwrap_or(i32::MAX);
    let rows = client
        .query(
            "SELECT maintain_event_partitions($1, $2, $3)",
            &[&today, &ahead, &retention],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Runs [`maintain`] now and every `maintenance_interval` until `shutdown`.
/// A failed round is logged and tried again at the next tick.
pub async fn run(pool: Pool, settings: RetentionSettings, shutdown: CancellationToken) {
    let mut ticker =
        tokio::time::interval(settings.maintenance_interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let round = async {
            let client = pool.get().await?;
            maintain(&client, Utc::now().date_naive(), &settings).await
        };
        match round.await {
            Ok(dropped) if dropped.is_empty() => tracing::debug!("partitions maintained"),
            Ok(dropped) => tracing::info!(?dropped, "partitions past retention dropped"),
            Err(error) => {
                tracing::warn!(error = %error, "partition maintenance failed; retrying at the next tick")
            }
        }
    }
}
