"""Every SQL statement of the Live Events path: landing, quarantine, routing, pending, apply.

Tables: ``live_events`` (one row per landed event and semester; ``applied_at``/``outcome`` close
it) and ``live_event_quarantine``. Routing and apply also read the semester tables. Values are
always bound parameters; only the schema and table names are composed, as identifiers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from canvas_assets.live_events.parse import ParsedEvent, event_key
from canvas_assets.warehouse.identifiers import qualified_table

ROUTE_BATCH = 10_000  # unrouted events read per tick


@dataclass(frozen=True)
class UnroutedEvent:
    """A landed event not yet given a semester, with the ids routing goes by."""

    seq: int
    event_name: str
    course_id: int | None
    enrollment_id: int | None
    user_id: int | None


@dataclass(frozen=True)
class Route:
    """Where routing sends event ``seq``: its semester and course; an ``outcome`` (skipped,
    out_of_target) closes it instead of leaving it to be applied."""

    seq: int
    semester: str | None
    course_id: int | None
    outcome: str | None = None


@dataclass(frozen=True)
class EventCopy:
    """Event ``seq`` routed to one more ``semester`` (a person's event, a course moved)."""

    seq: int
    semester: str


@dataclass(frozen=True)
class PendingEvent:
    """A routed event waiting to be applied to its semester."""

    seq: int
    event_name: str
    event_time: datetime
    course_id: int | None
    user_id: int | None


@dataclass(frozen=True)
class StreamCounts:
    """The landing tables at one moment: what the stream health checks are computed from."""

    pending: int
    oldest_pending_at: datetime | None
    last_message_at: datetime | None
    quarantined_last_hour: int
    quarantined_total: int


# -- landing ----------------------------------------------------------------------------------
def insert_event(cur: psycopg.Cursor, schema: str, message_id: object, event: ParsedEvent) -> bool:
    """Land one parsed event; False when it was already landed (same key)."""
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (event_key, message_id, event_name, event_time, supported,"
            " course_id, section_id, enrollment_id, user_id, envelope, applied_at, outcome)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            "  CASE WHEN %s THEN NULL ELSE now() END,"
            "  CASE WHEN %s THEN NULL ELSE 'unknown_event' END)"
            " ON CONFLICT (event_key) DO NOTHING"
        ).format(qualified_table(schema, "live_events")),
        (
            event.event_key,
            safe_message_id(message_id),
            event.event_name,
            event.event_time,
            event.supported,
            event.course_id,
            event.section_id,
            event.enrollment_id,
            event.user_id,
            Jsonb(event.envelope),
            event.supported,
            event.supported,
        ),
    )
    return cur.rowcount > 0


MESSAGE_ID_CHARS = 256  # SQS message ids are 36-100 characters
QUARANTINE_RAW_CHARS = 256 * 1024  # SQS's own message limit: a whole real message is kept
REASON_CHARS = 2000


