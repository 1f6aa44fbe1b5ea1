//! Amounts of money and other numbers as people write them.

#[rustfmt::skip]
const CURRENCY_CODES: &[&str] = &["EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "INR", "CNY"];

/// A number written in the text, with its currency when one is written next to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Amount {
    /// In major units, scale applied: "€12.5k" is 12500.
    pub(super) value: f64,
    pub(super) currency: Option<&'static str>,
    /// Byte offset of the first digit.
    pub(super) start: usize,
    /// Byte offset after the number and any scale or currency that follows it.
    end: usize,
    scale: Option<f64>,
    /// "20%" is a share, not an amount: it takes no currency from a range.
    percent: bool,
}

/// Every number in `text`. "12,000", "12.000" and "12 000" are twelve
/// thousand, "1.234,56" and "1,234.56" the same amount; "k", "m", "million",
/// "bn" scale; a symbol or code before or after sets the currency; in a
/// range ("€10-15k", "10 to 15k EUR") each end takes what the other has.
pub(super) fn numbers(text: &str) -> Vec<Amount> {
    let mut out: Vec<Amount> = Vec::new();
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        let prev = text[..i].chars().next_back();
        let starts = c.is_ascii_digit() && !prev.is_some_and(|p| p.is_ascii_digit() || p == '.' || p == ',');
        let currency_before = if starts { currency_before(&text[..i]) } else { None };
        let glued = prev.is_some_and(char::is_alphanumeric);
        if starts
            && (!glued || currency_before.is_some())
            && let Some((value, len)) = read_number(&text[i..])
        {
            let mut amount =
                Amount { value, currency: currency_before, start: i, end: i + len, scale: None, percent: false };
            if let Some((scale, len)) = read_scale(&text[amount.end..]) {
                amount.value *= scale;
                amount.scale = Some(scale);
                amount.end += len;
            }
            if let Some((code, len)) = currency_after(&text[amount.end..]) {
                amount.currency = amount.currency.or(Some(code));
                amount.end += len;
            }
            if text[amount.end..].starts_with('%') {
                amount.currency = None;
                amount.percent = true;
            }
            out.push(amount);
            i = amount.end;
            continue;
        }
        i += c.len_utf8();
    }
    for k in (1..out.len()).rev() {
        let (a, b) = (out[k - 1], out[k]);
        let gap = text[a.end..b.start].trim().to_ascii_lowercase();
        if matches!(gap.as_str(), "-" | "–" | "—" | "to" | "and" | "or") && !a.percent && !b.percent {
            if a.scale.is_none()
                && let Some(scale) = b.scale
            {
                out[k - 1].value *= scale;
                out[k - 1].scale = Some(scale);
            }
            out[k - 1].currency = a.currency.or(b.currency);
            out[k].currency = b.currency.or(a.currency);
        }
    }
    out
}

/// The value and byte length of the number at the start of `text`.
fn read_number(text: &str) -> Option<(f64, usize)> {
    let digits_end = |from: usize| text[from..].find(|c: char| !c.is_ascii_digit()).map_or(text.len(), |e| from + e);
    let first = digits_end(0);
    if first == 0 {
        return None;
    }
    let mut groups: Vec<(Option<char>, &str)> = vec![(None, &text[..first])];
    let mut end = first;
    while let Some(sep) = text[end..].chars().next() {
        if !matches!(sep, ',' | '.' | '\'' | '’' | ' ' | '\u{a0}' | '\u{202f}') {
            break;
        }
        let from = end + sep.len_utf8();
        let next = digits_end(from);
        let grouping_only = !matches!(sep, ',' | '.');
        if next == from || (grouping_only && next - from != 3) {
            break;
        }
        groups.push((Some(sep), &text[from..next]));
        end = next;
    }
    let (last_sep, last_digits) = groups[groups.len() - 1];
    let count = |c: char| groups.iter().filter(|(s, _)| *s == Some(c)).count();
    // The last `,` or `.` is the decimal point when the other one is also
    // used, or when it is used once and not followed by exactly three digits.
    let decimal = match last_sep {
        Some(c @ (',' | '.')) => {
            let other = if c == ',' { '.' } else { ',' };
            count(other) > 0 || (count(c) == 1 && last_digits.len() != 3)
        }
        _ => false,
    };
    let integer_groups = if decimal { &groups[..groups.len() - 1] } else { &groups[..] };
    let integer: String = integer_groups.iter().map(|(_, d)| *d).collect();
    let number = if decimal { format!("{integer}.{last_digits}") } else { integer };
    number.parse::<f64>().ok().filter(|v| v.is_finite()).map(|v| (v, end))
}

