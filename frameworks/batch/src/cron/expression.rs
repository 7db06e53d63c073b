//! Parsing cron expressions: five fields (minute hour day-of-month month day-of-week), an
//! optional leading seconds field, names (`JAN`, `MON`), ranges, lists, steps and the usual
//! `@hourly`-style macros.

use std::fmt;

/// Why a cron expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Wrong number of whitespace-separated fields.
    #[error(
        "expected 5 fields (minute hour day-of-month month day-of-week) or 6 (with seconds first), got {0}"
    )]
    FieldCount(usize),
    /// An unknown `@macro`.
    #[error(
        "unknown macro {0:?}; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
    )]
    UnknownMacro(String),
    /// One field is malformed.
    #[error("{field} field {text:?}: {reason}")]
    Field {
        /// Which field (`minute`, `hour`, ...).
        field: &'static str,
        /// The field's text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One field's allowed values as a bit set (bit `n` = value `n` allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FieldSet {
    bits: u64,
    /// True when the field was `*` or `?` (matters for day-of-month / day-of-week).
    unrestricted: bool,
}

impl FieldSet {
    fn contains(self, value: u32) -> bool {
        value < 64 && self.bits & (1u64 << value) != 0
    }
}

#[derive(Debug, Clone, Copy)]
struct FieldKind {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldKind = FieldKind {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldKind = FieldKind {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldKind = FieldKind {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldKind = FieldKind {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldKind = FieldKind {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DAY_OF_WEEK: FieldKind = FieldKind {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// A parsed cron expression, matched against local civil time.
///
/// Day-of-month and day-of-week follow Vixie cron: when both are restricted, a day matches
/// when either does. Day-of-week 7 is Sunday, like 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronExpression {
    text: String,
    seconds: FieldSet,
    minutes: FieldSet,
    hours: FieldSet,
    days_of_month: FieldSet,
    months: FieldSet,
    days_of_week: FieldSet,
}

impl fmt::Display for CronExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for CronExpression {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        CronExpression::parse(text)
    }
}

impl CronExpression {
    /// Parses `text`: 5 fields, or 6 with seconds first, or a macro such as `@daily`.
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let trimmed = text.trim();
        let expanded = if let Some(name) = trimmed.strip_prefix('@') {
            match name.to_ascii_lowercase().as_str() {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(CronError::UnknownMacro(trimmed.to_owned())),
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (second_text, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            count => return Err(CronError::FieldCount(count)),
        };
        let mut days_of_week = parse_field(DAY_OF_WEEK, rest[4])?;
        if days_of_week.contains(7) {
            days_of_week.bits |= 1;
            days_of_week.bits &= !(1u64 << 7);
        }
        Ok(Self {
            text: trimmed.to_owned(),
            seconds: parse_field(SECOND, second_text)?,
            minutes: parse_field(MINUTE, rest[0])?,
            hours: parse_field(HOUR, rest[1])?,
            days_of_month: parse_field(DAY_OF_MONTH, rest[2])?,
            months: parse_field(MONTH, rest[3])?,
            days_of_week,
        })
    }

    /// True when `second` (0-59) is allowed.
    pub(crate) fn second_matches(&self, second: u32) -> bool {
        self.seconds.contains(second)
    }

    /// True when `minute` (0-59) is allowed.
    pub(crate) fn minute_matches(&self, minute: u32) -> bool {
        self.minutes.contains(minute)
    }

    /// True when `hour` (0-23) is allowed.
    pub(crate) fn hour_matches(&self, hour: u32) -> bool {
        self.hours.contains(hour)
    }

    /// True when `month` (1-12) is allowed.
    pub(crate) fn month_matches(&self, month: u32) -> bool {
        self.months.contains(month)
    }

    /// True when the day matches, `weekday` counted from Sunday = 0.
    pub(crate) fn day_matches(&self, day_of_month: u32, weekday: u32) -> bool {
        let by_month = self.days_of_month.contains(day_of_month);
        let by_week = self.days_of_week.contains(weekday);
        match (
            self.days_of_month.unrestricted,
            self.days_of_week.unrestricted,
        ) {
            (true, true) => true,
            (false, true) => by_month,
            (true, false) => by_week,
            (false, false) => by_month || by_week,
        }
    }
}

fn parse_field(kind: FieldKind, text: &str) -> Result<FieldSet, CronError> {
    let fail = |reason: String| CronError::Field {
        field: kind.name,
        text: text.to_owned(),
        reason,
    };
    let mut bits = 0u64;
    let unrestricted = text == "*" || text == "?";
    for part in text.split(',') {
        if part.is_empty() {
            return Err(fail("empty list element".to_owned()));
        }
        let (range_text, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| fail(format!("step {step:?} is not a number")))?;
                if step == 0 {
                    return Err(fail("step must be at least 1".to_owned()));
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range_text == "*" || range_text == "?" {
            (kind.min, kind.max)
        } else if let Some((low, high)) = range_text.split_once('-') {
            (
                value(kind, low).map_err(&fail)?,
                value(kind, high).map_err(&fail)?,
            )
        } else {
            let single = value(kind, range_text).map_err(&fail)?;
            // `5/15` means "from 5 to the end, every 15".
            let high = if part.contains('/') { kind.max } else { single };
            (single, high)
        };
        if low > high {
            return Err(fail(format!("range {low}-{high} runs backwards")));
        }
        let mut current = low;
        while current <= high {
            bits |= 1u64 << current;
            current += step;
        }
    }
    Ok(FieldSet { bits, unrestricted })
}

fn value(kind: FieldKind, text: &str) -> Result<u32, String> {
    let upper = text.to_ascii_uppercase();
    let found = kind
        .names
        .iter()
        .position(|name| *name == upper)
        .map(|index| index as u32 + if kind.name == "month" { 1 } else { 0 });
    let number = match found {
        Some(number) => number,
        None => text.parse::<u32>().map_err(|_| {
            if kind.names.is_empty() {
                format!("{text:?} is not a number")
            } else {
                format!(
                    "{text:?} is neither a number nor one of {}",
                    kind.names.join(", ")
                )
            }
        })?,
    };
    if number < kind.min || number > kind.max {
        return Err(format!("{number} is outside {}-{}", kind.min, kind.max));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields_macros_names_and_steps() {
        let every_five_seconds = CronExpression::parse("*/5 * * * * *").unwrap();
        assert!(every_five_seconds.second_matches(10));
        assert!(!every_five_seconds.second_matches(11));
        let daily = CronExpression::parse("30 2 * * *").unwrap();
        assert!(daily.second_matches(0) && !daily.second_matches(1));
        assert!(daily.minute_matches(30) && daily.hour_matches(2));
        let weekdays = CronExpression::parse("0 9 * JAN-mar MON-FRI").unwrap();
        assert!(weekdays.month_matches(3) && !weekdays.month_matches(4));
        assert!(weekdays.day_matches(14, 1) && !weekdays.day_matches(14, 0));
        let sunday = CronExpression::parse("0 0 * * 7").unwrap();
        assert!(sunday.day_matches(3, 0));
        let from_five = CronExpression::parse("5/20 * * * *").unwrap();
        assert!(from_five.minute_matches(5) && from_five.minute_matches(45));
        assert!(!from_five.minute_matches(0));
        assert_eq!(
            CronExpression::parse("@daily").unwrap(),
            CronExpression {
                text: "@daily".into(),
                ..CronExpression::parse("0 0 * * *").unwrap()
            }
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        let both = CronExpression::parse("0 0 13 * FRI").unwrap();
        assert!(both.day_matches(13, 2), "the 13th on a Tuesday");
        assert!(both.day_matches(6, 5), "a Friday the 6th");
        assert!(!both.day_matches(6, 4));
    }

    #[test]
    fn errors_name_the_field_and_reason() {
        let cases = [
            ("* * * *", "expected 5 fields"),
            ("61 * * * *", "minute field \"61\": 61 is outside 0-59"),
            ("* 5-2 * * *", "runs backwards"),
            ("* * * FOO *", "neither a number nor one of JAN"),
            ("*/0 * * * *", "step must be at least 1"),
            ("@often", "unknown macro"),
            ("1,,2 * * * *", "empty list element"),
        ];
        for (text, expected) in cases {
            let error = CronExpression::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
