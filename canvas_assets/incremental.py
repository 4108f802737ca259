"""Apply landed Live Events: route each to a semester, then re-read the affected courses from REST.

Events are signals; REST is truth. An event names a course (directly, or through its enrollment
or user); applying a semester's pending events re-reads each affected course with its sections,
enrollments and new users — a few calls per course however many events concern it — and upserts
those rows with the same mapping, pandera checks and write path as a backfill, scoped to those
courses. Everything for one semester (rows and the events' applied marks) commits in one
transaction, so a crash leaves the events pending and nothing half-applied; applying twice
changes nothing.

Ordering: an event clearly older (by ``STALE_MARGIN``) than what the rows already hold
(``source_updated_at`` of the course row, written by a backfill or an earlier apply) is already
reflected and is marked ``stale`` without a REST call. Any other event re-reads current data, so
an old event can never write old values and a deleted object stays deleted.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from canvas_assets.canvas import (
    CanvasError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasSession,
)
from canvas_assets.load import lock_cross_semester_users, lock_semester, upsert_rows
from canvas_assets.schemas import ValidationReport, validate_semester
from canvas_assets.semester import (
    SemesterSnapshot,
    fetch_course_children,
    semester_key,
    snapshot_frames,
    user_row,
)
from canvas_assets.settings import semester_matches

# Canvas's clock and ours differ, and Canvas may stamp an event before its change commits: an
# event counts as already reflected only when it is this much older than the row's data. A
# non-stale event costs a REST re-read, never a wrong write.
STALE_MARGIN = timedelta(minutes=2)
COURSE_INCLUDES = ("term", "total_students", "teachers", "account_name", "account")
# Above this many affected courses, one pass over the term's course list is cheaper.
COURSE_LIST_THRESHOLD = 20


class LiveEventsValidationError(RuntimeError):
    def __init__(self, report: ValidationReport, semester: str) -> None:
        super().__init__(report.message(semester).replace("backfill", "apply"))
        self.report = report


def _t(schema: str, table: str) -> sql.Composable:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


# -- routing (sensor side: database lookups, a few REST reads) ------------------------------
@dataclass
class RouteResult:
    routed: int = 0
    skipped: int = 0
    out_of_target: int = 0
    unresolved: int = 0
    lookup_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def _lookup(conn: psycopg.Connection, query: sql.Composable, ids: set[int]) -> dict[int, object]:
    if not ids:
        return {}
    return dict(conn.execute(query, (sorted(ids),)).fetchall())


def route_pending(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession | None,
    target_semesters: tuple[str, ...],
    max_rest_lookups: int = 50,
    deadline: float | None = None,
) -> RouteResult:
    """Give every pending, unrouted event its course and semester, or close it as skipped.

    REST look-ups are bounded by ``max_rest_lookups`` and the monotonic ``deadline``; an object
    Canvas will not show now (an error other than 404) leaves its events unresolved for a later
    tick without holding up the others.
    """
    result = RouteResult()
    lookups = 0

    def rest_lookup(fetch: Callable[[], object]) -> tuple[bool | None, object]:
        """(True, value) when Canvas answered (value None: no such object), (False, None) when
        the look-up failed, (None, None) when it was not tried (budget or deadline spent)."""
        nonlocal lookups
        if session is None or lookups >= max_rest_lookups:
            return None, None
        if deadline is not None and time.monotonic() >= deadline:
            return None, None
        lookups += 1
        try:
            return True, fetch()
        except CanvasNotFoundError:
            return True, None
        except CanvasPermissionError:  # this object only
            result.lookup_errors += 1
            return False, None
        except CanvasError:
            # Canvas is down, throttling or refusing the token: stop asking for this tick.
            lookups = max_rest_lookups
            result.lookup_errors += 1
            return False, None

    events = conn.execute(
        sql.SQL(
            # Events whose look-ups failed before go last, so they cannot starve new ones.
            "SELECT seq, event_name, course_id, enrollment_id, user_id FROM {} "
            "WHERE applied_at IS NULL AND semester IS NULL ORDER BY route_attempts, seq "
            "LIMIT 10000"
        ).format(_t(schema, "live_events"))
    ).fetchall()
    if not events:
        return result

    # Enrollment-state events only carry the enrollment id: find its course. In event order, so
    # events whose look-ups failed before are looked up last.
    state_enrollments = dict.fromkeys(e[3] for e in events if e[2] is None and e[3] is not None)
    enrollment_course = _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (institution_id) institution_id, course_id FROM {} "
            "WHERE institution_id = ANY(%s) ORDER BY institution_id, source_updated_at DESC"
        ).format(_t(schema, "enrollments")),
        set(state_enrollments),
    )
    # A new enrollment is not in the warehouse yet, but its enrollment_created event, landed
    # beside the state event, names the course.
    enrollment_course.update(
        (k, v)
        for k, v in _lookup(
            conn,
            sql.SQL(
                "SELECT DISTINCT ON (enrollment_id) enrollment_id, course_id FROM {} "
                "WHERE enrollment_id = ANY(%s) AND course_id IS NOT NULL "
                "ORDER BY enrollment_id, seq"
            ).format(_t(schema, "live_events")),
            state_enrollments.keys() - enrollment_course.keys(),
        ).items()
    )
    failed_enrollments: set[int] = set()
    for enrollment_id in [e for e in state_enrollments if e not in enrollment_course]:
        resolved, found = rest_lookup(
            lambda e=enrollment_id: session.get(session.account_path(f"/enrollments/{e}"))
        )
        if resolved:
            enrollment_course[enrollment_id] = int(found["course_id"]) if found else None
        elif resolved is False:
            failed_enrollments.add(enrollment_id)

    def course_of(event: tuple) -> int | None:
        _, _, course_id, enrollment_id, _ = event
        if course_id is not None:
            return course_id
        return enrollment_course.get(enrollment_id)  # type: ignore[return-value]

    course_ids = {c for e in events if (c := course_of(e)) is not None}
    course_semester = _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (institution_id) institution_id, semester FROM {} "
            "WHERE institution_id = ANY(%s) "
            "ORDER BY institution_id, (deleted_at IS NULL) DESC, source_updated_at DESC"
        ).format(_t(schema, "courses")),
        course_ids,
    )
    failed_courses: set[int] = set()
    missing_courses = dict.fromkeys(
        c for e in events if (c := course_of(e)) is not None and c not in course_semester
    )
    for course_id in missing_courses:
        resolved, course = rest_lookup(
            lambda c=course_id: session.get(f"/courses/{c}", [("include[]", "term")])
        )
        if resolved:  # None: deleted before we ever saw it
            term = course.get("term") if course else None
            course_semester[course_id] = semester_key(term) if term else None
        elif resolved is False:
            failed_courses.add(course_id)

    # A person can be enrolled in several semesters: their event is applied in each.
    user_semesters: dict[int, list[str]] = defaultdict(list)
    user_ids = {e[4] for e in events if course_of(e) is None and e[3] is None and e[4] is not None}
    if user_ids:
        for user_id, semester in conn.execute(
            sql.SQL(
                "SELECT institution_id, semester FROM {} WHERE institution_id = ANY(%s) "
                "AND deleted_at IS NULL ORDER BY institution_id, semester"
            ).format(_t(schema, "users")),
            (sorted(user_ids),),
        ):
            user_semesters[user_id].append(semester)

    def wanted(semester: str) -> bool:
        # A matching semester that is not a partition yet stays pending: the auto-import
        # sensor is about to add it (pending_semesters callers filter on partitions).
        return semester_matches(semester, target_semesters)

    updates: list[tuple[object, ...]] = []
    copies: list[tuple[int, str]] = []
    failed: list[int] = []
    for event in events:
        seq, _, _, enrollment_id, user_id = event
        course_id = course_of(event)
        if course_id is not None:
            if course_id not in course_semester:
                result.unresolved += 1  # look-up failed or not tried: next tick
                if course_id in failed_courses:
                    failed.append(seq)
                continue
            semesters = [course_semester[course_id]] if course_semester[course_id] else []
        elif enrollment_id is not None:
            if enrollment_id not in enrollment_course:
                result.unresolved += 1
                if enrollment_id in failed_enrollments:
                    failed.append(seq)
                continue
            semesters = []
        else:
            semesters = user_semesters.get(user_id, [])
        if not semesters:
            updates.append((None, course_id, "skipped", seq))
            result.skipped += 1
            continue
        kept = [s for s in semesters if wanted(s)]
        if not kept:
            updates.append((semesters[0], course_id, "out_of_target", seq))
            result.out_of_target += 1
            continue
        updates.append((kept[0], course_id, None, seq))
        copies.extend((seq, semester) for semester in kept[1:])
        result.routed += 1
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "UPDATE {} SET semester = %s, course_id = COALESCE(course_id, %s), outcome = %s, "
                "applied_at = CASE WHEN %s::text IS NULL THEN NULL ELSE now() END WHERE seq = %s"
            ).format(_t(schema, "live_events")),
            [(s, c, o, o, q) for s, c, o, q in updates],
        )
        _copy_events(cur, schema, copies)  # one landed row per extra semester
        cur.execute(
            sql.SQL("UPDATE {} SET route_attempts = route_attempts + 1 WHERE seq = ANY(%s)").format(
                _t(schema, "live_events")
            ),
            (failed,),
        )
    return result


def pending_semesters(
    conn: psycopg.Connection, schema: str, partitions: set[str] | None = None
) -> dict[str, int]:
    """Semesters (among ``partitions``, if given) with routed events waiting to be applied, and
    their newest event's seq.

    Only semesters whose backfill has completed once qualify: applying a few courses' events to
    a semester that was never imported would show a half-imported semester. Their events wait,
    and the first apply after the backfill closes those the backfill already covered as stale.
    """
    rows = conn.execute(
        sql.SQL(
            "SELECT e.semester, max(e.seq) FROM {events} AS e JOIN {status} AS s "
            "ON s.semester = e.semester AND s.last_sync_completed_at IS NOT NULL "
            "WHERE e.applied_at IS NULL AND e.semester IS NOT NULL "
            "GROUP BY e.semester ORDER BY e.semester"
        ).format(events=_t(schema, "live_events"), status=_t(schema, "semester_sync_status"))
    ).fetchall()
    return {
        semester: int(seq) for semester, seq in rows if partitions is None or semester in partitions
    }


# -- apply (run side) -------------------------------------------------------------------------
@dataclass
class ApplyResult:
    events: int = 0
    applied: int = 0
    stale: int = 0
    courses_refreshed: int = 0
    courses_gone: int = 0
    users_refreshed: int = 0
    forwarded: int = 0
    counts: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)


def _db_user(row: dict) -> dict:
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


def apply_semester_events(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    semester: str,
    term: dict,
    observed_at: datetime,
    target_semesters: tuple[str, ...] = (),
) -> ApplyResult:
    """Apply every pending event of ``semester`` in one transaction."""
    result = ApplyResult()
    with conn.transaction():
        # Held through the REST re-read too: an apply's rows are never older than a concurrent
        # writer's of the same semester.
        lock_semester(conn, schema, semester)
        events = conn.execute(
            sql.SQL(
                "SELECT seq, event_name, event_time, course_id, user_id FROM {} "
                "WHERE applied_at IS NULL AND semester = %s ORDER BY seq FOR UPDATE SKIP LOCKED"
            ).format(_t(schema, "live_events")),
            (semester,),
        ).fetchall()
        result.events = len(events)
        if not events:
            return result

        held = dict(
            conn.execute(
                sql.SQL(
                    "SELECT institution_id, source_updated_at FROM {} WHERE semester = %s "
                    "AND institution_id = ANY(%s)"
                ).format(_t(schema, "courses")),
                (semester, sorted({e[3] for e in events if e[3] is not None})),
            ).fetchall()
        )
        newest: dict[int, datetime] = {}
        refresh_users: set[int] = set()
        outcomes: dict[int, str] = {}
        for seq, _name, event_time, course_id, user_id in events:
            if course_id is None:  # user_created / user_updated
                refresh_users.add(user_id)
                outcomes[seq] = "applied"
                continue
            if course_id in held and event_time <= held[course_id] - STALE_MARGIN:
                outcomes[seq] = "stale"
                continue
            newest[course_id] = max(event_time, newest.get(course_id, event_time))
            outcomes[seq] = "applied"

        if refresh_users:
            # Taken before this apply locks any user row, as every such apply does.
            lock_cross_semester_users(conn, schema)
            # A teacher's new name or email changes their sections' instructor columns.
            taught = conn.execute(
                sql.SQL(
                    "SELECT DISTINCT course_id FROM {} WHERE semester = %s AND deleted_at IS NULL "
                    "AND role = 'TeacherEnrollment' AND user_id = ANY(%s)"
                ).format(_t(schema, "enrollments")),
                (semester, sorted(refresh_users)),
            ).fetchall()
            for (course_id,) in taught:
                newest.setdefault(course_id, observed_at)

        snapshot, gone, moved = _fetch_courses(session, semester, term, sorted(newest), observed_at)
        result.courses_refreshed = len(snapshot.courses)
        result.courses_gone = len(gone)
        # A course moved to another term leaves this semester (marked deleted below) and its
        # events are routed on to the new one, which the sensor then applies.
        forwarded = [
            (seq, moved[course_id])
            for seq, _name, _time, course_id, _user in events
            if course_id in moved
            and outcomes[seq] == "applied"
            and semester_matches(moved[course_id], target_semesters)
        ]
        if forwarded:
            with conn.cursor() as cur:
                _copy_events(cur, schema, forwarded)
        result.forwarded = len(forwarded)

        # Users: refresh those events named; reuse warehouse rows for the rest, fetch new ones.
        enrolled = {int(e["user_id"]) for e in snapshot.enrollments}
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            known = {
                row["institution_id"]: _db_user(row)
                for row in cur.execute(
                    sql.SQL(
                        "SELECT * FROM {} WHERE semester = %s AND institution_id = ANY(%s)"
                    ).format(_t(schema, "users")),
                    (semester, sorted(enrolled - refresh_users)),
                )
            }
        to_fetch = sorted((enrolled - known.keys()) | refresh_users)
        fetched = dict(
            zip(to_fetch, session.map_concurrent(_get_user(session), to_fetch), strict=True)
        )
        result.users_refreshed = len([u for u in fetched.values() if u is not None])
        # Refreshed people are routed here because they have a row in this semester.
        snapshot.users = {
            **{uid: u for uid, u in known.items() if uid in enrolled},
            **{uid: u for uid, u in fetched.items() if u is not None},
        }

        raw = snapshot_frames(snapshot)
        report = validate_semester(semester, term.get("sis_term_id"), raw)
        if not report.ok:
            raise LiveEventsValidationError(report, semester)
        scope_courses = sorted(newest)
        course_scope = (
            sql.SQL("t.semester = %s AND t.institution_id = ANY(%s)"),
            (semester, scope_courses),
        )
        child_scope = (
            sql.SQL("t.semester = %s AND t.course_id = ANY(%s)"),
            (semester, scope_courses),
        )
        no_removal = (sql.SQL("false"), ())
        key = ("semester", "institution_id")
        for table, (scope, params) in (
            ("courses", course_scope),
            ("sections", child_scope),
            ("enrollments", child_scope),
            ("users", no_removal),
        ):
            result.counts[table] = upsert_rows(
                conn, schema, table, report.frames[table], observed_at, key,
                scope=scope, scope_params=params,
            )  # fmt: skip
        result.frames = report.frames
        # users holds the people enrolled in the semester: whoever has no active enrollment left
        # is marked deleted, as a backfill would.
        conn.execute(
            sql.SQL(
                "UPDATE {users} AS t SET deleted_at = %s, source_updated_at = %s "
                "WHERE t.semester = %s AND t.deleted_at IS NULL AND t.source_updated_at <= %s "
                "AND NOT EXISTS (SELECT 1 FROM {enrollments} AS e WHERE e.semester = t.semester "
                "AND e.user_id = t.institution_id AND e.deleted_at IS NULL)"
            ).format(users=_t(schema, "users"), enrollments=_t(schema, "enrollments")),
            (observed_at, observed_at, semester, observed_at),
        )

        # The same person in other semesters gets the refreshed contact fields too.
        for uid, user in fetched.items():
            if user is None or uid not in refresh_users:
                continue
            row = user_row(user, semester)
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET first_name = %s, last_name = %s, preferred_name = %s, "
                    "email = %s, sis_user_id = %s, login_id = %s, source_updated_at = %s "
                    "WHERE institution_id = %s AND semester <> %s AND source_updated_at <= %s "
                    "AND (first_name, last_name, preferred_name, email, sis_user_id, login_id) "
                    "IS DISTINCT FROM (%s, %s, %s, %s, %s, %s)"
                ).format(_t(schema, "users")),
                (
                    *(row[c] for c in _CONTACT), observed_at, uid, semester, observed_at,
                    *(row[c] for c in _CONTACT),
                ),
            )  # fmt: skip

        by_outcome: dict[str, list[int]] = defaultdict(list)
        for seq, outcome in outcomes.items():
            by_outcome[outcome].append(seq)
        for outcome, seqs in by_outcome.items():
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET applied_at = now(), outcome = %s WHERE seq = ANY(%s)"
                ).format(_t(schema, "live_events")),
                (outcome, seqs),
            )
        result.applied = len(by_outcome.get("applied", []))
        result.stale = len(by_outcome.get("stale", []))
    return result


_CONTACT = ("first_name", "last_name", "preferred_name", "email", "sis_user_id", "login_id")


def _get_user(session: CanvasSession):
    def get(user_id: int) -> dict | None:
        try:
            return session.get(f"/users/{user_id}")
        except CanvasNotFoundError:
            return None

    return get


def _fetch_courses(
    session: CanvasSession,
    semester: str,
    term: dict,
    course_ids: list[int],
    observed_at: datetime,
) -> tuple[SemesterSnapshot, set[int], dict[int, str]]:
    """Current courses (with sections and enrollments) among ``course_ids`` that are in
    ``semester``; the others are returned as gone (deleted, or moved to another term), and
    those moved to another term also with their new semester."""
    snapshot = SemesterSnapshot(semester=semester, term=term, fetched_at=observed_at)
    includes = [("include[]", name) for name in COURSE_INCLUDES]

    def one(course_id: int) -> dict | None:
        try:
            return session.get(f"/courses/{course_id}", includes)
        except CanvasNotFoundError:
            return None

    if len(course_ids) > COURSE_LIST_THRESHOLD:
        params = [("enrollment_term_id", term["id"]), *includes]
        wanted = set(course_ids)
        courses = [
            c
            for c in session.paginate(session.account_path("/courses"), params)
            if int(c["id"]) in wanted
        ]
        # Courses not in the term's list were deleted or moved: find out which, one by one.
        outside = sorted(wanted - {int(c["id"]) for c in courses})
        courses += [c for c in session.map_concurrent(one, outside) if c is not None]
    else:
        courses = [c for c in session.map_concurrent(one, course_ids) if c is not None]
    live: list[dict] = []
    moved: dict[int, str] = {}
    for course in courses:
        if course.get("workflow_state") == "deleted" or not course.get("term"):
            continue
        if semester_key(course["term"]) != semester:
            moved[int(course["id"])] = semester_key(course["term"])
            continue
        if not course.get("account_name") and isinstance(course.get("account"), dict):
            course["account_name"] = course["account"].get("name")
        live.append(course)
    snapshot.courses = live
    fetch_course_children(session, snapshot)
    gone = set(course_ids) - {int(c["id"]) for c in live}
    return snapshot, gone, moved


def _copy_events(cur: psycopg.Cursor, schema: str, copies: list[tuple[int, str]]) -> None:
    """Route a copy of event ``seq`` to another semester, keyed off the original so that doing
    it again is a no-op."""
    cur.executemany(
        sql.SQL(
            "INSERT INTO {t} (event_key, message_id, event_name, event_time, supported, "
            "course_id, section_id, enrollment_id, user_id, envelope, semester) "
            "SELECT event_key || ':' || %s, message_id, event_name, event_time, supported, "
            "course_id, section_id, enrollment_id, user_id, envelope, %s FROM {t} "
            "WHERE seq = %s ON CONFLICT (event_key) DO NOTHING"
        ).format(t=_t(schema, "live_events")),
        [(semester, semester, seq) for seq, semester in copies],
    )
