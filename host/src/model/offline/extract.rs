//! Structured extraction: a JSON value for a JSON Schema, each property
//! filled by the rule its name selects (the table is in the `offline`
//! module doc).

use serde_json::{Map, Value};

use super::amount::{self, Amount};
use super::classify::{fallback, group_phrases, pick, score};
use super::compose::compose;
use super::property::{BOOLEAN_FILLER, Header, Kind, NUMBER_FILLER, NamePart, key_words, name_words, significant};
use super::text::{Email, HEADERS, Tokens, same_stem, stem};
use super::{date, sender};
use crate::model::provider::{Message, Role};

/// How deep `$ref`s and nested schemas are followed: a recursive schema
/// must not recurse the extractor forever.
const MAX_DEPTH: usize = 16;

/// Characters before an amount searched for the property's words ("budget is around €12k").
const AMOUNT_CUE_WINDOW: usize = 80;

/// The value for `schema` from the user messages of the request.
pub(super) fn extract(schema: &Value, messages: &[Message]) -> Value {
    let text =
        messages.iter().filter(|m| m.role == Role::User).map(|m| m.content.as_str()).collect::<Vec<_>>().join("\n\n");
    let facts = Facts::new(&text, messages);
    let extractor = Extractor { root: schema, facts: &facts };
    match extractor.value(&[], schema, 0).value {
        Some(value) => value,
        None => extractor.default(schema, 0),
    }
}

/// What the finders found, once, for every property to read.
struct Facts<'a> {
    text: &'a str,
    messages: &'a [Message],
    email: Email<'a>,
    tokens: Tokens,
    numbers: Vec<Amount>,
    sender: Option<String>,
    person: Option<String>,
    company: Option<String>,
    phone: Option<String>,
    need: Option<String>,
}

impl<'a> Facts<'a> {
    fn new(text: &'a str, messages: &'a [Message]) -> Facts<'a> {
        let email = Email::parse(text);
        let sender = sender::sender_email(&email);
        let person = sender::person_name(&email, sender.as_deref());
        let company = sender::company(&email, sender.as_deref(), person.as_deref());
        let phone = sender::phone(&email.written_text());
        let need = super::text::need_sentence(&email).or_else(|| email.topic().map(str::to_string));
        Facts {
            text,
            messages,
            tokens: Tokens::new(text),
            numbers: amount::numbers(text),
            sender,
            person,
            company,
            phone,
            need,
            email,
        }
    }

    /// The value of a `Key: value` line whose key names the property ("Budget: €12k").
    fn labelled(&self, words: &[String]) -> Option<&'a str> {
        let wanted = key_words(words);
        if wanted.is_empty() {
            return None;
        }
        self.text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            let key = key.trim().trim_start_matches(['-', '*', '•']).trim();
            let value = value.trim();
            let is_header = HEADERS.contains(&key.to_ascii_lowercase().as_str());
            let fits = !value.is_empty() && !is_header && key.split_whitespace().count() <= 4;
            (fits && key_words(&name_words(key)) == wanted).then_some(value)
        })
    }

    /// The amount that follows the property's words ("budget of €12k"), else the first amount.
    fn amount(&self, words: &[String]) -> Option<f64> {
        let cues = significant(words, NUMBER_FILLER);
        let money: Vec<&Amount> = self.numbers.iter().filter(|a| a.currency.is_some()).collect();
        let cued = money.iter().find(|a| {
            let mut from = a.start.saturating_sub(AMOUNT_CUE_WINDOW);
            while !self.text.is_char_boundary(from) {
                from += 1;
            }
            let before = self.text[from..a.start].to_lowercase();
            cues.iter().any(|c| before.contains(c.as_str()))
        });
        cued.or(money.first()).map(|a| a.value).or_else(|| self.number_near(words))
    }

    /// A number written next to the property's words: "40 employees", "team of 40".
    fn number_near(&self, words: &[String]) -> Option<f64> {
        let cues: Vec<String> = significant(words, NUMBER_FILLER).iter().map(|w| stem(w)).collect();
        let t = &self.tokens;
        (0..t.len()).filter(|&i| cues.iter().any(|c| same_stem(t.stem(i), c))).find_map(|i| {
            [i.checked_sub(1), Some(i + 1), Some(i + 2), Some(i + 3)]
                .into_iter()
                .flatten()
                .filter(|&j| j < t.len())
                .find_map(|j| self.numbers.iter().find(|a| a.start == t.span(j).0))
                .map(|a| a.value)
        })
    }
}

