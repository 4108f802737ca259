"""The least time any client needs to read a term from this sandbox: its floor.

A term is read as a chain of list pages (the terms, then the term's course list, page after page,
each next page known only from the previous one's ``Link``), each course's section and
enrollment lists (at least one page each, started once the course's page of the list arrived),
and the people enrolled: pages of the account user list (two chains, one from each end) and, for
whoever those pages do not reach, one ``GET /users/:id`` each.

Three lower bounds hold for every client, whatever its schedule:

* **chain**: the pages of one chain come one after another, each taking the network round trip
  plus the time Canvas spends on it;
* **in service**: Canvas admits a request only while the bucket stays under the high-water mark
  with the request's up-front charge added, so at most ``ceil(hwm / up_front) - 1`` (11) requests
  are being served at once: the summed server time divided by 11;
* **outflow**: the summed cost, less what the bucket can hold (hwm - up_front), drains at
  ``outflow`` units per second.

The floor is the largest of the three for the best split of the people between account pages
and single GETs (enrolled people are assumed spread evenly through the account list).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from .institution import Institution
from .throttle import HIGH_WATER_MARK, OUTFLOW, UP_FRONT_COST, cost_of

PER_PAGE = 100


@dataclass(frozen=True)
class TermShape:
    """How much a term holds, as a client reading it sees it."""

    sections_per_course: tuple[int, ...]
    enrollments_per_course: tuple[int, ...]
    people: int
    account_users: int
    terms: int

    @property
    def courses(self) -> int:
        return len(self.sections_per_course)

    def as_dict(self) -> dict[str, int]:
        return {
            "courses": self.courses,
            "sections": sum(self.sections_per_course),
            "enrollments": sum(self.enrollments_per_course),
            "people": self.people,
            "account_users": self.account_users,
        }


def term_shape(
    inst: Institution,
    term_id: int,
    course_states: Iterable[str],
    enrollment_states: Iterable[str],
) -> TermShape:
    """What a client listing ``term_id``'s courses in ``course_states`` and their enrollments
    in ``enrollment_states`` reads."""
    course_states, enrollment_states = set(course_states), set(enrollment_states)
    sections, enrollments, people = [], [], set()
    for course in sorted(inst.courses.values(), key=lambda c: c["id"]):
        if course["enrollment_term_id"] != term_id or course["workflow_state"] not in course_states:
            continue
        section_ids = inst.sections_by_course.get(course["id"], [])
        sections.append(
            sum(1 for s in section_ids if inst.sections[s]["workflow_state"] != "deleted")
        )
        kept = [
            inst.enrollments[e]
            for e in inst.enrollments_by_course.get(course["id"], [])
            if inst.enrollments[e]["enrollment_state"] in enrollment_states
        ]
        enrollments.append(len(kept))
        people.update(e["user_id"] for e in kept)
    account = sum(1 for u in inst.users.values() if u["workflow_state"] != "deleted")
    terms = sum(1 for t in inst.terms.values() if t["workflow_state"] != "deleted")
    return TermShape(tuple(sections), tuple(enrollments), len(people), account, terms)


def pages(count: int) -> int:
    """Pages of a list of ``count`` items: an empty list is still one request."""
    return max(1, math.ceil(count / PER_PAGE))


def _list_costs(kind: str, count: int) -> list[float]:
    full, rest = divmod(count, PER_PAGE)
    sizes = [PER_PAGE] * full + ([rest] if rest or not full else [])
    return [cost_of(kind, n) for n in sizes]


@dataclass(frozen=True)
class Floor:
    seconds: float
    chain: float
    in_service: float
    outflow: float
    requests: int
    account_user_pages: int
    user_gets: int

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def in_service_limit(hwm: float = HIGH_WATER_MARK, up_front: float = UP_FRONT_COST) -> int:
    return math.ceil(hwm / up_front) - 1


def term_floor(
    shape: TermShape,
    latency: float,
    server_time: bool,
    network: float = 0.0,
    hwm: float = HIGH_WATER_MARK,
    up_front: float = UP_FRONT_COST,
    outflow: float = OUTFLOW,
) -> Floor:
    """The floor of reading ``shape`` from a sandbox that serves each request in ``latency``
    seconds plus, when ``server_time``, its cost in seconds, ``network`` seconds away."""

    def busy(cost: float) -> float:  # seconds in service, holding an up-front charge
        return latency + (cost if server_time else 0.0)

    term_costs = _list_costs("terms", shape.terms)
    course_costs = _list_costs("courses", shape.courses)
    per_course = [
        _list_costs("sections", s) + _list_costs("enrollments", e)
        for s, e in zip(shape.sections_per_course, shape.enrollments_per_course, strict=True)
    ]
    fixed = term_costs + course_costs + [c for costs in per_course for c in costs]
    head = sum(network + busy(c) for c in term_costs + course_costs)
    # The last page's courses start their lists once that page arrived.
    tail = max((network + busy(max(costs)) for costs in per_course[-PER_PAGE:]), default=0.0)
    account_costs = _list_costs("users", shape.account_users)
    get_cost = cost_of("users", 1)
    slots = in_service_limit(hwm, up_front)
    fixed_cost, fixed_busy = sum(fixed), sum(busy(c) for c in fixed)
    best: Floor | None = None
    read_cost = read_busy = 0.0
    for read in range(len(account_costs) + 1):  # account pages read; single GETs for the rest
        if read:
            read_cost += account_costs[read - 1]
            read_busy += busy(account_costs[read - 1])
        gets = math.ceil(shape.people * (1 - read / len(account_costs))) if shape.people else 0
        cost = fixed_cost + read_cost + gets * get_cost
        longest = max((read + 1) // 2 * (network + busy(account_costs[0])), head + tail)
        served = (fixed_busy + read_busy + gets * busy(get_cost)) / slots
        drained = max(0.0, (cost - (hwm - up_front)) / outflow)
        seconds = max(longest, served, drained)
        if best is None or seconds < best.seconds:
            requests = len(fixed) + read + gets
            best = Floor(seconds, longest, served, drained, requests, read, gets)
    assert best is not None
    return best
