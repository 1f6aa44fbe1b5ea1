#!/usr/bin/env bash
# Builds the extractor agent in Python and in JavaScript (examples/extractor-python,
# examples/extractor-js) into components for host/tests/polyglot_agents.rs:
#
#   target/guests/polyglot/extractor-python.component.wasm   componentize-py output
#   target/guests/polyglot/extractor-js.component.wasm       componentize-js output
#   target/guests/polyglot/extractor-python.wasm             ... with plugin.toml packed in
#   target/guests/polyglot/extractor-js.wasm                 (by `keel pack`)
#
# (`target` is $CARGO_TARGET_DIR when set, as for host/build.rs.)
#
# The toolchains are pinned and installed here: componentize-py (PyPI) into a
# venv under target/polyglot/, componentize-js (npm) by `npm ci` from the
# example's package-lock.json. A component is rebuilt only when its inputs
# (the sources, plugin.toml, wit/, this script, the tool versions) changed.
# The packed files need a keel binary: $KEEL, else target/debug/keel if it
# exists; without one only the components are written (the test packs them
# itself with keel_host::plugin::package::pack).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

COMPONENTIZE_PY_VERSION=0.25.1   # componentize-js: examples/extractor-js/package.json
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target=$root/$target ;; esac
out=$target/guests/polyglot
venv=$target/polyglot/venv
mkdir -p "$out"

printf '\n==> polyglot agents: componentize-py %s and componentize-js (pinned) into %s\n' \
  "$COMPONENTIZE_PY_VERSION" "$out"

# --- toolchains ------------------------------------------------------------
if [ "$("$venv/bin/componentize-py" --version 2>/dev/null | awk '{print $2}')" != "$COMPONENTIZE_PY_VERSION" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

js=examples/extractor-js
lock_sum=$(sha256sum "$js/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$js/node_modules/.keel-lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" >"$js/node_modules/.keel-lock-sha256"
fi

keel=${KEEL:-$target/debug/keel}
[ -x "$keel" ] || keel=

# --- builds ----------------------------------------------------------------
# inputs_sum DIR TOOL_VERSION: one hash over everything a component is built from.
inputs_sum() {
  {
    echo "$2"
    sha256sum "$0" wit/*.wit
    (cd "$1" && find . -path ./node_modules -prune -o -path ./__pycache__ -prune -o -path ./.venv -prune -o -type f \
      ! -name '*.wasm' ! -name '.gitignore' ! -name 'README.md' -print | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

# build NAME DIR TOOL_VERSION COMMAND...: runs COMMAND (which writes
# $out/NAME.component.wasm) unless the inputs are unchanged, then packs.
build() {
  local name=$1 dir=$2 version=$3
  shift 3
  local component="$out/$name.component.wasm" stamp="$out/$name.inputs"
  local sum
  sum=$(inputs_sum "$dir" "$version")
  if [ -f "$component" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sum" ]; then
    echo "$name: up to date ($(du -h "$component" | cut -f1))"
  else
    rm -f "$stamp" "$component" "$out/$name.wasm"
    local started=$SECONDS
    "$@"
    echo "$sum" >"$stamp"
    echo "$name: built in $((SECONDS - started)) s ($(du -h "$component" | cut -f1))"
  fi
  if [ -n "$keel" ]; then
    if [ ! -f "$out/$name.wasm" ] || [ "$out/$name.wasm" -ot "$component" ] || [ "$out/$name.wasm" -ot "$dir/plugin.toml" ]; then
      "$keel" pack "$component" --manifest "$dir/plugin.toml" -o "$out/$name.wasm" >/dev/null
    fi
    echo "$name: packed as $out/$name.wasm"
  else
    rm -f "$out/$name.wasm"
    echo "$name: no keel binary to pack with (cargo build, or set KEEL): the test packs it"
  fi
}

py=examples/extractor-python
# componentize-py looks for the module `app` in the current folder, so it runs
# inside the example's folder.
build_python() {
  (cd "$py" && "$venv/bin/componentize-py" -d "$root/wit" -w agent \
    componentize app -o "$out/extractor-python.component.wasm" | sed '/^Component built successfully$/d')
  rm -rf "$py/__pycache__"
}
build extractor-python "$py" "componentize-py $COMPONENTIZE_PY_VERSION" build_python

build extractor-js "$js" "node $(node --version)" \
  node "$js/build.mjs" "$out/extractor-js.component.wasm"
