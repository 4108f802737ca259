"""Route landed events to semesters: resolve → decide → persist.

Every landed event names a course directly, through its enrollment (``enrollment_state_*``) or
through its person (``user_*``, routed to every semester the person is enrolled in). Resolving
asks the warehouse first and Canvas only for objects the warehouse has never seen, within a
budget of look-ups and a deadline, so a sensor tick stays short. Deciding is a pure function;
persisting writes the routes in one transaction.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import psycopg

from canvas_assets.canvas import (
    CanvasError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasSession,
)
from canvas_assets.live_events import store
from canvas_assets.settings import semester_matches
from canvas_assets.tables import semester_key

# Look-ups run concurrently (the session's limiter caps them in flight), so a tick routes a
# burst of hundreds of never-seen courses; the deadline still bounds the tick.
MAX_REST_LOOKUPS = 400


@dataclass
class RouteResult:
    routed: int = 0
    skipped: int = 0
    out_of_target: int = 0
    unresolved: int = 0
    lookup_errors: int = 0
    lookups: int = 0  # Canvas look-ups made (concurrently) this tick
    seconds: float = 0.0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)

    def summary(self) -> str:
        """One line for the tick, e.g. "routed 12, 3 closed, 2 waiting for Canvas"."""
        text = f"routed {self.routed}"
        if self.skipped or self.out_of_target:
            text += f", {self.skipped + self.out_of_target} closed (not imported)"
        if self.unresolved:
            text += f", {self.unresolved} waiting for Canvas ({self.lookup_errors} errors)"
        return text


class RestLookups:
    """Canvas look-ups for routing, bounded by a count and a monotonic deadline.

    ``ask`` answers (True, value) when Canvas answered (value None: no such object), (False,
    None) when the look-up failed, (None, None) when it was not tried (budget or time spent).
    A failure other than a 403 on one object (Canvas down, throttling, a refused token) stops
    the look-ups for this tick.
    """

    def __init__(
        self, session: CanvasSession | None, budget: int, deadline: float | None = None
    ) -> None:
        self.session, self.budget, self.deadline = session, budget, deadline
        self.used = 0
        self.made = 0
        self.errors = 0
        self._lock = threading.Lock()

    def _start(self) -> bool:
        with self._lock:
            if self.session is None or self.used >= self.budget:
                return False
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return False
            self.used += 1
            self.made += 1
            return True

    def _failed(self, stop: bool) -> None:
        with self._lock:
            self.errors += 1
            if stop:
                self.used = self.budget

    def ask(self, fetch: Callable[[CanvasSession], object]) -> tuple[bool | None, object]:
        if not self._start():
            return None, None
        assert self.session is not None
        try:
            return True, fetch(self.session)
        except CanvasNotFoundError:
            return True, None
        except CanvasPermissionError:  # this object only
            self._failed(stop=False)
            return False, None
        except CanvasError:
            self._failed(stop=True)
            return False, None

    def ask_all(
        self, keys: Sequence[Hashable], fetch: Callable[[CanvasSession, Hashable], object]
    ) -> list[tuple[bool | None, object]]:
        """``ask`` for every key, concurrently (in key order, so the budget goes to the first)."""
        if self.session is None or not keys:
            return [(None, None)] * len(keys)
        workers = max(1, min(self.session.max_concurrency, len(keys)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="route") as pool:
            return list(pool.map(lambda key: self.ask(lambda s: fetch(s, key)), keys))


@dataclass
class Resolution:
    """What is known of the events' objects: a key missing from a map is not resolved yet;
    ``failed_*`` hold those whose look-up failed (their events count an attempt)."""

    enrollment_course: dict[int, int | None] = field(default_factory=dict)
    course_semester: dict[int, str | None] = field(default_factory=dict)
    user_semesters: dict[int, list[str]] = field(default_factory=dict)
    failed_enrollments: set[int] = field(default_factory=set)
    failed_courses: set[int] = field(default_factory=set)

    def course_of(self, event: tuple) -> int | None:
        _, _, course_id, enrollment_id, _ = event
        return course_id if course_id is not None else self.enrollment_course.get(enrollment_id)


def _resolve_enrollments(
    conn: psycopg.Connection, schema: str, events: list[tuple], ask: RestLookups
) -> Resolution:
    """Enrollment-state events carry only the enrollment id: find its course (in event order,
    so events whose look-ups failed before are looked up last)."""
    found = Resolution()
    wanted = list(dict.fromkeys(e[3] for e in events if e[2] is None and e[3] is not None))
    found.enrollment_course.update(store.enrollment_courses(conn, schema, wanted))
    missing = [e for e in wanted if e not in found.enrollment_course]
    found.enrollment_course.update(store.enrollment_courses_from_events(conn, schema, missing))
    unknown = [e for e in wanted if e not in found.enrollment_course]
    answers = ask.ask_all(unknown, lambda s, e: s.get(s.account_path(f"/enrollments/{e}")))
    for enrollment_id, (answered, enrollment) in zip(unknown, answers, strict=True):
        if answered:
            found.enrollment_course[enrollment_id] = (
                int(enrollment["course_id"]) if enrollment else None
            )
        elif answered is False:
            found.failed_enrollments.add(enrollment_id)
    return found


def resolve(
    conn: psycopg.Connection, schema: str, events: list[tuple], ask: RestLookups
) -> Resolution:
    """Each event's course (and that course's semester), or each person's semesters."""
    found = _resolve_enrollments(conn, schema, events, ask)
    course_ids = list(dict.fromkeys(c for e in events if (c := found.course_of(e)) is not None))
    found.course_semester.update(store.course_semesters(conn, schema, course_ids))
    missing = [c for c in course_ids if c not in found.course_semester]
    found.course_semester.update(store.course_semesters_from_events(conn, schema, missing))
    unknown = [c for c in course_ids if c not in found.course_semester]
    answers = ask.ask_all(unknown, lambda s, c: s.get(f"/courses/{c}", [("include[]", "term")]))
    for course_id, (answered, course) in zip(unknown, answers, strict=True):
        if answered:  # None: deleted before we ever saw it
            term = course.get("term") if course else None
            found.course_semester[course_id] = semester_key(term) if term else None
        elif answered is False:
            found.failed_courses.add(course_id)
    people = {
        e[4] for e in events if found.course_of(e) is None and e[3] is None and e[4] is not None
    }
    found.user_semesters = store.user_semesters(conn, schema, people)
    return found