def storable(value: object) -> str:
    """Text PostgreSQL will store, whatever ``value`` is: bytes decoded (bad UTF-8 and lone
    surrogates as backslash escapes), NUL as ``\\u0000``, anything else as its repr."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def safe_text(value: object, limit: int) -> str:
    """``storable(value)``, at most ``limit`` characters (a marker says how long it was)."""
    text = storable(value)
    if len(text) <= limit:
        return text
    marker = f"…[truncated, {len(text):,} characters in all]"
    return text[: limit - len(marker)] + marker


def safe_message_id(message_id: object) -> str | None:
    return None if message_id is None else safe_text(message_id, MESSAGE_ID_CHARS)


def insert_quarantine(
    cur: psycopg.Cursor,
    schema: str,
    message_id: object,
    raw: object,
    reason: str,
    account_uuid: str | None = None,
) -> bool:
    """Keep a message that cannot be applied, with the reason, its raw text (truncated when
    huge) and the institution it names; False when the same raw message was quarantined
    before."""
    text = storable(raw)
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (raw_key, message_id, reason, raw, root_account_uuid) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (raw_key) DO NOTHING"
        ).format(qualified_table(schema, "live_event_quarantine")),
        (
            event_key(text),  # of the whole message, so a redelivery is recognised
            safe_message_id(message_id),
            safe_text(reason, REASON_CHARS),
            safe_text(text, QUARANTINE_RAW_CHARS),
            account_uuid,
        ),
    )
    return cur.rowcount > 0


# -- routing ----------------------------------------------------------------------------------
def unrouted_events(conn: psycopg.Connection, schema: str) -> list[UnroutedEvent]:
    """Landed events with no semester. Events whose look-ups failed before go last, so they
    cannot starve new ones."""
    with conn.cursor(row_factory=class_row(UnroutedEvent)) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT seq, event_name, course_id, enrollment_id, user_id FROM {} WHERE "
                "applied_at IS NULL AND semester IS NULL ORDER BY route_attempts, seq LIMIT %s"
            ).format(qualified_table(schema, "live_events")),
            (ROUTE_BATCH,),
        ).fetchall()


def _lookup(conn: psycopg.Connection, query: sql.Composable, ids: Iterable[int]) -> dict:
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    return dict(conn.execute(query, (wanted,)).fetchall())


def enrollment_courses(conn: psycopg.Connection, schema: str, ids: Iterable[int]) -> dict:
    """enrollment id → course id, from the warehouse's newest row of each enrollment."""
    return _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (institution_id) institution_id, course_id FROM {} "
            "WHERE institution_id = ANY(%s) ORDER BY institution_id, source_updated_at DESC"
        ).format(qualified_table(schema, "enrollments")),
        ids,
    )


def enrollment_courses_from_events(
    conn: psycopg.Connection, schema: str, ids: Iterable[int]
) -> dict:
    """enrollment id → course id named by a landed event (a new enrollment's
    enrollment_created arrives beside its state event, before any backfill saw it)."""
    return _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (enrollment_id) enrollment_id, course_id FROM {} "
            "WHERE enrollment_id = ANY(%s) AND course_id IS NOT NULL ORDER BY enrollment_id, seq"
        ).format(qualified_table(schema, "live_events")),
        ids,
    )


def course_semesters(conn: psycopg.Connection, schema: str, ids: Iterable[int]) -> dict:
    """course id → the semester of its newest active row (else newest row)."""
    return _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (institution_id) institution_id, semester FROM {} "
            "WHERE institution_id = ANY(%s) "
            "ORDER BY institution_id, (deleted_at IS NULL) DESC, source_updated_at DESC"
        ).format(qualified_table(schema, "courses")),
        ids,
    )


def course_semesters_from_events(conn: psycopg.Connection, schema: str, ids: Iterable[int]) -> dict:
    """course id → the semester its newest routed event went to: what an earlier tick's Canvas
    look-up found for a course the warehouse does not hold (a semester not imported), so a
    burst of its events costs one look-up, not one per tick. A course moved since is forwarded
    by the apply."""
    return _lookup(
        conn,
        sql.SQL(
            "SELECT DISTINCT ON (course_id) course_id, semester FROM {} "
            "WHERE course_id = ANY(%s) AND semester IS NOT NULL ORDER BY course_id, seq DESC"
        ).format(qualified_table(schema, "live_events")),
        ids,
    )


def user_semesters(conn: psycopg.Connection, schema: str, ids: Iterable[int]) -> dict:
    """user id → every semester in which the person has an active row, in order."""
    found: dict[int, list[str]] = {}
    wanted = sorted(set(ids))
    if not wanted:
        return found
    for user_id, semester in conn.execute(
        sql.SQL(
            "SELECT institution_id, semester FROM {} WHERE institution_id = ANY(%s) "
            "AND deleted_at IS NULL ORDER BY institution_id, semester"
        ).format(qualified_table(schema, "users")),
        (wanted,),
    ):
        found.setdefault(user_id, []).append(semester)
    return found


