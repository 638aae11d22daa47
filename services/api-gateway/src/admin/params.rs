//! Query parameters shared by the admin listings (API.md's list
//! conventions: `?limit=` 1..=500, default 50; opaque `?cursor=`), each
//! reported by name when invalid.

use std::collections::HashMap;

use actix_web::web;
use keel_http::FieldError;
use keel_store::cursor::Cursor;

use crate::admin::error::AdminError;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

/// Raw `name=value` pairs (the last of repeated names wins).
pub fn parse(query: &str) -> Result<HashMap<String, String>, AdminError> {
    web::Query::<HashMap<String, String>>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|_| AdminError::invalid("query", "is not a valid query string"))
}

/// `limit` and `cursor`; problems are pushed to `errors`.
pub fn paging(
    params: &HashMap<String, String>,
    errors: &mut Vec<FieldError>,
) -> (Option<Cursor>, u32) {
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(value) => match value.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(FieldError::new(
                    "limit",
                    format!("must be an integer between 1 and {MAX_LIMIT}"),
                ));
                DEFAULT_LIMIT
            }
        },
    };
    let cursor = params.get("cursor").and_then(|value| {
        Cursor::decode(value)
            .map_err(|_| errors.push(FieldError::new("cursor", "is not a cursor this API issued")))
            .ok()
    });
    (cursor, limit)
}

/// An optional exact-match filter of 1 to 255 characters.
pub fn text(
    params: &HashMap<String, String>,
    name: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let value = params.get(name)?;
    if (1..=255).contains(&value.chars().count()) {
        Some(value.clone())
    } else {
        errors.push(FieldError::new(name, "must be 1 to 255 characters"));
        None
    }
}

/// An optional value that must be one of `allowed`.
pub fn one_of(
    params: &HashMap<String, String>,
    name: &str,
    allowed: &[&'static str],
    errors: &mut Vec<FieldError>,
) -> Option<&'static str> {
    let value = params.get(name)?;
    let found = allowed.iter().copied().find(|a| a == value);
    if found.is_none() {
        errors.push(FieldError::new(
            name,
            format!("must be one of {}", allowed.join(", ")),
        ));
    }
    found
}

/// The page's `{items, next_cursor}` body.
#[derive(Debug, serde::Serialize)]
pub struct PageBody<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> PageBody<T> {
    pub fn new(items: Vec<T>, next: Option<Cursor>) -> Self {
        Self {
            items,
            next_cursor: next.map(|c| c.encode()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bad_values_are_reported_by_name() {
        let params = parse("limit=0&cursor=zz&status=lost&source=").unwrap();
        let mut errors = Vec::new();
        paging(&params, &mut errors);
        one_of(&params, "status", &["received"], &mut errors);
        text(&params, "source", &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["limit", "cursor", "status", "source"]);
    }

    #[test]
    fn paging_defaults_to_fifty_from_the_start() {
        let mut errors = Vec::new();
        assert_eq!(
            paging(&parse("").unwrap(), &mut errors),
            (None, DEFAULT_LIMIT)
        );
        assert!(errors.is_empty());
    }
}
