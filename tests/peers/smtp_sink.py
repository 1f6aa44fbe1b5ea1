"""An SMTP server for keel's connector tests (aiosmtpd), on 127.0.0.1.

Usage: python3 smtp_sink.py OUT_DIR [USER:PASSWORD]

Picks a free port, prints `ready PORT` on stdout once it accepts
connections, and writes every message it receives to OUT_DIR as N.eml (the
data, dot-unstuffed) and N.json (envelope sender, recipients, login). With
USER:PASSWORD it offers AUTH PLAIN/LOGIN without TLS and rejects other
credentials. Exits when stdin closes (the test dropped it) or on SIGTERM.
"""

import json
import logging
import os
import socket
import sys
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.out_dir, str(self.count))
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "login": session.auth_data if session.authenticated else None,
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 queued as keel-%d" % self.count


def main() -> None:
    # AUTH without TLS is the point here: loopback only, test credentials.
    warnings.simplefilter("ignore")
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    out_dir = sys.argv[1]
    credentials = sys.argv[2].split(":", 1) if len(sys.argv) > 2 else None

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = credentials is not None and [auth_data.login.decode(), auth_data.password.decode()] == credentials
        return AuthResult(success=ok, auth_data=auth_data.login.decode() if ok else None)

    port = free_port()
    controller = Controller(
        Recorder(out_dir),
        hostname="127.0.0.1",
        port=port,
        authenticator=authenticate if credentials else None,
        auth_require_tls=False,
        auth_required=credentials is not None,
    )
    controller.start()
    print("ready", port, flush=True)
    try:
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
