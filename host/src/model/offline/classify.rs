//! Classification: finding the labels a prompt offers and choosing one by
//! keyword overlap with the user's text. The same scoring picks `enum`
//! values during extraction.

use std::ops::Range;

use super::text::{Tokens, same_word};
use crate::model::provider::{Message, Role};

/// Built-in keywords for common labels: a label that names a group (by any
/// of its names) also scores the group's phrases.
#[rustfmt::skip]
const GROUPS: &[(&[&str], &[&str])] = &[
    (
        &["lead", "sales", "prospect", "inquiry", "enquiry", "opportunity", "deal", "new business", "pricing"],
        &[
            "pricing", "price", "quote", "demo", "interested", "budget", "purchase", "buy", "trial", "proposal",
            "license", "seats", "plan", "evaluate", "looking for", "contract", "rfp", "rollout", "onboarding",
            "subscription", "enterprise", "our team", "how much",
        ],
    ),
    (
        &["support", "help", "bug", "issue", "technical", "incident", "problem", "ticket"],
        &[
            "error", "bug", "broken", "issue", "problem", "not working", "doesn't work", "crash", "help", "fix",
            "login", "log in", "password", "can't", "cannot", "unable", "ticket", "outage", "down", "fails", "failing",
            "stuck", "reset",
        ],
    ),
    (
        &["spam", "junk", "promotion", "scam", "phishing"],
        &[
            "unsubscribe", "winner", "prize", "lottery", "click here", "limited time", "act now", "congratulations",
            "crypto", "bitcoin", "seo", "guaranteed", "risk free", "casino", "wire transfer", "inheritance",
            "claim your", "backlinks", "100% free",
        ],
    ),
    (
        &["invoice", "billing", "payment", "finance", "accounting", "receipt"],
        &[
            "invoice", "payment", "paid", "bill", "billing", "receipt", "overdue", "amount due", "refund", "charged",
            "iban", "remittance", "vat", "payable", "credit note", "purchase order",
        ],
    ),
    (
        &["meeting", "scheduling", "schedule", "calendar", "appointment", "call"],
        &[
            "meeting", "meet", "call", "schedule", "calendar", "availability", "available", "reschedule", "zoom",
            "google meet", "teams", "invite", "slot", "appointment", "agenda", "book a time",
        ],
    ),
    (
        &["high", "urgent", "critical", "hot", "asap", "p1", "immediate"],
        &[
            "urgent", "asap", "as soon as possible", "immediately", "right away", "critical", "emergency", "this week",
            "today", "tomorrow", "deadline", "time sensitive", "blocker", "blocking", "end of the week",
        ],
    ),
    (
        &["medium", "normal", "moderate", "warm"],
        &[
            "soon", "next month", "this month", "this quarter", "coming weeks", "next few weeks", "in a few weeks",
        ],
    ),
    (
        &["low", "cold", "minor", "later"],
        &[
            "no rush", "not urgent", "no hurry", "whenever", "eventually", "next year", "someday", "just curious",
            "exploring", "when you have time", "low priority", "no pressure",
        ],
    ),
    (
        &["qualified", "good fit", "sql", "mql"],
        &[
            "budget", "decision maker", "approved", "signed off", "ready to", "timeline", "seats", "licenses",
            "purchase",
        ],
    ),
    (
        &["unqualified", "disqualified", "not qualified", "bad fit", "not a fit"],
        &[
            "student", "just curious", "no budget", "personal project", "hobby", "homework", "thesis", "not sure",
        ],
    ),
    (
        &["positive", "happy", "satisfied"],
        &[
            "thanks", "thank you", "great", "love", "happy", "excellent", "awesome", "appreciate", "pleased",
        ],
    ),
    (
        &["negative", "complaint", "angry", "unhappy"],
        &[
            "disappointed", "terrible", "angry", "unacceptable", "frustrated", "worst", "complaint", "refund", "awful",
            "poor",
        ],
    ),
    (
        &["cancellation", "cancel", "churn"],
        &[
            "cancel", "cancellation", "terminate", "close my account", "end our contract", "downgrade",
        ],
    ),
    (
        &["job", "recruiting", "application", "hiring", "career", "hr"],
        &[
            "resume", "cv", "position", "application", "applying", "hiring", "job", "internship", "candidate",
            "vacancy",
        ],
    ),
    (
        &["partnership", "partner", "reseller", "vendor"],
        &[
            "partner", "partnership", "reseller", "affiliate", "collaboration", "co marketing", "integrate",
        ],
    ),
];

