//! Reading text the way people write email: headers, body and signature,
//! sentences, and whole-word keyword counts that survive plurals and "not".

use super::sender::looks_like_name;

/// Header names read at the start of a line. `To` and `Cc` are read only so
/// that their addresses are never taken for the sender's.
pub(super) const HEADERS: &[&str] = &["from", "to", "cc", "bcc", "subject", "date", "sent", "reply-to"];

/// Closing lines; the longest match wins, so "best regards" beats "best".
#[rustfmt::skip]
const SIGN_OFFS: &[&str] = &[
    "best regards", "kind regards", "warm regards", "warmest regards", "many thanks", "thanks again", "thanks so much",
    "thank you", "best wishes", "all the best", "yours sincerely", "yours truly", "sincerely", "regards", "cheers",
    "thanks", "best", "thx", "talk soon", "speak soon", "mit freundlichen grüßen", "viele grüße", "cordialement",
    "saludos",
];

/// A signature is short: more lines, or longer ones, are still the body.
const SIGNATURE_MAX_LINES: usize = 7;
const SIGNATURE_MAX_WIDTH: usize = 80;

#[rustfmt::skip]
const GREETINGS: &[&str] = &[
    "good morning", "good afternoon", "good evening", "to whom it may concern", "greetings", "hello", "hallo", "howdy",
    "dear", "hey", "hi", "bonjour", "hola",
];

/// Sentence openings that carry no request.
#[rustfmt::skip]
const PLEASANTRIES: &[&str] = &[
    "i hope", "hope you", "hope this", "hope all", "how are you", "how have you been", "thanks for", "thank you for",
    "thanks so much", "i trust", "nice to meet", "great to meet", "good to meet", "it was great", "it was nice",
    "long time",
];

/// Openings of instructions to the model that precede the pasted email.
#[rustfmt::skip]
const INSTRUCTIONS: &[&str] = &[
    "extract", "classify", "categorize", "categorise", "summarize", "summarise", "draft", "compose", "write",
    "reply to", "respond to", "here is", "here's", "below is", "the following", "please extract", "please classify",
    "please draft", "please reply", "return",
];

/// Words that make an introduction ("I'm Ada, and we need...") also a request.
#[rustfmt::skip]
const NEED_WORDS: &[&str] = &[
    "need", "looking", "want", "interested", "would like", "require", "seeking", "searching", "plan", "hoping",
];

/// Form fields ("Message: ...") whose value is free text worth reading as the body.
#[rustfmt::skip]
const FREE_TEXT_FIELDS: &[&str] = &[
    "message", "comment", "detail", "inquiry", "enquiry", "request", "description", "note", "question", "project",
    "need", "requirement", "goal", "problem", "issue", "summary", "help",
];

/// Words of a sentence that asks for something.
#[rustfmt::skip]
const REQUEST_CUES: &[&str] = &[
    "need", "looking for", "want", "would like", "we'd like", "i'd like", "interested", "evaluating", "require",
    "help", "could you", "can you", "how much", "quote", "demo", "problem", "issue", "error", "unable", "cannot",
    "question", "wondering",
];

/// How many meaningful sentences are searched for one that asks for something.
const REQUEST_LOOKAHEAD: usize = 4;

/// A "need" longer than this is clipped at a word boundary.
const NEED_MAX_CHARS: usize = 240;

/// A message split the way email is written. Missing parts stay empty.
#[derive(Debug, Default)]
pub(super) struct Email<'a> {
    pub(super) from: Option<&'a str>,
    pub(super) reply_to: Option<&'a str>,
    pub(super) subject: Option<&'a str>,
    pub(super) date: Option<&'a str>,
    /// Lines of the message itself: no headers, quoted replies or signature.
    pub(super) body: Vec<&'a str>,
    /// Trimmed non-empty lines after the sign-off ("Best,") or `--`.
    pub(super) signature: Vec<&'a str>,
}

