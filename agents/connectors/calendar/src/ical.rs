//! A VCALENDAR with one VEVENT (RFC 5545): escaped text, folded lines.

use keel_sdk::time::UtcDateTime;

pub struct Event<'a> {
    pub uid: &'a str,
    pub summary: &'a str,
    pub description: Option<&'a str>,
    pub start: UtcDateTime,
    pub end: UtcDateTime,
    pub attendees: &'a [String],
    pub stamp: UtcDateTime,
}

pub fn vevent(e: &Event<'_>) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//keel//calendar connector//EN".to_owned(),
        "BEGIN:VEVENT".to_owned(),
        format!("UID:{}", escape_text(e.uid)),
        format!("DTSTAMP:{}", e.stamp.ical()),
        format!("DTSTART:{}", e.start.ical()),
        format!("DTEND:{}", e.end.ical()),
        format!("SUMMARY:{}", escape_text(e.summary)),
    ];
    if let Some(description) = e.description {
        lines.push(format!("DESCRIPTION:{}", escape_text(description)));
    }
    for attendee in e.attendees {
        // A URI value: no escaping, so refuse what would break the line.
        let clean: String = attendee.chars().filter(|c| !c.is_control() && *c != ':' && *c != ';').collect();
        lines.push(format!("ATTENDEE;RSVP=TRUE:mailto:{clean}"));
    }
    lines.extend(["END:VEVENT".to_owned(), "END:VCALENDAR".to_owned()]);
    lines.iter().map(|l| fold(l)).collect::<Vec<_>>().join("")
}

/// TEXT value escaping: backslash, semicolon, comma, newline.
fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// One content line, folded at 75 octets (never inside a UTF-8 character),
/// ending in CRLF.
fn fold(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + line.len() / 70 * 3 + 2);
    let mut width = 0;
    for c in line.chars() {
        if width + c.len_utf8() > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += c.len_utf8();
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_lines_fold() {
        assert_eq!(escape_text("a;b,c\\d\ne"), "a\\;b\\,c\\\\d\\ne");
        let folded = fold(&"x".repeat(160));
        assert!(folded.split("\r\n").all(|l| l.len() <= 75), "{folded}");
        assert_eq!(folded.replace("\r\n ", "").trim_end(), "x".repeat(160));
    }
}
