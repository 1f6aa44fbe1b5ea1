//! Who wrote the message, by fixed patterns: address, name, company, job
//! title, website and phone number. A finder returns `None` rather than
//! guess when its pattern is absent.

use super::amount::{currency_after, currency_before, read_scale};
use super::text::{Email, first_segment};

/// Lowercase words that are never (part of) a person's name.
#[rustfmt::skip]
const NOT_NAMES: &[&str] = &[
    "the", "a", "an", "i", "we", "our", "my", "your", "interested", "looking", "writing", "reaching", "contacting",
    "here", "happy", "glad", "currently", "also", "just", "not", "sure", "in", "on", "at", "from", "with", "team",
    "sales", "support", "info", "hello", "hi", "thanks", "thank", "best", "regards", "cheers", "sent", "please",
    "sorry", "excited", "new", "responsible", "based", "hoping", "following", "emailing", "back", "still", "really",
    "this", "that", "it", "office", "admin", "billing", "noreply", "contact", "customer", "us", "mobile", "phone",
    "tel", "email", "website", "urgent", "available", "free", "ready", "going", "working", "trying", "calling",
    "accounts", "receivable", "payable", "department", "dept", "desk", "service", "services", "care", "helpdesk",
    "finance", "accounting", "hr", "marketing", "reception", "notifications",
];

/// Words of job titles, lowercase.
#[rustfmt::skip]
const TITLE_WORDS: &[&str] = &[
    "ceo", "cto", "cfo", "coo", "cmo", "cio", "cpo", "vp", "svp", "evp", "founder", "co-founder", "cofounder", "head",
    "director", "manager", "lead", "engineer", "officer", "owner", "partner", "president", "chief", "consultant",
    "specialist", "analyst", "architect", "developer", "designer", "assistant", "coordinator", "executive",
    "administrator", "buyer", "recruiter", "principal", "associate", "intern", "controller", "accountant",
    "representative", "strategist", "advisor", "chair", "chairman", "managing", "operations", "procurement",
];

/// Last words of company names, lowercase, without a trailing dot.
#[rustfmt::skip]
const COMPANY_SUFFIXES: &[&str] = &[
    "inc", "ltd", "llc", "llp", "gmbh", "ag", "corp", "corporation", "co", "company", "plc", "sa", "sas", "sarl", "bv",
    "nv", "srl", "spa", "oy", "ab", "pty", "limited", "labs", "group", "holdings", "technologies", "technology",
    "solutions", "systems", "software", "studio", "studios", "partners", "ventures", "industries", "logistics",
    "consulting", "analytics", "capital", "foods", "robotics", "games", "media",
];

/// Words that never start a company name found after "at" or "from".
#[rustfmt::skip]
const NOT_COMPANY: &[&str] = &[
    "i", "we", "you", "our", "my", "your", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
    "sunday", "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december", "today", "tomorrow", "q1", "q2", "q3", "q4", "christmas", "easter", "linkedin", "google",
    "twitter", "facebook", "reddit", "instagram", "youtube", "capterra", "noon", "eod", "home", "least", "all",
];

/// Mail domains that say nothing about the sender's company.
#[rustfmt::skip]
const FREE_MAIL: &[&str] = &[
    "gmail", "googlemail", "yahoo", "hotmail", "outlook", "live", "msn", "icloud", "me", "mac", "aol", "proton",
    "protonmail", "pm", "gmx", "web", "mail", "yandex", "zoho", "fastmail", "hey", "tutanota", "qq", "163",
    "t-online", "orange", "free", "libero", "seznam",
];

/// Every email address, in order of appearance, without repeats.
pub(super) fn emails(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let local_ok = |b: u8| b.is_ascii_alphanumeric() || b"._%+-".contains(&b);
    let domain_ok = |b: u8| b.is_ascii_alphanumeric() || b".-".contains(&b);
    let mut found: Vec<String> = Vec::new();
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && local_ok(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < bytes.len() && domain_ok(bytes[end]) {
            end += 1;
        }
        let local = text[start..at].trim_start_matches('.');
        let domain = text[at + 1..end].trim_end_matches(['.', '-']);
        let tld = domain.rsplit('.').next().unwrap_or("");
        if local.is_empty() || !domain.contains('.') || tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        let address = format!("{local}@{domain}");
        if !found.iter().any(|f| f.eq_ignore_ascii_case(&address)) {
            found.push(address);
        }
    }
    found
}

/// Local parts of addresses that send on someone's behalf (form and
/// notification services): never the sender.
const AUTOMATED: &[&str] = &[
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "notifications",
    "notification",
    "mailer-daemon",
    "forms",
    "wordpress",
];