impl<'a> Email<'a> {
    pub(super) fn parse(text: &'a str) -> Email<'a> {
        let mut email = Email::default();
        let mut lines = Vec::new();
        let mut seen_header = false;
        for line in text.lines() {
            if let Some((key, value)) = header(line) {
                if !seen_header {
                    // What precedes the first header is a note to the model, not the email.
                    lines.clear();
                    seen_header = true;
                }
                let slot = match key {
                    "from" => &mut email.from,
                    "reply-to" => &mut email.reply_to,
                    "subject" => &mut email.subject,
                    "date" | "sent" => &mut email.date,
                    _ => continue,
                };
                if !value.is_empty() && slot.is_none() {
                    *slot = Some(value);
                }
                continue;
            }
            let trimmed = line.trim();
            if trimmed.starts_with('>') {
                continue;
            }
            if is_quoted_reply(trimmed) {
                break;
            }
            lines.push(line);
        }
        let (body, signature) = split_signature(&lines);
        email.body = body;
        email.signature = signature;
        email
    }

    pub(super) fn body_text(&self) -> String {
        self.body.join("\n")
    }

    /// Body and signature: where the sender writes, headers left out.
    pub(super) fn written_text(&self) -> String {
        self.body.iter().chain(&self.signature).copied().collect::<Vec<_>>().join("\n")
    }

    /// The subject without `Re:`/`Fwd:` prefixes.
    pub(super) fn topic(&self) -> Option<&'a str> {
        let mut subject = self.subject?.trim();
        while let Some(rest) = ["re:", "fwd:", "fw:", "aw:", "wg:"].iter().find_map(|p| strip_prefix_ci(subject, p)) {
            subject = rest.trim_start();
        }
        (!subject.is_empty()).then_some(subject)
    }
}

fn header(line: &str) -> Option<(&'static str, &str)> {
    let (key, value) = line.trim_start().split_once(':')?;
    let key = key.trim_end().to_ascii_lowercase();
    let name = HEADERS.iter().find(|h| **h == key)?;
    Some((name, value.trim()))
}

fn is_quoted_reply(line: &str) -> bool {
    (line.starts_with("On ") && line.ends_with("wrote:"))
        || (line.starts_with("Am ") && line.ends_with("schrieb:"))
        || line.contains("-----Original Message-----")
}

/// `text` without `prefix`, compared ignoring ASCII case.
pub(super) fn strip_prefix_ci<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

type Split<'a> = (Vec<&'a str>, Vec<&'a str>);

/// Body and signature. The signature starts at the last sign-off or `--`
/// followed only by a short block; failing that, a short last paragraph
/// that opens with a full name is one.
fn split_signature<'a>(lines: &[&'a str]) -> Split<'a> {
    let end = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    let lines = &lines[..end];
    let nonblank = |ls: &[&'a str]| ls.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>();
    for (i, line) in lines.iter().enumerate().rev() {
        let after = &lines[i + 1..];
        let short = nonblank(after).len() <= SIGNATURE_MAX_LINES
            && after.iter().all(|l| l.trim().chars().count() <= SIGNATURE_MAX_WIDTH);
        if !short {
            break;
        }
        let t = line.trim();
        if t == "--" || t == "—" {
            return (lines[..i].to_vec(), nonblank(after));
        }
        if let Some(inline) = sign_off(t) {
            let mut signature = Vec::new();
            if !inline.is_empty() {
                signature.push(inline);
            }
            signature.extend(nonblank(after));
            return (lines[..i].to_vec(), signature);
        }
    }
    let start = lines.iter().rposition(|l| l.trim().is_empty()).map_or(0, |i| i + 1);
    let block = &lines[start..];
    let opens_with_name = block.first().is_some_and(|l| {
        let first = first_segment(l.trim());
        first.split_whitespace().count() >= 2 && looks_like_name(first)
    });
    if start > 0
        && opens_with_name
        && block.len() <= SIGNATURE_MAX_LINES
        && block.iter().all(|l| l.trim().chars().count() <= SIGNATURE_MAX_WIDTH)
    {
        return (lines[..start].to_vec(), nonblank(block));
    }
    (lines.to_vec(), Vec::new())
}

