"""Writes to the warehouse: COPY into a temp table, upsert what changed, soft-delete what vanished.

Deletion meaning, used everywhere (backfills and Live Events): a row is never physically removed;
when Canvas no longer returns an object for a semester, or reports it deleted, its row keeps its
last values and gets ``deleted_at``. Active rows are ``WHERE deleted_at IS NULL``.

``source_updated_at`` is when the row's data was true in Canvas (a backfill's fetch start, an
event's time). A write never replaces a row whose ``source_updated_at`` is newer, so an old
backfill or a late event cannot overwrite newer data.

Cost is linear in the rows whatever the tables' statistics: the incoming rows get an index on the
upsert key, so every plan the planner may pick for the soft-delete's anti-join (hash, merge, or a
nested loop when a fresh or small-when-analysed target makes it guess one row) looks each row up
instead of scanning the incoming rows once per target row: a nested loop over a sequential scan
of them would be quadratic. ``canvas_assets_tests/test_write_plans.py`` EXPLAINs every statement
under every join method.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import psycopg
from psycopg import sql

from canvas_assets.memory import cyclic_gc_paused
from canvas_assets.outcomes import Counts
from canvas_assets.tables import SEMESTER_TABLES, TableSpec
from canvas_assets.warehouse.identifiers import qualified_table


@dataclass
class WriteCounts(Counts):
    """What one table's write did: rows written, and of those inserted, updated, removed."""

    rows: int = 0
    inserted: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True)
class Scope:
    """Which existing rows a write covers: those it does not bring back are marked deleted.
    ``Scope.nothing()`` marks none."""

    condition: sql.Composable
    params: tuple[object, ...] = ()

    @classmethod
    def nothing(cls) -> Scope:
        return cls(sql.SQL("false"))

    @classmethod
    def semester(cls, semester: str) -> Scope:
        """Every row of one semester: what a backfill covers."""
        return cls(sql.SQL("t.semester = %s"), (semester,))


# Rows converted to Python objects at a time: a whole semester's frame as boxed objects would
# cost several times the frame at the peak.
PYTHON_ROWS_CHUNK = 10_000


def _python_rows(df: pd.DataFrame) -> Iterator[tuple]:
    """Frame rows as plain Python values; pandas' missing markers become None.

    Column by column: one conversion per column, where a whole-frame ``astype(object)`` and
    ``where`` would pay pandas' per-frame overhead several times over."""
    for start in range(0, len(df), PYTHON_ROWS_CHUNK):
        chunk = df.iloc[start : start + PYTHON_ROWS_CHUNK]
        columns = [chunk[c].to_numpy(dtype=object, na_value=None) for c in chunk.columns]
        yield from zip(*columns, strict=True)


def create_incoming(conn: psycopg.Connection, schema: str, table: str, name: str) -> sql.Identifier:
    """A temp table shaped like ``table`` for incoming rows, dropped at the end of the
    transaction (a backfill fills its staged tables' chunk by chunk in its one transaction)."""
    temp = sql.Identifier(name)
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(temp))
    conn.execute(
        sql.SQL("CREATE TEMP TABLE {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP").format(
            temp, qualified_table(schema, table)
        )
    )
    return temp


def copy_rows(
    conn: psycopg.Connection, temp: sql.Identifier, columns: Sequence[str], rows: Iterable[tuple]
) -> None:
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    with (
        cyclic_gc_paused(),  # a semester's row tuples would set off full collections
        conn.cursor() as cur,
        cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(temp, column_list)) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def frame_rows(df: pd.DataFrame, observed_at: datetime) -> tuple[list[str], Iterator[tuple]]:
    """The columns and rows a frame is copied as: its own, then ``source_updated_at``."""
    return [*df.columns, "source_updated_at"], (row + (observed_at,) for row in _python_rows(df))


def index_incoming(conn: psycopg.Connection, temp: sql.Identifier, key: Sequence[str]) -> None:
    """The index makes the soft-delete's anti-join a lookup per row under any plan (see the
    module docstring)."""
    key_list = sql.SQL(", ").join(map(sql.Identifier, key))
    conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(temp, key_list))