fn is_automated(address: &str) -> bool {
    let local = address.split('@').next().unwrap_or("").to_ascii_lowercase();
    AUTOMATED.iter().any(|a| local == *a || local.starts_with(&format!("{a}+")))
}

/// The value of a `Key: value` line in the body whose key is one of `keys` (lowercase).
fn form_field<'a>(email: &Email<'a>, keys: &[&str]) -> Option<&'a str> {
    email.body.iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        let key = key.trim().trim_start_matches(['-', '*', '•']).trim().to_lowercase();
        let value = value.trim();
        (keys.contains(&key.as_str()) && !value.is_empty()).then_some(value)
    })
}

/// The sender's address: `From:`, then `Reply-To:` (skipping no-reply
/// senders such as form services), then a form's `Email:` field, then the
/// first one written in the body or signature.
pub(super) fn sender_email(email: &Email) -> Option<String> {
    let headers = email.from.into_iter().chain(email.reply_to).flat_map(emails);
    let field = || {
        form_field(email, &["email", "e-mail", "email address", "your email"])
            .and_then(|v| emails(v).into_iter().next())
    };
    let written = || emails(&email.written_text()).into_iter().find(|a| !is_automated(a));
    headers.into_iter().find(|a| !is_automated(a)).or_else(field).or_else(written)
}

/// The sender's name: a form's `Name:` field, the `From:` display name
/// (unless a no-reply service sent it), the signature's first lines,
/// "my name is X" / "I'm X" / "this is X", or `first.last@`.
pub(super) fn person_name(email: &Email, sender: Option<&str>) -> Option<String> {
    let field = form_field(email, &["name", "full name", "your name", "contact name"]).filter(|n| looks_like_name(n));
    let from_person = email.from.filter(|f| !emails(f).iter().any(|a| is_automated(a)));
    let signed = || email.signature.iter().take(2).map(|l| first_segment(l)).find(|l| looks_like_name(l));
    let candidates = [
        field.map(str::to_string),
        from_person.and_then(display_name),
        signed().map(str::to_string),
        introduced_name(&email.body_text()),
        sender.and_then(name_from_address),
    ];
    // A first name alone ("Thanks, Grace") gives way to a full name that starts with it.
    let mut found = candidates.iter().flatten();
    let first = found.next()?;
    let fuller =
        found.find(|c| c.split_whitespace().count() > 1 && c.split_whitespace().next() == Some(first.as_str()));
    Some(fuller.unwrap_or(first).clone())
}

/// One to four capitalised words that are not titles, companies or common words.
pub(super) fn looks_like_name(text: &str) -> bool {
    let words: Vec<&str> = text.split_whitespace().collect();
    (1..=4).contains(&words.len()) && words.iter().all(|w| is_name_word(w))
}

fn is_name_word(word: &str) -> bool {
    let lower = word.to_lowercase();
    let bare = lower.trim_end_matches('.');
    word.starts_with(char::is_uppercase)
        && word.chars().all(|c| c.is_alphabetic() || matches!(c, '-' | '\'' | '.' | '’'))
        && !NOT_NAMES.contains(&bare)
        && !TITLE_WORDS.contains(&bare)
        && !COMPANY_SUFFIXES.contains(&bare)
}

fn display_name(from: &str) -> Option<String> {
    let raw = from.split('<').next()?.trim().trim_matches(['"', '\'']).trim();
    if raw.is_empty() || raw.contains('@') {
        return None;
    }
    // "Lovelace, Ada" is written last name first.
    let raw = match raw.split_once(',') {
        Some((last, first)) => format!("{} {}", first.trim(), last.trim()),
        None => raw.to_string(),
    };
    let honorific =
        |w: &&str| matches!(w.to_lowercase().trim_end_matches('.'), "mr" | "mrs" | "ms" | "mx" | "dr" | "prof");
    let name = raw.split_whitespace().filter(|w| !honorific(w)).map(capitalize).collect::<Vec<_>>().join(" ");
    looks_like_name(&name).then_some(name)
}

fn introduced_name(text: &str) -> Option<String> {
    const INTRODUCTIONS: &[&str] = &["my name is ", "i'm ", "i’m ", "i am ", "this is ", "name's "];
    let lower = text.to_ascii_lowercase();
    let mut hits: Vec<(usize, usize)> = INTRODUCTIONS
        .iter()
        .flat_map(|m| lower.match_indices(m).map(|(i, _)| (i, m.len())))
        .filter(|(i, _)| word_starts_at(&lower, *i))
        .collect();
    hits.sort_unstable();
    hits.into_iter().find_map(|(i, len)| name_run(&text[i + len..]))
}