@dataclass
class Routes:
    """What to write: (semester, course, outcome, seq) per closed or routed event, the copies
    of events that go to more semesters, and the seqs whose look-up failed."""

    routes: list[tuple[str | None, int | None, str | None, int]] = field(default_factory=list)
    copies: list[tuple[int, str]] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _semesters(event: tuple, found: Resolution, out: Routes) -> list[str] | None:
    """The event's semesters, or None while its object is not resolved."""
    seq, _, _, enrollment_id, user_id = event
    course_id = found.course_of(event)
    if course_id is not None:
        if course_id not in found.course_semester:
            if course_id in found.failed_courses:
                out.failed.append(seq)
            return None
        semester = found.course_semester[course_id]
        return [semester] if semester else []
    if enrollment_id is not None:
        if enrollment_id not in found.enrollment_course:
            if enrollment_id in found.failed_enrollments:
                out.failed.append(seq)
            return None
        return []  # an enrollment Canvas no longer has
    return found.user_semesters.get(user_id, [])


def decide(
    events: Sequence[tuple], found: Resolution, target_semesters: tuple[str, ...]
) -> tuple[Routes, RouteResult]:
    """Route each event, close it (skipped, out of target), or leave it for a later tick.

    A semester that matches Target Semesters but is not a partition yet stays routed and
    pending: the auto-import sensor is about to add it (apply runs filter on partitions).
    """
    out, result = Routes(), RouteResult()
    for event in events:
        seq, course_id = event[0], found.course_of(event)
        semesters = _semesters(event, found, out)
        if semesters is None:
            result.unresolved += 1
        elif not semesters:
            out.routes.append((None, course_id, "skipped", seq))
            result.skipped += 1
        elif not (kept := [s for s in semesters if semester_matches(s, target_semesters)]):
            out.routes.append((semesters[0], course_id, "out_of_target", seq))
            result.out_of_target += 1
        else:
            out.routes.append((kept[0], course_id, None, seq))
            out.copies.extend((seq, semester) for semester in kept[1:])
            result.routed += 1
    return out, result


def route_pending(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession | None,
    target_semesters: tuple[str, ...],
    max_rest_lookups: int = MAX_REST_LOOKUPS,
    deadline: float | None = None,
    *,
    hook: Callable[[str], None] | None = None,
) -> RouteResult:
    """Give every pending, unrouted event its course and semester, or close it as skipped.

    REST look-ups are bounded by ``max_rest_lookups`` and the monotonic ``deadline``; an object
    Canvas will not show now leaves its events unresolved for a later tick. ``hook("routing")``
    runs before the routes are saved (crash tests use it).
    """
    started = time.monotonic()
    events = store.unrouted_events(conn, schema)
    if not events:
        return RouteResult()
    ask = RestLookups(session, max_rest_lookups, deadline)
    found = resolve(conn, schema, events, ask)
    routes, result = decide(events, found, target_semesters)
    result.lookup_errors, result.lookups = ask.errors, ask.made
    if hook is not None:
        hook("routing")
    store.save_routes(conn, schema, routes.routes, routes.copies, routes.failed)
    result.seconds = round(time.monotonic() - started, 3)
    return result
