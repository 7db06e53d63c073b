//! When a cron expression fires next, in a time zone, across daylight-saving changes.
//!
//! The rules, those of Vixie cron (and of Kubernetes CronJobs with a time zone):
//! - a local time that does not exist (the hour skipped when clocks go forward) fires once, at
//!   the instant the clocks jump: a daily `30 2 * * *` job in Europe/Berlin on 2026-03-29 runs
//!   at 03:00 CEST (01:00 UTC); every schedule point inside the gap collapses onto that one
//!   instant, so an every-minute job fires once for the skipped hour, not sixty times;
//! - a local time that exists twice (the hour repeated when clocks go back) fires once, at its
//!   first occurrence: on 2026-10-25 the same job runs at 02:30 CEST (00:30 UTC) and not again
//!   at 02:30 CET.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::expression::CronExpression;

/// How many years ahead to look before deciding an expression never fires (`0 0 30 2 *`).
const SEARCH_YEARS: i16 = 8;

/// A cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    expression: CronExpression,
    time_zone: TimeZone,
}

impl CronSchedule {
    /// The expression evaluated in `time_zone`.
    pub fn new(expression: CronExpression, time_zone: TimeZone) -> Self {
        Self {
            expression,
            time_zone,
        }
    }

    /// The expression.
    pub fn expression(&self) -> &CronExpression {
        &self.expression
    }

    /// The first fire time strictly after `after`, or `None` when there is none within
    /// the next years (e.g. February 30th).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let local = after.to_zoned(self.time_zone.clone()).datetime();
        let mut start = Civil::from_datetime(local).next_second()?;
        let limit_year = local.year().saturating_add(SEARCH_YEARS);
        // Each candidate is a matching civil time; its instant may fall before `after` only
        // inside a fold or a gap, so this loop runs a few times at most outside those hours.
        for _ in 0..100_000 {
            let candidate = self.next_civil_match(start, limit_year)?;
            let instant = self.resolve(candidate.to_datetime()?)?;
            if instant > after {
                return Some(instant);
            }
            start = candidate.next_second()?;
        }
        None
    }

    /// The latest fire time in `(after, until]`, with how many earlier ones it supersedes,
    /// looking back at most `horizon` from `until`.
    pub fn latest_between(
        &self,
        after: Timestamp,
        until: Timestamp,
        horizon: SignedDuration,
    ) -> Option<(Timestamp, u64)> {
        let earliest = until.checked_sub(horizon).ok()?;
        let mut skipped_before_horizon = 0;
        let mut from = after;
        if earliest > after {
            // Points before the horizon are only counted as missed, not searched one by one.
            if self.next_after(after).is_some_and(|first| first < earliest) {
                skipped_before_horizon = 1;
            }
            from = earliest;
        }
        let mut latest = None;
        let mut superseded = 0u64;
        let mut cursor = from;
        while let Some(next) = self.next_after(cursor) {
            if next > until {
                break;
            }
            if latest.is_some() {
                superseded += 1;
            }
            latest = Some(next);
            cursor = next;
        }
        latest.map(|latest| (latest, superseded + skipped_before_horizon))
    }

    /// The instant a matching civil time stands for (see the module docs for gaps and folds).
    fn resolve(&self, local: DateTime) -> Option<Timestamp> {
        match self.time_zone.to_ambiguous_timestamp(local).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(local).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(local).ok(),
            AmbiguousOffset::Gap { before, after } => {
                // `local` read with the offset after the jump lies before the transition and
                // read with the offset before it lies after; the transition is in between.
                let mut low = after.to_timestamp(local).ok()?;
                let mut high = before.to_timestamp(local).ok()?;
                while high.as_second() - low.as_second() > 1 {
                    let middle = Timestamp::from_second(
                        low.as_second() + (high.as_second() - low.as_second()) / 2,
                    )
                    .ok()?;
                    if self.time_zone.to_offset(middle) == after {
                        high = middle;
                    } else {
                        low = middle;
                    }
                }
                Some(high)
            }
        }
    }

    /// The first civil time at or after `start` that the expression matches.
    fn next_civil_match(&self, start: Civil, limit_year: i16) -> Option<Civil> {
        let cron = &self.expression;
        let mut at = start;
        loop {
            if at.year > limit_year {
                return None;
            }
            if !cron.month_matches(at.month) {
                at = at.next_month();
                continue;
            }
            if at.day > at.days_in_month()? || !cron.day_matches(at.day, at.weekday()?) {
                at = at.next_day()?;
                continue;
            }
            if !cron.hour_matches(at.hour) {
                at = at.next_hour()?;
                continue;
            }
            if !cron.minute_matches(at.minute) {
                at = at.next_minute()?;
                continue;
            }
            if !cron.second_matches(at.second) {
                at = at.next_second()?;
                continue;
            }
            return Some(at);
        }
    }
}