def append_incoming(
    conn: psycopg.Connection, chunk: sql.Identifier, temp: sql.Identifier, columns: Sequence[str]
) -> None:
    """Move the rows of the temp table ``chunk`` to the temp table ``temp``, leaving ``chunk``
    empty for the next rows (TRUNCATE: a DELETE would leave dead rows that every later chunk's
    scan reads again)."""
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
            temp, column_list, column_list, chunk
        )
    )
    conn.execute(sql.SQL("TRUNCATE {}").format(chunk))


def _upsert_statement(
    target: sql.Composable, temp: sql.Identifier, columns: Sequence[str], key: Sequence[str]
) -> sql.Composable:
    """INSERT … ON CONFLICT that touches a row only when a value changed and the incoming data
    is not older than the row's."""
    ident = sql.Identifier
    values = [c for c in columns if c not in key and c != "source_updated_at"]
    # Counted in the database: a semester's worth of RETURNING rows need not cross the wire.
    return sql.SQL(
        "WITH written AS (INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM {temp} "
        "ON CONFLICT ({key}) DO UPDATE SET {sets}, source_updated_at = EXCLUDED.source_updated_at,"
        " deleted_at = NULL "
        "WHERE (({old}), t.deleted_at IS NULL) IS DISTINCT FROM (({new}), true) "
        "AND t.source_updated_at <= EXCLUDED.source_updated_at "
        "RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
        "FROM written"
    ).format(
        target=target,
        cols=sql.SQL(", ").join(map(ident, columns)),
        temp=temp,
        key=sql.SQL(", ").join(map(ident, key)),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=ident(c)) for c in values),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(ident(c)) for c in values),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(ident(c)) for c in values),
    )


def _remove_statement(
    target: sql.Composable, temp: sql.Identifier, key: Sequence[str], scope: Scope
) -> sql.Composable:
    """Mark deleted the active rows in ``scope`` that the incoming rows do not bring back."""
    return sql.SQL(
        "UPDATE {target} AS t SET deleted_at = %s, source_updated_at = %s "
        "WHERE t.deleted_at IS NULL AND t.source_updated_at <= %s AND {scope} "
        "AND NOT EXISTS (SELECT 1 FROM {temp} AS i WHERE {match})"
    ).format(
        target=target,
        scope=scope.condition,
        temp=temp,
        match=sql.SQL(" AND ").join(
            sql.SQL("i.{c} = t.{c}").format(c=sql.Identifier(c)) for c in key
        ),
    )


def upsert_rows(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    df: pd.DataFrame,
    observed_at: datetime,
    key: Sequence[str],
    scope: Scope,
) -> WriteCounts:
    """Upsert ``df`` into ``table`` and soft-delete rows in ``scope`` that ``df`` lacks.

    Must run inside the caller's transaction.
    """
    columns, rows = frame_rows(df, observed_at)
    temp = create_incoming(conn, schema, table, f"incoming_{table}")
    copy_rows(conn, temp, columns, rows)
    index_incoming(conn, temp, key)
    staged = StagedRows(temp, tuple(columns), len(df))
    return upsert_staged(conn, schema, table, staged, observed_at, key, scope)


@dataclass(frozen=True)
class StagedRows:
    """Rows already copied into the temp table ``temp`` (indexed on the table's key with
    ``index_incoming``), with the columns they fill."""

    temp: sql.Identifier
    columns: tuple[str, ...]
    rows: int


def upsert_staged(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    staged: StagedRows,
    observed_at: datetime,
    key: Sequence[str],
    scope: Scope,
) -> WriteCounts:
    """``upsert_rows`` for rows already in a temp table. Inside the caller's transaction."""
    analyze_incoming(conn, staged.temp, key)
    counts = upsert_incoming(conn, schema, table, staged.temp, staged.columns, key)
    counts.rows = staged.rows
    counts.removed = remove_absent(conn, schema, table, staged.temp, observed_at, key, scope)
    return counts


