//! Export types. A request is validated once, at construction
//! ([`NewExport::parse`]), so the queries and the worker trust every value.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::orders::domain::{Invalid, OrderStatus};

/// Where an export is in its life.
///
/// `queued → running → succeeded | failed`, `queued → failed` (a job that
/// can never run), `running → running` (a redelivered job starts over), and
/// `succeeded | failed → expired` once retention removes the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ExportStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Expired,
}

/// A status change the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an export cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: ExportStatus,
    pub to: ExportStatus,
}

impl ExportStatus {
    pub const ALL: [ExportStatus; 5] = [
        ExportStatus::Queued,
        ExportStatus::Running,
        ExportStatus::Succeeded,
        ExportStatus::Failed,
        ExportStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExportStatus::Queued => "queued",
            ExportStatus::Running => "running",
            ExportStatus::Succeeded => "succeeded",
            ExportStatus::Failed => "failed",
            ExportStatus::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| "must be one of queued, running, succeeded, failed, expired".to_owned())
    }

    /// Queued or running: counts against the user's active limit.
    pub fn is_active(self) -> bool {
        matches!(self, ExportStatus::Queued | ExportStatus::Running)
    }

    /// Succeeded or failed (or expired since): the worker never rebuilds it.
    pub fn is_finished(self) -> bool {
        !self.is_active()
    }

    /// Checks `self → to`.
    pub fn transition_to(self, to: ExportStatus) -> Result<ExportStatus, IllegalTransition> {
        use ExportStatus::*;
        match (self, to) {
            (Queued | Running, Running | Succeeded | Failed) | (Succeeded | Failed, Expired) => {
                Ok(to)
            }
            _ => Err(IllegalTransition { from: self, to }),
        }
    }
}

impl std::fmt::Display for ExportStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is exported. Only orders, for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ExportResource))]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Orders,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Orders => "orders",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "orders" => Ok(Resource::Orders),
            _ => Err("must be \"orders\"".to_owned()),
        }
    }
}

/// The file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ExportFormat))]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// RFC 4180 with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "csv" => Ok(Format::Csv),
            "ndjson" => Ok(Format::Ndjson),
            _ => Err("must be one of csv, ndjson".to_owned()),
        }
    }

    /// The media type of the uncompressed file.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Ndjson => "application/x-ndjson",
        }
    }
}

/// Whether the file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = ExportCompression)
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            _ => Err("must be one of none, gzip".to_owned()),
        }
    }
}

/// Which rows an export holds; absent fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub status: Option<OrderStatus>,
    /// Inclusive, RFC 3339 (years 0001-9999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub created_after: Option<DateTime<Utc>>,
    /// Exclusive, RFC 3339; later than `created_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub created_before: Option<DateTime<Utc>>,
}

/// The unvalidated body of `POST /exports`. Every field is optional here so
/// that a missing one is reported by name like an invalid one.
/// Documented (as `NewExport`) with the values [`NewExport::parse`] takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = NewExport, description = "What to export, in which format.")
)]
pub struct RawNewExport {
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Resource, required = true))]
    pub resource: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Format, required = true))]
    pub format: Option<String>,
    /// Default `none`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Compression>, nullable = false))]
    pub compression: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<ExportFilter>, nullable = false))]
    pub filter: Option<RawExportFilter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawExportFilter {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_after: Option<String>,
    #[serde(default)]
    pub created_before: Option<String>,
}

/// A validated export request, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExport {
    pub user_id: Uuid,
    /// Every user's orders (admins) rather than the requester's own.
    pub all_orders: bool,
    pub resource: Resource,
    pub format: Format,
    pub compression: Compression,
    pub filter: ExportFilter,
}

impl NewExport {
    /// Validates every field and reports all problems at once, each named
    /// by its path (`filter.created_after`).
    pub fn parse(raw: RawNewExport, user_id: Uuid, all_orders: bool) -> Result<Self, Vec<Invalid>> {
        let mut errors = Vec::new();
        let mut report = |field: &str, message: String| errors.push(Invalid::new(field, message));
        let resource = match raw.resource.as_deref() {
            None => {
                report("resource", "is required".to_owned());
                None
            }
            Some(v) => Resource::parse(v).map_err(|m| report("resource", m)).ok(),
        };
        let format = match raw.format.as_deref() {
            None => {
                report("format", "is required".to_owned());
                None
            }
            Some(v) => Format::parse(v).map_err(|m| report("format", m)).ok(),
        };
        let compression = match raw.compression.as_deref() {
            None => Some(Compression::None),
            Some(v) => Compression::parse(v)
                .map_err(|m| report("compression", m))
                .ok(),
        };
        let raw_filter = raw.filter.unwrap_or_default();
        let status = raw_filter.status.as_deref().and_then(|v| {
            OrderStatus::parse(v)
                .map_err(|m| report("filter.status", m))
                .ok()
        });
        let created_after = raw_filter.created_after.as_deref().and_then(|v| {
            parse_instant(v)
                .map_err(|m| report("filter.created_after", m))
                .ok()
        });
        let created_before = raw_filter.created_before.as_deref().and_then(|v| {
            parse_instant(v)
                .map_err(|m| report("filter.created_before", m))
                .ok()
        });
        if let (Some(after), Some(before)) = (created_after, created_before)
            && after >= before
        {
            report(
                "filter.created_before",
                "must be later than filter.created_after".to_owned(),
            );
        }
        match (resource, format, compression) {
            (Some(resource), Some(format), Some(compression)) if errors.is_empty() => Ok(Self {
                user_id,
                all_orders,
                resource,
                format,
                compression,
                filter: ExportFilter {
                    status,
                    created_after,
                    created_before,
                },
            }),
            _ => Err(errors),
        }
    }
}