def save_routes(
    conn: psycopg.Connection,
    schema: str,
    routes: Sequence[Route],
    copies: Sequence[EventCopy],
    failed: Sequence[int],
) -> None:
    """In one transaction: each route (an outcome closes the event), the copies for extra
    semesters, and one more failed attempt for ``failed`` seqs."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "UPDATE {} SET semester = %(semester)s, "
                "course_id = COALESCE(course_id, %(course_id)s), outcome = %(outcome)s, "
                "applied_at = CASE WHEN %(outcome)s::text IS NULL THEN NULL ELSE now() END "
                "WHERE seq = %(seq)s"
            ).format(qualified_table(schema, "live_events")),
            [route.__dict__ for route in routes],
        )
        copy_events(cur, schema, copies)
        cur.execute(
            sql.SQL("UPDATE {} SET route_attempts = route_attempts + 1 WHERE seq = ANY(%s)").format(
                qualified_table(schema, "live_events")
            ),
            (list(failed),),
        )


def copy_events(cur: psycopg.Cursor, schema: str, copies: Sequence[EventCopy]) -> None:
    """Route a copy of each event to another semester, keyed off the original so that doing it
    again is a no-op."""
    cur.executemany(
        sql.SQL(
            "INSERT INTO {t} (event_key, message_id, event_name, event_time, supported, "
            "course_id, section_id, enrollment_id, user_id, envelope, semester) "
            "SELECT event_key || ':' || %(semester)s, message_id, event_name, event_time, "
            "supported, course_id, section_id, enrollment_id, user_id, envelope, %(semester)s "
            "FROM {t} WHERE seq = %(seq)s ON CONFLICT (event_key) DO NOTHING"
        ).format(t=qualified_table(schema, "live_events")),
        [copy.__dict__ for copy in copies],
    )


# -- pending ----------------------------------------------------------------------------------
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
        ).format(
            events=qualified_table(schema, "live_events"),
            status=qualified_table(schema, "semester_sync_status"),
        )
    ).fetchall()
    return {
        semester: int(seq) for semester, seq in rows if partitions is None or semester in partitions
    }


def newest_actionable(conn: psycopg.Connection, schema: str, partitions: set[str]) -> int | None:
    """The newest seq of the events an apply run can act on now (not yet routed, or routed to
    an imported semester among ``partitions``), or None when there are none."""
    row = conn.execute(
        sql.SQL(
            "SELECT max(e.seq) FROM {events} AS e LEFT JOIN {status} AS s "
            "ON s.semester = e.semester AND s.last_sync_completed_at IS NOT NULL "
            "WHERE e.applied_at IS NULL AND (e.semester IS NULL "
            "OR (s.semester IS NOT NULL AND e.semester = ANY(%s)))"
        ).format(
            events=qualified_table(schema, "live_events"),
            status=qualified_table(schema, "semester_sync_status"),
        ),
        (sorted(partitions),),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# -- the shared queue's strays ----------------------------------------------------------------
@dataclass(frozen=True)
class StrayMessage:
    """A shared queue's message quarantined because its institution was not declared."""

    id: int
    message_id: str | None
    raw: str
    root_account_uuid: str


def strays_of(
    conn: psycopg.Connection, schema: str, account_uuids: Iterable[str], limit: int
) -> list[StrayMessage]:
    """Quarantined messages (not replayed yet) of the institutions with ``account_uuids``."""
    with conn.cursor(row_factory=class_row(StrayMessage)) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT id, message_id, raw, root_account_uuid FROM {} WHERE replayed_at IS NULL "
                "AND root_account_uuid = ANY(%s) ORDER BY id LIMIT %s"
            ).format(qualified_table(schema, "live_event_quarantine")),
            (sorted(set(account_uuids)), limit),
        ).fetchall()


def mark_replayed(conn: psycopg.Connection, schema: str, ids: Sequence[int]) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET replayed_at = now() WHERE id = ANY(%s)").format(
            qualified_table(schema, "live_event_quarantine")
        ),
        (list(ids),),
    )


