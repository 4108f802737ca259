"""The fetch plan: which Canvas reads make up a semester, or some of its courses.

A semester is its course list (one paginated pass over the term's courses), then each table's
per-course reads declared in the registry (sections, enrollments), fetched per course in
parallel, then the people enrolled. Every object is fetched once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from datetime import datetime

from canvas_assets.canvas.errors import CanvasNotFoundError
from canvas_assets.canvas.session import CanvasSession
from canvas_assets.tables import SEMESTER_TABLES, SemesterSnapshot, TableSpec, semester_key

COURSE_STATES_FETCHED = ("created", "claimed", "available", "completed")
COURSE_INCLUDES = ("term", "total_students", "teachers", "account_name")
# A single course's JSON has no account_name include; its account object carries the name.
SINGLE_COURSE_INCLUDES = (*COURSE_INCLUDES, "account")
# Above this many courses to re-read, one pass over the term's course list is cheaper.
COURSE_LIST_THRESHOLD = 20


def fetch_terms(session: CanvasSession) -> list[dict]:
    return list(session.paginate(session.account_path("/terms"), key="enrollment_terms"))


def find_term(terms: Iterable[dict], semester: str) -> dict | None:
    return next((term for term in terms if semester_key(term) == semester), None)


def _term_courses(session: CanvasSession, term: dict, includes: Sequence[str]) -> list[dict]:
    params: list[tuple[str, object]] = [("enrollment_term_id", term["id"])]
    params += [("include[]", name) for name in includes]
    params += [("state[]", state) for state in COURSE_STATES_FETCHED]
    return list(session.paginate(session.account_path("/courses"), params))


def fetch_semester(
    session: CanvasSession,
    term: dict,
    semester: str,
    fetched_at: datetime,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> SemesterSnapshot:
    """Fetch courses, then each course's objects per course in parallel, then users."""
    snapshot = SemesterSnapshot(semester=semester, term=term, fetched_at=fetched_at)
    snapshot.courses = _term_courses(session, term, COURSE_INCLUDES)
    fetch_per_course(session, snapshot, tables)
    user_ids = {int(e["user_id"]) for e in snapshot.objects("enrollments")}
    snapshot.users = fetch_users(session, user_ids)
    return snapshot


def fetch_per_course(
    session: CanvasSession,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> None:
    """Add the objects of every per-course table for ``snapshot.courses``, course by course in
    parallel."""
    sources = [(spec.name, spec.source) for spec in tables if spec.source is not None]

    def per_course(course: dict) -> list[list[dict]]:
        return [
            list(session.paginate(source.url(course["id"]), list(source.params)))
            for _, source in sources
        ]

    for table, _ in sources:
        snapshot.per_course.setdefault(table, [])
    for lists in session.map_concurrent(per_course, snapshot.courses):
        for (table, _), objects in zip(sources, lists, strict=True):
            snapshot.per_course[table].extend(objects)


def fetch_users(session: CanvasSession, user_ids: set[int]) -> dict[int, dict]:
    """Users with email: one pass over the account's user list, single GETs for the rest.

    The account list serves 100 users per request; users outside it (other accounts or shards)
    are fetched one by one, concurrently.
    """
    found: dict[int, dict] = {}
    if not user_ids:
        return found
    for user in session.paginate(session.account_path("/users"), [("include[]", "email")]):
        user_id = int(user["id"])
        if user_id in user_ids:
            found[user_id] = user
    missing = sorted(user_ids - found.keys())
    lock = threading.Lock()

    def one(user_id: int) -> None:
        user = session.get(f"/users/{user_id}")
        with lock:
            found[user_id] = user

    session.map_concurrent(one, missing)
    return found


def fetch_user_or_none(session: CanvasSession, user_id: int) -> dict | None:
    """One user with email, or None when Canvas no longer has them."""
    try:
        return session.get(f"/users/{user_id}")
    except CanvasNotFoundError:
        return None


def fetch_courses(session: CanvasSession, term: dict, course_ids: Sequence[int]) -> list[dict]:
    """The current JSON of each course in ``course_ids`` that Canvas still has (any term, any
    state but deleted): single GETs, or one pass over the term's list when there are many."""
    includes = [("include[]", name) for name in SINGLE_COURSE_INCLUDES]

    def one(course_id: int) -> dict | None:
        try:
            return session.get(f"/courses/{course_id}", includes)
        except CanvasNotFoundError:
            return None

    if len(course_ids) > COURSE_LIST_THRESHOLD:
        wanted = set(course_ids)
        courses = [
            c
            for c in _term_courses(session, term, SINGLE_COURSE_INCLUDES)
            if int(c["id"]) in wanted
        ]
        # Courses not in the term's list were deleted or moved: find out which, one by one.
        outside = sorted(wanted - {int(c["id"]) for c in courses})
    else:
        courses, outside = [], list(course_ids)
    courses += [c for c in session.map_concurrent(one, outside) if c is not None]
    for course in courses:
        if not course.get("account_name") and isinstance(course.get("account"), dict):
            course["account_name"] = course["account"].get("name")
    return courses
