"""Apply a semester's landed Live Events: classify → fetch → write → mark, in one transaction.

Events are signals; REST is truth. An event names a course (directly, or through its enrollment
or person); applying re-reads each affected course with its per-course objects and new people —
a few calls per course however many events concern it — and writes those rows with the same
mapping, pandera checks and upsert as a backfill, scoped to those courses. Rows and the events'
applied marks commit together, so a crash leaves the events pending and nothing half-applied;
applying twice changes nothing.

Ordering: an event clearly older (by ``STALE_MARGIN``) than what the rows already hold (the
course row's ``source_updated_at``, from a backfill or an earlier apply) is already reflected and
is closed as ``stale`` without a REST call. Any other re-reads current data, so an old event can
never write old values and a deleted object stays deleted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
import psycopg

from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import fetch_courses, fetch_per_course, fetch_user_or_none
from canvas_assets.institutions import semester_matches
from canvas_assets.live_events import store
from canvas_assets.live_events.store import EventCopy, PendingEvent
from canvas_assets.outcomes import Counts
from canvas_assets.tables import (
    SEMESTER_TABLES,
    SemesterSnapshot,
    TableSpec,
    ValidationReport,
    semester_frames,
    semester_key,
    validate_semester,
)
from canvas_assets.tables.mapping import enrolled_people, user_row
from canvas_assets.warehouse.writes import (
    WriteCounts,
    lock_cross_semester_users,
    try_lock_semester,
    write_courses,
)

# Canvas's clock and ours differ, and Canvas may stamp an event before its change commits: an
# event counts as already reflected only when it is this much older than the row's data. A
# non-stale event costs a REST re-read, never a wrong write.
STALE_MARGIN = timedelta(minutes=2)


class LiveEventsValidationError(RuntimeError):
    def __init__(self, report: ValidationReport, semester: str) -> None:
        super().__init__(report.message(semester))
        self.report = report


@dataclass
class ApplyResult(Counts):
    events: int = 0
    applied: int = 0
    stale: int = 0
    courses_refreshed: int = 0
    courses_gone: int = 0
    people_refreshed: int = 0
    forwarded: int = 0
    counts: dict[str, WriteCounts] = field(default_factory=dict)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    # Wall time of the whole apply and of its REST re-read (courses, their objects, people).
    seconds: float = 0.0
    canvas_seconds: float = 0.0
    # Another writer (a backfill) held the semester: nothing was claimed, the next run applies.
    semester_busy: bool = False


@dataclass
class Plan:
    """What the pending events ask for: courses to re-read (with the newest event time), people
    to refresh, and each event's outcome once the apply commits."""

    courses: dict[int, datetime] = field(default_factory=dict)
    people: set[int] = field(default_factory=set)
    outcomes: dict[int, str] = field(default_factory=dict)


def classify(events: Sequence[PendingEvent], versions: dict[int, datetime]) -> Plan:
    """Stale events close without a read; the rest name a course to re-read or a person."""
    plan = Plan()
    for event in events:
        course_id, event_time = event.course_id, event.event_time
        if course_id is None:  # user_created / user_updated
            plan.people.add(event.user_id)
            plan.outcomes[event.seq] = "applied"
        elif course_id in versions and event_time <= versions[course_id] - STALE_MARGIN:
            plan.outcomes[event.seq] = "stale"
        else:
            plan.courses[course_id] = max(event_time, plan.courses.get(course_id, event_time))
            plan.outcomes[event.seq] = "applied"
    return plan