def unknown_institutions(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    """Messages waiting in the shared quarantine, by the (undeclared) uuid they name."""
    return dict(
        conn.execute(
            sql.SQL(
                "SELECT root_account_uuid, count(*) FROM {} WHERE replayed_at IS NULL "
                "AND root_account_uuid IS NOT NULL GROUP BY 1 ORDER BY 1"
            ).format(qualified_table(schema, "live_event_quarantine"))
        ).fetchall()
    )


def quarantined_since(conn: psycopg.Connection, schema: str, since: datetime) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE received_at > %s").format(
            qualified_table(schema, "live_event_quarantine")
        ),
        (since,),
    ).fetchone()
    return int(row[0]) if row else 0


# -- how applying goes --------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplyState:
    """How the institution's last Live Events apply passes went: failures in a row, and the
    last one's error."""

    consecutive_failures: int
    last_error: str | None


def apply_state(conn: psycopg.Connection, schema: str) -> ApplyState:
    with conn.cursor(row_factory=class_row(ApplyState)) as cur:
        row = cur.execute(
            sql.SQL("SELECT consecutive_failures, last_error FROM {}").format(
                qualified_table(schema, "live_events_apply_state")
            )
        ).fetchone()
    return row or ApplyState(0, None)


def record_apply_pass(conn: psycopg.Connection, schema: str, error: str | None) -> None:
    """One more pass: a success resets the failures, a failure counts one and keeps its error."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET last_attempt_at = now(), "
            "last_success_at = CASE WHEN %(error)s::text IS NULL THEN now() "
            "ELSE last_success_at END, "
            "consecutive_failures = CASE WHEN %(error)s::text IS NULL THEN 0 "
            "ELSE consecutive_failures + 1 END, last_error = %(error)s"
        ).format(qualified_table(schema, "live_events_apply_state")),
        {"error": None if error is None else safe_text(error, REASON_CHARS)},
    )


# -- apply ------------------------------------------------------------------------------------
def claim_pending(conn: psycopg.Connection, schema: str, semester: str) -> list[PendingEvent]:
    """The semester's pending events, locked until the caller's transaction ends."""
    with conn.cursor(row_factory=class_row(PendingEvent)) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT seq, event_name, event_time, course_id, user_id FROM {} "
                "WHERE applied_at IS NULL AND semester = %s ORDER BY seq FOR UPDATE SKIP LOCKED"
            ).format(qualified_table(schema, "live_events")),
            (semester,),
        ).fetchall()


def course_versions(
    conn: psycopg.Connection, schema: str, semester: str, course_ids: Iterable[int]
) -> dict[int, datetime]:
    """course id → ``source_updated_at`` of its row in ``semester``: how current it is."""
    return dict(
        conn.execute(
            sql.SQL(
                "SELECT institution_id, source_updated_at FROM {} WHERE semester = %s "
                "AND institution_id = ANY(%s)"
            ).format(qualified_table(schema, "courses")),
            (semester, sorted(set(course_ids))),
        ).fetchall()
    )


def courses_taught_by(
    conn: psycopg.Connection, schema: str, semester: str, user_ids: Iterable[int]
) -> list[int]:
    """Courses of ``semester`` in which any of ``user_ids`` is an active teacher."""
    rows = conn.execute(
        sql.SQL(
            "SELECT DISTINCT course_id FROM {} WHERE semester = %s AND deleted_at IS NULL "
            "AND role = 'TeacherEnrollment' AND user_id = ANY(%s)"
        ).format(qualified_table(schema, "enrollments")),
        (semester, sorted(set(user_ids))),
    ).fetchall()
    return [course_id for (course_id,) in rows]


def user_rows(
    conn: psycopg.Connection, schema: str, semester: str, user_ids: Iterable[int]
) -> list[dict]:
    """The semester's users rows of ``user_ids`` (as dicts)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {} WHERE semester = %s AND institution_id = ANY(%s)").format(
                qualified_table(schema, "users")
            ),
            (semester, sorted(set(user_ids))),
        ).fetchall()


CONTACT_COLUMNS = ("first_name", "last_name", "preferred_name", "email", "sis_user_id", "login_id")