pub(super) fn read_scale(text: &str) -> Option<(f64, usize)> {
    const SCALES: &[(&str, f64, bool)] = &[
        ("millions", 1e6, true),
        ("million", 1e6, true),
        ("mio", 1e6, true),
        ("thousands", 1e3, true),
        ("thousand", 1e3, true),
        ("billion", 1e9, true),
        ("bn", 1e9, false),
        ("mn", 1e6, false),
        ("k", 1e3, false),
        ("m", 1e6, false),
    ];
    let lower = text.to_ascii_lowercase();
    SCALES.iter().find_map(|&(word, scale, spaced)| {
        let offset = if spaced && lower.starts_with(' ') { 1 } else { 0 };
        let rest = &lower[offset..];
        let whole_word = rest.starts_with(word) && !rest[word.len()..].starts_with(|c: char| c.is_alphanumeric());
        whole_word.then_some((scale, offset + word.len()))
    })
}

pub(super) fn currency_after(text: &str) -> Option<(&'static str, usize)> {
    let offset = if text.starts_with(' ') { 1 } else { 0 };
    let rest = &text[offset..];
    if let Some(code) = symbol_currency(rest.chars().next()?) {
        return Some((code, offset + rest.chars().next()?.len_utf8()));
    }
    let word_end = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
    let code = match rest[..word_end].to_lowercase().as_str() {
        "eur" | "euro" | "euros" => "EUR",
        "usd" | "dollar" | "dollars" => "USD",
        "gbp" | "pound" | "pounds" => "GBP",
        other => *CURRENCY_CODES.iter().find(|c| c.eq_ignore_ascii_case(other))?,
    };
    Some((code, offset + word_end))
}

pub(super) fn currency_before(text: &str) -> Option<&'static str> {
    let text = text.strip_suffix(' ').unwrap_or(text);
    for (prefix, code) in [("US$", "USD"), ("CA$", "CAD"), ("C$", "CAD"), ("AU$", "AUD"), ("A$", "AUD")] {
        if text.ends_with(prefix) {
            return Some(code);
        }
    }
    if let Some(code) = text.chars().next_back().and_then(symbol_currency) {
        return Some(code);
    }
    let word_start =
        text.char_indices().rev().find(|(_, c)| !c.is_ascii_alphabetic()).map_or(0, |(i, c)| i + c.len_utf8());
    let word = &text[word_start..];
    CURRENCY_CODES.iter().find(|c| c.eq_ignore_ascii_case(word)).copied()
}

fn symbol_currency(c: char) -> Option<&'static str> {
    match c {
        '€' => Some("EUR"),
        '$' => Some("USD"),
        '£' => Some("GBP"),
        '¥' => Some("JPY"),
        '₹' => Some("INR"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(f64, Option<&'static str>)> {
        numbers(text).iter().map(|a| (a.value, a.currency)).collect()
    }

    #[test]
    fn amounts_read_separators_scales_and_currencies() {
        assert_eq!(values("€12,000"), [(12000.0, Some("EUR"))]);
        assert_eq!(values("about $5k"), [(5000.0, Some("USD"))]);
        assert_eq!(values("12000 EUR"), [(12000.0, Some("EUR"))]);
        assert_eq!(values("12.000 €"), [(12000.0, Some("EUR"))]);
        assert_eq!(values("1.234,56 €"), [(1234.56, Some("EUR"))]);
        assert_eq!(values("US$1.5M"), [(1_500_000.0, Some("USD"))]);
        assert_eq!(values("£ 12 500 per year"), [(12500.0, Some("GBP"))]);
        assert_eq!(values("€10-15k"), [(10000.0, Some("EUR")), (15000.0, Some("EUR"))]);
        assert_eq!(values("USD5k and 20%"), [(5000.0, Some("USD")), (20.0, None)]);
        assert_eq!(values("40 seats in Q3"), [(40.0, None)]);
    }
}
