//! What a property asks for, read from the words of its name.

use super::text::{same_word, stem};

/// Property-name words that are dropped when matching `Key: value` lines,
/// so "Email address:" fills `email` and "Company name:" fills `company`.
#[rustfmt::skip]
const KEY_FILLER: &[&str] = &[
    "your", "full", "address", "number", "estimated", "approximate", "approx", "the", "contact", "sender", "person",
    "customer", "client", "lead", "of", "a",
];

/// Property-name words that qualify a number rather than name it.
#[rustfmt::skip]
pub(super) const NUMBER_FILLER: &[&str] = &[
    "number", "count", "size", "total", "num", "of", "the", "estimated", "approx", "expected", "n", "cents", "minor",
];

/// Property-name words that introduce a boolean rather than name it.
#[rustfmt::skip]
pub(super) const BOOLEAN_FILLER: &[&str] = &[
    "is", "has", "have", "wants", "want", "needs", "need", "requested", "requests", "requires", "require", "asked",
    "asks", "did", "does", "was", "were", "should", "can", "will", "would", "the", "a", "an", "for", "of", "to", "with",
    "flag", "any", "mentions", "mentioned", "includes",
];

/// Which rule fills a property, chosen by the words of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Confidence,
    Reply,
    Subject,
    JobTitle,
    Email,
    Phone,
    Company,
    Website { host_only: bool },
    Currency,
    Money { minor: bool },
    Date { header: Header },
    Level,
    Person(NamePart),
    Need,
    Source,
    Other,
}

/// Whether a date property reads the `Date:` header: a `received`/`sent`
/// date first, a plain `date` when the body has none, a `deadline` never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    First,
    Fallback,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NamePart {
    Full,
    First,
    Last,
}

#[rustfmt::skip]
const NEED_NAMES: &[&str] = &[
    "need", "summary", "topic", "request", "description", "message", "body", "reason", "inquiry", "enquiry", "interest",
    "problem", "issue", "question", "detail", "requirement", "goal", "note", "intent", "purpose",
];

impl Kind {
    pub(super) fn of(words: &[String]) -> Kind {
        let has = |list: &[&str]| words.iter().any(|w| list.iter().any(|l| same_word(w, l)));
        if has(&["confidence", "certainty"]) {
            Kind::Confidence
        } else if has(&["reply", "response", "draft", "answer"]) {
            Kind::Reply
        } else if has(&["subject"]) {
            Kind::Subject
        } else if has(&["job", "role", "position"]) || words == ["title"] {
            Kind::JobTitle
        } else if has(&["email", "mail"]) && !has(NEED_NAMES) {
            Kind::Email
        } else if has(&["phone", "telephone", "tel", "mobile", "cell", "whatsapp"]) {
            Kind::Phone
        } else if has(&["company", "organization", "organisation", "org", "employer", "firm"]) {
            Kind::Company
        } else if has(&["website", "url", "site", "homepage", "domain"]) {
            Kind::Website { host_only: has(&["domain"]) }
        } else if has(&["currency"]) {
            Kind::Currency
        } else if has(&[
            "budget", "amount", "value", "price", "cost", "revenue", "spend", "deal", "fee", "arr", "mrr", "worth",
            "salary", "payment",
        ]) {
            Kind::Money { minor: words.last().is_some_and(|w| w == "cents" || w == "minor") }
        } else if has(&["date", "deadline", "due", "when", "timeline", "timeframe", "start", "received", "sent"]) {
            Kind::Date {
                header: if has(&["received", "sent"]) {
                    Header::First
                } else if words == ["date"] {
                    Header::Fallback
                } else {
                    Header::Never
                },
            }
        } else if has(&["urgency", "priority", "importance", "severity"]) {
            Kind::Level
        } else if has(&[
            "name", "first", "given", "last", "family", "surname", "sender", "contact", "person", "from", "who",
        ]) {
            Kind::Person(if has(&["first", "given"]) {
                NamePart::First
            } else if has(&["last", "family", "surname"]) {
                NamePart::Last
            } else {
                NamePart::Full
            })
        } else if has(NEED_NAMES) {
            Kind::Need
        } else if has(&["source", "channel"]) {
            Kind::Source
        } else {
            Kind::Other
        }
    }
}

/// The lowercase words of a property name: `contactEmail`, `contact_email`
/// and `contact-email` all give `["contact", "email"]`.
pub(super) fn name_words(name: &str) -> Vec<String> {
    const COMPOUNDS: &[(&str, &[&str])] = &[
        ("firstname", &["first", "name"]),
        ("lastname", &["last", "name"]),
        ("fullname", &["full", "name"]),
        ("surname", &["last", "name"]),
        ("phonenumber", &["phone", "number"]),
        ("emailaddress", &["email", "address"]),
        ("companyname", &["company", "name"]),
        ("e-mail", &["email"]),
    ];
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            words.push(std::mem::take(&mut current));
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        current.extend(c.to_lowercase());
    }
    words.push(current);
    let mut out: Vec<String> = Vec::new();
    for (i, word) in words.iter().enumerate().filter(|(_, w)| !w.is_empty()) {
        if word == "e" && words.get(i + 1).is_some_and(|n| n == "mail") {
            continue;
        }
        match COMPOUNDS.iter().find(|(c, _)| c == word) {
            Some((_, parts)) => out.extend(parts.iter().map(|p| p.to_string())),
            None => out.push(word.clone()),
        }
    }
    out
}

/// Name words reduced to what a `Key:` must say: synonyms merged, filler
/// dropped, "name" dropped when another word says which name.
pub(super) fn key_words(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = words
        .iter()
        .map(|w| match w.as_str() {
            "organization" | "organisation" | "org" | "employer" | "firm" => "company",
            "telephone" | "tel" | "mobile" | "cell" => "phone",
            "mail" => "email",
            other => other,
        })
        .filter(|w| !KEY_FILLER.contains(w))
        .map(stem)
        .collect();
    if out.len() > 1 {
        out.retain(|w| w != "name");
    }
    out
}

/// Words of the name without `filler`, or all of them when nothing else is left.
pub(super) fn significant(words: &[String], filler: &[&str]) -> Vec<String> {
    let kept: Vec<String> = words.iter().filter(|w| !filler.contains(&w.as_str())).cloned().collect();
    if kept.is_empty() { words.to_vec() } else { kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_split_into_words() {
        assert_eq!(name_words("contactEmail"), ["contact", "email"]);
        assert_eq!(name_words("budget_cents"), ["budget", "cents"]);
        assert_eq!(name_words("E-Mail"), ["mail"]);
        assert_eq!(name_words("firstname"), ["first", "name"]);
        assert_eq!(key_words(&name_words("Company name")), key_words(&name_words("organization")));
        assert_ne!(key_words(&name_words("Company name")), key_words(&name_words("name")));
    }
}
