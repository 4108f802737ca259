"""What sensors, schedules and commands read back from the warehouse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from canvas_assets.warehouse.identifiers import qualified_table


@dataclass(frozen=True)
class TermDates:
    """When a semester's term runs (either end may be unset in Canvas)."""

    semester: str
    start_at: datetime | None
    end_at: datetime | None


def term_dates(conn: psycopg.Connection, schema: str) -> list[TermDates]:
    """The dates of every term Canvas still has."""
    with conn.cursor(row_factory=class_row(TermDates)) as cur:
        return cur.execute(
            sql.SQL("SELECT semester, start_at, end_at FROM {} WHERE deleted_at IS NULL").format(
                qualified_table(schema, "terms")
            )
        ).fetchall()


def live_semesters(conn: psycopg.Connection, schema: str) -> list[str]:
    """The semester keys of the terms Canvas still has and has not deleted."""
    return [
        row[0]
        for row in conn.execute(
            sql.SQL(
                "SELECT semester FROM {} WHERE deleted_at IS NULL AND status <> 'deleted' "
                "ORDER BY semester"
            ).format(qualified_table(schema, "terms"))
        )
    ]


def imported_semesters(conn: psycopg.Connection, schema: str) -> set[str]:
    """Semesters on the Imported Semesters card (added by auto-import or a backfill)."""
    return {
        row[0]
        for row in conn.execute(
            sql.SQL("SELECT semester FROM {}").format(
                qualified_table(schema, "semester_sync_status")
            )
        )
    }


def active_rows(
    conn: psycopg.Connection, schema: str, tables: list[str], semester: str | None = None
) -> dict[str, int]:
    """Rows not marked deleted, per table (of one semester, when given)."""
    counts = {}
    for table in tables:
        query = sql.SQL("SELECT count(*) FROM {} WHERE deleted_at IS NULL").format(
            qualified_table(schema, table)
        )
        if semester is not None:
            query = query + sql.SQL(" AND semester = %s")
        row = conn.execute(query, (semester,) if semester is not None else ()).fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def sync_status(conn: psycopg.Connection, schema: str) -> list[dict]:
    """The Imported Semesters card: one row per semester, newest term first."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT semester, status, added_at, started_at, last_sync_completed_at, "
                "last_error FROM {} ORDER BY semester DESC"
            ).format(qualified_table(schema, "semester_sync_status"))
        ).fetchall()


@dataclass(frozen=True)
class SemesterSync:
    """A semester's line on the Imported Semesters card, as freshness and alerts read it."""

    semester: str
    status: str
    added_at: datetime | None
    last_sync_completed_at: datetime | None
    last_error: str | None


def semester_syncs(conn: psycopg.Connection, schema: str) -> list[SemesterSync]:
    with conn.cursor(row_factory=class_row(SemesterSync)) as cur:
        return cur.execute(
            sql.SQL(
                "SELECT semester, status, added_at, last_sync_completed_at, last_error FROM {} "
                "ORDER BY semester"
            ).format(qualified_table(schema, "semester_sync_status"))
        ).fetchall()


def schema_created_at(conn: psycopg.Connection, schema: str) -> datetime | None:
    """When the schema's first migration ran: since when its Live Events have been listened for."""
    row = conn.execute(
        sql.SQL("SELECT min(applied_at) FROM {}").format(
            qualified_table(schema, "schema_migrations")
        )
    ).fetchone()
    return row[0] if row else None
