"""Failure injection for the sandbox, mutable at runtime by tests: latency, 5xx errors, stalls
that outlast a client's timeout, throttling storms, and scripted statuses for the next requests."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Injection:
    """What happens to one admitted request: answer ``status`` instead (None: answer
    normally), after stalling ``stall_seconds``."""

    status: int | None = None
    stall_seconds: float = 0.0


@dataclass
class Faults:
    latency_seconds: float = 0.0  # added to every request
    error_rate: float = 0.0  # fraction answered 500/502/503 (seeded rng)
    timeout_rate: float = 0.0  # fraction that sleep timeout_seconds before answering
    timeout_seconds: float = 5.0
    throttle_storm: bool = False  # every request gets the throttle 403
    fail_next: list[int] = field(default_factory=list)  # statuses for the next requests, FIFO

    def draw(self, rng: random.Random) -> Injection:
        """Decide the fate of one admitted request (call under the server's lock)."""
        status = self.fail_next.pop(0) if self.fail_next else None
        if status is None and self.error_rate and rng.random() < self.error_rate:
            status = rng.choice([500, 502, 503])
        slow = bool(self.timeout_rate) and rng.random() < self.timeout_rate
        return Injection(status, self.timeout_seconds if slow else 0.0)
