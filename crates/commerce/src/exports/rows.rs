//! The SQL that produces an export's file: one `COPY (SELECT ...) TO STDOUT`
//! statement, so PostgreSQL formats and streams the rows and the worker
//! never holds the result.
//!
//! `COPY` takes no bind parameters, so the filter's values are written into
//! the statement as literals. Each is a typed value this crate produced (a
//! UUID, a status from a closed set, an instant it formatted), never text
//! a client supplied, so nothing needs quoting beyond the fixed forms below.

use std::fmt::Write;

use crate::exports::domain::{Export, ExportFilter, Format, rfc3339_micros};

/// The columns of an orders export, in file order. Timestamps are RFC 3339
/// UTC with microseconds whatever the session's `DateStyle`/`TimeZone`.
pub const ORDER_COLUMNS: [&str; 10] = [
    "id",
    "external_id",
    "status",
    "currency",
    "total_cents",
    "customer_email",
    "user_id",
    "source",
    "created_at",
    "updated_at",
];

/// `to_char` pattern of an RFC 3339 UTC instant with microseconds.
const INSTANT: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

/// The CSV columns whose text a customer or a webhook sender chooses, and
/// so may begin a spreadsheet formula (`=HYPERLINK(...)`, `@SUM(...)`).
///
/// The others cannot: `id` and `user_id` are UUIDs, `created_at` and
/// `updated_at` instants we format, `status` and `currency` are held to a
/// closed set and `^[A-Z]{3}$` by the table's checks, and `source` is `api`
/// or `webhook:<a configured name>`. `total_cents` is a number and must stay
/// one for a spreadsheet to sum it (the table keeps it >= 0; a negative
/// amount would still be a number, not a formula to defuse).
pub const FORMULA_PRONE_COLUMNS: [&str; 2] = ["external_id", "customer_email"];

/// The CSV cell of text column `column`, safe to open in a spreadsheet: a
/// value beginning with `=`, `+`, `-`, `@`, a tab or a carriage return gets
/// a leading `'` (OWASP, "CSV Injection"), which spreadsheets show as text
/// instead of evaluating; [`copy_statement`] also quotes these columns.
/// Done in the projection, so the file still streams straight out of
/// `COPY`. NULL stays NULL (an empty cell).
fn defused(column: &str) -> String {
    format!(
        r"CASE WHEN left(o.{column}, 1) IN ('=', '+', '-', '@', E'\t', E'\r') THEN '''' || o.{column} ELSE o.{column} END AS {column}"
    )
}

/// The `COPY ... TO STDOUT` statement whose output is the export's file
/// (before compression).
///
/// - CSV: `FORMAT csv` with a header row; RFC 4180 quoting by PostgreSQL.
///   The [formula-prone](FORMULA_PRONE_COLUMNS) text columns are defused in
///   the projection and always quoted (`FORCE_QUOTE`), as OWASP's CSV
///   injection guidance asks.
/// - NDJSON: one `json_build_object(...)::text` per line. Text-format COPY
///   would escape the backslashes JSON itself uses, so the one column goes
///   out in CSV format with a delimiter and quote byte (0x01, 0x02) that
///   JSON text never contains raw (PostgreSQL escapes control characters in
///   JSON strings): no value is ever quoted or escaped, each line is
///   exactly the JSON object.
pub fn copy_statement(export: &Export) -> String {
    let select = select(export);
    match export.format {
        Format::Csv => format!(
            "COPY ({select}) TO STDOUT (FORMAT csv, HEADER true, FORCE_QUOTE ({}))",
            FORMULA_PRONE_COLUMNS.join(", ")
        ),
        Format::Ndjson => {
            format!("COPY ({select}) TO STDOUT (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')")
        }
    }
}

