// `extractor-js`: keel's reference extractor (`agents/extractor`), in JavaScript.
//
// Turns an inbound message (an email's text, or form fields) into a
// canonical `leads` record, one per sender address. It follows the Rust
// agent line by line: the same prompts and JSON Schema to the `small` tier,
// the same merge rules, note text and tags, so both give the same answers.
// See README.md.
//
// Built into a component of the world `keel:plugin/agent@0.1.0` by
// componentize-js (build.mjs): the exported `handle` is the agent; the
// imports below are the host's interfaces. A host call that fails throws an
// error whose `payload` is the WIT `error` (`{ tag: 'denied', val: '...' }`);
// letting it propagate out of `handle` returns that error to the host, like
// `?` in Rust. u64 values (record versions) are BigInts.

import { log } from 'keel:plugin/log@0.1.0';
import { getRecord, putRecord, remember } from 'keel:plugin/memory@0.1.0';
import { complete } from 'keel:plugin/model@0.1.0';

/** Records and notes both live in this namespace. */
const LEADS = 'leads';
/** Compare-and-set retries when another run updates the same lead. */
const WRITE_ATTEMPTS = 5;
/** Company-name words left out of the tag slug. */
const LEGAL_FORMS = ['gmbh', 'inc', 'ltd', 'llc', 'ag', 'sa', 'bv', 'co'];

const SCHEMA = {
  type: 'object',
  required: ['name', 'email', 'company', 'need', 'subject', 'confidence'],
  properties: {
    name: { type: 'string' },
    email: { type: 'string' },
    company: { type: 'string' },
    need: { type: 'string' },
    subject: { type: 'string' },
    budget: { type: 'number', minimum: 0 },
    currency: { type: 'string' },
    confidence: { type: 'number', minimum: 0, maximum: 1 },
  },
};

/** A WIT `error` to return from `handle`: thrown, its `payload` is the value. */
class KeelError extends Error {
  constructor(tag, val) {
    super(`${tag}: ${val}`);
    this.payload = { tag, val };
  }
}

const invalidInput = (message) => new KeelError('invalid-input', message);
const unavailable = (message) => new KeelError('unavailable', message);

const isString = (v) => typeof v === 'string';
const isNumber = (v) => typeof v === 'number' && Number.isFinite(v);

/** What one message says: the fields of `value`, checked like serde checks
 * the Rust `Extracted` struct. Throws TypeError. */
function extractedFrom(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError('expected an object');
  }
  const out = {};
  for (const field of ['name', 'email', 'company', 'need', 'subject']) {
    const v = value[field] ?? '';
    if (!isString(v)) throw new TypeError(`\`${field}\` must be a string`);
    out[field] = v;
  }
  for (const field of ['budget', 'confidence']) {
    const v = value[field] ?? null;
    if (v !== null && !isNumber(v)) throw new TypeError(`\`${field}\` must be a number`);
    out[field] = v;
  }
  const currency = value.currency ?? null;
  if (currency !== null && !isString(currency)) throw new TypeError('`currency` must be a string');
  out.currency = currency;
  return out;
}

/** The stored `leads` record, keeping only the fields the agent owns. */
function leadFrom(value) {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new TypeError('expected an object');
  }
  const lead = {};
  for (const field of ['name', 'email', 'company', 'need']) {
    if (!isString(value[field])) throw new TypeError(`\`${field}\` must be a string`);
    lead[field] = value[field];
  }
  if (value.budget != null) {
    if (!isNumber(value.budget)) throw new TypeError('`budget` must be a number');
    lead.budget = value.budget;
  }
  if (value.currency != null) {
    if (!isString(value.currency)) throw new TypeError('`currency` must be a string');
    lead.currency = value.currency;
  }
  if (!isString(value.source)) throw new TypeError('`source` must be a string');
  lead.source = value.source;
  if (value.confidence === null || typeof value.confidence !== 'object' || Array.isArray(value.confidence)) {
    throw new TypeError('`confidence` must be an object');
  }
  lead.confidence = { ...value.confidence };
  if (!Number.isInteger(value.messages) || value.messages < 0) throw new TypeError('`messages` must be a count');
  lead.messages = value.messages;
  if (!Array.isArray(value.needs) || !value.needs.every(isString)) {
    throw new TypeError('`needs` must be a list of strings');
  }
  lead.needs = [...value.needs];
  return lead;
}

