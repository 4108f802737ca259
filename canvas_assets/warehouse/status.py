"""The Imported Semesters card (``semester_sync_status``): added, syncing, synced, failed or not
targeted (imported, then left outside Target Semesters), with
when each step happened and the last error.

A failure is recorded on a fresh connection (the sync's own may be what failed), retried while
PostgreSQL comes back. When it cannot be recorded at all (PostgreSQL down for longer, the worker
killed), ``recover_interrupted_syncs`` — called by a sensor — marks the semester failed at the
next start, so a card never says ``syncing`` for a sync that is no longer running.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from datetime import timedelta

import dagster as dg
import psycopg
from psycopg import sql

from canvas_assets.warehouse.identifiers import qualified_table

log = logging.getLogger(__name__)

# How long a failed sync keeps trying to record its failure while PostgreSQL is unreachable.
FAILURE_RECORD_SECONDS = 30.0
INTERRUPTED_ERROR = (
    "The sync stopped before it could record its outcome (its worker or PostgreSQL stopped "
    "mid-run). Nothing of it was written; run it again."
)
CANCELED_ERROR = "The sync was canceled before it finished. Nothing of it was written."


STATUS_TABLE = "semester_sync_status"


def mark_semesters_added(conn: psycopg.Connection, schema: str, semesters: Iterable[str]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (semester, status, added_at) VALUES (%s, 'added', now()) "
                "ON CONFLICT (semester) DO NOTHING"
            ).format(qualified_table(schema, STATUS_TABLE)),
            [(s,) for s in semesters],
        )


NOT_TARGETED = "not targeted"


def _updated_semesters(
    conn: psycopg.Connection, schema: str, statement: sql.SQL, params: tuple
) -> list[str]:
    """Run one status ``UPDATE ... RETURNING semester`` on the schema's card table (``{}``),
    in its own transaction; the semesters it changed, sorted."""
    with conn.transaction():
        query = statement.format(qualified_table(schema, STATUS_TABLE))
        rows = conn.execute(query, params).fetchall()
    return sorted(semester for (semester,) in rows)


def mark_not_targeted(conn: psycopg.Connection, schema: str, semesters: Iterable[str]) -> list[str]:
    """Semesters imported before that Target Semesters no longer admit: their card says so
    (their Live Events are closed as out_of_target). Returns the ones newly marked."""
    return _updated_semesters(
        conn,
        schema,
        sql.SQL(
            "UPDATE {} SET status = %s WHERE semester = ANY(%s) "
            "AND status NOT IN (%s, 'syncing') RETURNING semester"
        ),
        (NOT_TARGETED, sorted(semesters), NOT_TARGETED),
    )


def mark_targeted_again(
    conn: psycopg.Connection, schema: str, semesters: Iterable[str]
) -> list[str]:
    """Not-targeted semesters that Target Semesters admit again: back to ``added``, to be
    re-synced so they catch up on what they missed. Returns them."""
    return _updated_semesters(
        conn,
        schema,
        sql.SQL(
            "UPDATE {} SET status = 'added' WHERE semester = ANY(%s) AND status = %s "
            "RETURNING semester"
        ),
        (sorted(semesters), NOT_TARGETED),
    )


def mark_sync_started(conn: psycopg.Connection, schema: str, semester: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS s (semester, status, added_at, started_at) "
                "VALUES (%s, 'syncing', now(), now()) "
                "ON CONFLICT (semester) DO UPDATE SET status = 'syncing', started_at = now()"
            ).format(qualified_table(schema, STATUS_TABLE)),
            (semester,),
        )


def mark_sync_finished(
    conn: psycopg.Connection, schema: str, semester: str, error: str | None = None
) -> None:
    with conn.transaction():
        if error is None:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'synced', last_sync_completed_at = now(), "
                    "last_error = NULL WHERE semester = %s"
                ).format(qualified_table(schema, STATUS_TABLE)),
                (semester,),
            )
        else:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'failed', last_error = %s WHERE semester = %s"
                ).format(qualified_table(schema, STATUS_TABLE)),
                (error[:2000], semester),
            )


def mark_live_events_applied(
    conn: psycopg.Connection, schema: str, semester: str, error: str | None = None
) -> None:
    """Keep the card current after a Live Events apply without hiding a backfill's outcome: the
    status stays what the last backfill left; a successful apply of a synced semester moves
    ``last_sync_completed_at`` and clears an apply error, a failed one records its error."""
    with conn.transaction():
        if error is None:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET last_sync_completed_at = now(), last_error = NULL "
                    "WHERE semester = %s AND status = 'synced'"
                ).format(qualified_table(schema, STATUS_TABLE)),
                (semester,),
            )
        else:
            conn.execute(
                sql.SQL("UPDATE {} SET last_error = %s WHERE semester = %s").format(
                    qualified_table(schema, STATUS_TABLE)
                ),
                (f"Live Events apply failed: {error}"[:2000], semester),
            )


def failure_message(exc: BaseException) -> str:
    """What the card shows for a failed sync: a Dagster failure's description, or the error."""
    if isinstance(exc, (dg.DagsterExecutionInterruptedError, KeyboardInterrupt)):
        return CANCELED_ERROR  # Dagster's run termination (a cancel, a stopped stack)
    description = getattr(exc, "description", None)
    if isinstance(description, str) and description:
        return description
    # Our own errors are written for users; anything else also needs its type to make sense.
    if type(exc).__module__.startswith("canvas_assets"):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _mark(
    connect: Callable[[], psycopg.Connection], mark: Callable[[psycopg.Connection], None]
) -> None:
    """Run one status update on a fresh connection: the sync's own connection may be the thing
    that failed (PostgreSQL restarted mid-write)."""
    try:
        with connect() as conn:
            mark(conn)
    except Exception:
        log.exception("Could not update semester_sync_status")
        raise


