//! The current UTC time in the formats connectors write: RFC 3339, RFC 2822
//! (mail `Date:`) and iCalendar (`20250102T030405Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC date and time to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UtcDateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

impl UtcDateTime {
    /// Now, from the wall clock.
    pub fn now() -> UtcDateTime {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        UtcDateTime::from_unix(secs as i64)
    }

    /// From seconds since 1970-01-01T00:00:00Z.
    pub fn from_unix(secs: i64) -> UtcDateTime {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        UtcDateTime { year, month, day, hour: rem / 3600, minute: rem / 60 % 60, second: rem % 60 }
    }

    /// Seconds since 1970-01-01T00:00:00Z.
    pub fn unix_seconds(&self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in UTC, no fractions).
    pub fn parse_rfc3339(text: &str) -> Option<UtcDateTime> {
        let b = text.as_bytes();
        if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        if b[19] != b'Z' && b[19] != b'z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
        let t = UtcDateTime {
            year: i64::from(num(0..4)?),
            month: num(5..7)?,
            day: num(8..10)?,
            hour: num(11..13)?,
            minute: num(14..16)?,
            second: num(17..19)?,
        };
        let valid = (1..=12).contains(&t.month)
            && t.day >= 1
            && t.day <= days_in_month(t.year, t.month)
            && t.hour < 24
            && t.minute < 60
            && t.second < 61;
        valid.then_some(t)
    }

    /// `2025-01-02T03:04:05Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `Thu, 02 Jan 2025 03:04:05 +0000`.
    pub fn rfc2822(&self) -> String {
        let weekday = WEEKDAYS[days_from_civil(self.year, self.month, self.day).rem_euclid(7) as usize];
        let month = MONTHS[(self.month - 1) as usize];
        format!(
            "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }

    /// `20250102T030405Z`.
    pub fn ical(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
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

// Howard Hinnant's civil calendar algorithms.
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
    fn formats_and_parses() {
        let t = UtcDateTime::from_unix(1_735_787_045); // 2025-01-02T03:04:05Z
        assert_eq!(t.rfc3339(), "2025-01-02T03:04:05Z");
        assert_eq!(t.rfc2822(), "Thu, 02 Jan 2025 03:04:05 +0000");
        assert_eq!(t.ical(), "20250102T030405Z");
        assert_eq!(UtcDateTime::parse_rfc3339("2025-01-02T03:04:05Z"), Some(t));
        assert_eq!(UtcDateTime::parse_rfc3339("2024-02-30T00:00:00Z"), None);
        assert_eq!(UtcDateTime::parse_rfc3339("2025-01-02T03:04:05+01:00"), None);
        assert_eq!(UtcDateTime::from_unix(0).rfc2822(), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(t.unix_seconds(), 1_735_787_045);
        assert_eq!(UtcDateTime::from_unix(-1).unix_seconds(), -1);
    }
}
