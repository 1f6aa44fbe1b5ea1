//! Composition: a plain templated reply to the last user message.

use super::classify::{pick, score};
use super::sender::{person_name, sender_email};
use super::text::{Email, Tokens, need_sentence};
use crate::model::provider::{Message, Role};

/// The last line of every composed reply, so no reader mistakes it for a model's or a person's writing.
pub(super) const FOOTER: &str = "(Drafted by keel-rules-v1: offline rules, not a language model.)";

/// What the sender seems to want, and the next step the reply proposes.
const NEXT_STEPS: &[(&str, &str)] = &[
    ("lead", "We would be glad to help. Could we set up a 30-minute call this week to go through your requirements?"),
    ("support", "Could you send the exact error message and the steps that lead to it, so we can look into it?"),
    ("meeting", "Could you send two or three times that suit you? We will confirm one of them."),
    ("invoice", "Could you send the invoice number, so we can check it?"),
];
const GENERIC_NEXT_STEP: &str = "Could you tell us a little more about what you need, so we can follow up?";

/// A reply to the last user message: greets the sender by first name when
/// one is found, names the subject, quotes the first sentence that says what
/// they want, proposes a next step chosen by keywords, signs off (as the
/// system message's "sign as X", if any) and ends with [`FOOTER`].
pub(super) fn compose(messages: &[Message]) -> String {
    let last = messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str());
    let email = Email::parse(last);
    let sender = sender_email(&email);
    let first_name =
        person_name(&email, sender.as_deref()).and_then(|n| n.split_whitespace().next().map(str::to_string));
    let need = need_sentence(&email);

    let mut reply = match first_name {
        Some(name) => format!("Hi {name},\n\n"),
        None => "Hello,\n\n".to_string(),
    };
    match (email.topic(), need) {
        (Some(topic), Some(need)) => {
            reply.push_str(&format!("Thank you for your email about \"{topic}\". You wrote: \"{need}\""))
        }
        (Some(topic), None) => reply.push_str(&format!("Thank you for your email about \"{topic}\".")),
        (None, Some(need)) => reply.push_str(&format!("Thank you for your message. You wrote: \"{need}\"")),
        (None, None) => reply.push_str("Thank you for your message."),
    }
    let tokens = Tokens::new(last);
    let scores: Vec<usize> = NEXT_STEPS.iter().map(|(label, _)| score(label, "", &tokens)).collect();
    let next_step = pick(&scores).map_or(GENERIC_NEXT_STEP, |i| NEXT_STEPS[i].1);
    reply.push_str("\n\n");
    reply.push_str(next_step);
    reply.push_str("\n\nBest regards");
    if let Some(signer) = signer(messages) {
        reply.push_str(",\n");
        reply.push_str(&signer);
    }
    reply.push_str("\n\n");
    reply.push_str(FOOTER);
    reply
}

/// "Sign as Keel Sales." in a system message.
fn signer(messages: &[Message]) -> Option<String> {
    const MARKERS: &[&str] = &["sign off as ", "sign as ", "sign the reply as ", "signed by "];
    messages.iter().filter(|m| m.role == Role::System).flat_map(|m| m.content.lines()).find_map(|line| {
        let lower = line.to_ascii_lowercase();
        let (at, len) = MARKERS.iter().find_map(|m| lower.find(m).map(|at| (at, m.len())))?;
        let name = line[at + len..].trim().trim_end_matches(['.', '!']).trim_matches(['"', '\'', '`']);
        (!name.is_empty() && name.chars().count() <= 60).then(|| name.to_string())
    })
}

/// At most about `max_tokens` tokens (four characters each), cut at a word
/// boundary; 0 means no limit.
pub(super) fn truncate(text: String, max_tokens: u32) -> String {
    let max_chars = usize::try_from(max_tokens).unwrap_or(usize::MAX).saturating_mul(4);
    if max_tokens == 0 || text.chars().count() <= max_chars {
        return text;
    }
    super::text::clip(&text, max_chars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: &str) -> Vec<Message> {
        vec![Message { role: Role::User, content: content.into() }]
    }

    #[test]
    fn a_reply_greets_quotes_and_proposes_a_next_step() {
        let reply = compose(&user(
            "From: Ada Lovelace <ada@acme.io>\nSubject: Pricing for 40 seats\n\nHi,\n\nWe are looking for a CRM and would like a quote.\n\nThanks,\nAda",
        ));
        assert_eq!(
            reply,
            "Hi Ada,\n\nThank you for your email about \"Pricing for 40 seats\". You wrote: \"We are looking for a CRM and would like a quote.\"\n\nWe would be glad to help. Could we set up a 30-minute call this week to go through your requirements?\n\nBest regards\n\n(Drafted by keel-rules-v1: offline rules, not a language model.)"
        );
    }

    #[test]
    fn without_an_email_the_reply_is_generic_and_signed_as_asked() {
        let messages = vec![
            Message { role: Role::System, content: "Write a reply. Sign as Keel Sales.".into() },
            Message { role: Role::User, content: "ok".into() },
        ];
        let reply = compose(&messages);
        assert!(reply.starts_with("Hello,\n\nThank you for your message.\n\n"), "{reply}");
        assert!(reply.contains(GENERIC_NEXT_STEP) && reply.contains("Best regards,\nKeel Sales\n\n"), "{reply}");
    }

    #[test]
    fn truncation_cuts_at_a_word_boundary() {
        assert_eq!(truncate("one two three four".into(), 2), "one two");
        assert_eq!(truncate("one two".into(), 0), "one two");
        assert_eq!(truncate("one two".into(), 100), "one two");
    }
}
