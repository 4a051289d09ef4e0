#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for the SMTP transport's tests (tests/it/smtp.rs).

Listens on --host/--port (port 0: a free one) and prints `ready port=N` once it answers. Each
message it accepts is written to --out as `<n>.eml` (the bytes received, dot-stuffing undone)
and `<n>.json`: the envelope (mail_from, rcpt_tos), whether it came over TLS and who
authenticated, and the message as Python's email package parses it (headers decoded, the text
part, each attachment's filename, type, size and SHA-256).

Options:
  --cert PEM --key PEM     the server's certificate and key (for --starttls / --implicit-tls)
  --starttls               offer STARTTLS (with --cert/--key)
  --require-starttls       refuse every command but EHLO/NOOP/QUIT before STARTTLS
  --implicit-tls           TLS from the first byte (SMTPS, port 465 style)
  --auth USER:PASSWORD     require AUTH (PLAIN or LOGIN) with these credentials
  --no-auth-plain          offer AUTH LOGIN only
  --reject-rcpt TEXT       answer 550 to RCPT TO addresses containing TEXT
  --defer-rcpt TEXT        answer 450 to RCPT TO addresses containing TEXT
"""

import argparse
import email
import email.policy
import hashlib
import json
import os
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out, reject, defer, implicit_tls):
        self.out = out
        self.implicit_tls = implicit_tls
        self.reject = reject
        self.defer = defer
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject and self.reject in address:
            return "550 5.1.1 mailbox unavailable"
        if self.defer and self.defer in address:
            return "450 4.2.1 mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        raw = envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        attachments = []
        text = None
        for part in message.walk():
            if part.is_multipart():
                continue
            if part.get_content_disposition() == "attachment":
                payload = part.get_payload(decode=True)
                attachments.append({
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "size": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                })
            elif part.get_content_type() == "text/plain" and text is None:
                text = part.get_content()
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            # aiosmtpd only records its own STARTTLS in session.ssl.
            "tls": session.ssl is not None or self.implicit_tls,
            "authenticated": bool(session.authenticated),
            "login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "headers": {
                "subject": str(message["subject"]) if message["subject"] is not None else None,
                "message_id": message["message-id"],
                "from": message["from"],
                "to": message["to"],
                "date": message["date"],
                "mime_version": message["mime-version"],
                "content_type": message.get_content_type(),
            },
            "defects": [type(d).__name__ for part in message.walk() for d in part.defects],
            "text": text,
            "attachments": attachments,
            "max_line": max((len(l) for l in raw.split(b"\r\n")), default=0),
        }
        tmp = os.path.join(self.out, f".{n}.tmp")
        with open(tmp, "wb") as f:
            f.write(raw)
        os.rename(tmp, os.path.join(self.out, f"{n}.eml"))
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.out, f"{n}.json"))
        return "250 2.0.0 OK queued"


class AnyPortController(Controller):
    """A Controller that may listen on port 0 and learns the port it was given."""

    async def _create_server(self):
        server = await super()._create_server()
        self.port = server.sockets[0].getsockname()[1]
        return server


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--require-starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--no-auth-plain", action="store_true")
    p.add_argument("--reject-rcpt")
    p.add_argument("--defer-rcpt")
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)

    context = None
    if a.starttls or a.implicit_tls:
        if not (a.cert and a.key):
            sys.exit("--starttls and --implicit-tls need --cert and --key")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)

    kwargs = {"ident": "smtp_receiver"}
    if a.starttls:
        kwargs["tls_context"] = context
        kwargs["require_starttls"] = a.require_starttls
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == user.encode() and auth_data.password == password.encode()
            return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

        kwargs["authenticator"] = authenticator
        kwargs["auth_required"] = True
        if a.no_auth_plain:
            kwargs["auth_exclude_mechanism"] = ["PLAIN"]
        # Implicit TLS is TLS too; aiosmtpd only knows its own STARTTLS.
        kwargs["auth_require_tls"] = not a.implicit_tls

    controller = AnyPortController(
        Handler(a.out, a.reject_rcpt, a.defer_rcpt, a.implicit_tls),
        hostname=a.host,
        port=a.port,
        ssl_context=context if a.implicit_tls else None,
        server_hostname="smtp.test",
        **kwargs,
    )
    controller.start()
    print(f"ready port={controller.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
