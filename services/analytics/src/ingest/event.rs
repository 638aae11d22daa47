//! One domain event as analytics keeps it, and what it adds to the rollups.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use keel_contracts::Envelope;
use serde::Deserialize;
use uuid::Uuid;

/// The metric name of revenue (per currency, in cents).
pub const REVENUE: &str = "revenue";
/// The metric name of distinct users per day.
pub const ACTIVE_USERS: &str = "active_users";
/// The `user_id` under which store-wide figures are kept.
pub const STORE: Uuid = Uuid::nil();

/// An event as analytics keeps it: the contract's envelope
/// ([`keel_contracts::Envelope`], whose fields are not re-declared here)
/// around a body read generically, so a type this service does not know
/// yet is still kept raw and counted and a new event never stalls the
/// queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "Envelope<RawBody>")]
pub struct RawEvent {
    pub id: Uuid,
    pub kind: String,
    /// The envelope's `u16` version, as the `int2` column holds it.
    pub version: i16,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// The envelope's body, untyped: the `type` tag and its `data`.
#[derive(Debug, Clone, Deserialize)]
pub struct RawBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: serde_json::Value,
}

/// An envelope analytics cannot store.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The `int2` column holds versions up to `i16::MAX`; no event type is
    /// anywhere near it, so a larger one is refused (dead-lettered) rather
    /// than stored wrapped.
    #[error("version {0} is beyond what analytics stores ({max})", max = i16::MAX)]
    VersionOutOfRange(u16),
}

impl TryFrom<Envelope<RawBody>> for RawEvent {
    type Error = EventError;

    fn try_from(envelope: Envelope<RawBody>) -> Result<Self, Self::Error> {
        let version = i16::try_from(envelope.version)
            .map_err(|_| EventError::VersionOutOfRange(envelope.version))?;
        Ok(Self {
            id: envelope.id,
            kind: envelope.body.kind,
            version,
            occurred_at: envelope.occurred_at,
            data: envelope.body.data,
        })
    }
}

/// The fields of an order event that revenue needs.
#[derive(Debug, Deserialize)]
struct OrderFigures {
    currency: String,
    total_cents: i64,
    status: String,
    #[serde(default)]
    previous_status: Option<String>,
}

/// Rollup granularities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Grain::Minute => "minute",
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == text)
    }

    pub fn step(self) -> TimeDelta {
        match self {
            Grain::Minute => TimeDelta::minutes(1),
            Grain::Hour => TimeDelta::hours(1),
            Grain::Day => TimeDelta::days(1),
        }
    }

    /// The start of the bucket `at` falls in (UTC).
    pub fn bucket(self, at: DateTime<Utc>) -> DateTime<Utc> {
        // Whole seconds, not `duration_trunc`: that works in i64
        // nanoseconds and fails outside 1677-09-21..2262-04-11, leaving such
        // an instant (a query bound, a forged event's stamp) unaligned.
        let step = self.step().num_seconds();
        let seconds = at.timestamp();
        DateTime::from_timestamp(seconds - seconds.rem_euclid(step), 0).unwrap_or(at)
    }
}

/// What one event adds to one rollup series.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub user_id: Uuid,
    pub metric: String,
    pub currency: String,
}

