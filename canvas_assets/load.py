"""Writes to the warehouse: COPY into a temp table, upsert what changed, soft-delete what vanished.

Deletion meaning, used everywhere (backfills and Live Events): a row is never physically removed;
when Canvas no longer returns an object for a semester, or reports it deleted, its row keeps its
last values and gets ``deleted_at``. Active rows are ``WHERE deleted_at IS NULL``.

``source_updated_at`` is when the row's data was true in Canvas (a backfill's fetch start, an
event's time). A write never replaces a row whose ``source_updated_at`` is newer, so an old
backfill or a late event cannot overwrite newer data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import pandas as pd
import psycopg
from psycopg import sql

SEMESTER_TABLES = ("courses", "sections", "enrollments", "users")


@dataclass
class WriteCounts:
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    removed: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {f"rows_{k}" if k != "rows" else "row_count": v for k, v in asdict(self).items()}


def _python_rows(df: pd.DataFrame) -> Iterable[tuple]:
    """Frame rows as plain Python values; pandas' missing markers become None."""
    plain = df.astype(object).where(df.notna(), None)
    return plain.itertuples(index=False, name=None)


def _copy_to_temp(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[str],
    rows: Iterable[tuple],
) -> sql.Identifier:
    temp = sql.Identifier(f"incoming_{table}")
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(temp))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {}.{} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            temp, sql.Identifier(schema), sql.Identifier(table)
        )
    )
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    with (
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(temp, column_list)) as copy,
    ):
        for row in rows:
            copy.write_row(row)
    # Fresh temp tables have no statistics: without them the planner picks nested-loop
    # anti-joins that grow quadratically with the semester's size.
    conn.execute(sql.SQL("ANALYZE {}").format(temp))
    return temp


def upsert_rows(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    df: pd.DataFrame,
    observed_at: datetime,
    key: Sequence[str],
    *,
    scope: sql.Composable | None = None,
    scope_params: Sequence[object] = (),
) -> WriteCounts:
    """Upsert ``df`` into ``table`` and soft-delete rows in ``scope`` that ``df`` lacks.

    Must run inside the caller's transaction.
    """
    data_columns = list(df.columns)
    all_columns = [*data_columns, "source_updated_at"]
    rows = (row + (observed_at,) for row in _python_rows(df))
    temp = _copy_to_temp(conn, schema, table, all_columns, rows)

    target = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
    value_columns = [c for c in data_columns if c not in key]
    ident = sql.Identifier
    query = sql.SQL(
        "INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM {temp} "
        "ON CONFLICT ({key}) DO UPDATE SET {sets}, source_updated_at = EXCLUDED.source_updated_at,"
        " deleted_at = NULL "
        "WHERE (({old}), t.deleted_at IS NULL) IS DISTINCT FROM (({new}), true) "
        "AND t.source_updated_at <= EXCLUDED.source_updated_at "
        "RETURNING (xmax = 0) AS inserted"
    ).format(
        target=target,
        cols=sql.SQL(", ").join(map(ident, all_columns)),
        temp=temp,
        key=sql.SQL(", ").join(map(ident, key)),
        sets=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in value_columns
        ),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(ident(c)) for c in value_columns),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(ident(c)) for c in value_columns),
    )
    counts = WriteCounts(rows=len(df))
    with conn.cursor() as cur:
        cur.execute(query)
        for (inserted,) in cur.fetchall():
            if inserted:
                counts.inserted += 1
            else:
                counts.updated += 1

    remove = sql.SQL(
        "UPDATE {target} AS t SET deleted_at = %s, source_updated_at = %s "
        "WHERE t.deleted_at IS NULL AND t.source_updated_at <= %s {scope} "
        "AND NOT EXISTS (SELECT 1 FROM {temp} AS i WHERE {match})"
    ).format(
        target=target,
        scope=sql.SQL("AND ") + scope if scope is not None else sql.SQL(""),
        temp=temp,
        match=sql.SQL(" AND ").join(sql.SQL("i.{c} = t.{c}").format(c=ident(c)) for c in key),
    )
    with conn.cursor() as cur:
        cur.execute(remove, (observed_at, observed_at, observed_at, *scope_params))
        counts.removed = cur.rowcount
    return counts


def lock_semester(conn: psycopg.Connection, schema: str, semester: str) -> None:
    """Serialise writers of one semester (a backfill and a Live Events apply) until the current
    transaction ends, so they neither deadlock nor interleave; other semesters go on."""
    _advisory_xact_lock(conn, f"{schema}/semester/{semester}")


def lock_cross_semester_users(conn: psycopg.Connection, schema: str) -> None:
    """Serialise applies that update a person's rows in other semesters: two of them, each
    holding its own semester's rows and wanting the other's, would otherwise deadlock."""
    _advisory_xact_lock(conn, f"{schema}/cross-semester-users")


def _advisory_xact_lock(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def write_semester(
    conn: psycopg.Connection,
    schema: str,
    semester: str,
    frames: dict[str, pd.DataFrame],
    observed_at: datetime,
) -> dict[str, WriteCounts]:
    """Write one semester's four tables in a single transaction: all of it or none of it."""
    counts: dict[str, WriteCounts] = {}
    with conn.transaction():
        lock_semester(conn, schema, semester)
        for table in SEMESTER_TABLES:
            counts[table] = upsert_rows(
                conn,
                schema,
                table,
                frames[table],
                observed_at,
                key=("semester", "institution_id"),
                scope=sql.SQL("t.semester = %s"),
                scope_params=(semester,),
            )
    return counts


def write_terms(
    conn: psycopg.Connection, schema: str, terms: pd.DataFrame, observed_at: datetime
) -> WriteCounts:
    with conn.transaction():
        return upsert_rows(conn, schema, "terms", terms, observed_at, key=("institution_id",))


# -- Imported Semesters card -----------------------------------------------------------------
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
