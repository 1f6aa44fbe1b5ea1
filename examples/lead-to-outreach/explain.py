"""Prints, for each email of a batch, what the workflow run made of it.

Usage: python3 explain.py KEEL BATCH_DIR   (KEEL_WORKSPACE set)

Reads `keel runs list --json` (the runs' step outputs): the extractor's
label and lead, the planner's verdict and what memory recalled about the
sender's company, and the executor's proposals with what the kernel did.
"""

import json
import os
import subprocess
import sys

keel, batch = sys.argv[1], sys.argv[2]
files = set(os.listdir(batch))
runs = json.loads(subprocess.run([keel, "runs", "list", "--json"], check=True, capture_output=True, text=True).stdout)
runs = sorted((r for r in runs if r["input"].get("file") in files), key=lambda r: r["input"]["file"])
outbox = json.loads(subprocess.run([keel, "outbox", "--json"], check=True, capture_output=True, text=True).stdout)
state_of = {i["key"]: i["state"] for i in outbox}


def what_happened(result):
    """`queued KEY` becomes the intent's state now, e.g. `executed`."""
    if result.startswith("queued "):
        return state_of.get(result.split(" ", 1)[1], "queued")
    return result
for run in runs:
    out = {step: s.get("output") or {} for step, s in run["steps"].items()}
    extract, plan, act = out.get("extract", {}), out.get("plan", {}), out.get("act", {})
    name = run["input"]["file"]
    if "skipped" in extract:
        print(f"  {name:<28} {extract.get('label', '?'):<8} skipped: {extract['skipped']}")
        continue
    lead = extract.get("lead", {})
    who = f"{lead.get('name')} ({lead.get('company')})"
    seen = "new contact" if extract.get("new") else f"known sender, message {extract.get('messages')}"
    verdict = f"{'qualified' if plan.get('qualified') else 'not qualified'}, score {plan.get('score')}"
    print(f"  {name:<28} {extract.get('label', '?'):<8} {who}: {seen}; {verdict}")
    for hit in plan.get("history", [])[:1]:
        print(f"  {'':<37} recalled: {hit['text'][:110]}")
    for p in act.get("proposed", []):
        print(f"  {'':<37} {p['kind']}: {what_happened(p['result'])[:75]}")
