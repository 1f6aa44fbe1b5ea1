// The keel dashboard: reads the operator API every 2 s and sends the
// operator's decisions. Data is only ever written with textContent or as
// attribute values: no HTML is built from strings, so nothing an agent
// wrote (a rationale, a payload, an audit reason) can run as script.
"use strict";

(() => {
  const POLL_MS = 2000;
  /** Costs and the audit chain check are read every SLOW_EVERY polls. */
  const SLOW_EVERY = 5;
  const COST_DAYS = 14;
  const TOKEN_KEY = "keel.token";
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  let token = null;
  let timer = null;
  let polls = 0;
  let polling = false;
  /** Read costs and the chain check at the next poll (after a decision). */
  let slowNext = true;
  let lastSwitch = null;
  let currency = "";

  class Unauthorized extends Error {}

  // ---- DOM helpers (text only) ----

  /** An element with attributes and children; strings become text nodes. */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "data") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function replaceRows(tbody, rows, empty, columns) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: columns, class: "empty" }, empty))]));
  }

  function when(ms) {
    if (!ms) return "";
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    const time = d.toLocaleTimeString([], { hour12: false });
    return today ? time : d.toLocaleDateString() + " " + time;
  }

  function money(micros) {
    const units = (micros || 0) / 1e6;
    const digits = units !== 0 && Math.abs(units) < 0.01 ? 6 : 4;
    return units.toFixed(digits) + (currency ? " " + currency : "");
  }

  /** A proposal's amount: kept in minor units (cents), shown in units. */
  function amount(p) {
    if (!p || p.amount === undefined || p.amount === null) return "";
    if (!p.currency) return " " + p.amount;
    let digits = 2;
    try {
      digits = new Intl.NumberFormat("en", { style: "currency", currency: p.currency }).resolvedOptions()
        .maximumFractionDigits;
    } catch (_) {
      digits = 2;
    }
    return " " + (p.amount / 10 ** digits).toFixed(digits) + " " + p.currency;
  }

  function badge(text) {
    return el("span", { class: "badge state-" + String(text).replace(/[^a-z-]/g, "") }, text);
  }

  /** Where a proposal came from: the agent, the connector, the run step. */
  function provenance(intent) {
    const parts = [intent.plugin + " → " + intent.connector];
    const key = String(intent.key || "").split("/");
    if (key.length >= 3) parts.push("run " + key.slice(0, -2).join("/") + ", step " + key[key.length - 2]);
    else if (intent.key) parts.push(intent.key);
    const extra = intent.proposal && intent.proposal.provenance;
    if (extra) parts.push(typeof extra === "string" ? extra : JSON.stringify(extra));
    return parts.join(" · ");
  }

  // ---- messages ----

  function say(text, kind) {
    const box = $("message");
    box.textContent = text;
    box.dataset.kind = kind || "info";
    box.hidden = !text;
  }

  // ---- the API ----

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + token }, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch("/api/v1" + path, init);
    if (response.status === 401) throw new Unauthorized("the token was refused");
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      throw new Error((data && data.error) || method + " " + path + " answered HTTP " + response.status);
    }
    return data;
  }

  // ---- the token ----

  /** `#token=...` in the address: kept for this tab, then removed from the address bar. */
  function takeTokenFromAddress() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const given = fragment.get("token");
    if (given) sessionStorage.setItem(TOKEN_KEY, given.trim());
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  function askForToken(why) {
    token = null;
    clearTimeout(timer);
    sessionStorage.removeItem(TOKEN_KEY);
    $("board").hidden = true;
    $("logout").hidden = true;
    $("switch-button").disabled = true;
    $("switch").hidden = true;
    say("");
    $("login").hidden = false;
    if (why) $("login-why").textContent = why;
    $("summary").textContent = "Not connected";
    $("token-input").focus();
  }

  function connect(given) {
    token = given;
    sessionStorage.setItem(TOKEN_KEY, given);
    $("login").hidden = true;
    $("logout").hidden = false;
    polls = 0;
    loop();
  }

  async function loop() {
    clearTimeout(timer);
    await refresh();
    if (token) timer = setTimeout(loop, POLL_MS);
  }

  // ---- reading ----

  async function refresh() {
    if (!token || polling) return;
    polling = true;
    try {
      const slow = slowNext || polls % SLOW_EVERY === 0;
      slowNext = false;
      polls += 1;
      const [status, pending, intents, audit, runs] = await Promise.all([
        api("GET", "/status"),
        api("GET", "/approvals?status=pending"),
        api("GET", "/intents?limit=15"),
        api("GET", "/audit?limit=30"),
        api("GET", "/runs"),
      ]);
      if (slow) {
        const [costs, verify] = await Promise.all([api("GET", "/costs?days=" + COST_DAYS), api("GET", "/audit/verify")]);
        renderCosts(costs);
        renderVerify(verify);
      }
      renderStatus(status);
      renderPending(pending);
      renderDecisions(intents);
      renderAudit(audit);
      renderRuns(runs);
      $("board").hidden = false;
      if ($("message").dataset.kind === "offline") say("");
      $("updated").textContent = "Updated " + when(Date.now()) + "; refreshed every " + POLL_MS / 1000 + " s.";
    } catch (e) {
      if (e instanceof Unauthorized) {
        askForToken("The token was refused (401): paste the current one from the workspace's serve.token.");
      } else {
        say("Cannot read keel serve: " + e.message, "offline");
      }
    } finally {
      polling = false;
    }
  }

  function renderStatus(status) {
    const ks = status.kill_switch;
    const engaged = !!(ks && ks.engaged);
    lastSwitch = engaged;
    $("switch").hidden = false;
    $("switch").dataset.engaged = String(engaged);
    const button = $("switch-button");
    button.disabled = false;
    button.setAttribute("aria-pressed", String(engaged));
    button.textContent = engaged ? "Resume actions" : "Stop all actions";
    let text = "Kill switch off: approved actions run.";
    if (engaged) {
      text = "Kill switch ON since " + when(ks.since_ms) + " (" + ks.by + ")" + (ks.reason ? ": " + ks.reason : "");
    }
    $("switch-state").textContent = text;
    const n = status.intents || {};
    const parts = [status.pending_approvals + " waiting for you"];
    for (const state of ["ready", "executed", "failed", "needs-reconcile", "rejected"]) {
      if (n[state]) parts.push(n[state] + " " + state);
    }
    $("summary").textContent = parts.join(" · ");
  }

  function renderPending(list) {
    $("pending-count").textContent = String(list.length);
    document.title = list.length ? "(" + list.length + ") keel" : "keel";
    $("pending-empty").hidden = list.length > 0;
    const container = $("pending-list");
    const ids = new Set(list.map((item) => String(item.approval.id)));
    for (const card of [...container.children]) {
      if (!ids.has(card.dataset.approval)) card.remove();
    }
    const shown = new Set([...container.children].map((card) => card.dataset.approval));
    // Cards already shown are left alone: the operator may be editing one.
    for (const item of list) {
      if (!shown.has(String(item.approval.id))) container.append(pendingCard(item));
    }
  }

  function pendingCard(item) {
    const a = item.approval;
    const intent = item.intent || {};
    const p = intent.proposal || { payload: {} };
    const id = String(a.id);
    const prefix = "approval-" + id;
    const original = JSON.stringify(p.payload, null, 2);

    const payload = el("textarea", { id: prefix + "-payload", class: "payload", rows: Math.min(12, original.split("\n").length + 1), spellcheck: "false" });
    payload.value = original;
    const reason = el("input", { id: prefix + "-reason", class: "reject-reason", type: "text", maxlength: 500 });
    const note = el("p", { class: "card-note", role: "status" });
    const approve = el("button", { type: "button", class: "approve primary" }, "Approve");
    const reject = el("button", { type: "button", class: "reject" }, "Reject");
    const buttons = [approve, reject];

    payload.addEventListener("input", () => {
      approve.textContent = payload.value.trim() === original.trim() ? "Approve" : "Approve edited";
    });

    async function decide(path, body, done) {
      buttons.forEach((b) => (b.disabled = true));
      note.textContent = "Sending…";
      try {
        const answer = await api("POST", "/approvals/" + encodeURIComponent(id) + "/" + path, body);
        card.remove();
        say(done(answer), "ok");
        slowNext = true;
        loop();
      } catch (e) {
        if (e instanceof Unauthorized) return askForToken("The token was refused (401): paste the current one.");
        note.textContent = e.message;
        buttons.forEach((b) => (b.disabled = false));
      }
    }

    approve.addEventListener("click", () => {
      let body = {};
      if (payload.value.trim() !== original.trim()) {
        try {
          body = { payload: JSON.parse(payload.value) };
        } catch (e) {
          note.textContent = "The payload is not valid JSON: " + e.message;
          payload.focus();
          return;
        }
      }
      decide("approve", body, (answer) => {
        const state = answer && answer.intent ? answer.intent.state : "approved";
        return "Approved #" + id + " (" + a.kind + "): " + state + ".";
      });
    });
    reject.addEventListener("click", () => {
      if (!reason.value.trim()) {
        note.textContent = "Say why you reject it.";
        reason.focus();
        return;
      }
      decide("reject", { reason: reason.value.trim() }, () => "Rejected #" + id + " (" + a.kind + ").");
    });

    const facts = el("dl", { class: "facts" });
    const fact = (term, value) => value && facts.append(el("dt", {}, term), el("dd", {}, value));
    fact("Why it waits", (a.reasons || []).join("; "));
    fact("Rationale", p.rationale);
    if (typeof p.confidence === "number") fact("Confidence", Math.round(p.confidence * 100) + "%");
    if (intent.key) fact("Provenance", provenance(intent));
    if (a.expires_at_ms) fact("Expires", when(a.expires_at_ms));

    const card = el(
      "article",
      { class: "card", data: { approval: id }, "aria-labelledby": prefix + "-title" },
      el("h3", { id: prefix + "-title" }, "#" + id + " " + a.kind + amount(p)),
      el("p", { class: "muted" }, "proposed by " + a.plugin + ", " + when(a.created_at_ms)),
      facts,
      el("label", { for: prefix + "-payload" }, "Payload (JSON): edit it, then approve"),
      payload,
      el(
        "div",
        { class: "actions" },
        approve,
        el("span", { class: "reject-group" }, el("label", { for: prefix + "-reason" }, "Reason"), reason, reject),
      ),
      note,
    );
    return card;
  }

  function renderDecisions(intents) {
    const rows = intents.map((i) => {
      const p = i.proposal || {};
      const confidence = typeof p.confidence === "number" ? " (confidence " + Math.round(p.confidence * 100) + "%)" : "";
      return el(
        "tr",
        { data: { key: i.key, state: i.state } },
        el("td", { class: "nowrap" }, when(i.updated_at_ms)),
        el("td", {}, p.kind + amount(p)),
        el("td", {}, badge(i.state)),
        el("td", {}, (p.rationale || "") + confidence),
        el("td", { class: "small" }, provenance(i)),
        el("td", { class: "small" }, i.receipt || i.note || ""),
      );
    });
    replaceRows($("decisions-rows"), rows, "Nothing decided yet.", 6);
  }

  function renderAudit(page) {
    const entries = Array.isArray(page) ? page : page.entries || [];
    const rows = entries.map((e) =>
      el(
        "tr",
        { data: { seq: e.seq, operation: e.operation } },
        el("td", { class: "num" }, e.seq),
        el("td", { class: "nowrap" }, when(e.at_ms)),
        el("td", {}, e.version ? e.actor + "@" + e.version : e.actor),
        el("td", {}, e.operation),
        el("td", { class: "small" }, e.target),
        el("td", {}, badge(e.decision)),
        el("td", { class: "small" }, e.reason || ""),
      ),
    );
    replaceRows($("audit-rows"), rows, "The audit log is empty.", 7);
  }

  function renderVerify(v) {
    const text = v.intact
      ? "chain intact, " + v.entries + " entries"
      : "CHAIN BROKEN: " + (v.broken || "see keel audit verify");
    $("audit-verify").textContent = "(" + text + ")";
    $("audit-verify").dataset.intact = String(!!v.intact);
  }

  function renderRuns(runs) {
    const rows = runs.slice(0, 12).map((r) =>
      el(
        "tr",
        { data: { run: r.id, state: r.state } },
        el("td", { class: "small mono" }, r.id),
        el("td", {}, r.workflow),
        el("td", {}, badge(r.state)),
        el("td", {}, r.trigger),
        el("td", { class: "nowrap" }, when(r.updated_at_ms)),
      ),
    );
    replaceRows($("runs-rows"), rows, "No runs yet.", 5);
  }

  // ---- costs ----

  /** The UTC days from `since` (YYYY-MM-DD) to today. */
  function daysSince(since, count) {
    const start = Date.parse(since + "T00:00:00Z");
    const days = [];
    for (let i = 0; i < count; i += 1) {
      const d = new Date((Number.isNaN(start) ? Date.now() - (count - 1) * 864e5 : start) + i * 864e5);
      days.push(d.toISOString().slice(0, 10));
    }
    return days;
  }

  function renderCosts(report) {
    currency = report.currency || "";
    $("costs-window").textContent = "(since " + report.since_day + ")";
    const total = report.total || {};
    const figures = [
      ["spent", "Spent", money(total.micros)],
      ["calls", "Model calls", String(total.calls || 0) + (total.cached ? " (" + total.cached + " cached)" : "")],
      ["useful", "Useful actions", String(report.useful_actions || 0)],
      ["per-action", "Per useful action", report.micros_per_useful_action == null ? "n/a" : money(report.micros_per_useful_action)],
    ];
    $("costs-summary").replaceChildren(
      ...figures.map(([key, term, value]) => el("div", { data: { figure: key } }, el("dt", {}, term), el("dd", {}, value))),
    );
    $("costs-chart").replaceChildren(chart(report));
    const rows = (report.workflows || []).map((w) =>
      el(
        "tr",
        { data: { workflow: w.name } },
        el("td", {}, w.name),
        el("td", { class: "num" }, money(w.micros)),
        el("td", { class: "num" }, w.calls),
        el("td", { class: "num" }, w.useful_actions == null ? "" : w.useful_actions),
        el("td", { class: "num" }, w.micros_per_useful_action == null ? "n/a" : money(w.micros_per_useful_action)),
      ),
    );
    replaceRows($("costs-workflows"), rows, "No model spend by workflows.", 5);
  }

  /** Bars of spend per day, drawn as SVG elements (no library). */
  function chart(report) {
    const spent = new Map((report.days || []).map((d) => [d.name, d.micros || 0]));
    const days = daysSince(report.since_day, COST_DAYS);
    const values = days.map((d) => spent.get(d) || 0);
    const max = Math.max(...values, 0);
    const [width, height, top, bottom, left] = [420, 150, 18, 22, 4];
    const plot = height - top - bottom;
    const slot = (width - left * 2) / days.length;
    const total = values.reduce((a, b) => a + b, 0);
    const root = svg("svg", {
      id: "costs-svg",
      class: "chart-svg",
      viewBox: "0 0 " + width + " " + height,
      role: "img",
      "aria-label": "Model spend per day over the last " + days.length + " days: " + money(total) + " in all",
    });
    root.append(svg("line", { class: "axis", x1: left, x2: width - left, y1: top + plot, y2: top + plot }));
    days.forEach((day, i) => {
      const h = max > 0 ? Math.max(values[i] > 0 ? 2 : 0, (values[i] / max) * plot) : 0;
      const x = left + i * slot + slot * 0.15;
      const bar = svg("rect", { class: "bar", x: x.toFixed(1), y: (top + plot - h).toFixed(1), width: (slot * 0.7).toFixed(1), height: h.toFixed(1), "data-day": day });
      bar.append(svg("title", {}, day + ": " + money(values[i])));
      root.append(bar);
      if (values[i] === max && max > 0) {
        root.append(svg("text", { class: "bar-label", x: (x + slot * 0.35).toFixed(1), y: (top + plot - h - 4).toFixed(1), "text-anchor": "middle" }, money(values[i])));
      }
    });
    const label = (i, anchor) =>
      svg("text", { class: "day-label", x: (left + i * slot + slot / 2).toFixed(1), y: height - 6, "text-anchor": anchor }, days[i].slice(5));
    root.append(label(0, "start"), label(days.length - 1, "end"));
    if (max === 0) {
      root.append(svg("text", { class: "bar-label", x: width / 2, y: top + plot / 2, "text-anchor": "middle" }, "no model spend yet"));
    }
    return root;
  }

  // ---- the kill switch ----

  async function toggleSwitch() {
    const engage = !lastSwitch;
    const button = $("switch-button");
    const reason = $("switch-reason").value.trim() || (engage ? "stopped from the dashboard" : "resumed from the dashboard");
    button.disabled = true;
    try {
      await api("POST", "/kill-switch", { engaged: engage, reason });
      $("switch-reason").value = "";
      slowNext = true;
      say(engage ? "Kill switch engaged: no action leaves keel until you resume." : "Kill switch off: actions run again.", "ok");
      await loop();
    } catch (e) {
      if (e instanceof Unauthorized) return askForToken("The token was refused (401): paste the current one.");
      say("The kill switch did not change: " + e.message, "error");
    } finally {
      button.disabled = token === null;
    }
  }

  // ---- start ----

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const given = $("token-input").value.trim();
      $("token-input").value = "";
      if (given) connect(given);
    });
    $("logout").addEventListener("click", () => askForToken("Token forgotten. Paste it again to reconnect."));
    $("switch-button").addEventListener("click", toggleSwitch);
    takeTokenFromAddress();
    const saved = sessionStorage.getItem(TOKEN_KEY);
    if (saved) connect(saved);
    else askForToken();
  });
})();
