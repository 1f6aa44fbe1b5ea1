#!/usr/bin/env bash
# Runs every check and test of keel. This is the README's test command and
# what CI runs (.ci/run). It installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target (guest components)"
rustup target add wasm32-wasip2

step "test peers: aiosmtpd and Radicale (pinned, from PyPI)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt

step "format"
cargo fmt --all --check

step "lint (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests (unit, component, CLI scenario, real peers, doc)"
cargo test --workspace --locked
