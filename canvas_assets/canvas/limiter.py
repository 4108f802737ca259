"""How many Canvas requests may be in flight, driven by what Canvas reports, and the counters a
run reports.

Canvas throttles with a leaky bucket per access token. Every request is charged 50 units up front
while Canvas serves it (credited back when it finishes), then its real cost, ``X-Request-Cost``
(the CPU + DB seconds it took); the bucket drains 10 units a second; a request that would take it
to the high-water mark (600) is refused. ``X-Rate-Limit-Remaining`` is the high-water mark minus
the bucket, measured as the request left. So the bucket admits about eleven requests in service
at once while costs are low, and fewer as cost accumulates.

``BudgetLimiter`` steers the number in flight from those reports:

* The first answer's remaining allowance, less the reserve, buys ``(remaining - reserve) / 50``
  more requests at once: a run starts at what the bucket admits, not at one.
* Then every answer's remaining allowance is a sample. After each round of answers (to requests
  sent at the current limit) the lowest sample says how many more up-front charges the bucket
  could have taken; the limit moves by that much (at most halving; upwards at most doubling, and
  by one a round from eight in flight), upwards only when requests were waiting for it. The
  reserve (``rate_limit_floor``, 150 by default) is the next request's own charge plus two
  charges of margin for the answers still on their way. It keeps about ten requests in service
  where Canvas serves eleven; one charge of margin read a semester a tenth faster but was
  throttled now and then (BENCHMARKS.md, bench/paired.py).
* Cost arriving faster than the bucket drains (``X-Request-Cost`` per second above the 10 units
  per second of outflow) lowers the allowance the next round will have: it counts now.
* An answer below the reserve lowers the limit at once; a throttled answer (which should not
  happen) cuts it by a third, and the session waits and retries the request.
* A request admitted but not yet sent (its thread waiting for the GIL while the process is
  busy) is in no answer's allowance yet, but will take its charge: each such request takes one
  request's room off every answer's.
* Requests are released at an even pace (the typical time a request takes, divided by the
  limit) rather than in a burst when several answers arrive together: a burst can reach Canvas
  while the requests it replaces are still being served there.

Requests wait in priority order: the next page of a chain (``CHAIN``) goes before fan-out work.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from canvas_assets.outcomes import Counts

UP_FRONT_COST = 50.0  # Canvas's default up-front charge per request in service
OUTFLOW = 10.0  # units per second the bucket drains by default
NEAR_EDGE = 8  # from this many in flight the limit grows by one a round

# Who goes first when requests wait for room: the next page of a chain (a list whose next page
# is known only from the previous one) holds up everything after it, so it goes before fan-out
# work; single look-ups that only fill spare room go last.
CHAIN = 0
CONTINUATION = 1
FAN_OUT = 2
FILL = 3


@dataclass
class CanvasStats(Counts):
    """Counters for one session; reported as materialization metadata."""

    requests: int = 0
    pages: int = 0
    throttle_waits: int = 0
    retries: int = 0
    cost: float = 0.0
    lowest_rate_limit_remaining: float | None = None
    # Requests by path template ("/courses/:id/sections"): which table's reads they were.
    by_path: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_path(self, template: str, requests: int = 1) -> None:
        with self._lock:
            self.by_path[template] = self.by_path.get(template, 0) + requests

    def requests_for(self, templates: tuple[str, ...]) -> int:
        with self._lock:
            return sum(self.by_path.get(template, 0) for template in templates)

    def saw_remaining(self, remaining: float) -> None:
        with self._lock:
            if (
                self.lowest_rate_limit_remaining is None
                or remaining < self.lowest_rate_limit_remaining
            ):
                self.lowest_rate_limit_remaining = remaining


@dataclass(order=True)
class Ticket:
    """One request: its place in the queue, then its slot. ``round`` is the limiter's round
    when it was sent: only answers to requests sent at the current limit steer it."""

    priority: int
    seq: int
    wake: threading.Event = field(compare=False, default_factory=threading.Event)
    admitted: bool = field(compare=False, default=False)
    on_wire: bool = field(compare=False, default=False)
    sent: float = field(compare=False, default=0.0)
    round: int = field(compare=False, default=0)


class BudgetLimiter:
    """A limit on requests in flight that follows Canvas's reported allowance (see the module
    docstring)."""

    def __init__(
        self,
        maximum: int,
        reserve: float,
        up_front: float = UP_FRONT_COST,
        outflow: float = OUTFLOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maximum = max(1, maximum)
        self.limit = 1  # until Canvas has said how much room there is
        self.reserve = reserve
        self.up_front = up_front
        self.outflow = outflow
        self.clock = clock
        self.in_flight = 0
        # Admitted but not yet sent (the thread waits for the GIL): no answer counts them yet.
        self._unsent = 0
        self.peak_in_flight = 0
        self.typical_seconds = 0.0  # running mean of the time a request takes
        self._answered = False
        self._next_send = 0.0
        self._round = 0
        self._round_lowest: float | None = None
        self._round_answers = 0
        self._round_cost = 0.0
        self._round_started = clock()
        self._round_waited = False
        self._waiting: list[Ticket] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    # -- acquire / release -----------------------------------------------------------------
    def acquire(self, priority: int = FAN_OUT) -> Ticket:
        """Wait for room; returns the ticket to hand back to ``release``. Only the first in
        line watches the clock, and only while a slot is free and it waits for the pace; when
        every slot is taken it sleeps until a ``release`` wakes it (polling the clock then kept
        the client's CPU, under the GIL, as busy as the requests themselves)."""
        ticket = Ticket(priority, next(self._seq))
        with self._lock:
            heapq.heappush(self._waiting, ticket)
            self._admit_waiting()
        while True:
            with self._lock:
                if ticket.admitted:
                    return ticket
                pacing = self._waiting[0] is ticket and self.in_flight < self.limit
                pause = max(0.0005, self._next_send - self.clock()) if pacing else None
            ticket.wake.wait(timeout=pause)
            with self._lock:
                if not ticket.admitted:
                    self._admit_waiting()
                # Cleared after admitting: the wake-up _admit_waiting gives the first in line
                # would otherwise be this thread's own, and it would spin.
                ticket.wake.clear()

    def _admit_waiting(self) -> None:
        now = self.clock()
        if self._waiting and self.in_flight >= self.limit:
            self._round_waited = True
        while self._waiting and self.in_flight < self.limit and now >= self._next_send:
            ticket = heapq.heappop(self._waiting)
            ticket.sent, ticket.round, ticket.admitted = now, self._round, True
            self.in_flight += 1
            self._unsent += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            self._next_send = max(now, self._next_send) + self.typical_seconds / self.limit
            ticket.wake.set()
        if self._waiting:
            self._waiting[0].wake.set()  # the (new) first in line starts watching the clock

    def sending(self, ticket: Ticket) -> None:
        """The admitted request goes on the wire now: from here Canvas's answers count it."""
        with self._lock:
            self._on_wire(ticket)

    def _on_wire(self, ticket: Ticket) -> None:
        if not ticket.on_wire:
            ticket.on_wire = True
            self._unsent -= 1

    def release(
        self,
        ticket: Ticket,
        remaining: float | None,
        cost: float | None = None,
        throttled: bool = False,
    ) -> None:
        """Hand the slot back with what Canvas reported for the request."""
        with self._lock:
            self._on_wire(ticket)  # (a request that failed before it was sent)
            self.in_flight -= 1
            took = self.clock() - ticket.sent
            self.typical_seconds += 0.05 * (took - self.typical_seconds) if self._round else took
            if throttled:
                self._set_limit(min(self.limit, max(1, math.floor(self.in_flight * 2 / 3))))
            elif remaining is not None:
                self._observe(ticket, remaining, cost or 0.0)
            self._admit_waiting()

    # -- steering ----------------------------------------------------------------------------
    def _room(self, remaining: float) -> int:
        """Requests more than in flight that an allowance of ``remaining`` leaves room for.
        Requests admitted but not yet sent will take their charge from it: their room is taken
        already."""
        return math.floor((remaining - self.reserve) / self.up_front) - self._unsent

    def _observe(self, ticket: Ticket, remaining: float, cost: float) -> None:
        room = self._room(remaining)
        if not self._answered:
            # The first answer: everything this client had in service is in the allowance.
            self._answered = True
            self._set_limit(self.in_flight + 1 + room)
            return
        if remaining < self.reserve:
            # Over budget already: shed the excess now rather than after the round.
            self._set_limit(min(self.limit, self.in_flight + 1) + room)
            return
        if ticket.round != self._round:
            return  # sent under an older limit: says nothing about the current one
        self._round_answers += 1
        self._round_cost += cost
        if self._round_lowest is None or remaining < self._round_lowest:
            self._round_lowest = remaining
        if self._round_answers < max(2, self.limit):
            return
        # Cost arriving faster than the bucket drains will lower the allowance: count it now.
        elapsed = max(1e-3, self.clock() - self._round_started)
        rising = max(0.0, self._round_cost / elapsed - self.outflow) * elapsed
        room = self._room(self._round_lowest - rising)
        if room > 0 and not self._round_waited:
            room = 0  # room nobody waited for says nothing about a fuller pipeline
        # Up by one a round near the bucket's edge (its lowest sample can miss a peak), faster
        # well below it; down as far as the lowest sample says, at most by half.
        step = min(room, self.limit if self.limit < NEAR_EDGE else 1)
        self._set_limit(self.limit + max(-(self.limit // 2), step))

    def _set_limit(self, limit: int) -> None:
        self.limit = max(1, min(self.maximum, limit))
        self._round += 1
        self._round_lowest = None
        self._round_answers = 0
        self._round_cost = 0.0
        self._round_started = self.clock()
        self._round_waited = bool(self._waiting) and self.in_flight >= self.limit