def update_contact_elsewhere(
    conn: psycopg.Connection,
    schema: str,
    rows: Sequence[dict],
    semester: str,
    observed_at: datetime,
) -> None:
    """Give these people's rows in other semesters the refreshed contact fields of ``rows``
    (users rows of ``semester``), in one statement however many people there are."""
    if not rows:
        return
    columns = [sql.Identifier(c) for c in CONTACT_COLUMNS]
    conn.execute(
        sql.SQL(
            "UPDATE {users} AS t SET {sets}, source_updated_at = %s "
            "FROM unnest(%s::bigint[], {arrays}) AS c(institution_id, {cols}) "
            "WHERE t.institution_id = c.institution_id AND t.semester <> %s "
            "AND t.source_updated_at <= %s "
            "AND ({old}) IS DISTINCT FROM ({new})"
        ).format(
            users=qualified_table(schema, "users"),
            sets=sql.SQL(", ").join(sql.SQL("{c} = c.{c}").format(c=c) for c in columns),
            arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in columns),
            cols=sql.SQL(", ").join(columns),
            old=sql.SQL(", ").join(sql.SQL("t.{}").format(c) for c in columns),
            new=sql.SQL(", ").join(sql.SQL("c.{}").format(c) for c in columns),
        ),
        (
            observed_at,
            [row["institution_id"] for row in rows],
            *([_text(row[c]) for row in rows] for c in CONTACT_COLUMNS),
            semester,
            observed_at,
        ),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def event_outcomes(conn: psycopg.Connection, schema: str, keys: Sequence[str]) -> dict[str, str]:
    """event key → outcome (applied, stale, skipped, …) of the closed events among ``keys``;
    an event still pending is absent."""
    return dict(
        conn.execute(
            sql.SQL(
                "SELECT event_key, coalesce(outcome, 'closed') FROM {} WHERE event_key = ANY(%s) "
                "AND applied_at IS NOT NULL"
            ).format(qualified_table(schema, "live_events")),
            (list(keys),),
        ).fetchall()
    )


def close_events(conn: psycopg.Connection, schema: str, outcomes: dict[int, str]) -> None:
    """Mark events applied with their outcome (``applied``, ``stale``)."""
    by_outcome: dict[str, list[int]] = {}
    for seq, outcome in outcomes.items():
        by_outcome.setdefault(outcome, []).append(seq)
    for outcome, seqs in by_outcome.items():
        conn.execute(
            sql.SQL("UPDATE {} SET applied_at = now(), outcome = %s WHERE seq = ANY(%s)").format(
                qualified_table(schema, "live_events")
            ),
            (outcome, seqs),
        )


# -- stream health ----------------------------------------------------------------------------


def stream_counts(conn: psycopg.Connection, schema: str, now: datetime) -> StreamCounts:
    """Events pending, the oldest pending one's and the last message's arrival (landed or
    quarantined), messages quarantined in the hour before ``now`` and in all."""
    events, quarantine = (
        qualified_table(schema, "live_events"),
        qualified_table(schema, "live_event_quarantine"),
    )
    with conn.cursor(row_factory=class_row(StreamCounts)) as cur:
        row = cur.execute(
            sql.SQL(
                "SELECT (SELECT count(*) FROM {events} WHERE applied_at IS NULL) AS pending,"
                " (SELECT min(received_at) FROM {events} WHERE applied_at IS NULL)"
                "   AS oldest_pending_at,"
                " GREATEST((SELECT max(received_at) FROM {events}),"
                "          (SELECT max(received_at) FROM {quarantine})) AS last_message_at,"
                " (SELECT count(*) FROM {quarantine} WHERE received_at > %s - interval '1 hour')"
                "   AS quarantined_last_hour,"
                " (SELECT count(*) FROM {quarantine}) AS quarantined_total"
            ).format(events=events, quarantine=quarantine),
            (now,),
        ).fetchone()
    assert row is not None  # an aggregate always returns its row
    return row
