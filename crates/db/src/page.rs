//! Newest-first keyset paging, written once for every listing (orders,
//! exports, webhook events, dead letters).
//!
//! A page is the rows strictly before a [`Cursor`] — the `(timestamp, id)`
//! of the last row of the previous page — in `timestamp DESC, id DESC`
//! order. Each page is then an index range scan however deep a client
//! pages, and rows inserted meanwhile never shift a page (as `OFFSET`
//! would). The caller names its table's key columns ([`Keyset`]) and its
//! filters ([`Filter`]); this module adds the cursor condition, the order,
//! the limit and the one extra row that tells whether a next page exists.
//!
//! The HTTP convention (API.md) is `?limit=` 1..=[`MAX_LIMIT`], default
//! [`DEFAULT_LIMIT`], an opaque `?cursor=`, and a body
//! `{"items": [...], "next_cursor": "..." | null}`: what [`Page`] serializes
//! to, and what [`PageRequest::parse`] reads.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use serde::{Serialize, Serializer};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

/// Page size when the client names none.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_LIMIT: u32 = 500;

/// 9999-12-31T23:59:59.999999Z in µs since the epoch: the last instant
/// PostgreSQL's `timestamptz` holds, so the last a cursor may name.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// A text that is not a cursor this API issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is not one this API issued")]
pub struct InvalidCursor;

/// The position after which the next page starts: the key of the last row
/// of a page. Opaque to clients: base64url of `"{µs since epoch}.{id}"`
/// (the format clients already hold; they must not build one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The row's timestamp key (`created_at`, `received_at`, `dead_at`).
    pub created_at: DateTime<Utc>,
    /// The row's id, which breaks ties between equal timestamps.
    pub id: Uuid,
}

impl Cursor {
    pub fn new(created_at: DateTime<Utc>, id: Uuid) -> Self {
        Self { created_at, id }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(value: &str) -> Result<Self, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(value).map_err(|_| InvalidCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidCursor)?;
        let (micros, id) = text.split_once('.').ok_or(InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| InvalidCursor)?;
        // Only instants PostgreSQL can hold (and we could have issued).
        if !(0..=MAX_MICROS).contains(&micros) {
            return Err(InvalidCursor);
        }
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(InvalidCursor)?,
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

/// As the client sees it: the encoded string.
impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

/// What a client asked for: where to start and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// `None`: from the newest row.
    pub cursor: Option<Cursor>,
    /// Clamped to `1..=MAX_LIMIT` when fetched.
    pub limit: u32,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }
}

impl PageRequest {
    /// Reads `?limit=` and `?cursor=` as the client sent them. Each bad one
    /// is passed to `invalid` with its parameter's name and a message for
    /// the client (`limit` first, then `cursor`), and its default is used,
    /// so the caller can report every bad parameter at once.
    pub fn parse(
        limit: Option<&str>,
        cursor: Option<&str>,
        mut invalid: impl FnMut(&'static str, String),
    ) -> Self {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(value) => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    invalid(
                        "limit",
                        format!("must be an integer between 1 and {MAX_LIMIT}"),
                    );
                    DEFAULT_LIMIT
                }
            },
        };
        let cursor = cursor.and_then(|value| {
            Cursor::decode(value)
                .map_err(|_| invalid("cursor", "is not a cursor this API issued".to_owned()))
                .ok()
        });
        Self { cursor, limit }
    }
}

/// One page of a listing, and where the next one starts. Serializes to the
/// API's `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Present when more rows may follow.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// The same page with each item turned into `f(item)`.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// The `WHERE` conditions of a query, joined by `AND`, with their values as
/// numbered parameters (`$1`, `$2`, ... in the order they are added), so no
/// value is ever written into the SQL text.
#[derive(Default)]
pub struct Filter {
    conditions: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("conditions", &self.conditions)
            .field("params", &self.params.len())
            .finish()
    }
}

impl Filter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `{column} {op} ${n}` with `value` as parameter `n`. `column`
    /// and `op` are SQL written by the caller (`"o.status"`, `"="`), never
    /// client input.
    pub fn and(
        mut self,
        column: &str,
        op: &str,
        value: impl ToSql + Sync + Send + 'static,
    ) -> Self {
        let placeholder = self.bind(value);
        self.conditions.push(format!("{column} {op} {placeholder}"));
        self
    }

    /// [`Filter::and`] when there is a value; unchanged otherwise.
    pub fn and_some<V: ToSql + Sync + Send + 'static>(
        self,
        column: &str,
        op: &str,
        value: Option<V>,
    ) -> Self {
        match value {
            Some(value) => self.and(column, op, value),
            None => self,
        }
    }

    /// Adds `value` as the next parameter; returns its placeholder (`$n`).
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// ` WHERE a AND b`, or nothing when there are no conditions.
    fn where_clause(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        }
    }

    /// The values, in parameter order, as tokio-postgres takes them.
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// What a listing reads and which columns order it.
#[derive(Debug, Clone, Copy)]
pub struct Keyset<'a> {
    /// `SELECT ... FROM ...`, without `WHERE`, `ORDER BY` or `LIMIT`.
    pub select: &'a str,
    /// The timestamp column of the key (`o.created_at`, `received_at`).
    pub time: &'a str,
    /// The unique id column that breaks ties (`o.id`).
    pub id: &'a str,
}