def analyze_incoming(conn: psycopg.Connection, temp: sql.Identifier, key: Sequence[str]) -> None:
    """The key's statistics let the planner pick the cheapest plan that uses the index (the
    other columns' would only cost time: most of a small semester's ANALYZE)."""
    key_list = sql.SQL(", ").join(map(sql.Identifier, key))
    conn.execute(sql.SQL("ANALYZE {} ({})").format(temp, key_list))


def upsert_incoming(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    temp: sql.Identifier,
    columns: Sequence[str],
    key: Sequence[str],
) -> WriteCounts:
    """Insert the temp table's rows into ``table``, or update the rows they changed: the rows
    inserted and updated (``rows`` and ``removed`` left to the caller). No soft-delete: a
    backfill upserts its staged rows chunk by chunk, and marks the absent deleted once."""
    counts = WriteCounts()
    with conn.cursor() as cur:
        cur.execute(_upsert_statement(qualified_table(schema, table), temp, columns, key))
        counts.inserted, counts.updated = cur.fetchone()  # type: ignore[misc]
    return counts


def remove_absent(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    temp: sql.Identifier,
    observed_at: datetime,
    key: Sequence[str],
    scope: Scope,
) -> int:
    """Mark deleted the rows of ``table`` in ``scope`` that the temp table (indexed and analysed
    on ``key``) does not bring back: how many."""
    target = qualified_table(schema, table)
    with conn.cursor() as cur:
        cur.execute(
            _remove_statement(target, temp, key, scope),
            (observed_at, observed_at, observed_at, *scope.params),
        )
        return cur.rowcount


def semester_has_rows(conn: psycopg.Connection, schema: str, table: str, semester: str) -> bool:
    """Whether ``table`` holds active rows of ``semester``: under the semester's lock, none
    can appear but through its holder, so a first backfill knows it has nothing to mark
    deleted."""
    row = conn.execute(
        sql.SQL(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE semester = %s AND deleted_at IS NULL)"
        ).format(qualified_table(schema, table)),
        (semester,),
    ).fetchone()
    return bool(row and row[0])


def try_lock_semester(conn: psycopg.Connection, schema: str, semester: str) -> bool:
    """Serialise writers of one semester (a backfill and a Live Events apply) until the current
    transaction ends, so they neither deadlock nor interleave; other semesters go on. True when
    taken; False (and no lock) when another writer holds it: an apply leaves the semester to
    the next run, a backfill asks again (``backfill.semester``)."""
    row = conn.execute(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))",
        (_semester_lock(schema, semester),),
    ).fetchone()
    return bool(row and row[0])


def lock_cross_semester_users(conn: psycopg.Connection, schema: str) -> None:
    """Serialise applies that update a person's rows in other semesters: two of them, each
    holding its own semester's rows and wanting the other's, would otherwise deadlock."""
    _advisory_xact_lock(conn, f"{schema}/cross-semester-users")


def _semester_lock(schema: str, semester: str) -> str:
    return f"{schema}/semester/{semester}"


def _advisory_xact_lock(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))


def write_tables(
    conn: psycopg.Connection,
    schema: str,
    semester: str,
    frames: Mapping[str, pd.DataFrame],
    observed_at: datetime,
    tables: Sequence[TableSpec],
    staged: Mapping[str, StagedRows] | None = None,
) -> dict[str, WriteCounts]:
    """Upsert ``tables`` of one semester inside the caller's transaction, which holds the
    semester's lock (``try_lock_semester``). A table in ``staged`` is written from the temp table
    its rows were copied to as they arrived (dropped here, with the transaction); the others
    from ``frames``."""
    counts: dict[str, WriteCounts] = {}
    scope = Scope.semester(semester)
    staged = staged or {}
    for spec in tables:
        if spec.name in staged:
            counts[spec.name] = upsert_staged(
                conn, schema, spec.name, staged[spec.name], observed_at, spec.key, scope
            )
            conn.execute(sql.SQL("DROP TABLE {}").format(staged[spec.name].temp))
        else:
            counts[spec.name] = upsert_rows(
                conn, schema, spec.name, frames[spec.name], observed_at, spec.key, scope
            )
    return counts


