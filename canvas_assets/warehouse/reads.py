"""What sensors, schedules and commands read back from the warehouse."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql


def term_dates(conn: psycopg.Connection, schema: str) -> list[tuple[str, datetime, datetime]]:
    """(semester, start_at, end_at) of every term Canvas still has."""
    return conn.execute(
        sql.SQL("SELECT semester, start_at, end_at FROM {}.terms WHERE deleted_at IS NULL").format(
            sql.Identifier(schema)
        )
    ).fetchall()


def imported_semesters(conn: psycopg.Connection, schema: str) -> set[str]:
    """Semesters on the Imported Semesters card (added by auto-import or a backfill)."""
    return {
        row[0]
        for row in conn.execute(
            sql.SQL("SELECT semester FROM {}.semester_sync_status").format(sql.Identifier(schema))
        )
    }
