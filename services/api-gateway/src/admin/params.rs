//! Query parameters shared by the admin listings (API.md's list
//! conventions: `?limit=` 1..=500, default 50; opaque `?cursor=`), each
//! reported by name when invalid.

use std::collections::HashMap;

use actix_web::web;
use keel_db::page::PageRequest;
use keel_http::FieldError;

use crate::admin::error::AdminError;

/// Raw `name=value` pairs (the last of repeated names wins).
pub fn parse(query: &str) -> Result<HashMap<String, String>, AdminError> {
    web::Query::<HashMap<String, String>>::from_query(query)
        .map(web::Query::into_inner)
        .map_err(|_| AdminError::invalid("query", "is not a valid query string"))
}

/// `limit` and `cursor` (`keel_db::page`); problems are pushed to `errors`.
pub fn paging(params: &HashMap<String, String>, errors: &mut Vec<FieldError>) -> PageRequest {
    PageRequest::parse(
        params.get("limit").map(String::as_str),
        params.get("cursor").map(String::as_str),
        |name, message| errors.push(FieldError::new(name, message)),
    )
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
            PageRequest {
                cursor: None,
                limit: keel_db::page::DEFAULT_LIMIT
            }
        );
        assert!(errors.is_empty());
    }
}