def analyze_tables(
    conn: psycopg.Connection, schema: str, tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> None:
    """Refresh the tables' statistics once a semester has been written (after the commit, so
    a concurrent backfill's ANALYZE never waits for this transaction). Without it, a large
    semester landing in tables analysed while small (or never) is estimated at a row or two,
    and the Live Events applies that follow can be planned as a nested loop that reads the
    whole semester once per person: quadratic.

    Only the columns the writes and applies plan on are analysed (``TableSpec.planning_columns``):
    the rest, names and e-mails above all, cost most of a full ANALYZE's time. PostgreSQL keeps
    counting the changes of a table analysed in part, so autovacuum still analyses it whole."""
    for spec in tables:
        columns = sql.SQL(", ").join(map(sql.Identifier, spec.planning_columns))
        conn.execute(sql.SQL("ANALYZE {} ({})").format(qualified_table(schema, spec.name), columns))


def write_courses(
    conn: psycopg.Connection,
    schema: str,
    semester: str,
    course_ids: Sequence[int],
    frames: dict[str, pd.DataFrame],
    observed_at: datetime,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> dict[str, WriteCounts]:
    """Write what a re-read of some courses of ``semester`` returned, inside the caller's
    transaction: each table's rows of those courses that were not returned are marked deleted,
    then rows no longer kept by any active row (``kept_by``) are."""
    counts: dict[str, WriteCounts] = {}
    for spec in tables:
        scope = Scope.nothing()
        if spec.course_column is not None:
            condition = sql.SQL("t.semester = %s AND t.{} = ANY(%s)").format(
                sql.Identifier(spec.course_column)
            )
            scope = Scope(condition, (semester, list(course_ids)))
        counts[spec.name] = upsert_rows(
            conn, schema, spec.name, frames[spec.name], observed_at, spec.key, scope
        )
    by_name = {spec.name: spec for spec in tables}
    for spec in tables:
        if spec.kept_by is not None:
            keeper = by_name[spec.kept_by[0]]
            counts[spec.name].removed += _remove_unreferenced(
                conn, schema, spec, keeper, semester, course_ids, observed_at
            )
    return counts


def _remove_unreferenced(
    conn: psycopg.Connection,
    schema: str,
    spec: TableSpec,
    keeper: TableSpec,
    semester: str,
    course_ids: Sequence[int],
    observed_at: datetime,
) -> int:
    """Mark deleted the semester's rows of ``spec`` that no active ``kept_by`` row references
    (the users table holds the people enrolled: whoever has no enrollment left goes).

    Only rows that the written courses' ``keeper`` rows reference can have lost their last
    one, so only those are looked at: an apply's cost follows its courses, not the semester's
    size. ``= ANY(ARRAY(subquery))`` is computed once and looked up by the primary key, so the
    plan does not depend on the tables' statistics."""
    _, column = spec.kept_by  # type: ignore[misc]
    statement = sql.SQL(
        "UPDATE {target} AS t SET deleted_at = %s, source_updated_at = %s "
        "WHERE t.semester = %s AND t.institution_id = ANY(ARRAY("
        "SELECT c.{column} FROM {keeper} AS c WHERE c.semester = %s AND c.{course} = ANY(%s))) "
        "AND t.deleted_at IS NULL AND t.source_updated_at <= %s "
        "AND NOT EXISTS (SELECT 1 FROM {keeper} AS k WHERE k.{column} = t.institution_id "
        "AND k.semester = t.semester AND k.deleted_at IS NULL)"
    ).format(
        target=qualified_table(schema, spec.name),
        keeper=qualified_table(schema, keeper.name),
        column=sql.Identifier(column),
        course=sql.Identifier(keeper.course_column),  # type: ignore[arg-type]
    )
    params = (observed_at, observed_at, semester, semester, list(course_ids), observed_at)
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.rowcount


def write_terms(
    conn: psycopg.Connection, schema: str, terms: pd.DataFrame, observed_at: datetime
) -> WriteCounts:
    with conn.transaction():
        return upsert_rows(
            conn, schema, "terms", terms, observed_at, ("institution_id",), Scope(sql.SQL("true"))
        )
