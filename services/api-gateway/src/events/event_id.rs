//! The SSE `id:` of an export event, and the position a stream resumes from.
//!
//! `<finished_at as microseconds since the Unix epoch>-<export id>`, e.g.
//! `1763780000123456-0192f0c4-...`. Both parts come from the export's row,
//! so a reconnecting client's `Last-Event-ID` is a position PostgreSQL can
//! answer from (`keel_commerce::exports::finished_since`): the stream replays
//! what finished after it, whichever instance the client reconnects to.
//! Ids order by `(finished_at, export id)`, which is also the replay order;
//! the export id breaks ties between exports finished in the same
//! microsecond.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// `finished_at`, truncated to microseconds (PostgreSQL's precision).
    pub finished_at_micros: i64,
    pub export_id: Uuid,
}

/// A `Last-Event-ID` this API did not issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is not an event id this API issued (<microseconds>-<export id>)")]
pub struct MalformedEventId;

impl EventId {
    pub fn new(finished_at: DateTime<Utc>, export_id: Uuid) -> Self {
        Self {
            finished_at_micros: finished_at.timestamp_micros(),
            export_id,
        }
    }

    /// `finished_at` as a time (exact: it was read at microsecond precision).
    pub fn finished_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.finished_at_micros)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.finished_at_micros,
            self.export_id.hyphenated()
        )
    }
}

impl FromStr for EventId {
    type Err = MalformedEventId;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        // The micros have no '-', the UUID has four: split at the first.
        let (micros, export_id) = raw.split_once('-').ok_or(MalformedEventId)?;
        // Digits only: no sign, no '+', no whitespace, within i64, and a
        // time chrono can represent.
        if micros.is_empty() || micros.len() > 19 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MalformedEventId);
        }
        let finished_at_micros: i64 = micros.parse().map_err(|_| MalformedEventId)?;
        DateTime::from_timestamp_micros(finished_at_micros).ok_or(MalformedEventId)?;
        // Only the hyphenated form this API writes.
        if export_id.len() != 36 {
            return Err(MalformedEventId);
        }
        let export_id = Uuid::try_parse(export_id).map_err(|_| MalformedEventId)?;
        Ok(Self {
            finished_at_micros,
            export_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(micros: i64, export: &str) -> EventId {
        EventId {
            finished_at_micros: micros,
            export_id: export.parse().unwrap(),
        }
    }

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let finished_at = DateTime::parse_from_rfc3339("2026-11-22T03:10:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let original = EventId::new(finished_at, Uuid::now_v7());
        let text = original.to_string();
        assert_eq!(text.parse::<EventId>(), Ok(original));
        assert_eq!(original.finished_at(), Some(finished_at));
        assert!(text.starts_with("1795317000123456-"), "{text}");
    }

    #[test]
    fn ids_order_by_finish_time_then_export_id() {
        let a = "00000000-0000-0000-0000-00000000000a";
        let b = "00000000-0000-0000-0000-00000000000b";
        assert!(id(1, b) < id(2, a));
        assert!(id(2, a) < id(2, b));
    }

    #[test]
    fn anything_else_is_malformed() {
        let export = "0192f0c4-5b7e-7cc0-9a1e-2f6a1c3b4d5e";
        for raw in [
            "",
            "-",
            "123",
            export,
            &format!("-1-{export}"),
            &format!("+1-{export}"),
            &format!(" 1-{export}"),
            &format!("1 -{export}"),
            &format!("99999999999999999999-{export}"),
            &format!("1-{}", export.replace('-', "")),
            &format!("1-{{{export}}}"),
            "1-not-a-uuid-at-all-really-not-one-xx",
            &format!("1-{export}-"),
        ] {
            assert_eq!(raw.parse::<EventId>(), Err(MalformedEventId), "{raw:?}");
        }
        assert!(format!("0-{export}").parse::<EventId>().is_ok());
    }
}