/// The capitalised name words at the start of `text`, up to punctuation.
fn name_run(text: &str) -> Option<String> {
    let mut words = Vec::new();
    for raw in text.split_whitespace().take(3) {
        let word = strip_possessive(raw.trim_end_matches([',', '.', ';', ':', '!', '?', ')']));
        if !is_name_word(word) {
            break;
        }
        words.push(word);
        if word.len() != raw.len() {
            break;
        }
    }
    (!words.is_empty()).then(|| words.join(" "))
}

fn name_from_address(address: &str) -> Option<String> {
    let local = address.split('@').next()?;
    let parts: Vec<&str> = local.split(['.', '_', '-']).collect();
    if !(2..=3).contains(&parts.len())
        || parts.iter().any(|p| p.len() < 2 || !p.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        return None;
    }
    let name = parts.iter().map(|p| capitalize(&p.to_ascii_lowercase())).collect::<Vec<_>>().join(" ");
    looks_like_name(&name).then_some(name)
}

/// The sender's company: a signature segment ending in a company suffix
/// ("Acme Corp"), "at/from/work for X" in the body, the segment after a job
/// title in the signature ("CTO, Acme"), a plain capitalised signature line,
/// then the sender's mail domain unless it is a free-mail one.
pub(super) fn company(email: &Email, sender: Option<&str>, person: Option<&str>) -> Option<String> {
    let person_words: Vec<&str> = person.map(|p| p.split_whitespace().collect()).unwrap_or_default();
    let not_person = |c: &String| !c.split_whitespace().all(|w| person_words.contains(&w));
    suffixed_in_signature(&email.signature)
        .or_else(|| named_in_text(&email.body_text()).filter(not_person))
        .or_else(|| after_title_in_signature(&email.signature))
        .or_else(|| plain_signature_line(&email.signature).filter(not_person))
        .or_else(|| sender.and_then(company_from_domain))
}

fn segments(line: &str) -> Vec<&str> {
    const SEPARATORS: &[&str] = &[" | ", " · ", " — ", " – ", " - ", ", ", " at ", " @ "];
    let mut parts = vec![line];
    for sep in SEPARATORS {
        parts = parts.into_iter().flat_map(|p| p.split(sep)).collect();
    }
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty()).collect()
}

fn is_contact_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    line.contains('@') || lower.contains("http") || lower.contains("www.")
}

fn bare_lower(word: &str) -> String {
    word.trim_end_matches(['.', ',']).to_lowercase()
}

fn has_title_word(text: &str) -> bool {
    text.split_whitespace().any(|w| TITLE_WORDS.contains(&bare_lower(w).as_str()))
}

fn is_company_suffix(word: &str) -> bool {
    COMPANY_SUFFIXES.contains(&bare_lower(word).as_str())
}

fn clean_company(segment: &str) -> String {
    segment.trim().trim_end_matches(['.', ',', ';']).to_string()
}

fn suffixed_in_signature(signature: &[&str]) -> Option<String> {
    signature.iter().filter(|l| !is_contact_line(l)).flat_map(|l| segments(l)).find_map(|segment| {
        let words: Vec<&str> = segment.split_whitespace().collect();
        let suffixed = words.len() >= 2 && words[1..].iter().any(|w| is_company_suffix(w));
        (suffixed && !has_title_word(segment) && segment.starts_with(char::is_uppercase))
            .then(|| clean_company(segment))
    })
}

fn named_in_text(text: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "at ",
        "from ",
        "work for ",
        "working for ",
        "works for ",
        "company is ",
        "company called ",
        "on behalf of ",
        "representing ",
    ];
    let lower = text.to_ascii_lowercase();
    let mut hits: Vec<(usize, usize)> = MARKERS
        .iter()
        .flat_map(|m| lower.match_indices(m).map(|(i, _)| (i, m.len())))
        .filter(|(i, _)| word_starts_at(&lower, *i))
        .collect();
    hits.sort_unstable();
    hits.into_iter().find_map(|(i, len)| company_run(&text[i + len..]))
}

/// Capitalised words (and `&`, and suffixes such as "Inc.") at the start of `text`.
fn company_run(text: &str) -> Option<String> {
    let mut words: Vec<&str> = Vec::new();
    for raw in text.split_whitespace().take(4) {
        let word = strip_possessive(raw.trim_end_matches([',', '.', ';', ':', '!', '?', ')']));
        let capitalised = word.starts_with(char::is_uppercase) && word.chars().any(char::is_alphabetic);
        let ok = capitalised || word == "&" || (!words.is_empty() && is_company_suffix(word));
        if !ok || TITLE_WORDS.contains(&bare_lower(word).as_str()) {
            break;
        }
        if words.is_empty() && NOT_COMPANY.contains(&bare_lower(word).as_str()) {
            return None;
        }
        words.push(word);
        if word.len() != raw.len() {
            break;
        }
    }
    while words.last() == Some(&"&") {
        words.pop();
    }
    (!words.is_empty()).then(|| words.join(" "))
}