/// Civil time fields that may run one past their range while searching (day 32, hour 24...),
/// carried over by the `next_*` steps.
#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i16,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    fn from_datetime(datetime: DateTime) -> Self {
        Self {
            year: datetime.year(),
            month: datetime.month() as u32,
            day: datetime.day() as u32,
            hour: datetime.hour() as u32,
            minute: datetime.minute() as u32,
            second: datetime.second() as u32,
        }
    }

    fn to_datetime(self) -> Option<DateTime> {
        let date = jiff::civil::Date::new(self.year, self.month as i8, self.day as i8).ok()?;
        let time = jiff::civil::Time::new(self.hour as i8, self.minute as i8, self.second as i8, 0)
            .ok()?;
        Some(date.to_datetime(time))
    }

    fn days_in_month(self) -> Option<u32> {
        let first = jiff::civil::Date::new(self.year, i8::try_from(self.month).ok()?, 1).ok()?;
        Some(first.days_in_month() as u32)
    }

    fn weekday(self) -> Option<u32> {
        let date = jiff::civil::Date::new(self.year, self.month as i8, self.day as i8).ok()?;
        Some(date.weekday().to_sunday_zero_offset() as u32)
    }

    fn next_month(self) -> Self {
        let (year, month) = if self.month >= 12 {
            (self.year.saturating_add(1), 1)
        } else {
            (self.year, self.month + 1)
        };
        Self {
            year,
            month,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
        }
    }

    fn next_day(self) -> Option<Self> {
        if self.day >= self.days_in_month()? {
            return Some(self.next_month());
        }
        Some(Self {
            day: self.day + 1,
            hour: 0,
            minute: 0,
            second: 0,
            ..self
        })
    }

    fn next_hour(self) -> Option<Self> {
        if self.hour >= 23 {
            return self.next_day();
        }
        Some(Self {
            hour: self.hour + 1,
            minute: 0,
            second: 0,
            ..self
        })
    }

    fn next_minute(self) -> Option<Self> {
        if self.minute >= 59 {
            return self.next_hour();
        }
        Some(Self {
            minute: self.minute + 1,
            second: 0,
            ..self
        })
    }

    fn next_second(self) -> Option<Self> {
        if self.second >= 59 {
            return self.next_minute();
        }
        Some(Self {
            second: self.second + 1,
            ..self
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: &str) -> CronSchedule {
        CronSchedule::new(
            CronExpression::parse(cron).expect("valid cron"),
            TimeZone::get(zone).expect("known zone"),
        )
    }

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid timestamp")
    }

    fn fires(schedule: &CronSchedule, from: &str, count: usize) -> Vec<String> {
        let mut cursor = at(from);
        let mut out = Vec::new();
        for _ in 0..count {
            cursor = schedule.next_after(cursor).expect("fires");
            out.push(cursor.to_string());
        }
        out
    }

    #[test]
    fn utc_every_five_seconds_and_daily() {
        let every_five = schedule("*/5 * * * * *", "UTC");
        assert_eq!(
            fires(&every_five, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:00:05Z",
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:15Z"
            ]
        );
        let daily = schedule("30 2 * * *", "UTC");
        assert_eq!(
            fires(&daily, "2026-01-01T02:30:00Z", 2),
            ["2026-01-02T02:30:00Z", "2026-01-03T02:30:00Z"]
        );
    }

    #[test]
    fn berlin_spring_forward_runs_the_skipped_time_once_when_clocks_jump() {
        let daily = schedule("30 2 * * *", "Europe/Berlin");
        // 2026-03-28 02:30 CET = 01:30 UTC; 2026-03-29 02:30 does not exist: clocks jump from
        // 02:00 CET to 03:00 CEST = 01:00 UTC; 2026-03-30 02:30 CEST = 00:30 UTC.
        assert_eq!(
            fires(&daily, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00Z"
            ]
        );
        let every_minute = schedule("* * * * *", "Europe/Berlin");
        assert_eq!(
            fires(&every_minute, "2026-03-29T00:58:00Z", 3),
            [
                "2026-03-29T00:59:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T01:01:00Z"
            ],
            "the skipped hour collapses onto one fire at the jump"
        );
    }

    #[test]
    fn berlin_fall_back_runs_the_repeated_time_once_at_its_first_occurrence() {
        let daily = schedule("30 2 * * *", "Europe/Berlin");
        // 2026-10-25 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET).
        assert_eq!(
            fires(&daily, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Asking from inside the repeated hour does not fire the second 02:30.
        assert_eq!(
            schedule("30 2 * * *", "Europe/Berlin")
                .next_after(at("2026-10-25T01:10:00Z"))
                .map(|t| t.to_string()),
            Some("2026-10-26T01:30:00Z".to_owned())
        );
        let hourly = schedule("0 * * * *", "Europe/Berlin");
        assert_eq!(
            fires(&hourly, "2026-10-24T23:30:00Z", 3),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ],
            "02:00 fires once (00:00 UTC), the repeated 02:00 CET (01:00 UTC) does not"
        );
    }

    #[test]
    fn impossible_dates_never_fire_and_leap_days_do() {
        assert_eq!(
            schedule("0 0 30 2 *", "UTC").next_after(at("2026-01-01T00:00:00Z")),
            None
        );
        assert_eq!(
            fires(&schedule("0 0 29 2 *", "UTC"), "2026-01-01T00:00:00Z", 1),
            ["2028-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn latest_between_reports_superseded_points() {
        let every_minute = schedule("* * * * *", "UTC");
        let (latest, superseded) = every_minute
            .latest_between(
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:10:30Z"),
                SignedDuration::from_hours(1),
            )
            .expect("due");
        assert_eq!(latest, at("2026-01-01T00:10:00Z"));
        assert_eq!(superseded, 9);
        assert_eq!(
            every_minute.latest_between(
                at("2026-01-01T00:00:00Z"),
                at("2026-01-01T00:00:30Z"),
                SignedDuration::from_hours(1)
            ),
            None
        );
    }
}
