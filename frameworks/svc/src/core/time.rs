//! Marathon-style version stamps: RFC 3339 timestamps in UTC with milliseconds.

/// `seconds` since the Unix epoch as `2026-11-24T10:15:30.123Z`.
pub fn rfc3339_millis(seconds: f64) -> String {
    let total_millis = if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1000.0).round() as i64
    } else {
        0
    };
    let millis = total_millis.rem_euclid(1000);
    let total_seconds = total_millis.div_euclid(1000);
    let days = total_seconds.div_euclid(86_400);
    let second_of_day = total_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::rfc3339_millis;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_millis(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(
            rfc3339_millis(1_795_515_330.123),
            "2026-11-24T10:15:30.123Z"
        );
    }
}