fn after_title_in_signature(signature: &[&str]) -> Option<String> {
    signature.iter().filter(|l| !is_contact_line(l)).find_map(|line| {
        let parts = segments(line);
        let title = parts.iter().position(|p| has_title_word(p))?;
        parts[title + 1..]
            .iter()
            .find(|p| !has_title_word(p) && p.starts_with(char::is_uppercase) && !p.chars().any(|c| c.is_ascii_digit()))
            .map(|p| clean_company(p))
    })
}

fn plain_signature_line(signature: &[&str]) -> Option<String> {
    signature.iter().skip(1).find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let plain = (1..=4).contains(&words.len())
            && !is_contact_line(line)
            && !line.contains(',')
            && !line.chars().any(|c| c.is_ascii_digit())
            && !has_title_word(line)
            && words.iter().all(|w| w.starts_with(char::is_uppercase) || *w == "&");
        plain.then(|| clean_company(line))
    })
}

/// The registrable label of the address's domain, as a name: `acme-robotics.co.uk` gives "Acme Robotics".
fn company_from_domain(address: &str) -> Option<String> {
    let label = registrable_label(address.rsplit_once('@')?.1)?;
    let name = label.split('-').filter(|p| !p.is_empty()).map(capitalize).collect::<Vec<_>>().join(" ");
    (!name.is_empty()).then_some(name)
}

fn registrable_label(domain: &str) -> Option<String> {
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let n = labels.len();
    let two_part_suffix = n >= 3 && matches!(labels[n - 2], "co" | "com" | "org" | "net" | "ac" | "gov");
    let label = labels.get(if two_part_suffix { n - 3 } else { n.checked_sub(2)? })?;
    (!FREE_MAIL.contains(label)).then(|| label.to_string())
}

/// The job title in the signature: the segment of a line that holds a title word.
pub(super) fn job_title(signature: &[&str]) -> Option<String> {
    signature.iter().filter(|l| !is_contact_line(l)).find_map(|line| {
        let segment = [", ", " | ", " · ", " - ", " – ", " at ", " @ "]
            .iter()
            .fold(vec![*line], |parts, sep| parts.into_iter().flat_map(|p| p.split(sep)).collect())
            .into_iter()
            .find(|p| has_title_word(p))?;
        Some(clean_company(segment))
    })
}

/// The first `http(s)://` or `www.` address in `text`, or the sender's
/// company domain; `host_only` drops the scheme, `www.` and path.
pub(super) fn website(text: &str, sender: Option<&str>, host_only: bool) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let written = ["https://", "http://", "www."].iter().filter_map(|m| lower.find(m)).min().map(|start| {
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "<>()\"',;".contains(c))
            .map_or(text.len(), |e| start + e);
        text[start..end].trim_end_matches(['.', '/', '!', '?']).to_string()
    });
    let derived = || {
        let domain = sender?.rsplit_once('@')?.1.to_ascii_lowercase();
        registrable_label(&domain)?;
        Some(domain)
    };
    let url = written.or_else(derived)?;
    let host = url.split("://").last().unwrap_or(&url);
    let host = host.split('/').next().unwrap_or(host);
    let host = host.strip_prefix("www.").unwrap_or(host);
    Some(if host_only {
        host.to_string()
    } else if url.contains("://") {
        url
    } else {
        format!("https://{}", url)
    })
}

/// The first phone number: a labelled one ("Phone:", "M:", "call me at")
/// wins over one written `+...`, which wins over a bare run of 10+ digits.
/// Dates and amounts are not phone numbers.
pub(super) fn phone(text: &str) -> Option<String> {
    const LABELS: &[&str] = &["phone", "tel.", "tel ", "mobile", "cell", "call me", "whatsapp", "reach me"];
    const LINE_LABELS: &[&str] = &["m:", "t:", "p:", "tel:", "ph:", "mob:", "m.", "t."];
    let mut best: Option<(u8, String)> = None;
    for line in text.lines() {
        let lower = line.to_ascii_lowercase();
        let labelled =
            LABELS.iter().any(|l| lower.contains(l)) || LINE_LABELS.iter().any(|l| lower.trim_start().starts_with(l));
        for candidate in phone_candidates(line) {
            let digits = candidate.chars().filter(char::is_ascii_digit).count();
            let rank = match () {
                _ if labelled && digits >= 7 => 0,
                _ if candidate.starts_with('+') => 1,
                _ if digits >= 10 => 2,
                _ => continue,
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, candidate.to_string()));
            }
        }
    }
    best.map(|(_, p)| p)
}