/// An RFC 3339 instant within years 1 to 9999 (what PostgreSQL and the
/// file's timestamps represent without surprises).
fn parse_instant(value: &str) -> Result<DateTime<Utc>, String> {
    let instant = DateTime::parse_from_rfc3339(value)
        .map_err(|_| "must be an RFC 3339 timestamp".to_owned())?
        .with_timezone(&Utc);
    if !(1..=9999).contains(&instant.year()) {
        return Err("must be between years 0001 and 9999".to_owned());
    }
    Ok(instant)
}

/// An instant as an RFC 3339 UTC string with microseconds, the precision
/// PostgreSQL keeps (used for SQL literals and file names).
pub(crate) fn rfc3339_micros(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A stored export. Serialises to the API's JSON (without `download_url`,
/// which only the gateway can mint); the bookkeeping fields stay internal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = StoredExport))]
pub struct Export {
    pub id: Uuid,
    /// The requester; the only customer who may see the export.
    #[serde(skip)]
    pub user_id: Uuid,
    #[serde(skip)]
    pub all_orders: bool,
    pub resource: Resource,
    pub format: Format,
    pub compression: Compression,
    pub filter: ExportFilter,
    pub status: ExportStatus,
    /// Rows in the file so far (progress while running).
    pub rows_written: i64,
    /// Size of the stored file; 0 until it has succeeded.
    pub bytes: i64,
    /// Hex SHA-256 of the stored file (the compressed bytes when gzip),
    /// once it has succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, pattern = "^[0-9a-f]{64}$")
    )]
    pub sha256: Option<String>,
    /// Why it failed, written for the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub finished_at: Option<DateTime<Utc>>,
    /// When the file (and the export) will be removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub expires_at: Option<DateTime<Utc>>,
    /// Where the file is (or will be) in object storage.
    #[serde(skip)]
    pub object_key: String,
    #[serde(skip)]
    pub attempts: i32,
    #[serde(skip)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub updated_at: DateTime<Utc>,
}

impl Export {
    /// The object key of an export: fixed by its id, so a redelivered job
    /// overwrites the same object instead of leaving a second one behind.
    pub fn object_key_for(
        id: Uuid,
        user_id: Uuid,
        format: Format,
        compression: Compression,
    ) -> String {
        format!("exports/{user_id}/{id}.{}", extension(format, compression))
    }

    /// The object key attempt `generation` of an export writes: the key
    /// fixed at creation for the first attempt, one of its own for each
    /// later one, so two builders of one export (a stale one and the one
    /// that took its lease over) never write the same object, and the row
    /// names the file of the attempt that succeeded (ADR 0025).
    pub fn attempt_object_key(&self, generation: i32) -> String {
        let extension = extension(self.format, self.compression);
        if generation <= 1 {
            format!("exports/{}/{}.{extension}", self.user_id, self.id)
        } else {
            format!(
                "exports/{}/{}.attempt-{generation}.{extension}",
                self.user_id, self.id
            )
        }
    }

    /// The name a browser saves the file under.
    pub fn file_name(&self) -> String {
        format!(
            "{}-{}.{}",
            self.resource.as_str(),
            self.id,
            extension(self.format, self.compression)
        )
    }

    /// The file's media type as served (`application/gzip` when compressed,
    /// so clients do not decompress it behind the user's back).
    pub fn content_type(&self) -> &'static str {
        match self.compression {
            Compression::None => self.format.content_type(),
            Compression::Gzip => "application/gzip",
        }
    }

    /// Who may see this export: its owner, or an admin.
    pub fn visible_to(&self, scope: crate::orders::domain::Scope) -> bool {
        match scope {
            crate::orders::domain::Scope::All => true,
            crate::orders::domain::Scope::User(user) => self.user_id == user,
        }
    }
}