/// For a sign-off line, the name written on it ("Thanks, Ada" gives "Ada";
/// "Best," gives ""); `None` for any other line.
fn sign_off(line: &str) -> Option<&str> {
    let lower = line.to_ascii_lowercase();
    let matched = SIGN_OFFS.iter().filter(|s| lower.starts_with(**s)).max_by_key(|s| s.len())?;
    let after = &line[matched.len()..];
    let rest = after.trim_start_matches([',', '!', '.', ' ', '-', '–']).trim().trim_end_matches(['.', '!']);
    if rest.is_empty() {
        Some("")
    } else if after.starts_with([',', ' ', '!']) && looks_like_name(rest) {
        Some(rest)
    } else {
        None
    }
}

/// The part of a signature line before `,`, `|` or ` - `: "Ada Lovelace, CTO" gives the name.
pub(super) fn first_segment(line: &str) -> &str {
    let cut = [",", "|", "·", " - ", " – "].iter().filter_map(|s| line.find(s)).min().unwrap_or(line.len());
    line[..cut].trim()
}

/// The sentence that says what the sender wants: the first of the first
/// few that asks for something ("we need", "looking for", "could you"),
/// else the first. Greetings, pleasantries, introductions, form fields and
/// instructions to the model are skipped; the value of a free-text form
/// field ("Message: ...") comes before the rest, a heading-like short line
/// after it.
pub(super) fn need_sentence(email: &Email) -> Option<String> {
    let paragraphs = paragraphs(&email.body);
    let heading = |p: &str| p.split_whitespace().count() <= 6 && !p.ends_with(['.', '!', '?']);
    let fields = paragraphs.iter().filter(|(_, field)| *field).map(|(p, _)| p.as_str());
    let (headings, prose): (Vec<&str>, Vec<&str>) =
        paragraphs.iter().filter(|(_, field)| !*field).map(|(p, _)| p.as_str()).partition(|p| heading(p));
    let candidates: Vec<&str> =
        fields.chain(prose).chain(headings).flat_map(sentences).filter(|s| is_meaningful(s)).collect();
    let asks = |s: &&&str| {
        let tokens = Tokens::new(s);
        REQUEST_CUES.iter().any(|cue| tokens.count(cue) > 0)
    };
    let chosen = candidates.iter().take(REQUEST_LOOKAHEAD).find(asks).or(candidates.first())?;
    Some(clip(chosen, NEED_MAX_CHARS))
}

/// Paragraphs of the body, each marked when it is the value of a free-text form field.
fn paragraphs(lines: &[&str]) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<(String, bool)>| {
        if !current.is_empty() {
            out.push((std::mem::take(current), false));
        }
    };
    for line in lines {
        let mut line = line.trim();
        if line.is_empty() {
            flush(&mut current, &mut out);
            continue;
        }
        if current.is_empty() {
            line = strip_greeting(line);
            if line.is_empty() {
                continue;
            }
        }
        if let Some((key, value)) = field(line) {
            let key = key.to_ascii_lowercase();
            if FREE_TEXT_FIELDS.iter().any(|f| key.contains(f)) {
                flush(&mut current, &mut out);
                out.push((value.to_string(), true));
                continue;
            }
            if value.split_whitespace().count() <= 6 {
                // A form field such as "Name: Ada Lovelace".
                flush(&mut current, &mut out);
                continue;
            }
        }
        if line.ends_with(':') {
            flush(&mut current, &mut out);
            continue;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(line);
    }
    flush(&mut current, &mut out);
    out
}

/// "Hi Ada, we need..." gives "we need..."; a line that is only a greeting gives "".
fn strip_greeting(line: &str) -> &str {
    let lower = line.to_ascii_lowercase();
    let greets = GREETINGS
        .iter()
        .any(|g| lower.starts_with(g) && !lower[g.len()..].starts_with(|c: char| c.is_ascii_alphanumeric()));
    if !greets {
        return line;
    }
    match line.find([',', '!']) {
        Some(i) if i <= 40 => line[i + 1..].trim_start(),
        _ if line.split_whitespace().count() <= 4 => "",
        _ => line,
    }
}

