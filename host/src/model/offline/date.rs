//! Dates as people write them: full dates become `YYYY-MM-DD`, the rest
//! stay phrases, since the rules never read the clock.

use super::text::word_spans;

#[rustfmt::skip]
const MONTHS: &[&str] = &[
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
    "december",
];

const WEEKDAYS: &[&str] = &["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// A date found in the text: `iso` when it is a full calendar date
/// written as `YYYY-MM-DD`, otherwise the phrase as written ("next Tuesday").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FoundDate {
    pub(super) text: String,
    pub(super) iso: bool,
}

/// The first full date in `text` ("2025-03-14", "14 March 2025", "March
/// 14th, 2025", "14.03.2025"), else the first partial or relative one
/// ("March 14", "next Tuesday", "end of the month", "Q3", "in two weeks").
/// Relative dates stay phrases: the rules do not read the clock.
pub(super) fn date(text: &str) -> Option<FoundDate> {
    let spans = word_spans(text);
    let mut relative = None;
    for k in 0..spans.len() {
        if let Some(found) = absolute_date(text, &spans, k) {
            return Some(found);
        }
        if relative.is_none() {
            relative = relative_date(text, &spans, k);
        }
    }
    relative
}

fn iso(year: u32, month: u32, day: u32) -> Option<FoundDate> {
    let days = match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    ((1900..=2100).contains(&year) && (1..=days).contains(&day))
        .then(|| FoundDate { text: format!("{year:04}-{month:02}-{day:02}"), iso: true })
}

fn phrase(text: &str, from: usize, to: usize) -> Option<FoundDate> {
    Some(FoundDate { text: text[from..to].to_string(), iso: false })
}

fn month_number(word: &str) -> Option<u32> {
    let lower = word.to_lowercase();
    // Three-letter abbreviations only (and "Sept"): "Marc" and "Juni" are names.
    let abbreviation = lower.len() == 3 || lower == "sept";
    if !word.starts_with(char::is_uppercase) || !(abbreviation || MONTHS.contains(&lower.as_str())) {
        return None;
    }
    let position = MONTHS.iter().position(|m| m.starts_with(lower.as_str()))?;
    u32::try_from(position + 1).ok()
}

/// "12", "12th", "1st" as a day of the month.
fn day_number(word: &str) -> Option<u32> {
    let lower = word.to_ascii_lowercase();
    let digits = ["st", "nd", "rd", "th"].iter().find_map(|s| lower.strip_suffix(s)).unwrap_or(&lower);
    let day: u32 = digits.parse().ok().filter(|_| digits.len() <= 2)?;
    (1..=31).contains(&day).then_some(day)
}

fn year_number(word: &str) -> Option<u32> {
    word.parse().ok().filter(|_| word.len() == 4)
}

