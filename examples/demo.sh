#!/usr/bin/env bash
# The quick start: builds keel and its agents, then runs the lead-to-outreach
# workflow end to end on the embedded defaults (the offline model provider:
# no API key, no network beyond the package registries for the first build
# and the demo's local mail and calendar servers). See
# examples/lead-to-outreach/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
echo "building keel and the guest components (the first build takes a few minutes)…"
cargo build -p keel-host --locked --quiet

target="${CARGO_TARGET_DIR:-target}"
ws="${KEEL_DEMO_WORKSPACE:-$(mktemp -d)/workspace}"
exec bash examples/lead-to-outreach/run.sh "$PWD/$target/debug/keel" "$PWD/$target/guests/plugins" "$ws"