/// `Key: value` with a short key.
fn field(line: &str) -> Option<(&str, &str)> {
    let (key, value) = line.split_once(':')?;
    let key = key.trim().trim_start_matches(['-', '*', '•']).trim();
    let value = value.trim();
    let words = key.split_whitespace().count();
    let plain = key.chars().all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '?');
    ((1..=5).contains(&words) && plain && !value.is_empty()).then_some((key, value))
}

pub(super) fn sentences(paragraph: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = paragraph.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        if !chars.peek().is_none_or(|(_, next)| next.is_whitespace()) {
            continue;
        }
        if c == '.' && is_abbreviation(&paragraph[start..i]) {
            continue;
        }
        let sentence = paragraph[start..=i].trim();
        if !sentence.is_empty() {
            out.push(sentence);
        }
        start = i + 1;
    }
    let tail = paragraph[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

fn is_abbreviation(before_dot: &str) -> bool {
    const ABBREVIATIONS: &[&str] =
        &["e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "prof", "inc", "ltd", "corp", "co", "vs", "approx", "st", "jr"];
    let last = before_dot.rsplit(char::is_whitespace).next().unwrap_or("").to_ascii_lowercase();
    last.chars().count() == 1 || ABBREVIATIONS.contains(&last.as_str())
}

fn is_meaningful(sentence: &str) -> bool {
    let lower = sentence.to_ascii_lowercase();
    let starts = |list: &[&str]| list.iter().any(|p| lower.starts_with(p));
    sentence.split_whitespace().count() >= 3
        && !sentence.ends_with(':')
        && !starts(PLEASANTRIES)
        && !starts(INSTRUCTIONS)
        && !is_introduction(sentence, &lower)
}

/// "I'm Ada Lovelace, CTO at Acme." says who, not what.
fn is_introduction(sentence: &str, lower: &str) -> bool {
    ["my name is ", "this is ", "i'm ", "i’m ", "i am "].iter().any(|m| {
        lower.starts_with(m)
            && sentence[m.len()..].starts_with(char::is_uppercase)
            && !NEED_WORDS.iter().any(|w| lower.contains(w))
    })
}

/// At most `max` characters, cut at a word boundary.
pub(super) fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut = text.char_indices().nth(max).map_or(text.len(), |(i, _)| i);
    let head = &text[..cut];
    match head.rfind(char::is_whitespace) {
        Some(space) if space > 0 => head[..space].trim_end().to_string(),
        _ => head.to_string(),
    }
}

/// Lowercase words (runs of letters and digits) with stems and byte spans.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    words: Vec<String>,
    stems: Vec<String>,
    spans: Vec<(usize, usize)>,
}

impl Tokens {
    pub(super) fn new(text: &str) -> Tokens {
        let mut tokens = Tokens::default();
        for (start, end) in word_spans(text) {
            let word = text[start..end].to_lowercase();
            tokens.stems.push(stem(&word));
            tokens.words.push(word);
            tokens.spans.push((start, end));
        }
        tokens
    }

    pub(super) fn len(&self) -> usize {
        self.words.len()
    }

    pub(super) fn stem(&self, i: usize) -> &str {
        &self.stems[i]
    }

    pub(super) fn span(&self, i: usize) -> (usize, usize) {
        self.spans[i]
    }

    /// Occurrences of `phrase`, word by word and stem by stem, not counting
    /// those right after a negation ("not urgent", "don't need").
    pub(super) fn count(&self, phrase: &str) -> usize {
        let wanted: Vec<String> =
            word_spans(phrase).into_iter().map(|(s, e)| stem(&phrase[s..e].to_lowercase())).collect();
        if wanted.is_empty() || wanted.len() > self.stems.len() {
            return 0;
        }
        (0..=self.stems.len() - wanted.len())
            .filter(|&i| wanted.iter().enumerate().all(|(j, w)| same_stem(&self.stems[i + j], w)) && !self.negated(i))
            .count()
    }