impl Keyset<'_> {
    /// The statement of one page and its parameters: `filter`, the cursor
    /// condition, newest first, `limit + 1` rows (one extra tells whether
    /// another page exists).
    fn statement(&self, filter: Filter, request: &PageRequest) -> (String, Filter) {
        let mut filter = filter;
        if let Some(cursor) = request.cursor {
            let at = filter.bind(cursor.created_at);
            let id = filter.bind(cursor.id);
            filter
                .conditions
                .push(format!("({}, {}) < ({at}, {id})", self.time, self.id));
        }
        let fetch = filter.bind(i64::from(clamped(request.limit)) + 1);
        let sql = format!(
            "{}{} ORDER BY {} DESC, {} DESC LIMIT {fetch}",
            self.select,
            filter.where_clause(),
            self.time,
            self.id
        );
        (sql, filter)
    }

    /// One page: the rows of `filter` after `request.cursor`, newest first,
    /// read with `from_row`; `key` gives a row's cursor (its timestamp and
    /// id), taken from the last row when another page follows.
    ///
    /// The statement is cached per connection: a listing has a few shapes
    /// (filters present or not), each parsed and planned once.
    pub async fn fetch<T, E>(
        &self,
        client: &impl GenericClient,
        filter: Filter,
        request: PageRequest,
        from_row: impl Fn(&Row) -> Result<T, E>,
        key: impl Fn(&T) -> Cursor,
    ) -> Result<Page<T>, E>
    where
        E: From<tokio_postgres::Error>,
    {
        let limit = clamped(request.limit) as usize;
        let (sql, filter) = self.statement(filter, &request);
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &filter.params()).await?;
        let mut items = rows.iter().map(from_row).collect::<Result<Vec<_>, E>>()?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(key)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }
}

fn clamped(limit: u32) -> u32 {
    limit.clamp(1, MAX_LIMIT)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_cursor_round_trips_to_the_microsecond() {
        let cursor = Cursor {
            created_at: DateTime::from_timestamp_micros(1_763_000_000_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn garbage_is_an_invalid_cursor() {
        let far_future = URL_SAFE_NO_PAD.encode(format!("{}.{}", i64::MAX, Uuid::nil()));
        for bad in ["", "!!", "bm9wZQ", "MS5ub3QtYS11dWlk", far_future.as_str()] {
            assert_eq!(Cursor::decode(bad), Err(InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn a_cursor_issued_before_the_move_still_decodes() {
        // "1763000000123456.0190f2d2-7c4e-7cc0-8000-000000000001", as the
        // orders module encoded it: clients may hold such cursors.
        let held = "MTc2MzAwMDAwMDEyMzQ1Ni4wMTkwZjJkMi03YzRlLTdjYzAtODAwMC0wMDAwMDAwMDAwMDE";
        let cursor = Cursor::decode(held).unwrap();
        assert_eq!(cursor.created_at.timestamp_micros(), 1_763_000_000_123_456);
        assert_eq!(
            cursor.id,
            "0190f2d2-7c4e-7cc0-8000-000000000001"
                .parse::<Uuid>()
                .unwrap()
        );
        assert_eq!(cursor.encode(), held);
    }

    #[test]
    fn a_page_serializes_as_the_api_shows_it() {
        let cursor = Cursor::new(DateTime::from_timestamp_micros(1).unwrap(), Uuid::nil());
        let page = Page {
            items: vec![1, 2],
            next_cursor: Some(cursor),
        };
        assert_eq!(
            serde_json::to_value(&page).unwrap(),
            serde_json::json!({"items": [1, 2], "next_cursor": cursor.encode()})
        );
        let last = Page::<u8> {
            items: vec![],
            next_cursor: None,
        };
        assert_eq!(
            serde_json::to_value(&last).unwrap(),
            serde_json::json!({"items": [], "next_cursor": null})
        );
    }

    #[test]
    fn bad_paging_parameters_are_reported_by_name_and_fall_back_to_defaults() {
        let mut bad = Vec::new();
        let request = PageRequest::parse(Some("501"), Some("zz"), |name, _| bad.push(name));
        assert_eq!(bad, ["limit", "cursor"]);
        assert_eq!(request, PageRequest::default());
        for limit in ["0", "-1", "ten", ""] {
            let mut bad = Vec::new();
            PageRequest::parse(Some(limit), None, |name, _| bad.push(name));
            assert_eq!(bad, ["limit"], "{limit}");
        }
    }

    #[test]
    fn paging_defaults_to_fifty_from_the_start() {
        let request = PageRequest::parse(None, None, |name, _| panic!("{name}"));
        assert_eq!(
            request,
            PageRequest {
                cursor: None,
                limit: DEFAULT_LIMIT
            }
        );
    }

    #[test]
    fn the_statement_numbers_filters_then_cursor_then_limit() {
        let keyset = Keyset {
            select: "SELECT id FROM t",
            time: "t.created_at",
            id: "t.id",
        };
        let filter = Filter::new()
            .and("t.status", "=", "paid")
            .and_some("t.source", "=", None::<String>)
            .and_some("t.created_at", ">=", Some(Utc::now()));
        let request = PageRequest {
            cursor: Some(Cursor::new(Utc::now(), Uuid::nil())),
            limit: 10_000,
        };
        let (sql, filter) = keyset.statement(filter, &request);
        assert_eq!(
            sql,
            "SELECT id FROM t WHERE t.status = $1 AND t.created_at >= $2 \
             AND (t.created_at, t.id) < ($3, $4) \
             ORDER BY t.created_at DESC, t.id DESC LIMIT $5"
        );
        assert_eq!(filter.params().len(), 5);

        let (sql, filter) = keyset.statement(Filter::new(), &PageRequest::default());
        assert_eq!(
            sql,
            "SELECT id FROM t ORDER BY t.created_at DESC, t.id DESC LIMIT $1"
        );
        assert_eq!(filter.params().len(), 1);
    }
}
