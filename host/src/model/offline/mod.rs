//! The offline provider: keel's built-in default, so agents run with no API
//! key and no network. It is not a language model and never claims to be:
//! its one chat model, `keel-rules-v1`, answers from fixed rules over the
//! words of the request, the same way every time (temperature is ignored),
//! in microseconds. Embeddings come from
//! [`HashedEmbedder`](crate::memory::semantic::embed::HashedEmbedder)
//! (`keel-hashed-v1`).
//!
//! ```
//! use keel_host::model::offline::OfflineProvider;
//! use keel_host::model::provider::{ChatRequest, Message, Role};
//!
//! let request = ChatRequest {
//!     model: OfflineProvider::CHAT_MODEL.into(),
//!     messages: vec![
//!         Message { role: Role::System, content: "Labels: lead, support, spam".into() },
//!         Message { role: Role::User, content: "I get an error when I log in.".into() },
//!     ],
//!     max_tokens: 64,
//!     temperature_milli: 0,
//!     json_schema: None,
//! };
//! assert_eq!(OfflineProvider.chat(&request).unwrap().text, "support");
//! ```
//!
//! What `chat` does is chosen by the request:
//!
//! | the request has | `chat` answers with |
//! |---|---|
//! | a `json_schema` | extraction: JSON text that validates against the schema (or `Unsupported` if the rules cannot fill it) |
//! | no schema, and a system message that offers labels (`Labels: a, b, c`, `Categories: ...`, `one of: a, b, c`, `one of [a, b, c]`, `classify ... as a, b or c`, or a bullet list after such a line), or a user message line that starts with `Labels:` | classification: exactly one label as written, the one whose own words (counted twice), explanation ("lead: a sales inquiry") and built-in keywords (`lead`, `support`, `spam`, `invoice`, `meeting`, `high`/`medium`/`low`, `qualified`, ...) occur most in the user text; ties go to the first listed, no match at all to `other`/`unknown`/`none`/`general` if listed, else the first |
//! | anything else | composition: a reply to the last user message that greets the sender's first name, names the subject, quotes the first sentence saying what they want, proposes a next step (call, error details, times, invoice number, or "tell us more"), and ends with a line saying rules drafted it; cut at a word boundary to about `max_tokens` × 4 characters |
//!
//! Extraction reads all user messages as one email (headers `From`,
//! `Reply-To`, `Subject`, `Date`; body; signature after a sign-off or `--`;
//! quoted replies dropped) and fills each property by the first rule its
//! name matches (`contactEmail`, `contact_email` and `contact-email` are the
//! same words). A `Key: value` line whose key names the property ("Budget:
//! €8,000", "Company name: Acme") wins over the patterns below.
//!
//! | property | filled with |
//! |---|---|
//! | `const` / `enum` (any name) | the constant; the enum value the text's keywords favour (scored as in classification), else `other`-like or the first value |
//! | `confidence`, `certainty` (number) | the share of asked-for properties (the required ones, or all) that a pattern found: 0..1, or 0..100 for an integer |
//! | `reply`, `response`, `draft`, `answer` | the composed reply |
//! | `subject` | the `Subject:` without `Re:`/`Fwd:` |
//! | `job`, `role`, `position`, `title` | the signature segment with a job title ("Head of Operations") |
//! | `email`, `mail` | the sender's address: `From:`, `Reply-To:` (no-reply senders such as form services skipped), a form's `Email:` field, then the first in the body |
//! | `phone`, `mobile`, `tel` | a labelled number, then one written `+...`, then 10+ digits (dates and amounts are not numbers) |
//! | `company`, `organization`, `employer` | a signature segment ending in a company suffix ("Acme GmbH"), "at/from/work for X", the segment after a job title, a plain signature line, then the mail domain (`acme-robotics.com` gives "Acme Robotics"; free-mail domains give nothing) |
//! | `website`, `url`, `domain` | the first URL written, else the sender's company domain |
//! | `currency` | the currency of the first amount (`€` gives `EUR`) |
//! | `budget`, `amount`, `value`, `price`, `cost`, ... (number) | the amount preceded by the property's words, else the first amount with a currency ("€12,000", "$5k", "12000 EUR", "€10-15k"), in major units; in minor units when the name ends in `_cents`/`_minor` |
//! | `date`, `deadline`, `due`, `when`, `start`, `received`, `sent` | the first full date in the body as `YYYY-MM-DD`, else a phrase as written ("next Tuesday", "end of Q2": the rules never read the clock); `received`/`sent` take the `Date:` header first, a plain `date` when the body has none, others never; `format: date` takes full dates only |
//! | `urgency`, `priority`, `severity` (no enum) | `high`, `medium` or `low` by keywords ("asap", "next month", "no rush") |
//! | `name`, `first_name`, `last_name`, `sender`, `contact` | a form's `Name:` field, the `From:` display name, the signature's name line, "my name is X"/"I'm X"/"this is X", then `first.last@`; a first name alone gives way to a full one that starts with it |
//! | `need`, `summary`, `topic`, `request`, `message`, `description`, ... | of the first four body sentences that are not greetings, pleasantries, introductions or form fields, the first that asks for something ("need", "looking for", "could you"), else the first; a free-text form field ("Message: ...") is read first; else the subject |
//! | `source`, `channel` | `email` when there is a `From:` header |
//! | other numbers | a number next to the name's words ("40 seats", "team of 12") |
//! | booleans | a `Key: yes/no` line, else whether every word of the name other than `is`/`has`/`wants`/... occurs (with its built-in keywords: `is_urgent` also matches "asap"); "not" before a word cancels it |
//! | arrays of strings | all sender addresses for `emails`, the offered values an `enum` of items mentions, a `Key: a, b` list |
//!
//! A property nothing matched is left out when optional; when required it
//! gets `null` if allowed, else "", 0 (moved into `minimum`/`maximum`),
//! `false`, `[]` or an object of its own defaults. Local `$ref`s, `allOf`
//! wrappers and nullable `anyOf`/`oneOf` are followed; a string that breaks
//! its `format`, `pattern` or `minLength` is dropped. The answer is checked
//! against the whole schema before it is returned.
//!
//! Usage is estimated, not counted: ⌈characters / 4⌉ for the messages (or
//! the texts to embed) and for the answer.

