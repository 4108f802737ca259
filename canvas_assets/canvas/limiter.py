"""How many Canvas requests may be in flight, driven by what Canvas reports, and the counters a
run reports.

Canvas throttles with a leaky bucket per access token. Every request is charged 50 units up front
while Canvas serves it (credited back when it finishes), then its real cost, ``X-Request-Cost``
(the CPU + DB seconds it took); the bucket drains 10 units a second; a request that would take it
to the high-water mark (600) is refused. ``X-Rate-Limit-Remaining`` is the high-water mark minus
the bucket, measured as the request left. So the bucket admits about eleven requests in service
at once while costs are low, and fewer as cost accumulates.

``BudgetLimiter`` keeps two books:

* **The allowance as this client knows it** (``Allowance``): the highest
  ``X-Rate-Limit-Remaining`` reported, less one up-front charge for every request in flight
  (from its admission to its answer, longer than Canvas holds it), less the reported costs not
  yet drained at the bucket's outflow, less any use the answers show beyond those (another
  user of the token, a slower outflow). So it never overstates the room a sole user of the
  token has, whatever the network or the process's GIL delays. A request is admitted only
  while this allowance keeps the reserve (``rate_limit_floor``, 60 by default: the request's
  own charge and ten units for costs still on their way), and one request always may go when
  none is in flight. No answer can be stale here: a request that reaches Canvas after the
  answer was measured is charged already. So the client never has more requests in Canvas's
  service than the bucket admits (eleven with the defaults).
* **A limit on requests in flight**, steered by the samples themselves: the first answer's
  remaining allowance, less the reserve, buys ``(remaining - reserve) / 50`` more requests at
  once; then after each round of answers (to requests sent at the current limit) the lowest
  sample says how many more up-front charges the bucket could have taken; the limit moves by
  that much (at most halving; upwards at most doubling, and by one a round from eight in
  flight), upwards only when requests were waiting for it. Cost arriving faster than the
  bucket drains counts now; an answer below the reserve lowers the limit at once; a throttled
  answer (which should not happen) cuts it by a third, and the session waits and retries.
  Requests admitted but not yet sent are in no answer's sample: each takes one request's room
  off every answer's. Samples miss requests still on their way to Canvas, so this limit can
  run above what the bucket holds; the allowance is what keeps the bucket safe. Its price: a
  request counts from its admission to its answer, so with a long network round trip fewer
  than eleven are in Canvas's service at once (BENCHMARKS.md, ``--network-ms``).

Answers free their slots at once: the next request goes as soon as both books allow it (a
freed slot held back for an even pace left the pipe emptier; BENCHMARKS.md).

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
    on_wire: bool = field(compare=False, default=False)
    round: int = field(compare=False, default=0)


class Allowance:
    """Canvas's remaining allowance for this client's token as the client can know it (see the
    module docstring); ``None`` until Canvas has answered.

    It is the highest allowance Canvas has reported (the bucket at its emptiest: the high-water
    mark can be no lower) less three things: an up-front charge for every request in flight,
    from its admission to its answer; the costs reported and not yet drained at the bucket's
    outflow; and any use the answers show beyond those (another user of the token). The outflow
    drains costs only: Canvas's bucket drains the up-front charges too, but stops at empty, and
    the client cannot tell when its requests are all out of Canvas's service (their answers on
    the way back): counting that drain overstated the room by a charge or two after a lull."""

    def __init__(self, up_front: float, outflow: float, clock: Callable[[], float]) -> None:
        self.up_front, self.outflow, self.clock = up_front, outflow, clock
        self._ceiling: float | None = None
        self._charges = 0.0
        self._owed = 0.0  # costs and unexplained use, not yet drained
        self._at = clock()

    def now(self) -> float | None:
        """The allowance now, the outflow since the last look drained."""
        at = self.clock()
        self._owed = max(0.0, self._owed - self.outflow * (at - self._at))
        self._at = at
        if self._ceiling is None:
            return None
        return self._ceiling - self._charges - self._owed

    def charge(self) -> None:
        """A request admitted: it holds an up-front charge until its answer."""
        self._charges += self.up_front

    def unanswered(self, sent: bool) -> None:
        """A request that failed without a report: never sent, or Canvas may still hold its
        charge for a while (a timeout), which then drains like a cost."""
        self._charges -= self.up_front
        if sent:
            self._owed += self.up_front

    def answered(self, remaining: float, cost: float) -> None:
        """An answer reporting ``remaining``: its charge is swapped for its ``cost``. Canvas
        measured ``remaining`` before any request this client sent later arrived, so it caps
        the allowance but never raises it above the count."""
        self._charges -= self.up_front
        self._owed += cost
        self._ceiling = max(self._ceiling or 0.0, remaining)
        allowance = self.now()
        if allowance is not None and allowance > remaining:
            self._owed += allowance - remaining


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
        self.allowance = Allowance(up_front, outflow, clock)
        self._answered = False
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
        """Wait for room; returns the ticket to hand back to ``release``. A waiting request
        sleeps until a ``release`` admits it (polling instead kept the client's CPU, under the
        GIL, as busy as the requests themselves)."""
        ticket = Ticket(priority, next(self._seq))
        with self._lock:
            heapq.heappush(self._waiting, ticket)
            self._admit_waiting()
        ticket.wake.wait()
        return ticket

    def _admit_waiting(self) -> None:
        if self._waiting and self.in_flight >= self.limit:
            self._round_waited = True
        while self._waiting and self.in_flight < self.limit and self._bucket_admits():
            ticket = heapq.heappop(self._waiting)
            ticket.round = self._round
            self.allowance.charge()
            self.in_flight += 1
            self._unsent += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            ticket.wake.set()

    def _bucket_admits(self) -> bool:
        """Room for one more charge. With nothing in flight one request goes whatever the
        allowance says: Canvas's answer is the news (a throttled one is waited out)."""
        allowance = self.allowance.now()
        return allowance is None or self.in_flight == 0 or allowance >= self.reserve

    def sending(self, ticket: Ticket) -> None:
        """The admitted request goes on the wire now: from here Canvas's answers count it."""
        with self._lock:
            self._on_wire(ticket)

    def _on_wire(self, ticket: Ticket) -> None:
        if not ticket.on_wire:
            ticket.on_wire = True
            self._unsent -= 1

    def pass_on(self, ticket: Ticket, remaining: float, cost: float) -> None:
        """What Canvas reported for a page whose chain goes on: the slot and its charge stay
        with ``ticket`` for the next page (``sending`` it again), which would otherwise wait for
        the next answer behind fan-out work that took the slot; the chain waits on each page."""
        with self._lock:
            self.allowance.answered(remaining, cost)
            self.allowance.charge()
            self.in_flight -= 1  # what _observe counts: the others in flight
            self._observe(ticket, remaining, cost)
            self.in_flight += 1
            ticket.on_wire, ticket.round = False, self._round
            self._unsent += 1

    def release(
        self,
        ticket: Ticket,
        remaining: float | None,
        cost: float | None = None,
        throttled: bool = False,
    ) -> None:
        """Hand the slot back with what Canvas reported for the request."""
        with self._lock:
            if remaining is None and not throttled:
                self.allowance.unanswered(sent=ticket.on_wire)
            self._on_wire(ticket)
            self.in_flight -= 1
            if throttled:  # Canvas credited its charge back; the allowance was short
                self.allowance.answered(self.up_front if remaining is None else remaining, 0.0)
                self._set_limit(min(self.limit, max(1, math.floor(self.in_flight * 2 / 3))))
            elif remaining is not None:
                self.allowance.answered(remaining, cost or 0.0)
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