/// Labels chosen when nothing matched, before falling back to the first one.
#[rustfmt::skip]
const CATCH_ALL: &[&str] = &[
    "other", "others", "unknown", "none", "general", "misc", "miscellaneous", "uncategorized", "neutral", "n/a",
];

/// Words too common to say anything about a label.
#[rustfmt::skip]
const STOP_WORDS: &[&str] = &[
    "a", "an", "the", "of", "to", "and", "or", "for", "in", "on", "is", "it", "with", "as", "this", "that", "be", "e",
    "g", "eg", "ie", "etc", "any", "about", "from", "by",
];

/// A label a prompt offers, with the words that explain it ("lead: a sales inquiry").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Label {
    pub(super) name: String,
    hint: String,
}

/// The label to answer with, or `None` when no message offers at least two.
/// System messages are read first; a user message counts only for a line
/// that starts with `Labels:`/`Categories:`, and that line is not scored.
pub(super) fn classify(messages: &[Message]) -> Option<String> {
    let system = messages.iter().filter(|m| m.role == Role::System).find_map(|m| find_labels(&m.content, false));
    let (labels, skip) = match system {
        Some((labels, _)) => (labels, None),
        None => messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::User)
            .find_map(|(i, m)| find_labels(&m.content, true).map(|(labels, lines)| (labels, Some((i, lines)))))?,
    };
    let text = messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User)
        .map(|(i, m)| match &skip {
            Some((at, lines)) if *at == i => m
                .content
                .lines()
                .enumerate()
                .filter(|(n, _)| !lines.contains(n))
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
                .join("\n"),
            _ => m.content.clone(),
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    let tokens = Tokens::new(&text);
    let scores: Vec<usize> = labels.iter().map(|l| score(&l.name, &l.hint, &tokens)).collect();
    let names: Vec<&str> = labels.iter().map(|l| l.name.as_str()).collect();
    Some(names[pick(&scores).unwrap_or_else(|| fallback(&names))].to_string())
}

/// The index of the highest positive score, the first on ties.
pub(super) fn pick(scores: &[usize]) -> Option<usize> {
    let best = *scores.iter().max()?;
    (best > 0).then(|| scores.iter().position(|s| *s == best)).flatten()
}

/// When no label matched: a catch-all label ("other", "unknown") if offered, else the first.
pub(super) fn fallback(labels: &[&str]) -> usize {
    labels.iter().position(|l| CATCH_ALL.contains(&l.trim().to_lowercase().as_str())).unwrap_or(0)
}

/// Twice each occurrence of the label's own words, plus each occurrence of
/// its hint's words and of the phrases of the built-in groups it names.
pub(super) fn score(label: &str, hint: &str, tokens: &Tokens) -> usize {
    let own = content_words(label);
    let mut groups: Vec<usize> = Vec::new();
    let mut total = 0;
    for word in &own {
        total += 2 * tokens.count(word);
        for (g, (names, _)) in GROUPS.iter().enumerate() {
            if names.iter().any(|n| same_word(n, word)) && !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    if let Some((g, _)) =
        GROUPS.iter().enumerate().find(|(_, (names, _))| names.iter().any(|n| n.eq_ignore_ascii_case(label)))
        && !groups.contains(&g)
    {
        groups.push(g);
    }
    total += groups.iter().flat_map(|g| GROUPS[*g].1).map(|p| tokens.count(p)).sum::<usize>();
    total + content_words(hint).iter().map(|w| tokens.count(w)).sum::<usize>()
}

/// The built-in phrases for a word, when it names a group ("urgent", "spam").
pub(super) fn group_phrases(word: &str) -> impl Iterator<Item = &'static str> + '_ {
    GROUPS
        .iter()
        .filter(move |(names, _)| names.iter().any(|n| same_word(n, word)))
        .flat_map(|(_, phrases)| phrases.iter().copied())
}

fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| !w.is_empty() && !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

/// Labels offered by `content` and the lines that offer them. `strict`
/// accepts only a line that starts with `Labels:` or `Categories:`.
fn find_labels(content: &str, strict: bool) -> Option<(Vec<Label>, Range<usize>)> {
    let lines: Vec<&str> = content.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = list_start(line, strict) else { continue };
        let mut labels = inline_labels(&line[at..]);
        let mut end = i + 1;
        if labels.len() < 2 {
            // The list follows as bullet lines.
            labels.clear();
            for next in &lines[i + 1..] {
                match bullet(next) {
                    Some(item) => labels.extend(label(item, true)),
                    None if next.trim().is_empty() && labels.is_empty() => {}
                    None => break,
                }
                end += 1;
            }
        }
        if labels.len() >= 2 {
            return Some((labels, i..end));
        }
    }
    None
}

/// Where the list of labels starts on `line`, after its marker.
fn list_start(line: &str, strict: bool) -> Option<usize> {
    const MARKERS: &[&str] = &[
        "labels:",
        "label:",
        "categories:",
        "category:",
        "classes:",
        "options:",
        "choose from",
        "one of the following labels:",
        "one of the following categories:",
        "one of the following:",
        "one of these:",
        "one of:",
        "one of",
    ];
    const LINE_MARKERS: &[&str] = &["labels:", "categories:"];
    let lower = line.to_ascii_lowercase();
    if strict {
        let trimmed = lower.trim_start();
        let indent = lower.len() - trimmed.len();
        return LINE_MARKERS.iter().find(|m| trimmed.starts_with(**m)).map(|m| indent + m.len());
    }
    let marked = MARKERS
        .iter()
        .filter_map(|m| lower.find(m).map(|at| (at, m.len())))
        .min_by_key(|&(at, len)| (at, usize::MAX - len))
        .map(|(at, len)| at + len);
    // "Classify the email as lead, support or spam."
    marked.or_else(|| {
        let verb = ["classif", "categori", "label", "sort"].iter().filter_map(|v| lower.find(v)).min()?;
        [" as ", " into "].iter().filter_map(|p| lower[verb..].find(p).map(|at| verb + at + p.len())).min()
    })
}

fn inline_labels(rest: &str) -> Vec<Label> {
    let rest = rest.trim().trim_start_matches(':').trim();
    let list = match rest.chars().next() {
        Some(open @ ('[' | '(' | '{')) => {
            let close = match open {
                '[' => ']',
                '(' => ')',
                _ => '}',
            };
            let inner = &rest[1..];
            &inner[..inner.find(close).unwrap_or(inner.len())]
        }
        _ => {
            let cut = [". ", " — ", " – ", " - "].iter().filter_map(|s| rest.find(s)).min().unwrap_or(rest.len());
            rest[..cut].trim_end_matches('.')
        }
    };
    let parts: Vec<&str> = list.split([',', '|', ';', '/']).collect();
    let last = parts.len().saturating_sub(1);
    let mut labels = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        // "a, b or c" and "a, b and c": "and" only splits the last item.
        let pieces: Vec<&str> =
            part.split(" or ").flat_map(|p| if i == last { p.split(" and ").collect() } else { vec![p] }).collect();
        labels.extend(pieces.into_iter().filter_map(|p| label(p, false)));
    }
    labels
}

fn bullet(line: &str) -> Option<&str> {
    let t = line.trim();
    if let Some(rest) = t.strip_prefix(['-', '*', '•']) {
        return Some(rest.trim());
    }
    let digits = t.find(|c: char| !c.is_ascii_digit())?;
    let rest = &t[digits..];
    (digits > 0 && rest.starts_with(['.', ')'])).then(|| rest[1..].trim())
}

/// A label from a list item; a bullet may explain it ("lead: a sales
/// inquiry", "lead (sales)", "lead - sales"), and the explanation scores too.
fn label(item: &str, explained: bool) -> Option<Label> {
    let item = item.trim();
    let cut =
        if explained { [":", " (", " - ", " – ", " — "].iter().filter_map(|s| item.find(s)).min() } else { None };
    let (name, hint) = match cut {
        Some(at) => (&item[..at], item[at..].trim_start_matches([':', '(', '-', '–', '—', ' ']).trim_end_matches(')')),
        None => (item, ""),
    };
    let name = name.trim().trim_start_matches("or ").trim_start_matches("and ");
    let name =
        name.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '*' | '“' | '”' | '‘' | '’') || c.is_whitespace());
    let name = name.trim_end_matches('.');
    let words = name.split_whitespace().count();
    ((1..=4).contains(&words) && name.chars().count() <= 40)
        .then(|| Label { name: name.to_string(), hint: hint.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(system: &str, user: &str) -> Option<String> {
        let messages = vec![
            Message { role: Role::System, content: system.into() },
            Message { role: Role::User, content: user.into() },
        ];
        classify(&messages)
    }

    const SUPPORT: &str =
        "Subject: Can't log in\n\nHi, since this morning I get an error when I log in. Password reset does not help.";
    const LEAD: &str = "Subject: Pricing\n\nWe are interested in a demo and a quote for 40 seats.";
    const SPAM: &str = "CONGRATULATIONS! You are a winner. Click here to claim your prize.";
    const INVOICE: &str = "Please find attached invoice #2231; payment is overdue since March.";
    const MEETING: &str = "Could we schedule a call on Thursday? Send me your availability.";

    #[test]
    fn labels_are_read_from_common_phrasings() {
        let names = |s: &str| find_labels(s, false).map(|(l, _)| l.into_iter().map(|l| l.name).collect::<Vec<_>>());
        let five = Some(vec!["lead".to_string(), "support".into(), "spam".into(), "invoice".into(), "meeting".into()]);
        assert_eq!(names("Classify the email. Labels: lead, support, spam, invoice, meeting."), five);
        assert_eq!(names("Answer with one of [lead, support, spam, invoice, meeting] and nothing else."), five);
        assert_eq!(names("Reply with one of: \"lead\", \"support\", \"spam\", \"invoice\" or \"meeting\""), five);
        assert_eq!(names("Classify the email as lead, support, spam, invoice or meeting."), five);
        assert_eq!(
            names(
                "Pick one of the following:\n- lead: a sales inquiry\n- support\n- spam\n- invoice\n- meeting\n\nBe brief."
            ),
            five
        );
        assert_eq!(names("You are a helpful assistant."), None);
    }

    #[test]
    fn the_label_with_most_keyword_overlap_wins() {
        let system = "Classify the email. Labels: lead, support, spam, invoice, meeting";
        assert_eq!(chat(system, SUPPORT).as_deref(), Some("support"));
        assert_eq!(chat(system, LEAD).as_deref(), Some("lead"));
        assert_eq!(chat(system, SPAM).as_deref(), Some("spam"));
        assert_eq!(chat(system, INVOICE).as_deref(), Some("invoice"));
        assert_eq!(chat(system, MEETING).as_deref(), Some("meeting"));
    }

    #[test]
    fn ties_go_to_the_first_label_and_nothing_to_a_catch_all() {
        assert_eq!(chat("one of: sales, lead", "Could you send a quote?").as_deref(), Some("sales"));
        assert_eq!(chat("Labels: lead, other, spam", "Lunch on the terrace.").as_deref(), Some("other"));
        assert_eq!(chat("Labels: lead, spam", "Lunch on the terrace.").as_deref(), Some("lead"));
    }

    #[test]
    fn labels_in_the_user_message_are_not_scored_as_text() {
        let messages = vec![Message {
            role: Role::User,
            content: "Labels: spam, support\n\nI cannot log in, please help.".into(),
        }];
        assert_eq!(classify(&messages).as_deref(), Some("support"));
    }
}