def fetch_course_snapshot(
    session: CanvasSession,
    semester: str,
    term: dict,
    course_ids: Sequence[int],
    observed_at: datetime,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> tuple[SemesterSnapshot, dict[int, str]]:
    """The courses among ``course_ids`` that are still in ``semester``, with their per-course
    objects; and the courses moved to another term, with their new semester. The others are
    gone (deleted) and simply absent."""
    snapshot = SemesterSnapshot(semester=semester, term=term, fetched_at=observed_at)
    moved: dict[int, str] = {}
    for course in fetch_courses(session, term, course_ids):
        if course.get("workflow_state") == "deleted" or not course.get("term"):
            continue
        if semester_key(course["term"]) != semester:
            moved[int(course["id"])] = semester_key(course["term"])
        else:
            snapshot.courses.append(course)
    fetch_per_course(session, snapshot, tables)
    return snapshot, moved


def add_people(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    snapshot: SemesterSnapshot,
    refresh: set[int],
) -> dict[int, dict]:
    """Fill ``snapshot.users`` with the people enrolled in its courses: warehouse rows for those
    already held, Canvas for new people and those ``refresh`` names. Returns what Canvas gave."""
    enrolled = set(enrolled_people(snapshot))
    known = {
        row["institution_id"]: _canvas_user(row)
        for row in store.user_rows(conn, schema, snapshot.semester, enrolled - refresh)
    }
    to_fetch = sorted((enrolled - known.keys()) | refresh)
    users = session.map_concurrent(lambda uid: fetch_user_or_none(session, uid), to_fetch)
    fetched = {uid: user for uid, user in zip(to_fetch, users, strict=True) if user is not None}
    # People refreshed here are routed here because they have a row in this semester.
    snapshot.users = {**{u: v for u, v in known.items() if u in enrolled}, **fetched}
    return fetched


def _canvas_user(row: dict) -> dict:
    """A warehouse users row in the shape of Canvas's user JSON (for instructors and users)."""
    return {
        "id": row["institution_id"],
        "first_name": row["first_name"],
        "last_name": row["last_name"],
        "short_name": row["preferred_name"],
        "email": row["email"],
        "sis_user_id": row["sis_user_id"],
        "login_id": row["login_id"],
        "created_at": row["source_date"].isoformat() if row["source_date"] else None,
    }


def _forward(
    cur: psycopg.Cursor,
    schema: str,
    events: Sequence[PendingEvent],
    plan: Plan,
    moved: dict[int, str],
    target_semesters: tuple[str, ...],
) -> int:
    """Route the applied events of courses moved to another (wanted) term on to it."""
    forwarded = [
        EventCopy(event.seq, moved[event.course_id])
        for event in events
        if event.course_id in moved
        and plan.outcomes[event.seq] == "applied"
        and semester_matches(moved[event.course_id], target_semesters)
    ]
    store.copy_events(cur, schema, forwarded)
    return len(forwarded)


def apply_semester_events(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    semester: str,
    term: dict,
    observed_at: datetime,
    target_semesters: tuple[str, ...] = (),
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> ApplyResult:
    """Apply every pending event of ``semester`` in one transaction."""
    started = time.perf_counter()
    result = ApplyResult()
    with conn.transaction():
        # Held through the REST re-read too: an apply's rows are never older than a concurrent
        # writer's of the same semester. A semester being written is left to the next run.
        if not try_lock_semester(conn, schema, semester):
            result.semester_busy = True
            return result
        events = store.claim_pending(conn, schema, semester)
        result.events = len(events)
        if not events:
            return result
        named = [e.course_id for e in events if e.course_id is not None]
        plan = classify(events, store.course_versions(conn, schema, semester, named))
        if plan.people:
            # Taken before this apply locks any user row, as every such apply does.
            lock_cross_semester_users(conn, schema)
            # A teacher's new name or email changes their sections' instructor columns.
            for course_id in store.courses_taught_by(conn, schema, semester, plan.people):
                plan.courses.setdefault(course_id, observed_at)

        courses = sorted(plan.courses)
        reading = time.perf_counter()
        snapshot, moved = fetch_course_snapshot(
            session, semester, term, courses, observed_at, tables
        )
        result.courses_refreshed = len(snapshot.courses)
        result.courses_gone = len(courses) - len(snapshot.courses)
        with conn.cursor() as cur:
            result.forwarded = _forward(cur, schema, events, plan, moved, target_semesters)
        fetched = add_people(conn, schema, session, snapshot, plan.people)
        result.people_refreshed = len(fetched)
        result.canvas_seconds = time.perf_counter() - reading

        report = validate_semester(
            semester, term.get("sis_term_id"), semester_frames(snapshot, tables), tables
        )
        if not report.ok:
            raise LiveEventsValidationError(report, semester)
        result.counts = write_courses(
            conn, schema, semester, courses, report.frames, observed_at, tables
        )
        result.frames = report.frames
        refreshed = [user_row(fetched[u], semester) for u in sorted(plan.people & fetched.keys())]
        store.update_contact_elsewhere(conn, schema, refreshed, semester, observed_at)
        store.close_events(conn, schema, plan.outcomes)
        result.applied = sum(1 for o in plan.outcomes.values() if o == "applied")
        result.stale = sum(1 for o in plan.outcomes.values() if o == "stale")
    result.seconds = time.perf_counter() - started
    return result