    fn negated(&self, i: usize) -> bool {
        const NEGATIONS: &[&str] = &["not", "no", "never", "without", "non", "nothing"];
        const CONTRACTED: &[&str] = &[
            "don", "doesn", "isn", "aren", "won", "didn", "wasn", "weren", "can", "couldn", "shouldn", "haven", "hasn",
        ];
        const SOFTENERS: &[&str] = &["very", "that", "so", "too", "really", "particularly", "super", "yet", "a"];
        let word = |j: usize| self.words[j].as_str();
        let negation_at =
            |j: usize| NEGATIONS.contains(&word(j)) || (word(j) == "t" && j > 0 && CONTRACTED.contains(&word(j - 1)));
        i > 0 && (negation_at(i - 1) || (i > 1 && SOFTENERS.contains(&word(i - 1)) && negation_at(i - 2)))
    }
}

/// Byte spans of the runs of letters and digits.
pub(super) fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        spans.push((s, text.len()));
    }
    spans
}

/// A crude English stem: "invoices" and "invoicing" both start like "invoice".
pub(super) fn stem(word: &str) -> String {
    if let Some(base) = word.strip_suffix("ies")
        && base.chars().count() >= 3
    {
        return format!("{base}y");
    }
    for suffix in ["ing", "ed", "s"] {
        if let Some(base) = word.strip_suffix(suffix)
            && base.chars().count() >= 3
            && !(suffix == "s" && (base.ends_with('s') || base.ends_with('u')))
        {
            return base.to_string();
        }
    }
    word.to_string()
}

/// Stems that are equal, or one a short extension of the other ("pric" and "price").
pub(super) fn same_stem(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    a == b || (short.chars().count() >= 4 && long.starts_with(short) && long.len() - short.len() <= 3)
}

/// Two words of the same family, e.g. "emails" and "email".
pub(super) fn same_word(a: &str, b: &str) -> bool {
    same_stem(&stem(&a.to_lowercase()), &stem(&b.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMAIL: &str = "Please extract the lead.\n\nFrom: Ada Lovelace <ada@acme.io>\nTo: sales@keel.dev\nSubject: Re: Pricing\n\nHi team,\n\nI hope you're well. We need a CRM for 40 reps. Can you help?\n\nBest regards,\nAda Lovelace\nCTO, Acme Corp\n\nOn Mon, Bob wrote:\n> old text";

    #[test]
    fn an_email_splits_into_headers_body_and_signature() {
        let email = Email::parse(EMAIL);
        assert_eq!(email.from, Some("Ada Lovelace <ada@acme.io>"));
        assert_eq!(email.topic(), Some("Pricing"));
        assert_eq!(email.signature, ["Ada Lovelace", "CTO, Acme Corp"]);
        assert!(!email.body_text().contains("Please extract"), "the note to the model is not the body");
        assert!(!email.body_text().contains("old text"));
        assert_eq!(need_sentence(&email).as_deref(), Some("We need a CRM for 40 reps."));
    }

    #[test]
    fn an_inline_sign_off_name_starts_the_signature() {
        let email = Email::parse("We'd love a demo next week.\n\nThanks, Grace");
        assert_eq!(email.signature, ["Grace"]);
        let email =
            Email::parse("Thanks for the quick reply.\nWe'd love a demo next week, if possible for the whole team.");
        assert!(email.signature.is_empty());
    }

    #[test]
    fn keyword_counts_follow_word_forms_and_skip_negations() {
        let tokens = Tokens::new("Two invoices are overdue. This is not urgent; we don't need a meeting.");
        assert_eq!(tokens.count("invoice"), 1);
        assert_eq!(tokens.count("urgent"), 0);
        assert_eq!(tokens.count("need"), 0);
        assert_eq!(tokens.count("meetings"), 1);
        assert_eq!(tokens.count("is overdue"), 0);
        assert_eq!(tokens.count("are overdue"), 1);
    }

    #[test]
    fn sentences_skip_abbreviations_and_clip_keeps_whole_words() {
        assert_eq!(
            sentences("We use e.g. Excel today. Is that ok? Yes"),
            ["We use e.g. Excel today.", "Is that ok?", "Yes"]
        );
        assert_eq!(clip("one two three", 9), "one two");
    }
}
