//! Query parameters of the API, validated into periods the rollups answer.

use chrono::{DateTime, TimeDelta, Utc};
use keel_http::FieldError;
use serde::Deserialize;

use crate::ingest::event::{ACTIVE_USERS, Grain, REVENUE};
use crate::settings::QuerySettings;

/// The event types the query API names as metrics.
pub const EVENT_METRICS: [&str; 7] = [
    "user.registered",
    "user.logged_in",
    "order.created",
    "order.updated",
    "webhook.received",
    "export.completed",
    "export.failed",
];

/// The raw query string: every field optional and text, so each problem is
/// reported against its own name.
#[derive(Debug, Default, Deserialize)]
pub struct RawParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub metric: Option<String>,
    pub interval: Option<String>,
    pub currency: Option<String>,
}

/// `[from, to)`, both on a minute boundary (the finest rollup).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A validated timeseries request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRequest {
    pub metric: String,
    pub currency: String,
    pub grain: Grain,
    /// `from` on a `grain` boundary: the first point.
    pub period: Period,
}

impl SeriesRequest {
    /// The bucket starts the answer has a point for.
    pub fn points(&self) -> Vec<DateTime<Utc>> {
        let step = self.grain.step();
        let mut out = Vec::new();
        let mut ts = self.period.from;
        while ts < self.period.to {
            out.push(ts);
            ts += step;
        }
        out
    }
}

/// `at` floored to a multiple of `step` (whole seconds) since the epoch.
/// Whole-second arithmetic rather than `duration_trunc`, which works in i64
/// nanoseconds and fails outside 1677-09-21..2262-04-11: RFC 3339 reaches
/// years 0 to 9999, and such a bound used to come back unfloored.
fn floor(at: DateTime<Utc>, step: TimeDelta) -> DateTime<Utc> {
    let step = step.num_seconds().max(1);
    let seconds = at.timestamp();
    DateTime::from_timestamp(seconds - seconds.rem_euclid(step), 0).unwrap_or(at)
}

