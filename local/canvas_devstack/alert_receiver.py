"""The dev stack's alert receiver (``canvas-assets dev --alerts``): a local endpoint for the
generic webhook (CANVAS_ALERT_WEBHOOK_URL) that prints each alert in the terminal, so alerts
and recoveries can be watched while the sandbox fails (``POST /_sandbox/outage``)."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from canvas_devstack.processes import free_port


def format_alert(alert: dict) -> str:
    """One alert as a terminal line: status, institution and semester, summary, details, link."""
    where = alert.get("institution") or "?"
    if alert.get("semester"):
        where += f"/{alert['semester']}"
    parts = [f"ALERT {str(alert.get('status', '?')).upper()} [{where}, {alert.get('kind')}]"]
    parts.append(str(alert.get("summary", "")))
    parts += [str(alert[k]) for k in ("details", "url") if alert.get(k)]
    return " | ".join(parts)


class _Printer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            line = format_alert(json.loads(raw))
        except (ValueError, AttributeError):
            line = f"ALERT (not JSON): {raw[:200]!r}"
        print(line, flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def start_alert_receiver(stack: contextlib.ExitStack) -> str:
    """Serve the receiver on 127.0.0.1 until ``stack`` closes; returns its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Printer)
    threading.Thread(target=server.serve_forever, daemon=True, name="alert-receiver").start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_address[1]}/alerts"