impl RawEvent {
    /// Rejects envelopes that could not be stored or queried sensibly.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind.is_empty() || self.kind.len() > 64 {
            return Err("type must be 1 to 64 characters".to_owned());
        }
        if self.kind == REVENUE || self.kind == ACTIVE_USERS {
            return Err(format!(
                "type {:?} is reserved for a derived metric",
                self.kind
            ));
        }
        Ok(())
    }

    /// Truncates `occurred_at` to the microsecond, PostgreSQL's precision:
    /// the stored key then equals the in-memory one (producers stamp
    /// nanoseconds), and buckets are computed from the stored value.
    pub fn normalize(mut self) -> Self {
        self.occurred_at = self.occurred_at.trunc_subsecs(6);
        self
    }

    /// The user the event is about: `data.user_id` when it is a UUID.
    pub fn user_id(&self) -> Option<Uuid> {
        self.data
            .get("user_id")
            .and_then(|v| v.as_str())
            .and_then(|s| Uuid::parse_str(s).ok())
    }

    /// Revenue this event books, as (currency, signed cents).
    ///
    /// `order.created` books its total; `order.updated` into `cancelled`
    /// from any other status takes it back. Other status changes (paid,
    /// fulfilled) book nothing: the amount was counted when the order was
    /// placed. `rebuild` applies the same rule in SQL (`ingest::store`).
    pub fn revenue(&self) -> Option<(String, i64)> {
        let order: OrderFigures = match self.kind.as_str() {
            "order.created" | "order.updated" => serde_json::from_value(self.data.clone()).ok()?,
            _ => return None,
        };
        let cents = match self.kind.as_str() {
            "order.created" => order.total_cents,
            // `checked_neg`: i64::MIN has no negation. No real order is
            // near it (the store caps totals at 10^15), so a forged event
            // with it books nothing instead of panicking the batch.
            _ if order.status == "cancelled"
                && order.previous_status.as_deref() != Some("cancelled") =>
            {
                order.total_cents.checked_neg()?
            }
            _ => return None,
        };
        Some((order.currency, cents))
    }

    /// Every (series, amount) this event adds, for the store and, when it
    /// has one, for its user.
    pub fn contributions(&self) -> Vec<(Series, i64)> {
        let mut scopes = vec![STORE];
        if let Some(user) = self.user_id() {
            scopes.push(user);
        }
        let revenue = self.revenue();
        let mut out = Vec::with_capacity(4);
        for user_id in scopes {
            out.push((
                Series {
                    user_id,
                    metric: self.kind.clone(),
                    currency: String::new(),
                },
                1,
            ));
            if let Some((currency, cents)) = &revenue {
                out.push((
                    Series {
                        user_id,
                        metric: REVENUE.to_owned(),
                        currency: currency.clone(),
                    },
                    *cents,
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, data: serde_json::Value) -> RawEvent {
        RawEvent {
            id: Uuid::now_v7(),
            kind: kind.to_owned(),
            version: 1,
            occurred_at: "2026-01-31T23:59:59.999Z".parse().unwrap(),
            data,
        }
    }

    fn order(kind: &str, status: &str, previous: Option<&str>) -> RawEvent {
        let mut data = json!({
            "order_id": Uuid::nil(), "user_id": "0190a5b4-0000-7000-8000-000000000001",
            "status": status, "currency": "EUR", "total_cents": 1250, "source": "api",
        });
        if let Some(previous) = previous {
            data["previous_status"] = json!(previous);
        }
        event(kind, data)
    }

    #[test]
    fn buckets_truncate_in_utc() {
        let at: DateTime<Utc> = "2026-01-31T23:59:59.999Z".parse().unwrap();
        assert_eq!(
            Grain::Minute.bucket(at).to_rfc3339(),
            "2026-01-31T23:59:00+00:00"
        );
        assert_eq!(
            Grain::Hour.bucket(at).to_rfc3339(),
            "2026-01-31T23:00:00+00:00"
        );
        assert_eq!(
            Grain::Day.bucket(at).to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
    }

    #[test]
    fn an_order_created_books_its_total_and_a_cancellation_takes_it_back() {
        assert_eq!(
            order("order.created", "pending", None).revenue(),
            Some(("EUR".to_owned(), 1250))
        );
        assert_eq!(
            order("order.updated", "cancelled", Some("paid")).revenue(),
            Some(("EUR".to_owned(), -1250))
        );
        assert_eq!(
            order("order.updated", "paid", Some("pending")).revenue(),
            None
        );
        assert_eq!(
            order("order.updated", "cancelled", Some("cancelled")).revenue(),
            None
        );
    }

    #[test]
    fn events_with_a_user_count_for_the_store_and_the_user() {
        let contributions = order("order.created", "pending", None).contributions();
        let users: Vec<_> = contributions.iter().map(|(s, _)| s.user_id).collect();
        assert_eq!(contributions.len(), 4);
        assert_eq!(users.iter().filter(|u| **u == STORE).count(), 2);

        let webhook = event(
            "webhook.received",
            json!({"event_id": Uuid::nil(), "source": "x"}),
        );
        assert_eq!(
            webhook.contributions(),
            vec![(
                Series {
                    user_id: STORE,
                    metric: "webhook.received".to_owned(),
                    currency: String::new()
                },
                1
            )]
        );
    }

    #[test]
    fn normalizing_keeps_microseconds_like_postgresql() {
        let mut e = event("x", json!({}));
        e.occurred_at = "2026-01-31T23:59:59.123456789Z".parse().unwrap();
        assert_eq!(
            e.normalize().occurred_at,
            "2026-01-31T23:59:59.123456Z"
                .parse::<DateTime<Utc>>()
                .unwrap()
        );
    }

    #[test]
    fn derived_metric_names_are_not_accepted_as_event_types() {
        assert!(event("revenue", json!({})).validate().is_err());
        assert!(event("", json!({})).validate().is_err());
        assert!(event("order.created", json!({})).validate().is_ok());
    }

    #[test]
    fn the_envelope_is_read_through_the_contract_and_an_unstorable_version_is_refused() {
        let envelope = |version: u32| {
            json!({
                "id": Uuid::nil(), "type": "user.registered", "version": version,
                "occurred_at": "2026-01-31T23:59:59Z", "data": {"user_id": Uuid::nil()},
            })
        };
        let event: RawEvent = serde_json::from_value(envelope(1)).unwrap();
        assert_eq!((event.kind.as_str(), event.version), ("user.registered", 1));
        let refused = serde_json::from_value::<RawEvent>(envelope(40_000)).unwrap_err();
        assert!(refused.to_string().contains("version 40000"), "{refused}");
    }
}
