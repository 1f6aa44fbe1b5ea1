#!/usr/bin/env bash
# The lead-to-outreach demo, end to end, on the embedded defaults (the
# offline model provider, no API key, no network):
#
#   run.sh KEEL PLUGINS WORKSPACE
#
# KEEL is the keel binary, PLUGINS the folder of built components
# (target/guests/plugins), WORKSPACE a folder to create. It starts a local
# mail sink (aiosmtpd) and CalDAV server (Radicale) on loopback, creates the
# workspace, installs the agents and connectors, drops the first batch of
# emails into the inbox and fires the trigger, prints the report, then does
# the same with a second batch from the same companies, which the agents
# recognise. examples/demo.sh calls it after building; host/tests/demo.rs
# calls it with the test build and checks the report against the store.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keel="$1"
plugins="$2"
ws="$3"

for module in aiosmtpd radicale; do
    if ! python3 -c "import $module" 2>/dev/null; then
        echo "installing the demo's local mail and calendar servers (pinned, from PyPI)…"
        python3 -m pip install --quiet --disable-pip-version-check -r "$repo/tests/peers/requirements.txt"
        break
    fi
done

scratch="$(mktemp -d)"
cleanup() {
    [[ -n "${smtp_pid:-}" ]] && kill "$smtp_pid" 2>/dev/null || true
    [[ -n "${caldav_pid:-}" ]] && kill "$caldav_pid" 2>/dev/null || true
}
trap cleanup EXIT

# The mail sink writes every message it accepts to $ws-mail/N.eml.
mail_dir="$ws-mail"
mkdir -p "$mail_dir"
mkfifo "$scratch/smtp.in"
python3 "$repo/tests/peers/smtp_sink.py" "$mail_dir" <"$scratch/smtp.in" >"$scratch/smtp.out" 2>"$scratch/smtp.err" &
smtp_pid=$!
exec 9>"$scratch/smtp.in" # keeps the sink's stdin open until this script exits
for _ in $(seq 100); do
    grep -q '^ready' "$scratch/smtp.out" 2>/dev/null && break
    sleep 0.1
done
smtp_port="$(awk '/^ready/ {print $2}' "$scratch/smtp.out")"
[[ -n "$smtp_port" ]] || { cat "$scratch/smtp.err" >&2; echo "the mail sink did not start" >&2; exit 1; }

caldav_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$scratch/radicale.conf" <<EOF
[server]
hosts = 127.0.0.1:$caldav_port
[auth]
type = none
[rights]
type = authenticated
[storage]
filesystem_folder = $ws-calendar
[logging]
level = error
EOF
python3 -m radicale --config "$scratch/radicale.conf" </dev/null >/dev/null 2>"$scratch/radicale.err" &
caldav_pid=$!
python3 - "$caldav_port" <<'EOF'
import base64, http.client, sys, time
port = int(sys.argv[1])
for _ in range(100):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        auth = base64.b64encode(b"demo:demo").decode()
        c.request("MKCALENDAR", "/demo/work/", headers={"Authorization": "Basic " + auth})
        status = c.getresponse().status
        if status in (201, 405):
            sys.exit(0)
        sys.exit(f"MKCALENDAR answered {status}")
    except OSError:
        time.sleep(0.1)
sys.exit("the CalDAV server did not start")
EOF

run() {
    printf '\n$ keel %s\n' "$*"
    "$keel" "$@"
}

"$keel" init "$ws" >/dev/null
export KEEL_WORKSPACE="$ws"
# The agents' own log lines stay out of the way; `keel runs show` has it all.
export RUST_LOG="${RUST_LOG:-warn}"
echo demo >"$ws/caldav_password"
sed -e "s|@SMTP_PORT@|$smtp_port|" -e "s|@CALDAV_PORT@|$caldav_port|" -e "s|@WORKSPACE@|$ws|" \
    "$here/keel.toml.in" >"$ws/keel.toml"
mkdir -p "$ws/workflows" "$ws/inbox"
cp "$here/workflows/"*.toml "$ws/workflows/"
echo "workspace $ws: mail sink on 127.0.0.1:$smtp_port, CalDAV on 127.0.0.1:$caldav_port"

# The demo's components are built locally and unsigned (docs/install.md);
# what each asks for is in install.log.
for agent in extractor planner executor; do
    "$keel" install "$plugins/$agent.wasm" --yes --allow-unsigned >>"$ws-install.log" 2>&1
done
# Connectors may reach only the local servers: their manifests, with the
# outbound grant replaced, say so.
for connector in mail:"127.0.0.1:$smtp_port" calendar:"127.0.0.1:$caldav_port"; do
    name="${connector%%:*}"
    sed "s|^outbound = .*|outbound = [\"${connector#*:}\"]|" "$repo/agents/connectors/$name/plugin.toml" \
        >"$scratch/$name.toml"
    "$keel" install "$plugins/$name.wasm" --manifest "$scratch/$name.toml" --yes --allow-unsigned \
        >>"$ws-install.log" 2>&1
done
echo "installed the agents extractor, planner, executor and the connectors mail, calendar (unsigned local builds;"
echo "what each asks for: $ws-install.log)"
run list
run memory remember offer "$(cat "$here/offer.txt")"

for batch in 1 2; do
    printf '\n=== batch %s: %s emails arrive ===\n' "$batch" "$(ls "$here/emails/batch-$batch" | wc -l)"
    cp "$here/emails/batch-$batch/"*.eml "$ws/inbox/"
    run triggers tick
    echo
    python3 "$here/explain.py" "$keel" "$here/emails/batch-$batch"
    run report
done

cat <<EOT

Where to look next (export KEEL_WORKSPACE=$ws):
  keel approvals list / keel approve N     what waits for you, and decide it
  keel audit tail                          every decision, with its reason
  keel runs list / keel runs show ID       each email's run, step by step
  keel serve, then keel token link         the dashboard in a browser
  sent mail: $mail_dir
EOT