fn phone_candidates(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = line[i..].chars().next() {
        let prev = line[..i].chars().next_back();
        let next_digit = line[i + c.len_utf8()..].starts_with(|n: char| n.is_ascii_digit());
        let starts = (c.is_ascii_digit() || ((c == '+' || c == '(') && next_digit))
            && !prev.is_some_and(|p| p.is_alphanumeric() || "€$£¥₹.,".contains(p));
        if !starts {
            i += c.len_utf8();
            continue;
        }
        let len = line[i..].find(|c: char| !(c.is_ascii_digit() || " -.()+".contains(c))).unwrap_or(line.len() - i);
        let candidate = line[i..i + len].trim_end_matches(|c: char| !c.is_ascii_digit());
        let end = i + candidate.len().max(1);
        let digits = candidate.chars().filter(char::is_ascii_digit).count();
        let followed_by_money = currency_after(&line[end..]).is_some() || read_scale(&line[end..]).is_some();
        if (7..=15).contains(&digits)
            && !looks_like_date(candidate)
            && !followed_by_money
            && currency_before(&line[..i]).is_none()
        {
            out.push(candidate);
        }
        i = end;
    }
    out
}

/// Three digit groups shaped like `2024-05-12` or `12.05.2024`.
fn looks_like_date(candidate: &str) -> bool {
    let groups: Vec<&str> = candidate.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    groups.len() == 3
        && ((groups[0].len() == 4 && groups[1].len() <= 2 && groups[2].len() <= 2)
            || (groups[0].len() <= 2 && groups[1].len() <= 2 && matches!(groups[2].len(), 2 | 4)))
}

fn word_starts_at(text: &str, i: usize) -> bool {
    !text[..i].chars().next_back().is_some_and(char::is_alphanumeric)
}

fn strip_possessive(word: &str) -> &str {
    word.strip_suffix("'s").or_else(|| word.strip_suffix("’s")).unwrap_or(word)
}

/// "ada" gives "Ada"; words with capitals are kept as written.
pub(super) fn capitalize(word: &str) -> String {
    if word.chars().any(char::is_uppercase) {
        return word.to_string();
    }
    let mut chars = word.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_prefer_labels_and_skip_dates_and_money() {
        assert_eq!(phone("Mobile: 0171 2345678").as_deref(), Some("0171 2345678"));
        assert_eq!(phone("Meet on 2025-03-14?\nAda\n+44 20 7946 0958").as_deref(), Some("+44 20 7946 0958"));
        assert_eq!(phone("Budget €1,200,000 by 12.05.2025"), None);
        assert_eq!(phone("T: (415) 555-0100").as_deref(), Some("(415) 555-0100"));
    }

    #[test]
    fn companies_come_from_phrases_signatures_or_domains() {
        let email = Email::parse("Hi,\nI'm Ada from Acme Robotics and we need help.\n\nBest,\nAda");
        assert_eq!(company(&email, Some("ada@gmail.com"), Some("Ada")).as_deref(), Some("Acme Robotics"));
        let email = Email::parse("We need help.\n\nBest,\nAda Lovelace\nHead of Ops | Initech");
        assert_eq!(company(&email, None, Some("Ada Lovelace")).as_deref(), Some("Initech"));
        let email = Email::parse("We need help, see you Monday.");
        assert_eq!(company(&email, Some("grace@hopper-labs.co.uk"), None).as_deref(), Some("Hopper Labs"));
        assert_eq!(company(&email, Some("grace@gmail.com"), None), None);
    }

    #[test]
    fn names_come_from_headers_signatures_introductions_or_addresses() {
        let name = |text: &str, sender: Option<&str>| person_name(&Email::parse(text), sender);
        assert_eq!(name("From: \"Lovelace, Ada\" <ada@x.io>\n\nHi", None).as_deref(), Some("Ada Lovelace"));
        assert_eq!(name("Hi Bob,\nMy name is Grace Hopper, and I run IT.", None).as_deref(), Some("Grace Hopper"));
        assert_eq!(
            name("Hi Bob, I'm interested in a demo.", Some("grace.hopper@navy.mil")).as_deref(),
            Some("Grace Hopper")
        );
        assert_eq!(name("Hi Bob, I'm interested in a demo.", Some("info@navy.mil")), None);
    }
}
