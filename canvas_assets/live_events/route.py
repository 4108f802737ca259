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
from dataclasses import dataclass, field
from enum import Enum

import psycopg

from canvas_assets.canvas import (
    CanvasError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasSession,
)
from canvas_assets.institutions import semester_matches
from canvas_assets.live_events import store
from canvas_assets.live_events.store import EventCopy, Route, UnroutedEvent
from canvas_assets.outcomes import Counts, first_line
from canvas_assets.tables import semester_key

# Look-ups run concurrently (the session's limiter caps them in flight), so a tick routes a
# burst of hundreds of never-seen courses; the deadline still bounds the tick.
MAX_REST_LOOKUPS = 400


@dataclass
class RouteResult(Counts):
    routed: int = 0
    skipped: int = 0
    out_of_target: int = 0
    unresolved: int = 0
    lookup_errors: int = 0
    lookups: int = 0  # Canvas look-ups made (concurrently) this pass
    seconds: float = 0.0
    lookup_error: str = ""  # the last failed look-up's error, in one line

    def summary(self) -> str:
        """One line, e.g. "routed 12, 3 closed outside Target Semesters, 2 waiting for Canvas"."""
        text = f"routed {self.routed}"
        if self.out_of_target:
            text += f", {self.out_of_target} closed outside Target Semesters"
        if self.skipped:
            text += f", {self.skipped} closed (of no semester, or gone from Canvas)"
        if self.unresolved:
            text += f", {self.unresolved} waiting for Canvas ({self.lookup_errors} errors)"
        return text


class Asked(Enum):
    """How a look-up went."""

    ANSWERED = "answered"  # Canvas answered; the value is None when it has no such object
    FAILED = "failed"  # its events count a failed attempt
    NOT_TRIED = "not_tried"  # the budget or the time was spent: its events wait


@dataclass(frozen=True)
class Answer:
    outcome: Asked
    value: object = None


NOT_TRIED = Answer(Asked.NOT_TRIED)


class RestLookups:
    """Canvas look-ups for routing, bounded by a count and a monotonic deadline. A failure other
    than a 403 on one object (Canvas down, throttling, a refused token) stops the look-ups for
    this tick.
    """

    def __init__(
        self, session: CanvasSession | None, budget: int, deadline: float | None = None
    ) -> None:
        self.session, self.budget, self.deadline = session, budget, deadline
        self.used = 0
        self.made = 0
        self.errors = 0
        self.last_error = ""
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

    def _failed(self, error: CanvasError, stop: bool) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = first_line(error)
            if stop:
                self.used = self.budget

    def ask(self, fetch: Callable[[CanvasSession], object]) -> Answer:
        if not self._start():
            return NOT_TRIED
        assert self.session is not None
        try:
            return Answer(Asked.ANSWERED, fetch(self.session))
        except CanvasNotFoundError:
            return Answer(Asked.ANSWERED)
        except CanvasPermissionError as exc:  # this object only
            self._failed(exc, stop=False)
            return Answer(Asked.FAILED)
        except CanvasError as exc:
            self._failed(exc, stop=True)
            return Answer(Asked.FAILED)

    def ask_all(
        self, keys: Sequence[Hashable], fetch: Callable[[CanvasSession, Hashable], object]
    ) -> list[Answer]:
        """``ask`` for every key, concurrently (in key order, so the budget goes to the first)."""
        if self.session is None or not keys:
            return [NOT_TRIED] * len(keys)
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

    def course_of(self, event: UnroutedEvent) -> int | None:
        if event.course_id is not None:
            return event.course_id
        return self.enrollment_course.get(event.enrollment_id)


def _resolve_enrollments(
    conn: psycopg.Connection, schema: str, events: list[UnroutedEvent], ask: RestLookups
) -> Resolution:
    """Enrollment-state events carry only the enrollment id: find its course (in event order,
    so events whose look-ups failed before are looked up last)."""
    found = Resolution()
    wanted = list(
        dict.fromkeys(
            e.enrollment_id for e in events if e.course_id is None and e.enrollment_id is not None
        )
    )
    found.enrollment_course.update(store.enrollment_courses(conn, schema, wanted))
    missing = [e for e in wanted if e not in found.enrollment_course]
    found.enrollment_course.update(store.enrollment_courses_from_events(conn, schema, missing))
    unknown = [e for e in wanted if e not in found.enrollment_course]
    answers = ask.ask_all(unknown, lambda s, e: s.get(s.account_path(f"/enrollments/{e}")))
    for enrollment_id, answer in zip(unknown, answers, strict=True):
        if answer.outcome is Asked.ANSWERED:
            enrollment = answer.value
            found.enrollment_course[enrollment_id] = (
                int(enrollment["course_id"]) if isinstance(enrollment, dict) else None
            )
        elif answer.outcome is Asked.FAILED:
            found.failed_enrollments.add(enrollment_id)
    return found