/** The record as stored: fields in the Rust struct's order, budget and
 * currency only when known. */
function leadJson(lead) {
  const out = { name: lead.name, email: lead.email, company: lead.company, need: lead.need };
  if (lead.budget != null) out.budget = lead.budget;
  if (lead.currency != null) out.currency = lead.currency;
  out.source = lead.source;
  out.confidence = lead.confidence;
  out.messages = lead.messages;
  out.needs = lead.needs;
  return out;
}

function ask(messages, maxTokens, jsonSchema) {
  return complete({
    tier: 'small',
    messages: messages.map(([role, content]) => ({ role, content })),
    maxTokens,
    temperatureMilli: 0,
    jsonSchema,
  });
}

/** `lead`, `support` or `spam`. */
function classify(text) {
  const system = 'Classify the message. Labels: lead, support, spam';
  return ask([['system', system], ['user', text]], 8, undefined).text.trim().toLowerCase();
}

function extract(text) {
  const system =
    "Extract the sales lead in this email: the sender's name, email address and company, " +
    'what they need, and their budget if stated. Answer as JSON.';
  const completion = ask([['system', system], ['user', text]], 400, JSON.stringify(SCHEMA));
  const answer = completion.json ?? completion.text;
  let extracted;
  try {
    extracted = extractedFrom(JSON.parse(answer));
  } catch (e) {
    throw unavailable(`the model's answer is not the lead JSON asked for (${e.message}): ${answer}`);
  }
  return [extracted, completion.model];
}

/** A plausible address: one `@`, a dot in the domain, no spaces. */
function isAddress(email) {
  const parts = email.split('@');
  if (parts.length !== 2) return false;
  const [local, domain] = parts;
  return local !== '' && domain.includes('.') && !/\s/u.test(email);
}

/** Rounds half away from zero to two decimals, like Rust's f64::round. */
const round2 = (x) => Math.floor(x * 100 + 0.5) / 100;

/** Per field: 0 when missing; the address 0.99 when it parses; other fields
 * the model's overall confidence. */
function fieldConfidence(e) {
  const overall = Math.min(Math.max(e.confidence ?? 0.5, 0), 1);
  const present = (s) => (s.trim() === '' ? 0 : overall);
  return {
    email: round2(isAddress(e.email) ? 0.99 : 0),
    name: round2(present(e.name)),
    company: round2(present(e.company)),
    need: round2(present(e.need)),
    budget: round2(e.budget !== null ? overall : 0),
  };
}

/** Splits a company name into words of letters and digits. Rust's
 * `char::is_alphanumeric` is `\p{Alphabetic}` or `\p{N}`; this engine's
 * regular expressions lack Unicode property classes, so letters are the
 * characters with case, plus most above U+02FF without (CJK, Arabic, ...). */
function words(text) {
  const isWordChar = (c) => {
    const cp = c.codePointAt(0);
    if (/[0-9]/u.test(c) || c.toLowerCase() !== c.toUpperCase()) return true;
    // Above U+02FF, leave out spaces and the punctuation and symbol blocks.
    const symbol = (cp >= 0x2000 && cp <= 0x2bff) || (cp >= 0x3000 && cp <= 0x303f) || (cp >= 0xfe30 && cp <= 0xfe6f);
    return cp > 0x2ff && !/\s/u.test(c) && !symbol;
  };
  const out = [];
  let word = '';
  for (const c of text) {
    if (isWordChar(c)) {
      word += c;
    } else {
      out.push(word);
      word = '';
    }
  }
  out.push(word);
  return out;
}

/** `company:acme-robotics` from "Acme Robotics". */
function companyTag(company) {
  const slug = words(company)
    .filter((w) => w !== '')
    .map((w) => w.toLowerCase())
    .filter((w) => !LEGAL_FORMS.includes(w));
  return slug.length === 0 ? 'company:unknown' : `company:${slug.join('-')}`;
}

