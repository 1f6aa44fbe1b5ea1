"""`extractor-python`: keel's reference extractor (`agents/extractor`), in Python.

Turns an inbound message (an email's text, or form fields) into a canonical
`leads` record, one per sender address. It follows the Rust agent line by
line: the same prompts and JSON Schema to the `small` tier, the same merge
rules, note text and tags, so both give the same answers. See README.md.

Built into a component of the world `keel:plugin/agent@0.1.0` by
componentize-py: `handle` is the export; `wit_world.imports.*` are the host's
interfaces. A host call that fails raises `Err(error)`; letting it propagate
out of `handle` returns that error to the host, like `?` in Rust.
"""

import json
import math

import wit_world
from componentize_py_types import Err
from wit_world.imports import log, memory, model
from wit_world.imports.types import Error_InvalidInput, Error_Unavailable, Outcome

# Records and notes both live in this namespace.
LEADS = "leads"
# Compare-and-set retries when another run updates the same lead.
WRITE_ATTEMPTS = 5
# Company-name words left out of the tag slug.
LEGAL_FORMS = ["gmbh", "inc", "ltd", "llc", "ag", "sa", "bv", "co"]

SCHEMA = {
    "type": "object",
    "required": ["name", "email", "company", "need", "subject", "confidence"],
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "company": {"type": "string"},
        "need": {"type": "string"},
        "subject": {"type": "string"},
        "budget": {"type": "number", "minimum": 0},
        "currency": {"type": "string"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


def invalid_input(message):
    return Err(Error_InvalidInput(message))


def unavailable(message):
    return Err(Error_Unavailable(message))


def to_json(value):
    """Compact JSON, as serde_json writes it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def extracted_from(value):
    """What one message says: the fields of `value` (a dict), checked like
    serde checks the Rust `Extracted` struct. Raises ValueError."""
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    out = {}
    for field in ["name", "email", "company", "need", "subject"]:
        v = value.get(field, "")
        if not isinstance(v, str):
            raise ValueError(f"`{field}` must be a string")
        out[field] = v
    for field in ["budget", "confidence"]:
        v = value.get(field)
        if v is not None and not is_number(v):
            raise ValueError(f"`{field}` must be a number")
        out[field] = None if v is None else float(v)
    currency = value.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise ValueError("`currency` must be a string")
    out["currency"] = currency
    return out


def lead_from(value):
    """The stored `leads` record, keeping only the fields the agent owns."""
    if not isinstance(value, dict):
        raise ValueError("expected an object")
    lead = {}
    for field in ["name", "email", "company", "need"]:
        if not isinstance(value.get(field), str):
            raise ValueError(f"`{field}` must be a string")
        lead[field] = value[field]
    if value.get("budget") is not None:
        if not is_number(value["budget"]):
            raise ValueError("`budget` must be a number")
        lead["budget"] = float(value["budget"])
    if value.get("currency") is not None:
        if not isinstance(value["currency"], str):
            raise ValueError("`currency` must be a string")
        lead["currency"] = value["currency"]
    if not isinstance(value.get("source"), str):
        raise ValueError("`source` must be a string")
    lead["source"] = value["source"]
    if not isinstance(value.get("confidence"), dict):
        raise ValueError("`confidence` must be an object")
    lead["confidence"] = dict(value["confidence"])
    messages = value.get("messages")
    if not isinstance(messages, int) or isinstance(messages, bool) or messages < 0:
        raise ValueError("`messages` must be a count")
    lead["messages"] = messages
    needs = value.get("needs")
    if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise ValueError("`needs` must be a list of strings")
    lead["needs"] = list(needs)
    return lead


def lead_json(lead):
    """The record as stored: fields in the Rust struct's order, budget and
    currency only when known."""
    out = {"name": lead["name"], "email": lead["email"], "company": lead["company"], "need": lead["need"]}
    if lead.get("budget") is not None:
        out["budget"] = lead["budget"]
    if lead.get("currency") is not None:
        out["currency"] = lead["currency"]
    out["source"] = lead["source"]
    out["confidence"] = lead["confidence"]
    out["messages"] = lead["messages"]
    out["needs"] = lead["needs"]
    return out


def complete(messages, max_tokens, json_schema):
    request = model.CompletionRequest(
        tier="small",
        messages=[model.Message(role=role, content=content) for role, content in messages],
        max_tokens=max_tokens,
        temperature_milli=0,
        json_schema=json_schema,
    )
    return model.complete(request)


def classify(text):
    """`lead`, `support` or `spam`."""
    system = "Classify the message. Labels: lead, support, spam"
    completion = complete([(model.Role.SYSTEM, system), (model.Role.USER, text)], 8, None)
    return completion.text.strip().lower()


def extract(text):
    system = (
        "Extract the sales lead in this email: the sender's name, email address and company, "
        "what they need, and their budget if stated. Answer as JSON."
    )
    completion = complete([(model.Role.SYSTEM, system), (model.Role.USER, text)], 400, to_json(SCHEMA))
    answer = completion.json if completion.json is not None else completion.text
    try:
        extracted = extracted_from(json.loads(answer))
    except ValueError as e:
        raise unavailable(f"the model's answer is not the lead JSON asked for ({e}): {answer}")
    return extracted, completion.model


def is_address(email):
    """A plausible address: one `@`, a dot in the domain, no spaces."""
    parts = email.split("@")
    if len(parts) != 2:
        return False
    local, domain = parts
    return local != "" and "." in domain and not any(c.isspace() for c in email)


def round2(x):
    """Rounds half away from zero to two decimals, like Rust's f64::round."""
    return math.floor(x * 100.0 + 0.5) / 100.0


def field_confidence(e):
    """Per field: 0 when missing; the address 0.99 when it parses; other
    fields the model's overall confidence."""
    overall = min(max(0.5 if e["confidence"] is None else e["confidence"], 0.0), 1.0)

    def present(s):
        return 0.0 if s.strip() == "" else overall

    return {
        "email": round2(0.99 if is_address(e["email"]) else 0.0),
        "name": round2(present(e["name"])),
        "company": round2(present(e["company"])),
        "need": round2(present(e["need"])),
        "budget": round2(overall if e["budget"] is not None else 0.0),
    }


def company_tag(company):
    """`company:acme-robotics` from "Acme Robotics"."""
    words, word = [], ""
    for c in company:
        if c.isalnum():
            word += c
        else:
            words.append(word)
            word = ""
    words.append(word)
    slug = [w.lower() for w in words if w != ""]
    slug = [w for w in slug if w not in LEGAL_FORMS]
    return "company:" + "-".join(slug) if slug else "company:unknown"


def merge(stored, e):
    """Merges message `e` into the stored lead (or a new one)."""
    lead = stored or {
        "name": "",
        "email": "",
        "company": "",
        "need": "",
        "source": "email",
        "confidence": {},
        "messages": 0,
        "needs": [],
    }
    fresh = field_confidence(e)

    def fill(field, new):
        if lead[field].strip() == "" and new.strip() != "":
            lead[field] = new.strip()

    fill("name", e["name"])
    fill("email", e["email"].lower())
    fill("company", e["company"])
    if e["need"].strip() != "":
        # The latest need is what the next steps answer.
        lead["need"] = e["need"].strip()
        if not lead["needs"] or lead["needs"][-1] != lead["need"]:
            lead["needs"].append(lead["need"])
        if len(lead["needs"]) > 20:
            lead["needs"].pop(0)
    if e["budget"] is not None:
        lead["budget"] = e["budget"]
        lead["currency"] = e["currency"] if e["currency"] is not None else lead.get("currency")
    for field, value in sorted(fresh.items()):
        old = lead["confidence"].get(field)
        old = float(old) if is_number(old) else 0.0
        if value >= old:
            lead["confidence"][field] = value
    lead["messages"] += 1
    return lead


def number_text(x):
    """`x` as Rust's `{}` prints an f64: no `.0`, no exponent."""
    if math.isfinite(x) and x == math.floor(x):
        return str(int(x))
    text = repr(x)
    if "e" in text:
        from decimal import Decimal

        text = format(Decimal(text), "f")
    return text


def parse_input(task):
    try:
        value = json.loads(task.input)
    except ValueError as e:
        raise invalid_input(f"task input: {e}")
    if not isinstance(value, dict):
        raise invalid_input("task input: expected an object")
    text = value.get("text")
    if text is not None and not isinstance(text, str):
        raise invalid_input("task input: `text` must be a string")
    lead = value.get("lead")
    if lead is not None:
        try:
            lead = extracted_from(lead)
        except ValueError as e:
            raise invalid_input(f"task input: `lead`: {e}")
    return text, lead


def handle_task(task):
    text, form = parse_input(task)
    if form is not None:
        extracted, model_name, label = form, "form", "lead"
    elif text is not None:
        label = classify(text)
        if label == "spam":
            return {"skipped": "spam", "label": label}
        extracted, model_name = extract(text)
    else:
        raise invalid_input("input: give `text` (an email) or `lead` (form fields)")
    email = extracted["email"].strip().lower()
    if not is_address(email):
        log.log(log.Level.WARN, "message without a sender address: skipped", [])
        return {"skipped": "the message names no sender address", "label": label}

    # Compare and set: a concurrent run for the same sender retries.
    attempt = 0
    while True:
        attempt += 1
        entry = memory.get_record(LEADS, email)
        stored = None
        if entry is not None:
            try:
                stored = lead_from(json.loads(entry.data))
            except ValueError as e:
                raise invalid_input(f"record {LEADS}/{email} is not the expected JSON: {e}")
        version = entry.version if entry is not None else 0
        lead = merge(stored, extracted)
        result = memory.put_record(LEADS, email, to_json(lead_json(lead)), version)
        if isinstance(result, memory.WriteResult_Written):
            new = entry is None
            break
        if attempt < WRITE_ATTEMPTS:
            continue
        raise unavailable(f"lead {email} kept changing (version {result.value}); run again")

    budget = ""
    if lead.get("budget") is not None:
        if lead.get("currency") is not None:
            budget = f" Budget {number_text(lead['budget'])} {lead['currency']}."
        else:
            budget = f" Budget {number_text(lead['budget'])}."
    need = extracted["need"].strip().rstrip(".!?")
    note = memory.Note(
        text=f"{lead['company']} ({lead['name']}, {email}) asked: {need}.{budget}",
        tags=[company_tag(lead["company"]), "lead-message"],
        metadata=to_json({"lead_id": email, "subject": extracted["subject"], "task": task.id}),
    )
    note_id = memory.remember(LEADS, note)
    log.log(log.Level.INFO, f"lead {email}: {lead['messages']} message(s)", [])
    return {
        "company_tag": company_tag(lead["company"]),
        "confidence": lead["confidence"],
        "label": label,
        "lead": lead_json(lead),
        "lead_id": email,
        "messages": lead["messages"],
        "model": model_name,
        "new": new,
        "note_id": note_id,
        "subject": extracted["subject"],
    }


class WitWorld(wit_world.WitWorld):
    def handle(self, task):
        return Outcome(output=to_json(handle_task(task)))
