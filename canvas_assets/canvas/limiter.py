"""How many Canvas requests may be in flight, and the counters a run reports.

Canvas throttles with a leaky bucket per access token and charges 50 units up front for every
request in flight, so concurrency is what drains the bucket.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class CanvasStats:
    """Counters for one sync run; reported as materialization metadata."""

    requests: int = 0
    pages: int = 0
    throttle_waits: int = 0
    retries: int = 0
    throttle_wait_seconds: float = 0.0
    lowest_rate_limit_remaining: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def saw_remaining(self, remaining: float) -> None:
        with self._lock:
            if (
                self.lowest_rate_limit_remaining is None
                or remaining < self.lowest_rate_limit_remaining
            ):
                self.lowest_rate_limit_remaining = remaining

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "canvas_requests": self.requests,
            "canvas_pages": self.pages,
            "canvas_throttle_waits": self.throttle_waits,
            "canvas_retries": self.retries,
        }


class AdaptiveLimiter:
    """Additive-increase / multiplicative-decrease cap on requests in flight.

    Canvas charges 50 units up front per in-flight request, so concurrency is what drains the
    bucket; halving it when ``X-Rate-Limit-Remaining`` drops below the floor frees capacity at once.
    """

    def __init__(self, initial: int, maximum: int, floor: float) -> None:
        self.maximum = max(1, maximum)
        self.limit = max(1, min(initial, self.maximum))
        self.floor = floor
        self.in_flight = 0
        self._successes = 0
        self._last_decrease = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1

    def release(self, remaining: float | None, throttled: bool = False) -> None:
        with self._cond:
            self.in_flight -= 1
            now = time.monotonic()
            low = remaining is not None and remaining < self.floor
            if throttled or low:
                # One decrease per burst: responses already in flight report the same pressure.
                if now - self._last_decrease > 0.5:
                    self.limit = max(1, self.limit // 2)
                    self._last_decrease = now
                self._successes = 0
            else:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()