/// A property's value, and whether a pattern found it (rather than a default).
struct Filled {
    value: Option<Value>,
    found: bool,
}

impl Filled {
    fn found(value: Value) -> Filled {
        Filled { value: Some(value), found: true }
    }

    fn guessed(value: Value) -> Filled {
        Filled { value: Some(value), found: false }
    }

    fn missing() -> Filled {
        Filled { value: None, found: false }
    }

    fn from(value: Option<Value>) -> Filled {
        let found = value.is_some();
        Filled { value, found }
    }
}

struct Extractor<'s, 'f> {
    root: &'s Value,
    facts: &'f Facts<'f>,
}

impl<'s> Extractor<'s, '_> {
    /// `schema` with a local `$ref` (`#/$defs/X`, `#/definitions/X`) or a
    /// lone `allOf` wrapper replaced by what it points to.
    fn resolve(&self, mut schema: &'s Value, depth: usize) -> &'s Value {
        for _ in depth..MAX_DEPTH {
            if let Some(pointer) = schema.get("$ref").and_then(Value::as_str)
                && let Some(target) = pointer.strip_prefix('#').and_then(|p| self.root.pointer(p))
            {
                schema = target;
            } else if let Some([only]) = schema.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
                schema = only;
            } else {
                break;
            }
        }
        schema
    }

    fn value(&self, words: &[String], schema: &'s Value, depth: usize) -> Filled {
        if depth > MAX_DEPTH {
            return Filled::missing();
        }
        let schema = self.resolve(schema, depth);
        if let Some(constant) = schema.get("const") {
            return Filled::found(constant.clone());
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array) {
            return self.choose(words, values);
        }
        if let Some(option) = first_option(schema) {
            // `Option<T>` as many generators write it: `anyOf: [T, {"type": "null"}]`.
            return self.value(words, option, depth + 1);
        }
        let (kind, _) = schema_type(schema);
        match kind {
            "object" => {
                let (value, found) = self.object(schema, depth);
                Filled { value: Some(value), found }
            }
            "array" => self.array(words, schema, depth),
            "string" => Filled::from(self.string(words, schema).map(Value::String)),
            "integer" | "number" => Filled::from(self.number(words).map(|x| number(x, kind == "integer", schema))),
            "boolean" => self.boolean(words),
            _ => Filled::missing(),
        }
    }

    /// A value that validates when nothing was found: `null` if allowed, else "", 0, false, [] or {}.
    fn default(&self, schema: &'s Value, depth: usize) -> Value {
        let schema = self.resolve(schema, depth);
        if let Some(constant) = schema.get("const") {
            return constant.clone();
        }
        if let Some(first) = schema.get("enum").and_then(Value::as_array).and_then(|v| v.first()) {
            return first.clone();
        }
        if let Some(options) = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array) {
            if options.iter().any(|o| schema_type(self.resolve(o, depth)).0 == "null") {
                return Value::Null;
            }
            if let Some(first) = options.first()
                && depth < MAX_DEPTH
            {
                return self.default(first, depth + 1);
            }
        }
        let (kind, nullable) = schema_type(schema);
        match kind {
            _ if nullable => Value::Null,
            "object" if depth < MAX_DEPTH => self.object(schema, depth).0,
            "object" => Value::Object(Map::new()),
            "array" => Value::Array(Vec::new()),
            "integer" => number(0.0, true, schema),
            "number" => number(0.0, false, schema),
            "boolean" => Value::Bool(false),
            "null" => Value::Null,
            _ => Value::String(String::new()),
        }
    }

    /// Every property that a pattern found, every required one (defaults
    /// for the rest), and `confidence` as the share of the asked-for
    /// properties (the required ones, or all when none is) that were found.
    fn object(&self, schema: &'s Value, depth: usize) -> (Value, bool) {
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        let (mut asked, mut found, mut any_found) = (0usize, 0usize, false);
        let mut confidences = Vec::new();
        for (name, sub) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
            let words = name_words(name);
            let is_required = required.contains(&name.as_str());
            if Kind::of(&words) == Kind::Confidence
                && matches!(schema_type(self.resolve(sub, depth + 1)).0, "number" | "integer")
            {
                confidences.push((name, sub));
                continue;
            }
            let filled = self.value(&words, sub, depth + 1);
            if is_required || required.is_empty() {
                asked += 1;
                found += usize::from(filled.found);
            }
            any_found |= filled.found;
            match filled.value {
                Some(value) => {
                    out.insert(name.clone(), value);
                }
                None if is_required => {
                    out.insert(name.clone(), self.default(sub, depth + 1));
                }
                None => {}
            }
        }
        let share = if asked == 0 { 0.0 } else { found as f64 / asked as f64 };
        for (name, sub) in confidences {
            let sub = self.resolve(sub, depth + 1);
            let value = match schema_type(sub).0 {
                "integer" => number((share * 100.0).round(), true, sub),
                _ => number((share * 100.0).round() / 100.0, false, sub),
            };
            out.insert(name.clone(), value);
        }
        for name in required {
            // Required but not described: any value validates.
            out.entry(name).or_insert_with(|| Value::String(String::new()));
        }
        (Value::Object(out), any_found)
    }

    fn array(&self, words: &[String], schema: &'s Value, depth: usize) -> Filled {
        let items = schema.get("items").map_or(&Value::Null, |i| self.resolve(i, depth + 1));
        let max =
            schema.get("maxItems").and_then(Value::as_u64).and_then(|m| usize::try_from(m).ok()).unwrap_or(usize::MAX);
        let mut list: Vec<Value> = if let Some(values) = items.get("enum").and_then(Value::as_array) {
            // Every offered value the text mentions.
            values
                .iter()
                .filter(|v| v.as_str().is_some_and(|l| score(l, "", &self.facts.tokens) > 0))
                .cloned()
                .collect()
        } else if schema_type(items).0 == "string" {
            let mut strings: Vec<String> = Vec::new();
            for s in self.strings(words) {
                if !strings.contains(&s) {
                    strings.push(s);
                }
            }
            strings.into_iter().map(Value::String).collect()
        } else {
            Vec::new()
        };
        list.truncate(max);
        let found = !list.is_empty();
        Filled { value: Some(Value::Array(list)), found }
    }

    /// Items for an array of strings: every address for `emails`, a `Key: a, b` list for anything else.
    fn strings(&self, words: &[String]) -> Vec<String> {
        let f = self.facts;
        match Kind::of(words) {
            Kind::Email => {
                let senders = f.email.from.into_iter().chain(f.email.reply_to).flat_map(sender::emails);
                senders.chain(sender::emails(&f.email.written_text())).collect()
            }
            Kind::Phone => f.phone.clone().into_iter().collect(),
            Kind::Person(_) => f.person.clone().into_iter().collect(),
            Kind::Company => f.company.clone().into_iter().collect(),
            _ => f
                .labelled(words)
                .map(|v| v.split([',', ';']).map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
                .unwrap_or_default(),
        }
    }

    fn string(&self, words: &[String], schema: &Value) -> Option<String> {
        let f = self.facts;
        let labelled = f.labelled(words);
        let owned = |s: Option<&str>| s.map(str::to_string);
        let format = schema.get("format").and_then(Value::as_str);
        let found = match Kind::of(words) {
            Kind::Email => labelled.and_then(|v| sender::emails(v).into_iter().next()).or_else(|| f.sender.clone()),
            Kind::Person(part) => owned(labelled).or_else(|| {
                let name = f.person.as_deref()?;
                let words: Vec<&str> = name.split_whitespace().collect();
                match part {
                    NamePart::Full => Some(name.to_string()),
                    NamePart::First => words.first().map(|w| w.to_string()),
                    NamePart::Last => words.last().filter(|_| words.len() > 1).map(|w| w.to_string()),
                }
            }),
            Kind::Company => owned(labelled).or_else(|| f.company.clone()),
            Kind::Phone => {
                labelled.map(|v| sender::phone(v).unwrap_or_else(|| v.to_string())).or_else(|| f.phone.clone())
            }
            Kind::Date { header } => {
                let body = || labelled.and_then(date::date).or_else(|| date::date(&f.email.body_text()));
                let from_header = || f.email.date.and_then(date::date);
                let found = match header {
                    Header::First => from_header().or_else(body),
                    Header::Fallback => body().or_else(from_header),
                    Header::Never => body(),
                };
                found.filter(|d| d.iso || format != Some("date")).map(|d| d.text)
            }
            Kind::Need => owned(labelled).or_else(|| f.need.clone()),
            Kind::Subject => owned(labelled).or_else(|| owned(f.email.topic())).or_else(|| f.need.clone()),
            Kind::JobTitle => owned(labelled).or_else(|| sender::job_title(&f.email.signature)),
            Kind::Website { host_only } => {
                owned(labelled).or_else(|| sender::website(f.text, f.sender.as_deref(), host_only))
            }
            Kind::Currency => owned(labelled).or_else(|| f.numbers.iter().find_map(|a| a.currency).map(str::to_string)),
            Kind::Level => {
                let levels = ["high", "medium", "low"];
                let scores: Vec<usize> = levels.iter().map(|l| score(l, "", &f.tokens)).collect();
                owned(labelled).or_else(|| pick(&scores).map(|i| levels[i].to_string()))
            }
            Kind::Reply => Some(compose(f.messages)),
            Kind::Source => f.email.from.map(|_| "email".to_string()),
            Kind::Money { .. } | Kind::Confidence | Kind::Other => owned(labelled),
        };
        let mut value = found?.trim().to_string();
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64).and_then(|m| usize::try_from(m).ok()) {
            value = value.chars().take(max).collect();
        }
        (!value.is_empty() && fits(schema, &Value::String(value.clone()))).then_some(value)
    }

    fn number(&self, words: &[String]) -> Option<f64> {
        let f = self.facts;
        let labelled = f.labelled(words).and_then(|v| amount::numbers(v).first().map(|a| a.value));
        match Kind::of(words) {
            Kind::Money { minor } => {
                labelled.or_else(|| f.amount(words)).map(|x| if minor { (x * 100.0).round() } else { x })
            }
            _ => labelled.or_else(|| f.number_near(words)),
        }
    }

    /// From a `Key: yes` line, else true when every word of the name (or a
    /// keyword of the label it names, e.g. "urgent") occurs in the text.
    fn boolean(&self, words: &[String]) -> Filled {
        let f = self.facts;
        if let Some(answer) = f.labelled(words) {
            match answer.to_lowercase().trim_end_matches(['.', '!']) {
                "yes" | "y" | "true" | "x" | "1" => return Filled::found(Value::Bool(true)),
                "no" | "n" | "false" | "0" | "-" => return Filled::found(Value::Bool(false)),
                _ => {}
            }
        }
        let cues = significant(words, BOOLEAN_FILLER);
        let present = |w: &String| f.tokens.count(w) > 0 || group_phrases(w).any(|p| f.tokens.count(p) > 0);
        let hit = !cues.is_empty() && cues.iter().all(present);
        Filled { value: Some(Value::Bool(hit)), found: hit }
    }

    /// The enum value a `Key: value` line names, else the one the text's
    /// keywords favour, else a catch-all ("other") or the first.
    fn choose(&self, words: &[String], values: &[Value]) -> Filled {
        let labels: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        if labels.is_empty() {
            return values.first().cloned().map_or_else(Filled::missing, Filled::guessed);
        }
        let f = self.facts;
        let stated = f.labelled(words).map(str::to_string).or_else(|| match Kind::of(words) {
            Kind::Currency => f.numbers.iter().find_map(|a| a.currency).map(str::to_string),
            _ => None,
        });
        if let Some(stated) = &stated {
            if let Some(label) = labels.iter().find(|l| l.trim().eq_ignore_ascii_case(stated.trim())) {
                return Filled::found(Value::String(label.to_string()));
            }
            let tokens = Tokens::new(stated);
            if let Some(i) = pick(&labels.iter().map(|l| score(l, "", &tokens)).collect::<Vec<_>>()) {
                return Filled::found(Value::String(labels[i].to_string()));
            }
        }
        match pick(&labels.iter().map(|l| score(l, "", &f.tokens)).collect::<Vec<_>>()) {
            Some(i) => Filled::found(Value::String(labels[i].to_string())),
            None => Filled::guessed(Value::String(labels[fallback(&labels)].to_string())),
        }
    }
}

