"""Real receivers for the alert tests: an HTTP server that takes the generic webhook and Slack's
Web API (``chat.postMessage``, as dagster-slack's client calls it) and can refuse the first
requests, and an SMTP server (aiosmtpd) that asks for a login."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from canvas_devstack.processes import free_port


@dataclass
class Received:
    path: str
    body: dict


@dataclass
class HttpReceiver:
    """Takes JSON (webhook, Teams) and Slack's form or JSON posts; answers 503 to the first
    ``refuse`` requests."""

    refuse: int = 0
    received: list[Received] = field(default_factory=list)
    refused: int = 0

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.lock:
                    if receiver.refused < receiver.refuse:
                        receiver.refused += 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    receiver.received.append(Received(self.path, _body(raw)))
                answer = json.dumps({"ok": True, "channel": "C1", "ts": "1.0"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def bodies(self, path_part: str = "") -> list[dict]:
        with self.lock:
            return [r.body for r in self.received if path_part in r.path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _body(raw: bytes) -> dict:
    try:
        return json.loads(raw)
    except ValueError:
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


class SmtpReceiver:
    """An SMTP server on 127.0.0.1 that accepts ``user``/``password`` (no TLS: the tests turn
    STARTTLS off) and keeps every message."""

    def __init__(self, user: str, password: str) -> None:
        self.mailbox = _Mailbox()

        def authenticator(server, session, envelope, _mechanism, auth_data) -> AuthResult:
            ok = isinstance(auth_data, LoginPassword) and (
                auth_data.login.decode(),
                auth_data.password.decode(),
            ) == (user, password)
            return AuthResult(success=ok)

        self.controller = Controller(
            self.mailbox, hostname="127.0.0.1", port=free_port(),
            authenticator=authenticator, auth_require_tls=False,
        )  # fmt: skip
        self.controller.start()

    @property
    def port(self) -> int:
        return self.controller.port

    @property
    def messages(self) -> list:
        return list(self.mailbox.messages)

    def stop(self) -> None:
        self.controller.stop()
