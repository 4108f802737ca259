"""Canvas's per-token leaky bucket (``app/middleware/request_throttle.rb``).

Each access token owns a bucket that leaks ``outflow`` units per second (measured on a monotonic
clock). A request arriving while the leaked level is at or above the high-water mark is rejected
(403). An admitted request is charged ``up_front`` units while in flight, which is why about a
dozen concurrent requests fill the bucket; when it finishes the up-front charge is credited back
and its real cost added, the level being capped at ``maximum``.

Cost model (Canvas charges CPU + DB seconds, so wall-clock latency is free):
``cost = base_cost + per_item_cost * items_in_response_body`` with defaults 0.02 and 0.0004.
Injected latency and timeouts therefore never raise a request's cost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

HIGH_WATER_MARK = 600.0
MAXIMUM = 800.0
OUTFLOW = 10.0
UP_FRONT_COST = 50.0
BASE_COST = 0.02
PER_ITEM_COST = 0.0004


def request_cost(items: int, base: float = BASE_COST, per_item: float = PER_ITEM_COST) -> float:
    return base + per_item * max(0, items)


def fmt(value: float) -> str:
    """Canvas renders these headers as Ruby floats, e.g. ``600.0``."""
    return repr(float(round(value, 6)))


class LeakyBucket:
    def __init__(
        self,
        hwm: float = HIGH_WATER_MARK,
        maximum: float = MAXIMUM,
        outflow: float = OUTFLOW,
        up_front: float = UP_FRONT_COST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hwm, self.maximum, self.outflow, self.up_front = hwm, maximum, outflow, up_front
        self._clock = clock
        self._level = 0.0
        self._last = clock()
        self._lock = threading.Lock()

    def _leak(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._last) * self.outflow)
        self._last = now

    @property
    def level(self) -> float:
        with self._lock:
            self._leak()
            return self._level

    def remaining(self) -> float:
        return max(0.0, self.hwm - self.level)

    def reserve(self) -> bool:
        """Admit the request (charging the up-front cost) unless the bucket is full."""
        with self._lock:
            self._leak()
            if self._level >= self.hwm:
                return False
            self._level = min(self.maximum, self._level + self.up_front)
            return True

    def release(self, cost: float) -> float:
        """Swap the up-front charge for the real cost; returns the remaining allowance."""
        with self._lock:
            self._leak()
            self._level = min(self.maximum, max(0.0, self._level - self.up_front + cost))
            return max(0.0, self.hwm - self._level)


class Throttle:
    """Thread-safe registry of buckets keyed by access token."""

    def __init__(self, **bucket_kwargs: float) -> None:
        self._kwargs = bucket_kwargs
        self._buckets: dict[str, LeakyBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, token: str) -> LeakyBucket:
        with self._lock:
            found = self._buckets.get(token)
            if found is None:
                found = self._buckets[token] = LeakyBucket(**self._kwargs)  # type: ignore[arg-type]
            return found