/// The first non-null branch of an `anyOf`/`oneOf`.
fn first_option(schema: &Value) -> Option<&Value> {
    let options = schema.get("anyOf").or_else(|| schema.get("oneOf")).and_then(Value::as_array)?;
    options.iter().find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
}

/// The schema's type and whether it also allows `null`. Without `type`,
/// `properties` means an object and `items` an array.
fn schema_type(schema: &Value) -> (&str, bool) {
    match schema.get("type") {
        Some(Value::String(t)) => (t.as_str(), false),
        Some(Value::Array(types)) => {
            let nullable = types.iter().any(|t| t == "null");
            let first = types.iter().filter_map(Value::as_str).find(|t| *t != "null").unwrap_or("null");
            (first, nullable)
        }
        _ if schema.get("properties").is_some() => ("object", false),
        _ if schema.get("items").is_some() => ("array", false),
        _ => ("string", false),
    }
}

/// A JSON number within the schema's `minimum`/`maximum`; whole values are written without a fraction.
fn number(x: f64, integer: bool, schema: &Value) -> Value {
    let mut x = if integer { x.round() } else { x };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        x = x.max(if integer { min.ceil() } else { min });
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        x = x.min(if integer { max.floor() } else { max });
    }
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::from(0), Value::Number)
    }
}

