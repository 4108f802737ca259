"""Canvas's per-token leaky bucket (``app/middleware/request_throttle.rb`` and
``request_throttle/increment_bucket.lua``), and what a request costs.

Each access token owns a bucket that leaks ``outflow`` units per second (measured on a monotonic
clock). A request is first charged ``up_front`` units; if that leaves the bucket at or above the
high-water mark it is rejected (403) and the charge credited back at once, so with an empty bucket
the twelfth concurrent request is the first one refused. When an admitted request finishes, the
up-front charge is swapped for its real cost; the level stays within ``[0, maximum]``.

Cost model (Canvas charges the request's CPU + DB seconds, so network latency is free and a large
page costs more than a small one): ``BASE_COST`` plus, per item in the response body, the cost of
the endpoint's kind of object (``ITEM_COSTS``). Calibrated to ``X-Request-Cost`` values reported
from production Canvas instances: about 0.01-0.05 for a single small object, about 0.17 for a page
of 100 list items; a course with its teachers, account and student count costs more to render than
a user with an email. A page of 100 enrollments with grades costs 0.16, of 100 courses with their
includes 0.31, of 100 users with email 0.09.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

HIGH_WATER_MARK = 600.0
MAXIMUM = 800.0
OUTFLOW = 10.0
UP_FRONT_COST = 50.0
BASE_COST = 0.01
PER_ITEM_COST = 0.0004  # anything not in ITEM_COSTS (accounts, terms)
ITEM_COSTS = {"courses": 0.003, "enrollments": 0.0015, "sections": 0.001, "users": 0.0008}


def request_cost(items: int, base: float = BASE_COST, per_item: float = PER_ITEM_COST) -> float:
    return base + per_item * max(0, items)


def cost_of(kind: str | None, items: int) -> float:
    """CPU + DB seconds of a request whose body holds ``items`` objects of ``kind``."""
    return request_cost(items, per_item=ITEM_COSTS.get(kind or "", PER_ITEM_COST))


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

    def _increment(self, amount: float) -> None:
        """Leak, then add ``amount``, exactly as increment_bucket.lua does (a leak may take the
        level below zero before the amount is added; the result is clamped)."""
        now = self._clock()
        if self._level > 0:
            self._level -= (now - self._last) * self.outflow
        self._last = now
        self._level = min(self.maximum, max(0.0, self._level + amount))

    @property
    def level(self) -> float:
        with self._lock:
            self._increment(0.0)
            return self._level

    def remaining(self) -> float:
        return max(0.0, self.hwm - self.level)

    def reserve(self) -> bool:
        """Charge the up-front cost; False (and the charge credited back) when that fills the
        bucket to the high-water mark: the request is throttled."""
        with self._lock:
            self._increment(self.up_front)
            if self._level >= self.hwm:
                self._increment(-self.up_front)
                return False
            return True

    def release(self, cost: float) -> float:
        """Swap the up-front charge for the real cost; returns the remaining allowance."""
        with self._lock:
            self._increment(cost - self.up_front)
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