fn extension(format: Format, compression: Compression) -> String {
    match compression {
        Compression::None => format.as_str().to_owned(),
        Compression::Gzip => format!("{}.gz", format.as_str()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn raw(resource: &str, format: &str) -> RawNewExport {
        RawNewExport {
            resource: Some(resource.to_owned()),
            format: Some(format.to_owned()),
            ..Default::default()
        }
    }

    fn fields(errors: &[Invalid]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn a_minimal_request_is_an_uncompressed_unfiltered_export() {
        let user = Uuid::now_v7();
        let new = NewExport::parse(raw("orders", "ndjson"), user, false).unwrap();
        assert_eq!(new.format, Format::Ndjson);
        assert_eq!(new.compression, Compression::None);
        assert_eq!(new.filter, ExportFilter::default());
        assert_eq!(new.user_id, user);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let request = RawNewExport {
            resource: Some("users".into()),
            format: Some("xlsx".into()),
            compression: Some("zip".into()),
            filter: Some(RawExportFilter {
                status: Some("lost".into()),
                created_after: Some("yesterday".into()),
                created_before: Some("+10000-01-01T00:00:00Z".into()),
            }),
        };
        let errors = NewExport::parse(request, Uuid::nil(), false).unwrap_err();
        assert_eq!(
            fields(&errors),
            [
                "resource",
                "format",
                "compression",
                "filter.status",
                "filter.created_after",
                "filter.created_before"
            ]
        );
    }

    #[test]
    fn missing_resource_and_format_are_required() {
        let errors = NewExport::parse(RawNewExport::default(), Uuid::nil(), false).unwrap_err();
        assert_eq!(fields(&errors), ["resource", "format"]);
        assert!(errors.iter().all(|e| e.message == "is required"));
    }

    #[test]
    fn created_after_must_come_before_created_before() {
        let mut request = raw("orders", "csv");
        request.filter = Some(RawExportFilter {
            status: None,
            created_after: Some("2026-01-02T00:00:00Z".into()),
            created_before: Some("2026-01-01T00:00:00+00:00".into()),
        });
        let errors = NewExport::parse(request, Uuid::nil(), false).unwrap_err();
        assert_eq!(fields(&errors), ["filter.created_before"]);
    }

    #[test]
    fn a_full_filter_is_kept_in_utc() {
        let mut request = raw("orders", "csv");
        request.compression = Some("gzip".into());
        request.filter = Some(RawExportFilter {
            status: Some("paid".into()),
            created_after: Some("2026-01-01T01:00:00+01:00".into()),
            created_before: Some("2026-02-01T00:00:00Z".into()),
        });
        let new = NewExport::parse(request, Uuid::nil(), true).unwrap();
        assert_eq!(new.filter.status, Some(OrderStatus::Paid));
        assert_eq!(
            rfc3339_micros(new.filter.created_after.unwrap()),
            "2026-01-01T00:00:00.000000Z"
        );
        assert!(new.all_orders);
        assert_eq!(new.compression, Compression::Gzip);
    }

    #[test]
    fn the_state_machine_allows_only_forward_moves() {
        use ExportStatus::*;
        for (from, to) in [
            (Queued, Running),
            (Running, Running),
            (Running, Succeeded),
            (Running, Failed),
            (Queued, Failed),
            (Succeeded, Expired),
            (Failed, Expired),
        ] {
            assert_eq!(from.transition_to(to), Ok(to), "{from} → {to}");
        }
        for (from, to) in [
            (Succeeded, Running),
            (Failed, Running),
            (Expired, Running),
            (Succeeded, Failed),
            (Queued, Expired),
            (Running, Queued),
            (Expired, Expired),
        ] {
            assert!(from.transition_to(to).is_err(), "{from} → {to}");
        }
    }

    #[test]
    fn an_export_serialises_to_the_api_shape_without_internals() {
        let id = Uuid::now_v7();
        let export = Export {
            id,
            user_id: Uuid::now_v7(),
            all_orders: false,
            resource: Resource::Orders,
            format: Format::Csv,
            compression: Compression::Gzip,
            filter: ExportFilter::default(),
            status: ExportStatus::Queued,
            rows_written: 0,
            bytes: 0,
            sha256: None,
            error: None,
            created_at: DateTime::from_timestamp(1_763_000_000, 0).unwrap(),
            finished_at: None,
            expires_at: None,
            object_key: "exports/x".into(),
            attempts: 0,
            started_at: None,
            updated_at: DateTime::from_timestamp(1_763_000_000, 0).unwrap(),
        };
        let json = serde_json::to_value(&export).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": id,
                "resource": "orders",
                "format": "csv",
                "compression": "gzip",
                "filter": {},
                "status": "queued",
                "rows_written": 0,
                "bytes": 0,
                "created_at": "2025-11-13T02:13:20Z",
            })
        );
        assert_eq!(export.file_name(), format!("orders-{id}.csv.gz"));
        assert_eq!(export.content_type(), "application/gzip");
    }
}