/// Whether a candidate passes the checks a property puts on strings
/// (`format`, `pattern`, `minLength`); a candidate that does not is left
/// out rather than sent back invalid.
fn fits(schema: &Value, value: &Value) -> bool {
    if !["format", "pattern", "minLength"].iter().any(|k| schema.get(k).is_some()) {
        return true;
    }
    let mut own = Map::new();
    for key in ["type", "format", "pattern", "minLength", "maxLength"] {
        if let Some(v) = schema.get(key) {
            own.insert(key.to_string(), v.clone());
        }
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(&Value::Object(own))
        .is_ok_and(|validator| validator.is_valid(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn extract_from(schema: &Value, email: &str) -> Value {
        let messages = vec![
            Message { role: Role::System, content: "Extract the lead as JSON.".into() },
            Message { role: Role::User, content: email.into() },
        ];
        let value = extract(schema, &messages);
        let validator = jsonschema::validator_for(schema).expect("test schema compiles");
        assert!(validator.is_valid(&value), "{value} does not validate against {schema}");
        value
    }

    fn lead_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string", "format": "email"},
                "company": {"type": "string"},
                "budget": {"type": "number", "minimum": 0},
                "phone": {"type": ["string", "null"]},
                "need": {"type": "string", "maxLength": 200},
                "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
                "category": {"enum": ["lead", "support", "spam", "other"]},
                "wants_demo": {"type": "boolean"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1}
            },
            "required": ["name", "email", "company", "budget", "need", "urgency", "confidence"],
            "additionalProperties": false
        })
    }

    const ACME: &str = "From: Ada Lovelace <ada.lovelace@acme-robotics.com>