def resolve(
    conn: psycopg.Connection, schema: str, events: list[UnroutedEvent], ask: RestLookups
) -> Resolution:
    """Each event's course (and that course's semester), or each person's semesters."""
    found = _resolve_enrollments(conn, schema, events, ask)
    course_ids = list(dict.fromkeys(c for e in events if (c := found.course_of(e)) is not None))
    found.course_semester.update(store.course_semesters(conn, schema, course_ids))
    missing = [c for c in course_ids if c not in found.course_semester]
    found.course_semester.update(store.course_semesters_from_events(conn, schema, missing))
    unknown = [c for c in course_ids if c not in found.course_semester]
    answers = ask.ask_all(unknown, lambda s, c: s.get(f"/courses/{c}", [("include[]", "term")]))
    for course_id, answer in zip(unknown, answers, strict=True):
        if answer.outcome is Asked.ANSWERED:  # None: deleted before we ever saw it
            course = answer.value
            term = course.get("term") if isinstance(course, dict) else None
            found.course_semester[course_id] = semester_key(term) if term else None
        elif answer.outcome is Asked.FAILED:
            found.failed_courses.add(course_id)
    people = {
        e.user_id
        for e in events
        if found.course_of(e) is None and e.enrollment_id is None and e.user_id is not None
    }
    found.user_semesters = store.user_semesters(conn, schema, people)
    return found


@dataclass
class Routes:
    """What to write: a route per closed or routed event, the copies of events that go to more
    semesters, and the seqs whose look-up failed."""

    routes: list[Route] = field(default_factory=list)
    copies: list[EventCopy] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _semesters(event: UnroutedEvent, found: Resolution, out: Routes) -> list[str] | None:
    """The event's semesters, or None while its object is not resolved."""
    course_id = found.course_of(event)
    if course_id is not None:
        if course_id not in found.course_semester:
            if course_id in found.failed_courses:
                out.failed.append(event.seq)
            return None
        semester = found.course_semester[course_id]
        return [semester] if semester else []
    if event.enrollment_id is not None:
        if event.enrollment_id not in found.enrollment_course:
            if event.enrollment_id in found.failed_enrollments:
                out.failed.append(event.seq)
            return None
        return []  # an enrollment Canvas no longer has
    return found.user_semesters.get(event.user_id, [])


def decide(
    events: Sequence[UnroutedEvent], found: Resolution, target_semesters: tuple[str, ...]
) -> tuple[Routes, RouteResult]:
    """Route each event, close it (skipped, out of target), or leave it for a later tick.

    A semester that matches Target Semesters but is not a partition yet stays routed and
    pending: the auto-import sensor is about to add it (apply runs filter on partitions).
    """
    out, result = Routes(), RouteResult()
    for event in events:
        seq, course_id = event.seq, found.course_of(event)
        semesters = _semesters(event, found, out)
        if semesters is None:
            result.unresolved += 1
        elif not semesters:
            out.routes.append(Route(seq, None, course_id, "skipped"))
            result.skipped += 1
        elif not (kept := [s for s in semesters if semester_matches(s, target_semesters)]):
            out.routes.append(Route(seq, semesters[0], course_id, "out_of_target"))
            result.out_of_target += 1
        else:
            out.routes.append(Route(seq, kept[0], course_id))
            out.copies.extend(EventCopy(seq, semester) for semester in kept[1:])
            result.routed += 1
    return out, result


def route_pending(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession | None,
    target_semesters: tuple[str, ...],
    max_rest_lookups: int = MAX_REST_LOOKUPS,
    deadline: float | None = None,
) -> RouteResult:
    """Give every pending, unrouted event its course and semester, or close it as skipped.

    REST look-ups are bounded by ``max_rest_lookups`` and the monotonic ``deadline``; an object
    Canvas will not show now leaves its events unresolved for a later tick.
    """
    started = time.monotonic()
    events = store.unrouted_events(conn, schema)
    if not events:
        return RouteResult()
    ask = RestLookups(session, max_rest_lookups, deadline)
    found = resolve(conn, schema, events, ask)
    routes, result = decide(events, found, target_semesters)
    result.lookup_errors, result.lookups, result.lookup_error = ask.errors, ask.made, ask.last_error
    store.save_routes(conn, schema, routes.routes, routes.copies, routes.failed)
    result.seconds = round(time.monotonic() - started, 3)
    return result
