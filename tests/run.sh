#!/usr/bin/env bash
# Runs every check and test of keel. This is the README's test command and
# what CI runs (.ci/run). It installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: wasm32-wasip2 target (guest components)"
rustup target add wasm32-wasip2

step "test peers and checkers: aiosmtpd, Radicale, openapi-spec-validator (pinned, from PyPI)"
python3 -m pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt

# The sentence model of the local embedder's tests (prints its own step).
bash tests/fetch-model.sh

step "browser for the dashboard test: Debian's chromium and chromium-driver"
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo_if_needed=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver
fi

step "format"
cargo fmt --all --check

step "lint (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The Python and JavaScript agents (prints its own step).
bash tests/build-polyglot.sh

step "tests (unit, component, CLI scenario, real peers, doc)"
cargo test --workspace --locked