/// The `SELECT` inside [`copy_statement`] (also what a benchmark compares
/// against with `psql \copy`).
pub fn select(export: &Export) -> String {
    let projection = match export.format {
        Format::Csv => format!(
            "o.id, {}, o.status, o.currency, o.total_cents, {}, \
             o.user_id, o.source, to_char(o.created_at AT TIME ZONE 'UTC', {INSTANT}) AS created_at, \
             to_char(o.updated_at AT TIME ZONE 'UTC', {INSTANT}) AS updated_at",
            defused("external_id"),
            defused("customer_email"),
        ),
        // NDJSON is read by programs, not spreadsheets: values go out as
        // stored (a JSON string is never evaluated).
        Format::Ndjson => format!(
            "json_build_object('id', o.id, 'external_id', o.external_id, 'status', o.status, \
             'currency', o.currency, 'total_cents', o.total_cents, 'customer_email', o.customer_email, \
             'user_id', o.user_id, 'source', o.source, \
             'created_at', to_char(o.created_at AT TIME ZONE 'UTC', {INSTANT}), \
             'updated_at', to_char(o.updated_at AT TIME ZONE 'UTC', {INSTANT}))::text"
        ),
    };
    let mut sql = format!("SELECT {projection} FROM orders o");
    let conditions = conditions(export);
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    // Oldest first: a stable order, and the one the indexes already have.
    sql.push_str(" ORDER BY o.created_at, o.id");
    sql
}

fn conditions(export: &Export) -> Vec<String> {
    let mut conditions = Vec::new();
    if !export.all_orders {
        // A UUID's Display form is hex and dashes only.
        conditions.push(format!("o.user_id = '{}'::uuid", export.user_id));
    }
    let ExportFilter {
        status,
        created_after,
        created_before,
    } = &export.filter;
    if let Some(status) = status {
        // `as_str` is one of a closed set of lowercase words.
        conditions.push(format!("o.status = '{}'", status.as_str()));
    }
    let mut instant = |column_op: &str, at| {
        let mut condition = String::new();
        let _ = write!(
            condition,
            "o.created_at {column_op} '{}'::timestamptz",
            rfc3339_micros(at)
        );
        conditions.push(condition);
    };
    if let Some(after) = created_after {
        instant(">=", *after);
    }
    if let Some(before) = created_before {
        instant("<", *before);
    }
    conditions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use chrono::DateTime;
    use uuid::Uuid;

    use super::*;
    use crate::exports::domain::{Compression, ExportStatus, Resource};
    use crate::orders::domain::OrderStatus;

    fn export(format: Format, all_orders: bool, filter: ExportFilter) -> Export {
        Export {
            id: Uuid::nil(),
            user_id: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            all_orders,
            resource: Resource::Orders,
            format,
            compression: Compression::None,
            filter,
            status: ExportStatus::Running,
            rows_written: 0,
            bytes: 0,
            sha256: None,
            error: None,
            created_at: DateTime::UNIX_EPOCH,
            finished_at: None,
            expires_at: None,
            object_key: String::new(),
            attempts: 1,
            started_at: None,
            updated_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_customer_export_is_limited_to_their_orders_and_the_filter() {
        let filter = ExportFilter {
            status: Some(OrderStatus::Paid),
            created_after: Some(DateTime::from_timestamp_micros(1_763_000_000_000_001).unwrap()),
            created_before: Some(DateTime::from_timestamp(1_764_000_000, 0).unwrap()),
        };
        let sql = copy_statement(&export(Format::Csv, false, filter));
        assert!(
            sql.starts_with("COPY (SELECT o.id, CASE WHEN left(o.external_id, 1)"),
            "{sql}"
        );
        assert!(
            sql.ends_with(
                "TO STDOUT (FORMAT csv, HEADER true, FORCE_QUOTE (external_id, customer_email))"
            ),
            "{sql}"
        );
        assert!(sql.contains(
            "WHERE o.user_id = '01234567-89ab-cdef-0123-456789abcdef'::uuid \
             AND o.status = 'paid' \
             AND o.created_at >= '2025-11-13T02:13:20.000001Z'::timestamptz \
             AND o.created_at < '2025-11-24T16:00:00.000000Z'::timestamptz \
             ORDER BY o.created_at, o.id"
        ));
    }

    #[test]
    fn an_admin_export_without_filter_has_no_where_clause() {
        let sql = select(&export(Format::Ndjson, true, ExportFilter::default()));
        assert!(!sql.contains("WHERE"), "{sql}");
        assert!(
            sql.starts_with("SELECT json_build_object('id', o.id"),
            "{sql}"
        );
    }

    #[test]
    fn ndjson_goes_out_without_quoting_or_escaping() {
        let sql = copy_statement(&export(Format::Ndjson, true, ExportFilter::default()));
        assert!(
            sql.ends_with("(FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"),
            "{sql}"
        );
    }
}
