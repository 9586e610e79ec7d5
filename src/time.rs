//! UTC time as the API writes it: ISO-8601 with milliseconds, and `YYYY-MM-DD` days.
//!
//! `std::time::SystemTime::now()` panics on wasm32, so the Worker reads the JS clock;
//! everything else here is integer arithmetic that runs natively in tests.

pub const MILLIS_PER_DAY: u64 = 86_400_000;

/// Milliseconds since the Unix epoch. On Cloudflare the clock only advances across I/O.
#[cfg(target_arch = "wasm32")]
pub fn now_millis() -> u64 {
    worker::Date::now().as_millis()
}

#[cfg(not(target_arch = "wasm32"))]
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `2026-11-23T00:42:29.123Z`. Strings of this form sort in time order.
pub fn iso_from_millis(ms: u64) -> String {
    let (year, month, day) = civil_from_days((ms / MILLIS_PER_DAY) as i64);
    let in_day = ms % MILLIS_PER_DAY;
    let (h, m, s, milli) = (in_day / 3_600_000, (in_day / 60_000) % 60, (in_day / 1000) % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// The UTC calendar day, `2026-11-23`.
pub fn date_from_millis(ms: u64) -> String {
    let (year, month, day) = civil_from_days((ms / MILLIS_PER_DAY) as i64);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Parses a `YYYY-MM-DD` day to the epoch millis of its midnight; None if not a real date.
pub fn millis_from_date(date: &str) -> Option<u64> {
    let bytes = date.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let year: i64 = date.get(0..4)?.parse().ok()?;
    let month: u32 = date.get(5..7)?.parse().ok()?;
    let day: u32 = date.get(8..10)?.parse().ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    u64::try_from(days).ok().map(|d| d * MILLIS_PER_DAY)
}

/// Parses `2026-11-23T00:42:29.123Z` (as written by [`iso_from_millis`]).
pub fn millis_from_iso(iso: &str) -> Option<u64> {
    let day = millis_from_date(iso.get(..10)?)?;
    if iso.len() != 24 || iso.as_bytes()[10] != b'T' || !iso.ends_with('Z') {
        return None;
    }
    let field = |range: std::ops::Range<usize>| iso.get(range)?.parse::<u64>().ok();
    let (h, m, s, milli) = (field(11..13)?, field(14..16)?, field(17..19)?, field(20..23)?);
    (h < 24 && m < 60 && s < 60).then_some(day + ((h * 60 + m) * 60 + s) * 1000 + milli)
}

/// Seconds from `ms` to the next UTC midnight (at least 1): the `Retry-After` of a daily quota.
pub fn seconds_until_next_utc_midnight(ms: u64) -> u64 {
    let next_midnight = (ms / MILLIS_PER_DAY + 1) * MILLIS_PER_DAY;
    (next_midnight - ms).div_ceil(1000).max(1)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso_from_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_from_millis(1_795_394_549_123), "2026-11-23T00:42:29.123Z");
        assert_eq!(iso_from_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(date_from_millis(1_795_394_549_123), "2026-11-23");
    }

    #[test]
    fn dates_round_trip_for_every_day_of_four_centuries() {
        let mut day_ms = millis_from_date("1970-01-01").unwrap();
        for _ in 0..(400 * 366) {
            let date = date_from_millis(day_ms);
            assert_eq!(millis_from_date(&date), Some(day_ms), "{date}");
            day_ms += MILLIS_PER_DAY;
        }
    }

    #[test]
    fn iso_timestamps_round_trip() {
        for ms in [0, 1_795_394_549_123, 951_782_400_000, 4_102_444_799_999] {
            assert_eq!(millis_from_iso(&iso_from_millis(ms)), Some(ms));
        }
        for bad in ["2026-11-23", "2026-11-23T24:00:00.000Z", "2026-11-23T00:42:29.123", "2026-11-23 00:42:29.123Z"] {
            assert_eq!(millis_from_iso(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejects_impossible_dates() {
        for bad in ["2026-02-29", "2026-13-01", "2026-00-10", "2026-1-1", "20261123", "2026-11-31", "abcd-ef-gh"] {
            assert_eq!(millis_from_date(bad), None, "{bad}");
        }
        assert!(millis_from_date("2024-02-29").is_some());
    }

    #[test]
    fn retry_after_counts_to_midnight() {
        let midnight = millis_from_date("2026-11-24").unwrap();
        assert_eq!(seconds_until_next_utc_midnight(midnight - 1000), 1);
        assert_eq!(seconds_until_next_utc_midnight(midnight - 1), 1);
        assert_eq!(seconds_until_next_utc_midnight(midnight), 86_400);
        assert_eq!(seconds_until_next_utc_midnight(midnight - 3_600_500), 3601);
    }

    #[test]
    fn iso_strings_sort_like_time() {
        let a = iso_from_millis(1_000);
        let b = iso_from_millis(999_999_999_999);
        let c = iso_from_millis(1_795_394_549_123);
        assert!(a < b && b < c);
    }
}