mod amount;
mod classify;
mod compose;
mod date;
mod extract;
mod property;
mod sender;
mod text;

use crate::memory::semantic::embed::HashedEmbedder;
use crate::model::provider::{ChatRequest, ChatResponse, EmbedResponse, ProviderError, Usage};

/// keel's built-in provider: rules instead of a model, no network, no cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineProvider;

impl OfflineProvider {
    /// The provider's name in configuration and errors.
    pub const NAME: &'static str = "offline";
    /// The only chat model: named for what it is, rules.
    pub const CHAT_MODEL: &'static str = "keel-rules-v1";
    /// The only embedding model, [`HashedEmbedder::ID`].
    pub const EMBED_MODEL: &'static str = HashedEmbedder::ID;

    /// Answers `request` by extraction, classification or composition (see
    /// the module docs). Fails with `Unsupported` for a model other than
    /// [`CHAT_MODEL`](Self::CHAT_MODEL), or a schema the rules cannot fill.
    pub fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        if request.model != Self::CHAT_MODEL {
            return Err(unsupported(format!(
                "model `{}` is not available offline; the only chat model is `{}`",
                request.model,
                Self::CHAT_MODEL
            )));
        }
        let text = match &request.json_schema {
            Some(schema) => {
                let value = extract::extract(schema, &request.messages);
                check(schema, &value)?;
                value.to_string()
            }
            None => classify::classify(&request.messages)
                .unwrap_or_else(|| compose::truncate(compose::compose(&request.messages), request.max_tokens)),
        };
        let input: usize = request.messages.iter().map(|m| m.content.chars().count()).sum();
        let usage =
            Usage { input_tokens: estimate_tokens(input), output_tokens: estimate_tokens(text.chars().count()) };
        Ok(ChatResponse { text, usage })
    }

    /// One [`HashedEmbedder`] vector per text. Fails with `Unsupported` for
    /// a model other than [`EMBED_MODEL`](Self::EMBED_MODEL).
    pub fn embed(&self, model: &str, texts: &[String]) -> Result<EmbedResponse, ProviderError> {
        if model != Self::EMBED_MODEL {
            return Err(unsupported(format!(
                "embedding model `{model}` is not available offline; the only embedding model is `{}`",
                Self::EMBED_MODEL
            )));
        }
        let vectors = texts.iter().map(|t| HashedEmbedder.embed_one(t)).collect();
        let input: usize = texts.iter().map(|t| t.chars().count()).sum();
        Ok(EmbedResponse { vectors, input_tokens: estimate_tokens(input) })
    }
}

