"""Failure injection for the sandbox, mutable at runtime by tests: latency, 5xx errors, stalls
that outlast a client's timeout, throttling storms, connection resets, a page of a paginated
list that fails (or is cut off halfway), scripted statuses for the next requests, and schema
drift (fields added to or dropped from Canvas's objects), and an outage (every request answered
503 for a while: ``outage``). ``counts`` says what was injected."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Injection:
    """What happens to one admitted request: answer ``status`` instead (None: answer
    normally), after stalling ``stall_seconds``; or drop the connection with no answer
    (``reset``); or answer but cut the body off halfway (``truncate``)."""

    status: int | None = None
    stall_seconds: float = 0.0
    reset: bool = False
    truncate: bool = False


@dataclass
class PageFault:
    """Fail page ``page`` of every paginated list whose path contains ``path`` — after the
    pages before it were served — ``times`` times, with ``action``: ``status`` (answer
    ``status``), ``reset`` (no answer) or ``truncate`` (half a body). ``page`` None fails the
    requests for one object: those whose path ends with ``path`` and name no page."""

    path: str
    page: int | None = 2
    action: str = "truncate"
    status: int = 500
    times: int = 1


@dataclass
class Faults:
    latency_seconds: float = 0.0  # added to every request
    error_rate: float = 0.0  # fraction answered 500/502/503 (seeded rng)
    timeout_rate: float = 0.0  # fraction that sleep timeout_seconds before answering
    timeout_seconds: float = 5.0
    throttle_storm: bool = False  # every request gets the throttle 403
    fail_next: list[int] = field(default_factory=list)  # statuses for the next requests, FIFO
    fail_after: int = 0  # ...starting after this many more requests (a burst mid-sync)
    reset_rate: float = 0.0  # fraction whose connection is reset without an answer
    reset_next: int = 0  # the next n requests are reset
    page_faults: list[PageFault] = field(default_factory=list)
    extra_fields: dict[str, Any] = field(default_factory=dict)  # added to every object
    drop_fields: dict[str, tuple[str, ...]] = field(default_factory=dict)  # path part → fields
    counts: Counter[str] = field(default_factory=Counter)  # injected so far, by kind
    outage_until: float = 0.0  # time.monotonic() until which every request is answered 503

    def outage(self, seconds: float) -> None:
        """Canvas down for ``seconds`` from now: every request answered 503."""
        self.outage_until = time.monotonic() + seconds

    def draw(self, rng: random.Random, path: str = "", page: str | None = None) -> Injection:
        """Decide the fate of one admitted request (call under the server's lock)."""
        if time.monotonic() < self.outage_until:
            self.counts["outage"] += 1
            return Injection(status=503)
        paged = self._page_fault(path, page)
        if paged is not None:
            return paged
        if self.reset_next > 0 or (self.reset_rate and rng.random() < self.reset_rate):
            self.reset_next = max(0, self.reset_next - 1)
            self.counts["reset"] += 1
            return Injection(reset=True)
        status = None
        if self.fail_next and self.fail_after > 0:
            self.fail_after -= 1
        elif self.fail_next:
            status = self.fail_next.pop(0)
        if status is None and self.error_rate and rng.random() < self.error_rate:
            status = rng.choice([500, 502, 503])
        slow = bool(self.timeout_rate) and rng.random() < self.timeout_rate
        if status is not None:
            self.counts[f"status {status}"] += 1
        if slow:
            self.counts["stall"] += 1
        return Injection(status, self.timeout_seconds if slow else 0.0)

    def _page_fault(self, path: str, page: str | None) -> Injection | None:
        for fault in self.page_faults:
            if fault.page is None:
                hit = path.endswith(fault.path) and page is None
            else:
                hit = fault.path in path and page == str(fault.page)
            if fault.times > 0 and hit:
                fault.times -= 1
                self.counts[f"page {fault.action}"] += 1
                if fault.action == "reset":
                    return Injection(reset=True)
                if fault.action == "truncate":
                    return Injection(truncate=True)
                return Injection(status=fault.status)
        return None

    def count(self, kind: str) -> None:
        self.counts[kind] += 1

    def reshape(self, path: str, body: Any) -> Any:
        """Schema drift: the answer with ``extra_fields`` added to, and ``drop_fields`` removed
        from, each object (a list's items, or the object itself)."""
        dropped = {f for part, fields in self.drop_fields.items() if part in path for f in fields}
        if not (self.extra_fields or dropped):
            return body
        if isinstance(body, bytes):  # a page the server rendered already
            body = json.loads(body)

        def one(item: Any) -> Any:
            if not isinstance(item, dict):
                return item
            kept = {k: v for k, v in item.items() if k not in dropped}
            return {**kept, **self.extra_fields}

        return [one(item) for item in body] if isinstance(body, list) else one(body)


def reset_connection(environ: dict) -> ConnectionResetError:
    """Tear the connection down with no answer (linger 0: a TCP reset where the stack allows);
    raise the returned error from the WSGI app, which werkzeug treats as a dropped connection."""
    sock = environ.get("werkzeug.socket")
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
    return ConnectionResetError("sandbox: injected connection reset")


def cut_halfway(
    response: Any, environ: dict, start_response: Callable[..., Any]
) -> Iterator[bytes]:
    """Send the response's headers (with its full Content-Length) and half its body, then reset
    the connection: the client sees a page that broke off mid-transfer."""
    body = response.get_data()
    start_response(response.status, list(response.headers.items()))
    yield body[: len(body) // 2]
    raise reset_connection(environ)