/** Merges message `e` into the stored lead (or a new one). */
function merge(stored, e) {
  const lead = stored ?? {
    name: '',
    email: '',
    company: '',
    need: '',
    source: 'email',
    confidence: {},
    messages: 0,
    needs: [],
  };
  const fresh = fieldConfidence(e);
  const fill = (field, value) => {
    if (lead[field].trim() === '' && value.trim() !== '') lead[field] = value.trim();
  };
  fill('name', e.name);
  fill('email', e.email.toLowerCase());
  fill('company', e.company);
  if (e.need.trim() !== '') {
    // The latest need is what the next steps answer.
    lead.need = e.need.trim();
    if (lead.needs.length === 0 || lead.needs[lead.needs.length - 1] !== lead.need) lead.needs.push(lead.need);
    if (lead.needs.length > 20) lead.needs.shift();
  }
  if (e.budget !== null) {
    lead.budget = e.budget;
    lead.currency = e.currency ?? lead.currency ?? null;
  }
  for (const field of Object.keys(fresh).sort()) {
    const old = isNumber(lead.confidence[field]) ? lead.confidence[field] : 0;
    if (fresh[field] >= old) lead.confidence[field] = fresh[field];
  }
  lead.messages += 1;
  return lead;
}

function parseInput(task) {
  let value;
  try {
    value = JSON.parse(task.input);
  } catch (e) {
    throw invalidInput(`task input: ${e.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw invalidInput('task input: expected an object');
  }
  const text = value.text ?? null;
  if (text !== null && !isString(text)) throw invalidInput('task input: `text` must be a string');
  let lead = value.lead ?? null;
  if (lead !== null) {
    try {
      lead = extractedFrom(lead);
    } catch (e) {
      throw invalidInput(`task input: \`lead\`: ${e.message}`);
    }
  }
  return [text, lead];
}

function handleTask(task) {
  const [text, form] = parseInput(task);
  let extracted, model, label;
  if (form !== null) {
    [extracted, model, label] = [form, 'form', 'lead'];
  } else if (text !== null) {
    label = classify(text);
    if (label === 'spam') return { skipped: 'spam', label };
    [extracted, model] = extract(text);
  } else {
    throw invalidInput('input: give `text` (an email) or `lead` (form fields)');
  }
  const email = extracted.email.trim().toLowerCase();
  if (!isAddress(email)) {
    log('warn', 'message without a sender address: skipped', []);
    return { skipped: 'the message names no sender address', label };
  }

  // Compare and set: a concurrent run for the same sender retries.
  let lead, isNew;
  for (let attempt = 1; ; attempt++) {
    const entry = getRecord(LEADS, email);
    let stored = null;
    if (entry != null) {
      try {
        stored = leadFrom(JSON.parse(entry.data));
      } catch (e) {
        throw invalidInput(`record ${LEADS}/${email} is not the expected JSON: ${e.message}`);
      }
    }
    const version = entry != null ? entry.version : 0n;
    lead = merge(stored, extracted);
    const result = putRecord(LEADS, email, JSON.stringify(leadJson(lead)), version);
    if (result.tag === 'written') {
      isNew = entry == null;
      break;
    }
    if (attempt >= WRITE_ATTEMPTS) {
      throw unavailable(`lead ${email} kept changing (version ${result.val}); run again`);
    }
  }

  let budget = '';
  if (lead.budget != null) {
    budget = lead.currency != null ? ` Budget ${lead.budget} ${lead.currency}.` : ` Budget ${lead.budget}.`;
  }
  const need = extracted.need.trim().replace(/[.!?]+$/u, '');
  const noteId = remember(LEADS, {
    text: `${lead.company} (${lead.name}, ${email}) asked: ${need}.${budget}`,
    tags: [companyTag(lead.company), 'lead-message'],
    metadata: JSON.stringify({ lead_id: email, subject: extracted.subject, task: task.id }),
  });
  log('info', `lead ${email}: ${lead.messages} message(s)`, []);
  return {
    company_tag: companyTag(lead.company),
    confidence: lead.confidence,
    label,
    lead: leadJson(lead),
    lead_id: email,
    messages: lead.messages,
    model,
    new: isNew,
    note_id: noteId,
    subject: extracted.subject,
  };
}

/** The agent: `handle: func(task) -> result<outcome, error>`. */
export function handle(task) {
  return { output: JSON.stringify(handleTask(task)) };
}