fn unsupported(detail: String) -> ProviderError {
    ProviderError::Unsupported { provider: OfflineProvider::NAME.to_string(), detail }
}

/// ⌈chars / 4⌉, the usual rule of thumb for English text.
fn estimate_tokens(chars: usize) -> u32 {
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

/// The extraction must validate: a schema beyond the rules' subset is an
/// error that says so, never an invalid answer.
fn check(schema: &serde_json::Value, value: &serde_json::Value) -> Result<(), ProviderError> {
    // Offline: a schema never makes the host fetch a remote `$ref`.
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .offline()
        .build(schema)
        .map_err(|e| unsupported(format!("the JSON Schema is not valid: {e}")))?;
    match validator.iter_errors(value).next() {
        None => Ok(()),
        Some(error) => Err(unsupported(format!(
            "its rules cannot fill this JSON Schema (at `{}`: {error}): simplify the schema or route this tier to a model provider",
            error.instance_path()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::provider::{Message, Role};

    fn request(messages: Vec<Message>, max_tokens: u32, json_schema: Option<serde_json::Value>) -> ChatRequest {
        ChatRequest {
            model: OfflineProvider::CHAT_MODEL.into(),
            messages,
            max_tokens,
            temperature_milli: 700,
            json_schema,
        }
    }

    fn user(content: &str) -> Message {
        Message { role: Role::User, content: content.into() }
    }

    fn system(content: &str) -> Message {
        Message { role: Role::System, content: content.into() }
    }

    const LEAD: &str = "From: Ada Lovelace <ada@acme.io>\nSubject: Demo request\n\nHi,\n\nWe'd like a demo of keel for our 12-person ops team. Our budget is €12,000.\n\nBest,\nAda";

    #[test]
    fn extraction_returns_json_that_validates() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string"},
                "budget": {"type": "number"},
                "category": {"type": "string", "enum": ["support", "lead", "spam"]}
            },
            "required": ["name", "email", "budget", "category"]
        });
        let response = OfflineProvider.chat(&request(vec![user(LEAD)], 200, Some(schema.clone()))).unwrap();
        let value: serde_json::Value = serde_json::from_str(&response.text).unwrap();
        assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&value));
        assert_eq!(value, json!({"name": "Ada Lovelace", "email": "ada@acme.io", "budget": 12000, "category": "lead"}));
    }

    #[test]
    fn a_schema_the_rules_cannot_fill_is_unsupported_not_invalid_output() {
        let schema = json!({
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"type": "string"}, "minItems": 2}},
            "required": ["tags"]
        });
        let error = OfflineProvider.chat(&request(vec![user(LEAD)], 200, Some(schema))).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Unsupported { provider, detail } if provider == "offline" && detail.contains("/tags")),
            "{error}"
        );
    }

    #[test]
    fn classification_answers_with_one_label() {
        let messages = vec![system("Classify the email. Answer with one of [spam, support, lead]."), user(LEAD)];
        let response = OfflineProvider.chat(&request(messages, 5, None)).unwrap();
        assert_eq!(response.text, "lead");
        assert_eq!(response.usage.output_tokens, 1);
    }

    #[test]
    fn composition_is_deterministic_honest_and_truncated() {
        let messages = vec![system("Draft a reply to the email."), user(LEAD)];
        let full = OfflineProvider.chat(&request(messages.clone(), 0, None)).unwrap();
        assert_eq!(full, OfflineProvider.chat(&request(messages.clone(), 0, None)).unwrap());
        assert!(full.text.starts_with("Hi Ada,\n\nThank you for your email about \"Demo request\"."), "{}", full.text);
        assert!(full.text.ends_with(compose::FOOTER));
        let short = OfflineProvider.chat(&request(messages, 10, None)).unwrap();
        assert!(short.text.chars().count() <= 40 && full.text.starts_with(&short.text), "{}", short.text);
        assert!(!short.text.ends_with(' '));
    }

    #[test]
    fn usage_is_estimated_from_characters() {
        let messages = vec![system("Labels: a, b"), user("hello")];
        let response = OfflineProvider.chat(&request(messages, 5, None)).unwrap();
        assert_eq!(response.usage, Usage { input_tokens: 5, output_tokens: 1 }, "ceil(17 / 4) in, ceil(1 / 4) out");
    }

    #[test]
    fn unknown_models_are_unsupported_and_name_the_available_one() {
        let mut req = request(vec![user("hi")], 10, None);
        req.model = "gpt-4o".into();
        let error = OfflineProvider.chat(&req).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Unsupported { detail, .. } if detail.contains("keel-rules-v1")),
            "{error}"
        );
        let error = OfflineProvider.embed("text-embedding-3-small", &["hi".into()]).unwrap_err();
        assert!(
            matches!(&error, ProviderError::Unsupported { detail, .. } if detail.contains("keel-hashed-v1")),
            "{error}"
        );
    }

    #[test]
    fn embeddings_are_the_hashed_embedders() {
        assert_eq!(OfflineProvider::EMBED_MODEL, HashedEmbedder::ID);
        let texts = vec!["invoice from the cloud provider".to_string(), String::new()];
        let response = OfflineProvider.embed(OfflineProvider::EMBED_MODEL, &texts).unwrap();
        assert_eq!(response.vectors, vec![HashedEmbedder.embed_one(&texts[0]), HashedEmbedder.embed_one("")]);
        assert_eq!(response.vectors[0].len(), HashedEmbedder::DIM);
        assert_eq!(response.input_tokens, 8);
    }

    /// Fragments that steer text into every finder, glued at random.
    const FRAGMENTS: &[&str] = &[
        "From: ",
        "Subject: ",
        "Date: ",
        "Ada Lovelace",
        " <ada@acme.io>",
        "€",
        "$",
        "12,000",
        "5k",
        " EUR",
        "-",
        "–",
        "+49 30 123",
        "(415) 555-0100",
        "Mar",
        " 14th",
        ", 2025",
        "2025-03-14",
        "\n",
        "\n\n",
        "Best,",
        "--",
        "Labels:",
        " lead, spam",
        "Name: ",
        "Budget: ",
        "I'm ",
        "at Acme GmbH",
        "ü",
        "’",
        "ß",
        "日本",
        "🙂",
        ".",
        "?",
        ":",
        " ",
        "%",
        "not ",
        "urgent",
        "demo",
        "Hi,",
    ];

    fn lead_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"}, "email": {"type": "string"}, "company": {"type": "string"},
                "budget_cents": {"type": "integer"}, "phone": {"type": "string"}, "need": {"type": "string"},
                "deadline": {"type": "string"}, "urgency": {"enum": ["low", "medium", "high"]},
                "tags": {"type": "array", "items": {"type": "string"}}, "wants_demo": {"type": "boolean"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1}
            },
            "required": ["name", "email", "company", "budget_cents", "need", "urgency", "confidence"]
        })
    }

    fn never_panics_and_validates(text: &str) {
        let schema = lead_schema();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let extracted = OfflineProvider.chat(&request(vec![user(text)], 50, Some(schema))).unwrap();
        assert!(validator.is_valid(&serde_json::from_str(&extracted.text).unwrap()), "{}", extracted.text);
        let labelled = OfflineProvider.chat(&request(vec![system("Labels: lead, spam"), user(text)], 5, None)).unwrap();
        assert!(labelled.text == "lead" || labelled.text == "spam");
        let composed = OfflineProvider.chat(&request(vec![user(text)], 20, None)).unwrap();
        assert!(composed.text.chars().count() <= 80);
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_answered_validly(text in "\\PC{0,200}") {
            never_panics_and_validates(&text);
        }

        #[test]
        fn any_email_shaped_text_is_answered_validly(parts in proptest::collection::vec(0..FRAGMENTS.len(), 0..60)) {
            let text: String = parts.iter().map(|i| FRAGMENTS[*i]).collect();
            never_panics_and_validates(&text);
        }
    }
}
