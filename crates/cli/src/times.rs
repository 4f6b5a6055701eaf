//! Points in time on the command line: RFC 3339 (`2026-12-07T10:00:00Z`, an offset such
//! as `+01:00`, optional fractions of a second) or a time before now (`90s`, `15m`,
//! `2h`, `7d`), as milliseconds since the Unix epoch; and RFC 3339 in UTC for tables.

const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn number(text: &str, digits: usize) -> Option<i64> {
    (text.len() == digits && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// An RFC 3339 date-time in milliseconds since the epoch.
fn rfc3339_ms(text: &str) -> Option<u64> {
    let (date, rest) = text.split_at_checked(10)?;
    let separator = rest.chars().next()?;
    if !matches!(separator, 'T' | 't' | ' ') {
        return None;
    }
    let rest = &rest[1..];
    let year = number(date.get(0..4)?, 4)?;
    let month = number(date.get(5..7)?, 2)?;
    let day = number(date.get(8..10)?, 2)?;
    if &date[4..5] != "-" || &date[7..8] != "-" {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(at) => rest.split_at(at),
        None => return None,
    };
    let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let hour = number(hms.get(0..2)?, 2)?;
    let minute = number(hms.get(3..5)?, 2)?;
    let second = number(hms.get(6..8)?, 2)?;
    if hms.len() != 8 || &hms[2..3] != ":" || &hms[5..6] != ":" {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if !fraction.bytes().all(|byte| byte.is_ascii_digit()) || clock.ends_with('.') {
        return None;
    }
    let millis = fraction
        .chars()
        .chain(std::iter::repeat('0'))
        .take(3)
        .collect::<String>()
        .parse::<i64>()
        .ok()?;
    let offset_minutes = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let hours = number(zone.get(1..3)?, 2)?;
            let minutes = number(zone.get(4..6)?, 2)?;
            if zone.len() != 6 || &zone[3..4] != ":" || hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 60 + minutes)
        }
    };
    let ms = days_from_civil(year, month, day) * DAY_MS
        + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1_000
        + millis;
    u64::try_from(ms).ok()
}

/// A time given on the command line, in ms since the epoch: RFC 3339, or a duration
/// before `now_ms` (`30s`, `15m`, `12h`, `7d`).
pub fn parse_time_ms(text: &str, now_ms: u64) -> Result<u64, String> {
    let text = text.trim();
    let relative = text
        .ends_with(['s', 'm', 'h', 'd'])
        .then(|| crate::parse::duration_seconds(text).ok())
        .flatten();
    if let Some(seconds) = relative {
        return Ok(now_ms.saturating_sub(seconds.saturating_mul(1_000)));
    }
    rfc3339_ms(text).ok_or_else(|| {
        format!("'{text}' is not a time (RFC 3339 such as 2026-12-07T10:00:00Z, or a time ago such as 15m, 2h, 7d)")
    })
}

/// `ms` since the epoch as RFC 3339 in UTC with milliseconds.
pub fn format_rfc3339(ms: u64) -> String {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    let (days, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (year, month, day) = civil_from_days(days);
    let seconds = in_day / 1_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60,
        in_day % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_and_print_alike() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z", 0), Ok(0));
        let ms = parse_time_ms("2026-12-07T10:20:30.5Z", 0).expect("valid");
        assert_eq!(ms, 1_796_638_830_500);
        assert_eq!(format_rfc3339(ms), "2026-12-07T10:20:30.500Z");
        assert_eq!(
            parse_time_ms("2026-12-07T11:20:30.500+01:00", 0),
            Ok(ms),
            "an offset is subtracted"
        );
        assert_eq!(format_rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn relative_times_count_back_from_now() {
        assert_eq!(
            parse_time_ms("15m", 1_000_000_000),
            Ok(1_000_000_000 - 900_000)
        );
        assert_eq!(parse_time_ms("2h", 1_000), Ok(0), "never before the epoch");
    }

    #[test]
    fn malformed_times_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-12-07T25:00:00Z",
            "2026-12-07T10:00:00",
            "2026-12-07",
            "15",
            "2026-12-07T10:00:00+1",
        ] {
            assert!(parse_time_ms(bad, 0).is_err(), "{bad:?} was accepted");
        }
    }
}
