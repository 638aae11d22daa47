//! Opaque keyset cursors: base64url of `(created_at in µs, id)` of the last
//! row of a page. Clients must not build them; the encoding may change.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, Result};

/// 9999-12-31T23:59:59.999999Z in µs since the epoch.
const MAX_MICROS: i64 = 253_402_300_799_999_999;

/// The position after which the next page starts (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(value: &str) -> Result<Self> {
        let bytes = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| Error::InvalidCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::InvalidCursor)?;
        let (micros, id) = text.split_once('.').ok_or(Error::InvalidCursor)?;
        let micros: i64 = micros.parse().map_err(|_| Error::InvalidCursor)?;
        // Only instants PostgreSQL can hold (and we could have issued).
        if !(0..=MAX_MICROS).contains(&micros) {
            return Err(Error::InvalidCursor);
        }
        Ok(Self {
            created_at: DateTime::from_timestamp_micros(micros).ok_or(Error::InvalidCursor)?,
            id: id.parse().map_err(|_| Error::InvalidCursor)?,
        })
    }
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
            assert!(
                matches!(Cursor::decode(bad), Err(Error::InvalidCursor)),
                "{bad}"
            );
        }
    }
}