fn absolute_date(text: &str, spans: &[(usize, usize)], k: usize) -> Option<FoundDate> {
    let word = |j: usize| spans.get(j).map(|&(s, e)| &text[s..e]);
    let gap = |j: usize| spans.get(j + 1).map(|&(s, _)| &text[spans[j].1..s]);
    let w0 = word(k)?;
    let numeric = |j: usize| word(j).filter(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
    if let (Some(a), Some(b), Some(c)) = (numeric(k), numeric(k + 1), numeric(k + 2))
        && let (Some(g0), Some(g1)) = (gap(k), gap(k + 1))
        && g0 == g1
        && matches!(g0, "-" | "/" | ".")
    {
        let (a_n, b_n, c_n): (u32, u32, u32) = (a.parse().ok()?, b.parse().ok()?, c.parse().ok()?);
        let year_of = |y: &str, n: u32| if y.len() == 2 { Some(2000 + n) } else { (y.len() == 4).then_some(n) };
        if a.len() == 4 {
            return iso(a_n, b_n, c_n);
        }
        let year = year_of(c, c_n)?;
        return match g0 {
            "." => iso(year, b_n, a_n),
            _ if a_n > 12 => iso(year, b_n, a_n),
            _ if b_n > 12 => iso(year, a_n, b_n),
            // 03/04/2025: day or month first is anyone's guess.
            _ => phrase(text, spans[k].0, spans[k + 2].1),
        };
    }
    let month = month_number(w0)?;
    let year_after =
        |j: usize| word(j).and_then(year_number).filter(|_| gap(j - 1).is_some_and(|g| matches!(g.trim(), "" | ",")));
    // "March 14th, 2025" / "March 14"
    if let Some(day) = word(k + 1).and_then(day_number).filter(|_| gap(k).is_some_and(|g| matches!(g, " " | ". "))) {
        return match year_after(k + 2) {
            Some(year) => iso(year, month, day),
            None => phrase(text, spans[k].0, spans[k + 1].1),
        };
    }
    // "14 March 2025" / "14th of March"
    let before = |j: usize| k.checked_sub(j).and_then(|i| word(i).and_then(day_number).map(|d| (i, d)));
    let day_before =
        before(1).or_else(|| before(2).filter(|_| word(k - 1).is_some_and(|w| w.eq_ignore_ascii_case("of"))));
    if let Some((start, day)) = day_before {
        return match year_after(k + 1) {
            Some(year) => iso(year, month, day),
            None => phrase(text, spans[start].0, spans[k].1),
        };
    }
    if year_after(k + 1).is_some() {
        return phrase(text, spans[k].0, spans[k + 1].1);
    }
    // A bare month only after a word that makes it a time ("by June"), so "May I ask" is no date.
    let lead = k.checked_sub(1).and_then(word).map(str::to_lowercase);
    match lead.as_deref() {
        Some("early" | "mid" | "late") => phrase(text, spans[k - 1].0, spans[k].1),
        Some("of") if k >= 2 && word(k - 2).is_some_and(|w| w.eq_ignore_ascii_case("end")) => {
            phrase(text, spans[k - 2].0, spans[k].1)
        }
        Some("in" | "by" | "until" | "before" | "after" | "from" | "since") => phrase(text, spans[k].0, spans[k].1),
        _ => None,
    }
}

fn relative_date(text: &str, spans: &[(usize, usize)], k: usize) -> Option<FoundDate> {
    const PERIODS: &[&str] = &["week", "month", "quarter", "year"];
    const UNITS: &[&str] = &["day", "days", "week", "weeks", "month", "months"];
    let lower = |j: usize| spans.get(j).map(|&(s, e)| text[s..e].to_lowercase());
    let w = lower(k)?;
    let is_weekday = |w: &str| WEEKDAYS.contains(&w);
    let span = |to: usize| phrase(text, spans[k].0, spans[to].1);
    match w.as_str() {
        "today" | "tomorrow" | "tonight" => span(k),
        "next" | "this" | "coming" => {
            let n = lower(k + 1)?;
            (PERIODS.contains(&n.as_str()) || is_weekday(&n)).then(|| span(k + 1)).flatten()
        }
        "end" if lower(k + 1).as_deref() == Some("of") => {
            let j = if lower(k + 2).as_deref() == Some("the") { k + 3 } else { k + 2 };
            let n = lower(j)?;
            let ok = PERIODS.contains(&n.as_str()) || matches!(n.as_str(), "q1" | "q2" | "q3" | "q4");
            ok.then(|| span(j)).flatten()
        }
        "q1" | "q2" | "q3" | "q4" => {
            let with_year = lower(k + 1).as_deref().and_then(year_number).is_some();
            span(if with_year { k + 1 } else { k })
        }
        "in" | "within" => {
            let unit = (k + 2..=k + 3).find(|&j| lower(j).is_some_and(|u| UNITS.contains(&u.as_str())))?;
            let counted = lower(k + 1).is_some_and(|n| {
                n.bytes().all(|b| b.is_ascii_digit())
                    || matches!(n.as_str(), "a" | "one" | "two" | "three" | "four" | "few" | "couple")
            });
            counted.then(|| span(unit)).flatten()
        }
        _ if is_weekday(&w) && text[spans[k].0..].starts_with(char::is_uppercase) => span(k),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_prefer_full_dates_over_relative_ones() {
        let d = |t: &str| date(t).map(|d| (d.text, d.iso));
        assert_eq!(d("next Tuesday or March 14th, 2025"), Some(("2025-03-14".into(), true)));
        assert_eq!(d("Tue, 4 Mar 2025 09:12:00 +0100"), Some(("2025-03-04".into(), true)));
        assert_eq!(d("by 14.03.2025"), Some(("2025-03-14".into(), true)));
        assert_eq!(d("could we talk next Tuesday?"), Some(("next Tuesday".into(), false)));
        assert_eq!(d("live by end of the quarter"), Some(("end of the quarter".into(), false)));
        assert_eq!(d("May I ask about pricing?"), None);
        assert_eq!(d("03/04/2025"), Some(("03/04/2025".into(), false)));
    }
}