fn parse_time(
    field: &str,
    value: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<DateTime<Utc>> {
    let value = value?;
    match DateTime::parse_from_rfc3339(value) {
        Ok(at) => Some(at.with_timezone(&Utc)),
        Err(_) => {
            errors.push(FieldError::new(
                field,
                "must be an RFC 3339 timestamp, e.g. 2026-01-31T00:00:00Z",
            ));
            None
        }
    }
}

/// `from`/`to` with defaults (`to`: now; `from`: `default_span` before
/// `to`), floored to `grain`/the minute, checked against the limits.
fn period(
    raw: &RawParams,
    now: DateTime<Utc>,
    default_span: TimeDelta,
    from_step: TimeDelta,
    limits: &QuerySettings,
    errors: &mut Vec<FieldError>,
) -> Option<Period> {
    let to = parse_time("to", raw.to.as_deref(), errors);
    let from = parse_time("from", raw.from.as_deref(), errors);
    if (raw.to.is_some() && to.is_none()) || (raw.from.is_some() && from.is_none()) {
        return None;
    }
    let to = floor(to.unwrap_or(now), TimeDelta::minutes(1));
    let from = floor(from.unwrap_or(to - default_span), from_step);
    if from >= to {
        errors.push(FieldError::new(
            "to",
            "must be after from (by at least one minute)",
        ));
        return None;
    }
    let max = TimeDelta::from_std(limits.max_range).unwrap_or(TimeDelta::MAX);
    if to - from > max {
        errors.push(FieldError::new(
            "from",
            format!("the period may span at most {} days", max.num_days().max(1)),
        ));
        return None;
    }
    Some(Period { from, to })
}

/// Validates a summary request (default: the last 30 days).
pub fn summary(
    raw: &RawParams,
    now: DateTime<Utc>,
    limits: &QuerySettings,
) -> Result<Period, Vec<FieldError>> {
    let mut errors = Vec::new();
    let period = period(
        raw,
        now,
        TimeDelta::days(30),
        TimeDelta::minutes(1),
        limits,
        &mut errors,
    );
    match period {
        Some(period) if errors.is_empty() => Ok(period),
        _ => Err(errors),
    }
}

/// Validates a timeseries request (default period: the last 60 intervals).
pub fn series(
    raw: &RawParams,
    now: DateTime<Utc>,
    limits: &QuerySettings,
) -> Result<SeriesRequest, Vec<FieldError>> {
    let mut errors = Vec::new();
    let grain = match raw.interval.as_deref() {
        None => {
            errors.push(FieldError::new(
                "interval",
                "is required: minute, hour or day",
            ));
            None
        }
        Some(text) => Grain::parse(text).or_else(|| {
            errors.push(FieldError::new(
                "interval",
                "must be one of minute, hour, day",
            ));
            None
        }),
    };
    let metric = match raw.metric.as_deref() {
        None => {
            errors.push(FieldError::new(
                "metric",
                "is required: an event type, revenue or active_users",
            ));
            None
        }
        Some(m) if m == REVENUE || m == ACTIVE_USERS || EVENT_METRICS.contains(&m) => {
            Some(m.to_owned())
        }
        Some(_) => {
            errors.push(FieldError::new(
                "metric",
                format!(
                    "must be revenue, active_users or one of {}",
                    EVENT_METRICS.join(", ")
                ),
            ));
            None
        }
    };
    let currency = match (metric.as_deref(), raw.currency.as_deref()) {
        (Some(REVENUE), Some(c)) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) => {
            c.to_owned()
        }
        (Some(REVENUE), Some(_)) => {
            errors.push(FieldError::new(
                "currency",
                "must be an ISO 4217 code, e.g. EUR",
            ));
            String::new()
        }
        (Some(REVENUE), None) => {
            errors.push(FieldError::new(
                "currency",
                "is required with metric=revenue",
            ));
            String::new()
        }
        (_, Some(_)) => {
            errors.push(FieldError::new(
                "currency",
                "applies to metric=revenue only",
            ));
            String::new()
        }
        (_, None) => String::new(),
    };
    if metric.as_deref() == Some(ACTIVE_USERS) && grain.is_some_and(|g| g != Grain::Day) {
        errors.push(FieldError::new(
            "interval",
            "active_users is counted per day: use interval=day",
        ));
    }
    let (Some(grain), Some(metric)) = (grain, metric) else {
        return Err(errors);
    };
    let Some(period) = period(
        raw,
        now,
        grain.step() * 60,
        grain.step(),
        limits,
        &mut errors,
    ) else {
        return Err(errors);
    };
    let step_seconds = grain.step().num_seconds();
    let span = (period.to - period.from).num_seconds();
    let points = usize::try_from((span + step_seconds - 1) / step_seconds).unwrap_or(usize::MAX);
    if points > limits.max_points {
        errors.push(FieldError::new(
            "interval",
            format!(
                "the period holds {points} points at this interval; at most {} are allowed (use a coarser interval or a shorter period)",
                limits.max_points
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SeriesRequest {
        metric,
        currency,
        grain,
        period,
    })
}

/// Splits `period` into ranges each answered by the coarsest rollup whose
/// buckets lie wholly inside it: minutes up to the first full hour, hours
/// up to the first full day, days, then hours and minutes at the end.
pub fn pieces(period: Period) -> Vec<(Grain, DateTime<Utc>, DateTime<Utc>)> {
    let Period { from, to } = period;
    let ceil = |at: DateTime<Utc>, grain: Grain| {
        let floor = grain.bucket(at);
        if floor == at {
            at
        } else {
            floor + grain.step()
        }
    };
    let mut out = Vec::with_capacity(5);
    let from_hour = ceil(from, Grain::Hour);
    let to_hour = Grain::Hour.bucket(to);
    if from_hour >= to_hour {
        out.push((Grain::Minute, from, to));
        return out;
    }
    out.push((Grain::Minute, from, from_hour));
    let from_day = ceil(from_hour, Grain::Day);
    let to_day = Grain::Day.bucket(to_hour);
    if from_day >= to_day {
        out.push((Grain::Hour, from_hour, to_hour));
    } else {
        out.push((Grain::Hour, from_hour, from_day));
        out.push((Grain::Day, from_day, to_day));
        out.push((Grain::Hour, to_day, to_hour));
    }
    out.push((Grain::Minute, to_hour, to));
    out.retain(|(_, start, end)| start < end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> QuerySettings {
        QuerySettings {
            max_points: 1500,
            max_range: Duration::from_secs(400 * 86_400),
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn raw(pairs: &[(&str, &str)]) -> RawParams {
        let mut raw = RawParams::default();
        for (k, v) in pairs {
            let v = Some((*v).to_owned());
            match *k {
                "from" => raw.from = v,
                "to" => raw.to = v,
                "metric" => raw.metric = v,
                "interval" => raw.interval = v,
                "currency" => raw.currency = v,
                _ => unreachable!(),
            }
        }
        raw
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn pieces_cover_the_period_exactly_with_aligned_buckets() {
        let period = Period {
            from: t("2026-01-30T22:17:00Z"),
            to: t("2026-02-02T03:05:00Z"),
        };
        let pieces = pieces(period);
        assert_eq!(
            pieces,
            vec![
                (
                    Grain::Minute,
                    t("2026-01-30T22:17:00Z"),
                    t("2026-01-30T23:00:00Z")
                ),
                (
                    Grain::Hour,
                    t("2026-01-30T23:00:00Z"),
                    t("2026-01-31T00:00:00Z")
                ),
                (
                    Grain::Day,
                    t("2026-01-31T00:00:00Z"),
                    t("2026-02-02T00:00:00Z")
                ),
                (
                    Grain::Hour,
                    t("2026-02-02T00:00:00Z"),
                    t("2026-02-02T03:00:00Z")
                ),
                (
                    Grain::Minute,
                    t("2026-02-02T03:00:00Z"),
                    t("2026-02-02T03:05:00Z")
                ),
            ]
        );
        for window in pieces.windows(2) {
            assert_eq!(window[0].2, window[1].1);
        }
    }

    #[test]
    fn a_period_inside_one_hour_is_answered_from_minutes() {
        let period = Period {
            from: t("2026-01-30T22:17:00Z"),
            to: t("2026-01-30T22:50:00Z"),
        };
        assert_eq!(
            pieces(period),
            vec![(Grain::Minute, period.from, period.to)]
        );
        let hours = Period {
            from: t("2026-01-30T20:00:00Z"),
            to: t("2026-01-30T23:00:00Z"),
        };
        assert_eq!(pieces(hours), vec![(Grain::Hour, hours.from, hours.to)]);
    }

    #[test]
    fn too_many_points_is_refused_naming_the_limit() {
        let errors = series(
            &raw(&[
                ("metric", "order.created"),
                ("interval", "minute"),
                ("from", "2026-01-01T00:00:00Z"),
                ("to", "2026-01-03T00:00:00Z"),
            ]),
            Utc::now(),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["interval"]);
        assert!(
            errors[0].message.contains("2880 points"),
            "{}",
            errors[0].message
        );
        assert!(
            errors[0].message.contains("at most 1500"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let errors = series(
            &raw(&[("metric", "nope"), ("interval", "week")]),
            Utc::now(),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["interval", "metric"]);
        let errors = series(
            &raw(&[("metric", "revenue"), ("interval", "day")]),
            Utc::now(),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["currency"]);
        let errors = summary(
            &raw(&[
                ("from", "2026-01-02T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ]),
            Utc::now(),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["to"]);
        let errors = summary(&raw(&[("from", "yesterday")]), Utc::now(), &limits()).unwrap_err();
        assert_eq!(fields(&errors), ["from"]);
        let errors = summary(
            &raw(&[
                ("from", "2020-01-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ]),
            Utc::now(),
            &limits(),
        )
        .unwrap_err();
        assert_eq!(fields(&errors), ["from"]);
    }

    #[test]
    fn a_series_starts_on_its_interval_and_has_one_point_per_bucket() {
        let request = series(
            &raw(&[
                ("metric", "revenue"),
                ("currency", "EUR"),
                ("interval", "hour"),
                ("from", "2026-01-01T10:30:00Z"),
                ("to", "2026-01-01T13:00:00Z"),
            ]),
            Utc::now(),
            &limits(),
        )
        .unwrap();
        assert_eq!(
            request.points(),
            vec![
                t("2026-01-01T10:00:00Z"),
                t("2026-01-01T11:00:00Z"),
                t("2026-01-01T12:00:00Z")
            ]
        );
    }
}