To: sales@keel.dev
Subject: Automating our order intake
Date: Tue, 4 Mar 2025 09:12:00 +0100

Hi there,

I hope you're doing well. We're looking for a way to automate how our 12-person ops team handles incoming orders.
Our budget is around €12,000 for the first year, and we'd like to be live by the end of Q2.
Could we get a demo next week? This is fairly urgent for us.

Best regards,
Ada Lovelace
Head of Operations, Acme Robotics GmbH
+49 30 1234 5678
";

    const GRACE: &str = "Subject: Question about pricing

Hello,

My name is Grace Hopper and I run IT at Hopper Labs. We need a shared inbox assistant for 40 support agents.
We have roughly $5k per month to spend, no rush though, sometime next year is fine.

Thanks,
Grace
grace@gmail.com
";

    const FORM: &str = "New website enquiry

Name: Linus Torvalds
Email: linus@penguin.example.org
Company name: Penguin Systems
Phone number: +358 40 123 4567
Budget: 8000 EUR
Message: We need help migrating 3 warehouses to a new inventory system ASAP.
";

    #[test]
    fn a_lead_with_headers_body_and_signature() {
        let value = extract_from(&lead_schema(), ACME);
        assert_eq!(value["name"], "Ada Lovelace");
        assert_eq!(value["email"], "ada.lovelace@acme-robotics.com");
        assert_eq!(value["company"], "Acme Robotics GmbH");
        assert_eq!(value["budget"], 12000);
        assert_eq!(value["phone"], "+49 30 1234 5678");
        assert_eq!(
            value["need"],
            "We're looking for a way to automate how our 12-person ops team handles incoming orders."
        );
        assert_eq!(value["urgency"], "high");
        assert_eq!(value["category"], "lead");
        assert_eq!(value["wants_demo"], true);
        assert_eq!(value["confidence"], 1.0);
    }

    #[test]
    fn a_lead_without_headers_from_a_free_mail_address() {
        let value = extract_from(&lead_schema(), GRACE);
        assert_eq!(value["name"], "Grace Hopper");
        assert_eq!(value["email"], "grace@gmail.com");
        assert_eq!(value["company"], "Hopper Labs");
        assert_eq!(value["budget"], 5000);
        assert_eq!(value["need"], "We need a shared inbox assistant for 40 support agents.");
        assert_eq!(value["urgency"], "low");
        assert_eq!(value["wants_demo"], false);
        assert!(value.get("phone").is_none(), "an optional field nothing matched is left out: {value}");
    }

    #[test]
    fn a_web_form_notification_with_labelled_fields() {
        let schema = json!({
            "type": "object",
            "properties": {
                "full_name": {"type": "string"},
                "contactEmail": {"type": "string"},
                "organization": {"type": "string"},
                "phone": {"type": "string"},
                "budget_cents": {"type": "integer"},
                "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
                "summary": {"type": "string"},
                "priority": {"type": "string", "enum": ["low", "normal", "urgent"]}
            },
            "required": ["full_name", "contactEmail", "organization", "budget_cents", "summary", "priority"]
        });
        let value = extract_from(&schema, FORM);
        assert_eq!(value["full_name"], "Linus Torvalds");
        assert_eq!(value["contactEmail"], "linus@penguin.example.org");
        assert_eq!(value["organization"], "Penguin Systems");
        assert_eq!(value["phone"], "+358 40 123 4567");
        assert_eq!(value["budget_cents"], 800_000);
        assert_eq!(value["currency"], "EUR");
        assert_eq!(value["summary"], "We need help migrating 3 warehouses to a new inventory system ASAP.");
        assert_eq!(value["priority"], "urgent");
    }

    #[test]
    fn missing_required_fields_get_valid_defaults_and_lower_confidence() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "email": {"type": "string"},
                "budget": {"type": "integer", "minimum": 100},
                "deadline": {"type": ["string", "null"], "format": "date"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "contact": {"$ref": "#/$defs/Contact"},
                "confidence": {"type": "integer"}
            },
            "required": ["name", "email", "budget", "deadline", "tags", "contact", "confidence"],
            "$defs": {"Contact": {"type": "object", "properties": {"phone": {"type": "string"}}, "required": ["phone"]}}
        });
        let value = extract_from(&schema, "hello, can someone call me back? email: bob@example.com");
        assert_eq!(value["name"], "");
        assert_eq!(value["email"], "bob@example.com");
        assert_eq!(value["budget"], 100);
        assert_eq!(value["deadline"], Value::Null);
        assert_eq!(value["tags"], json!([]));
        assert_eq!(value["contact"], json!({"phone": ""}));
        assert_eq!(value["confidence"], 17, "1 of 6 asked-for fields found");
    }

    #[test]
    fn dates_titles_and_nested_objects_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "received_at": {"type": "string", "format": "date"},
                "start_date": {"type": "string"},
                "job_title": {"type": "string"},
                "website": {"type": "string", "format": "uri"},
                "sender": {
                    "type": "object",
                    "properties": {"first_name": {"type": "string"}, "last_name": {"type": "string"}},
                    "required": ["first_name", "last_name"]
                }
            }
        });
        let value = extract_from(&schema, ACME);
        assert_eq!(value["received_at"], "2025-03-04");
        assert_eq!(value["start_date"], "end of Q2");
        assert_eq!(value["job_title"], "Head of Operations");
        assert_eq!(value["website"], "https://acme-robotics.com");
        assert_eq!(value["sender"], json!({"first_name": "Ada", "last_name": "Lovelace"}));
    }
}
