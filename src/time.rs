//! Calendar arithmetic in a tenant's time zone.
//!
//! Times are whole seconds since the Unix epoch (UTC). A "day" is a local
//! calendar day, numbered as days since 1970-01-01; a day on which daylight
//! saving time changes is still one day, of 23 or 25 hours.

use chrono::{Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::rule::{DurationUnit, Window};

/// Seconds since the Unix epoch, UTC.
pub type Seconds = i64;

/// A local calendar day as days since 1970-01-01.
pub type DayNumber = i32;

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");

/// The local day number of a date.
pub fn day_number(date: NaiveDate) -> DayNumber {
    // Dates are bounded by chrono to about ±262,000 years, far inside i32 days.
    (date - EPOCH).num_days() as DayNumber
}

/// The date of a local day number.
pub fn date_of(day: DayNumber) -> Option<NaiveDate> {
    if day >= 0 {
        EPOCH.checked_add_days(Days::new(day as u64))
    } else {
        EPOCH.checked_sub_days(Days::new(day.unsigned_abs() as u64))
    }
}

/// The local day that contains instant `t`.
pub fn day_of(tz: Tz, t: Seconds) -> DayNumber {
    match Utc.timestamp_opt(t, 0).single() {
        Some(utc) => day_number(utc.with_timezone(&tz).date_naive()),
        None if t < 0 => DayNumber::MIN,
        None => DayNumber::MAX,
    }
}

/// The first instant of local date `date`: its midnight, or, where a
/// daylight-saving gap swallows midnight, the first local time that exists.
pub fn start_of_date(tz: Tz, date: NaiveDate) -> Seconds {
    let midnight = date.and_time(NaiveTime::MIN);
    if let Some(t) = tz.from_local_datetime(&midnight).earliest() {
        return t.timestamp();
    }
    // No zone skips more than a few hours; probe forward a minute at a time.
    (1..=24 * 60)
        .find_map(|minutes| {
            let local = midnight + chrono::Duration::minutes(minutes);
            tz.from_local_datetime(&local).earliest()
        })
        .map(|t| t.timestamp())
        .unwrap_or_else(|| midnight.and_utc().timestamp())
}

/// The first instant of local day `day`.
pub fn start_of_day(tz: Tz, day: DayNumber) -> Seconds {
    match date_of(day) {
        Some(date) => start_of_date(tz, date),
        None if day < 0 => Seconds::MIN / 2,
        None => Seconds::MAX / 2,
    }
}

/// An inclusive range of instants, `from ..= to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Seconds,
    pub to: Seconds,
}

impl TimeRange {
    /// All of time.
    pub const ALL: TimeRange = TimeRange {
        from: Seconds::MIN,
        to: Seconds::MAX,
    };

    pub fn is_empty(&self) -> bool {
        self.from > self.to
    }
}

/// The instants a window holds, evaluated at `instant` in time zone `tz`
/// (RULES.md, Time).
pub fn window_range(window: &Window, tz: Tz, instant: Seconds) -> TimeRange {
    match *window {
        Window::Within(duration) => {
            let amount = i64::from(duration.amount);
            let from = match duration.unit {
                DurationUnit::Hours => instant.saturating_sub(amount.saturating_mul(3600)) + 1,
                DurationUnit::Days | DurationUnit::Weeks => {
                    let days = if duration.unit == DurationUnit::Weeks {
                        amount * 7
                    } else {
                        amount
                    };
                    // A window longer than the calendar reaches back to its start.
                    let back = DayNumber::try_from(days - 1).unwrap_or(DayNumber::MAX);
                    start_of_day(tz, day_of(tz, instant).saturating_sub(back))
                }
            };
            TimeRange { from, to: instant }
        }
        Window::Between(first, last) => TimeRange {
            from: start_of_date(tz, first),
            to: start_of_day(tz, day_number(last) + 1) - 1,
        },
        Window::Since(first) => TimeRange {
            from: start_of_date(tz, first),
            to: instant,
        },
        Window::Before(day) => TimeRange {
            from: Seconds::MIN,
            to: start_of_date(tz, day) - 1,
        },
    }
}

/// Formats an instant as RFC 3339 in UTC, for logs and messages.
pub fn rfc3339(t: Seconds) -> String {
    match Utc.timestamp_opt(t, 0).single() {
        Some(utc) => utc.to_rfc3339(),
        None => t.to_string(),
    }
}

/// The year of an instant in UTC; used to bound accepted times.
pub fn utc_year(t: Seconds) -> Option<i32> {
    Utc.timestamp_opt(t, 0).single().map(|utc| utc.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn spring_forward_day_in_new_york_has_23_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let start = start_of_date(tz, date(2026, 3, 8));
        let next = start_of_date(tz, date(2026, 3, 9));
        assert_eq!(next - start, 23 * 3600);
        // Midnight EST is 05:00 UTC.
        assert_eq!(
            start,
            date(2026, 3, 8)
                .and_hms_opt(5, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp()
        );
    }

    #[test]
    fn fall_back_day_in_new_york_has_25_hours() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let start = start_of_date(tz, date(2026, 11, 1));
        let next = start_of_date(tz, date(2026, 11, 2));
        assert_eq!(next - start, 25 * 3600);
    }

    #[test]
    fn midnight_gap_starts_the_day_at_one() {
        // Santiago moved clocks from 00:00 to 01:00 on 2026-09-06 (UTC-4 to UTC-3).
        let tz: Tz = "America/Santiago".parse().unwrap();
        let start = start_of_date(tz, date(2026, 9, 6));
        let expected = date(2026, 9, 6)
            .and_hms_opt(4, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(start, expected);
    }

    #[test]
    fn within_one_day_is_today_so_far() {
        let tz = Tz::UTC;
        let instant = date(2026, 3, 10)
            .and_hms_opt(15, 30, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        let window = Window::Within(crate::rule::Duration {
            amount: 1,
            unit: DurationUnit::Days,
        });
        let range = window_range(&window, tz, instant);
        let midnight = date(2026, 3, 10)
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp();
        assert_eq!(
            range,
            TimeRange {
                from: midnight,
                to: instant
            }
        );
    }

    #[test]
    fn within_hours_excludes_the_exact_lower_edge() {
        let instant = 1_000_000;
        let window = Window::Within(crate::rule::Duration {
            amount: 2,
            unit: DurationUnit::Hours,
        });
        let range = window_range(&window, Tz::UTC, instant);
        assert_eq!(range.from, instant - 7200 + 1);
        assert_eq!(range.to, instant);
    }

    #[test]
    fn a_window_longer_than_the_calendar_reaches_back_to_its_start() {
        let window = Window::Within(crate::rule::Duration {
            amount: u32::MAX,
            unit: DurationUnit::Weeks,
        });
        let range = window_range(&window, Tz::UTC, 1_000_000);
        assert!(range.from < -1_000_000_000_000, "from {}", range.from);
        assert_eq!(range.to, 1_000_000);
    }

    #[test]
    fn day_numbers_round_trip() {
        for day in [-800_000, -1, 0, 1, 20_000, 2_000_000] {
            assert_eq!(day_number(date_of(day).unwrap()), day);
        }
    }
}
