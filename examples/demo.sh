#!/usr/bin/env bash
# The quick start: builds keel and its agents, creates a throwaway
# workspace, installs the `hello` agent and calls it in two separate
# processes to show that its memory persists. No API key, no network
# beyond crates.io for the first build.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip2
echo "building keel and the guest components (the first build takes a few minutes)…"
cargo build -p keel-host --locked --quiet

target="${CARGO_TARGET_DIR:-target}"
keel="$target/debug/keel"
plugins="$target/guests/plugins"
ws="${KEEL_DEMO_WORKSPACE:-$(mktemp -d)/workspace}"

run() {
    printf '\n$ keel %s\n' "$*"
    "$keel" "$@"
}

run init "$ws"
export KEEL_WORKSPACE="$ws"
run install "$plugins/hello.wasm" --yes
run call hello --input '{"name":"Ada"}'
run call hello --input '{"name":"Ada"}'
run list
run audit tail
run audit verify

cat <<EOT

The second call ran in a new process and read what the first one stored.
The workspace is in $ws; look around with:
  $keel --workspace $ws inspect hello
  $keel --workspace $ws audit tail
  $keel bench            (keel against bare wasmtime on this machine)
EOT