def _mark_patiently(
    connect: Callable[[], psycopg.Connection],
    mark: Callable[[psycopg.Connection], None],
    seconds: float,
) -> bool:
    """``_mark``, retried with back-off for up to ``seconds`` (PostgreSQL restarting); False
    when it never got through (``recover_interrupted_syncs`` then tells the card later)."""
    deadline, wait = time.monotonic() + seconds, 0.25
    while True:
        try:
            with connect() as conn:
                mark(conn)
            return True
        except Exception as exc:
            if time.monotonic() + wait > deadline:
                log.warning(
                    "Could not record the failure in semester_sync_status (%s); the next "
                    "recover_interrupted_syncs will.",
                    type(exc).__name__,
                )
                return False
            time.sleep(wait)
            wait = min(wait * 2, 5.0)


@contextlib.contextmanager
def _recorded(
    connect: Callable[[], psycopg.Connection],
    succeeded: Callable[[psycopg.Connection], None],
    failed: Callable[[psycopg.Connection, str], None],
    retry_seconds: float | None,
) -> Iterator[None]:
    """Record how the block ended; a failure is recorded, then raised as it was."""
    try:
        yield
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = failure_message(exc)
        patience = FAILURE_RECORD_SECONDS if retry_seconds is None else retry_seconds
        _mark_patiently(connect, lambda conn: failed(conn, error), patience)
        raise
    _mark(connect, succeeded)


def recorded_sync(
    connect: Callable[[], psycopg.Connection],
    schema: str,
    semester: str,
    *,
    retry_seconds: float | None = None,
) -> contextlib.AbstractContextManager[None]:
    """The card follows a backfill: syncing now, then synced, or failed with the error."""
    _mark(connect, lambda conn: mark_sync_started(conn, schema, semester))
    return _recorded(
        connect,
        lambda conn: mark_sync_finished(conn, schema, semester),
        lambda conn, error: mark_sync_finished(conn, schema, semester, error=error),
        retry_seconds,
    )


def recorded_apply(
    connect: Callable[[], psycopg.Connection],
    schema: str,
    semester: str,
    *,
    retry_seconds: float | None = None,
) -> contextlib.AbstractContextManager[None]:
    """The card follows a Live Events apply (see ``mark_live_events_applied``)."""
    return _recorded(
        connect,
        lambda conn: mark_live_events_applied(conn, schema, semester),
        lambda conn, error: mark_live_events_applied(conn, schema, semester, error),
        retry_seconds,
    )


def recover_interrupted_syncs(
    conn: psycopg.Connection,
    schema: str,
    running: Collection[str],
    started_before: timedelta = timedelta(minutes=2),
) -> list[str]:
    """Mark ``failed`` every semester the card shows ``syncing`` although no backfill of it is
    running (``running``: semesters with a queued or started backfill run) and that started
    more than ``started_before`` ago (so a run that just began is left alone). Returns them."""
    return _updated_semesters(
        conn,
        schema,
        sql.SQL(
            "UPDATE {} SET status = 'failed', last_error = %s WHERE status = 'syncing' "
            "AND NOT (semester = ANY(%s)) AND started_at < now() - %s RETURNING semester"
        ),
        (INTERRUPTED_ERROR, sorted(running), started_before),
    )
