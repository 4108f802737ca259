"""The Imported Semesters card (``semester_sync_status``): added, syncing, synced or failed, with
when each step happened and the last error."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def _status_table(schema: str) -> sql.Composable:
    return sql.SQL("{}.semester_sync_status").format(sql.Identifier(schema))


def mark_semesters_added(conn: psycopg.Connection, schema: str, semesters: Iterable[str]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (semester, status, added_at) VALUES (%s, 'added', now()) "
                "ON CONFLICT (semester) DO NOTHING"
            ).format(_status_table(schema)),
            [(s,) for s in semesters],
        )


def mark_sync_started(conn: psycopg.Connection, schema: str, semester: str) -> None:
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "INSERT INTO {} AS s (semester, status, added_at, started_at) "
                "VALUES (%s, 'syncing', now(), now()) "
                "ON CONFLICT (semester) DO UPDATE SET status = 'syncing', started_at = now()"
            ).format(_status_table(schema)),
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
                ).format(_status_table(schema)),
                (semester,),
            )
        else:
            conn.execute(
                sql.SQL(
                    "UPDATE {} SET status = 'failed', last_error = %s WHERE semester = %s"
                ).format(_status_table(schema)),
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
                ).format(_status_table(schema)),
                (semester,),
            )
        else:
            conn.execute(
                sql.SQL("UPDATE {} SET last_error = %s WHERE semester = %s").format(
                    _status_table(schema)
                ),
                (f"Live Events apply failed: {error}"[:2000], semester),
            )


def failure_message(exc: BaseException) -> str:
    """What the card shows for a failed sync: a Dagster failure's description, or the error."""
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


@contextlib.contextmanager
def _recorded(
    connect: Callable[[], psycopg.Connection],
    succeeded: Callable[[psycopg.Connection], None],
    failed: Callable[[psycopg.Connection, str], None],
) -> Iterator[None]:
    """Record how the block ended; a failure is recorded, then raised as it was."""
    try:
        yield
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = failure_message(exc)
        with contextlib.suppress(Exception):
            _mark(connect, lambda conn: failed(conn, error))
        raise
    _mark(connect, succeeded)


def recorded_sync(
    connect: Callable[[], psycopg.Connection], schema: str, semester: str
) -> contextlib.AbstractContextManager[None]:
    """The card follows a backfill: syncing now, then synced, or failed with the error."""
    _mark(connect, lambda conn: mark_sync_started(conn, schema, semester))
    return _recorded(
        connect,
        lambda conn: mark_sync_finished(conn, schema, semester),
        lambda conn, error: mark_sync_finished(conn, schema, semester, error=error),
    )


def recorded_apply(
    connect: Callable[[], psycopg.Connection], schema: str, semester: str
) -> contextlib.AbstractContextManager[None]:
    """The card follows a Live Events apply (see ``mark_live_events_applied``)."""
    return _recorded(
        connect,
        lambda conn: mark_live_events_applied(conn, schema, semester),
        lambda conn, error: mark_live_events_applied(conn, schema, semester, error),
    )
