"""The warehouse writes stay linear in the rows whatever the tables' statistics (real PostgreSQL).

Each write statement is EXPLAINed at the moment the writer runs it, on tables that were never
analysed, under every join method the planner may fall back to when statistics mislead it. A
nested loop that scans a table sequentially on its inner side reads that table once per outer
row: quadratic. Nothing here is timed.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest
from psycopg import sql

from canvas_assets.backfill.staging import StagedTable
from canvas_assets.tables import SEMESTER_TABLES, SemesterSnapshot
from canvas_assets.tables.columns import frame
from canvas_assets.tables.mapping import Enrollment
from canvas_assets.warehouse.writes import (
    analyze_tables,
    try_lock_semester,
    write_courses,
    write_tables,
)

from .backfills import write_semester

ROWS = 3_000  # enough that an index lookup is far cheaper than a scan, for any planner
# The join methods a planner may be left with; a write must be linear under each of them.
PLANNER_SETTINGS = [
    {},
    {"enable_hashjoin": "off"},
    {"enable_mergejoin": "off"},
    {"enable_hashjoin": "off", "enable_mergejoin": "off"},
]
WRITES = ("INSERT", "UPDATE", "DELETE", "WITH")


class ExplainingCursor(psycopg.Cursor):
    """Runs EXPLAIN (FORMAT JSON) of every composed write statement (the writer composes all
    of its statements) just before the statement itself, in the same transaction, and keeps the
    plans on the connection."""

    def execute(self, query, params=None, **kwargs):  # type: ignore[override]
        if isinstance(query, sql.Composable):
            text = query.as_string(self.connection)
            if text.lstrip().upper().startswith(WRITES):
                super().execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query, params)
                plan = self.fetchone()[0]
                plan = plan if isinstance(plan, list) else json.loads(plan)
                self.connection.plans.append((text, plan))  # type: ignore[attr-defined]
        return super().execute(query, params, **kwargs)


def _rows(table: str, semester: str, count: int, offset: int = 0) -> list[dict]:
    """Rows a write accepts (the NOT NULL columns set) for ``count`` objects of ``table``."""
    out = []
    for n in range(offset + 1, offset + count + 1):
        row: dict = {"semester": semester, "institution_id": n}
        if table == "courses":
            row.update(name=f"Course {n}", status="available", departments="[]")
        elif table == "sections":
            row.update(course_id=n, name=f"Section {n}")
        elif table == "enrollments":
            row.update(
                course_id=n, section_id=n, user_id=n, role="StudentEnrollment",
                enrollment_status="active",
            )  # fmt: skip
        elif table == "users":
            row.update(source_type="LMS", source_name="Canvas")
        out.append(row)
    return out


def _frames(semester: str, count: int) -> dict[str, pd.DataFrame]:
    return {
        spec.name: frame(spec.model, _rows(spec.name, semester, count)) for spec in SEMESTER_TABLES
    }


# Nodes that only pass their child's rows on: what the inner side really scans is below them.
PASS_THROUGH = ("Materialize", "Memoize", "Bitmap Heap Scan", "BitmapAnd", "BitmapOr")
# A column of another relation in a scan's condition ("t.institution_id"): the scan looks up
# the outer row's value rather than reading the same range again for every outer row.
OUTER_REFERENCE = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_\"]")


def _inner_scans_per_outer_row(node: dict, found: list[str]) -> list[str]:
    """Scans a nested loop repeats on its inner side without looking up the outer row: a
    sequential scan, or an index scan on a constant condition (say the primary key's
    ``semester = '2026SP'``, alone or ANDed with a lookup). Each reads a whole range once per
    outer row."""
    children = node.get("Plans", [])
    if node["Node Type"] == "Nested Loop":
        for child in children:
            if child.get("Parent Relationship") == "Inner":
                found.extend(_unparameterized_leaves(child))
    for child in children:
        _inner_scans_per_outer_row(child, found)
    return found


def _unparameterized_leaves(node: dict) -> list[str]:
    if node["Node Type"] in PASS_THROUGH and node.get("Plans"):
        return [name for child in node["Plans"] for name in _unparameterized_leaves(child)]
    name = node.get("Relation Name") or node.get("Index Name") or "?"
    if node["Node Type"] == "Seq Scan":
        return [name]
    if node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Index Scan"):
        return [] if OUTER_REFERENCE.search(node.get("Index Cond", "")) else [name]
    return []


@pytest.fixture
def plans(db: psycopg.Connection, warehouse) -> Iterator[psycopg.Connection]:
    """The warehouse connection with EXPLAINing cursors; its tables are never analysed (the
    autovacuum daemon is kept away from them so the test sees what a fresh warehouse sees)."""
    schema = warehouse.table_schema()
    for spec in SEMESTER_TABLES:
        db.execute(
            sql.SQL("ALTER TABLE {}.{} SET (autovacuum_enabled = false)").format(
                sql.Identifier(schema), sql.Identifier(spec.name)
            )
        )
    db.cursor_factory = ExplainingCursor
    db.plans = []  # type: ignore[attr-defined]
    yield db
    db.cursor_factory = psycopg.Cursor


@contextmanager
def planner(conn: psycopg.Connection, settings: dict[str, str]) -> Iterator[None]:
    for name, value in settings.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
    try:
        yield
    finally:
        conn.execute("RESET ALL")


def _quadratic(conn: psycopg.Connection) -> list[tuple[str, list[str]]]:
    bad = []
    for text, plan in conn.plans:  # type: ignore[attr-defined]
        scans = _inner_scans_per_outer_row(plan[0]["Plan"], [])
        if scans:
            bad.append((text, scans))
    return bad


def _enrollments(count: int) -> list[Enrollment]:
    """What a backfill's fetch keeps of ``count`` enrollments (the rows of ``_rows``)."""
    return [
        Enrollment(n, n, n, n, "StudentEnrollment", "active", *[None] * 8)
        for n in range(1, count + 1)
    ]


def _write(conn: psycopg.Connection, schema: str, now: datetime, staged: bool) -> None:
    """A semester's write: every table from frames, or (``staged``) the staged tables as a
    backfill writes them while it fetches (``backfill.staging``: the enrollments chunk by
    chunk, the people once; then the soft-delete), in its transaction."""
    frames = _frames("2026SP", ROWS)
    if not staged:
        write_semester(conn, schema, "2026SP", frames, now)
        return
    objects = {"enrollments": _enrollments(ROWS), "users": [{"id": n} for n in range(1, ROWS + 1)]}
    with conn.transaction():
        assert try_lock_semester(conn, schema, "2026SP")
        snapshot = SemesterSnapshot("2026SP", {}, now)
        for spec in SEMESTER_TABLES:
            if spec.staged:
                table = StagedTable(conn, schema, spec, snapshot)
                table.add(objects[spec.name])
                table.finish()
                assert table.complete() is not None
        rest = [spec for spec in SEMESTER_TABLES if not spec.staged]
        write_tables(conn, schema, "2026SP", frames, now, rest)
    analyze_tables(conn, schema, SEMESTER_TABLES)


@pytest.mark.parametrize("staged", [False, True], ids=["frames", "staged tables"])
@pytest.mark.parametrize("settings", PLANNER_SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_backfill_writes_stay_linear_on_unanalysed_tables(
    plans, warehouse, settings, staged
) -> None:
    """Without this, the soft-delete's anti-join can become a nested loop over the incoming rows
    on a fresh warehouse (no statistics): a first backfill of 35,000 enrollments spent two
    minutes in one statement, and a 150,000-enrollment semester would spend hours. The same
    holds for the tables a backfill staged in temp tables while it fetched."""
    schema, now = warehouse.table_schema(), datetime.now(UTC)
    with planner(plans, settings):
        _write(plans, schema, now, staged)  # first backfill
        _write(plans, schema, now, staged)  # re-run
    statements = [text for text, _ in plans.plans]
    # A soft-delete per table and write, but for the staged tables of a first backfill, which
    # hold nothing of the semester to mark deleted (``writes.semester_has_rows``).
    first = sum(not (staged and spec.staged) for spec in SEMESTER_TABLES)
    assert sum(text.startswith("UPDATE") for text in statements) == first + len(SEMESTER_TABLES)
    assert _quadratic(plans) == []


@pytest.mark.parametrize("settings", PLANNER_SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_live_events_applies_stay_linear_on_unanalysed_tables(plans, warehouse, settings) -> None:
    """Without this, an apply's "who has no enrollment left" check could read the whole
    semester once per person when the tables have no statistics: with enrollments indexed on
    (user_id) alone the planner ANDed it with the primary key's semester prefix, and a medium
    institution's applies spent a second there per semester."""
    schema, now = warehouse.table_schema(), datetime.now(UTC)
    courses = list(range(1, ROWS + 1))
    with planner(plans, settings), plans.transaction():
        write_courses(plans, schema, "2026SP", courses, _frames("2026SP", ROWS), now)
        # Every course re-read, half of them gone: their people have no enrollment left.
        counts = write_courses(plans, schema, "2026SP", courses, _frames("2026SP", ROWS // 2), now)
    assert counts["users"].removed == ROWS - ROWS // 2
    statements = [text for text, _ in plans.plans]
    assert sum("ANY(ARRAY(" in text for text in statements) == 2  # people left unenrolled
    assert _quadratic(plans) == []


@pytest.mark.parametrize("settings", PLANNER_SETTINGS, ids=lambda s: ",".join(s) or "default")
def test_a_large_semester_after_small_ones_and_an_apply_stay_linear(
    plans, warehouse, settings
) -> None:
    """Without this, statistics gathered while a table was small (a few hundred rows of one
    semester) would make the planner expect one row of a large new semester and pick a
    quadratic plan, for backfills and for Live Events applies alike."""
    schema, now = warehouse.table_schema(), datetime.now(UTC)
    write_semester(plans, schema, "2025FA", _frames("2025FA", 50), now)
    for spec in SEMESTER_TABLES:
        plans.execute(
            sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(spec.name))
        )
    plans.plans.clear()
    later = now + timedelta(minutes=1)
    with planner(plans, settings):
        write_semester(plans, schema, "2026SP", _frames("2026SP", ROWS), later)
        with plans.transaction():
            write_courses(
                plans, schema, "2026SP", list(range(1, ROWS + 1)), _frames("2026SP", ROWS), later
            )
    statements = [text for text, _ in plans.plans]
    # Backfill and apply each soft-delete per table; the apply also removes unreferenced people.
    assert sum(text.startswith("UPDATE") for text in statements) >= 2 * len(SEMESTER_TABLES) + 1
    assert _quadratic(plans) == []


def test_the_plan_check_catches_a_nested_loop_over_a_sequential_scan(plans) -> None:
    """Without this, the checks above could pass because they never recognise the quadratic
    plan: an anti-join against an unindexed table, with hash and merge joins unavailable, must
    be reported."""
    plans.execute("CREATE TEMP TABLE a (k bigint)")
    plans.execute("CREATE TEMP TABLE b (k bigint)")
    plans.execute("INSERT INTO a SELECT generate_series(1, 2000)")
    plans.execute("INSERT INTO b SELECT generate_series(1, 2000)")
    with planner(plans, {"enable_hashjoin": "off", "enable_mergejoin": "off"}):
        plans.execute(sql.SQL("DELETE FROM a WHERE NOT EXISTS (SELECT 1 FROM b WHERE b.k = a.k)"))
    assert [scans for _, scans in _quadratic(plans)] == [["b"]]


def test_a_written_semester_is_analysed_on_its_planning_columns_and_left_to_autovacuum(
    plans, warehouse
) -> None:
    """Without this, a backfill would either leave the tables unanalysed (the applies that
    follow are planned on a guess of one row) or pay for a whole ANALYZE of every column,
    names and e-mails included, which was most of a small semester's write; and an ANALYZE of
    some columns must not tell autovacuum that the rest are done."""
    schema = warehouse.table_schema()
    write_semester(plans, schema, "2026SP", _frames("2026SP", ROWS), datetime.now(UTC))
    # The write's changes reach the statistics system at a later flush, perhaps after its
    # ANALYZE: flushed first, they show whether an ANALYZE of these tables resets them.
    plans.execute("SELECT pg_stat_force_next_flush()")
    plans.execute("SELECT 1")
    analyze_tables(plans, schema)
    plans.execute("SELECT pg_stat_force_next_flush()")
    plans.execute("SELECT pg_stat_clear_snapshot()")
    for spec in SEMESTER_TABLES:
        analysed = {
            column
            for (column,) in plans.execute(
                "SELECT attname FROM pg_stats WHERE schemaname = %s AND tablename = %s",
                (schema, spec.name),
            )
        }
        reltuples, changes = plans.execute(
            "SELECT c.reltuples, s.n_mod_since_analyze FROM pg_class AS c "
            "JOIN pg_stat_user_tables AS s ON s.relid = c.oid "
            "WHERE s.schemaname = %s AND s.relname = %s",
            (schema, spec.name),
        ).fetchone()
        assert analysed == set(spec.planning_columns), spec.name
        assert {"semester", "deleted_at", *spec.key} <= analysed
        assert reltuples == ROWS, spec.name
        assert changes >= ROWS, f"{spec.name}: autovacuum would think it analysed whole"


class CollectorWatchingCursor(psycopg.Cursor):
    """Notes, at each COPY a write makes, whether Python's cyclic garbage collector may run."""

    def copy(self, statement, params=None, **kwargs):  # type: ignore[override]
        self.connection.collector_at_copy.append(gc.isenabled())  # type: ignore[attr-defined]
        return super().copy(statement, params, **kwargs)


def test_a_write_holds_off_the_garbage_collector_while_copying_and_restores_it(warehouse) -> None:
    """Without this, a semester's row tuples set off the cyclic collector inside the write: a
    full collection over the heap of a process that had read a semester before took 73–103 ms
    of a medium write's 152–190 ms. A caller that turned the collector off must find it off."""
    schema = warehouse.table_schema()
    frames = _frames("2026SP", 100)
    with warehouse.connect() as conn:
        conn.cursor_factory = CollectorWatchingCursor
        conn.collector_at_copy = []  # type: ignore[attr-defined]
        write_semester(conn, schema, "2026SP", frames, datetime.now(UTC))
        assert conn.collector_at_copy == [False] * len(SEMESTER_TABLES)  # type: ignore[attr-defined]
        assert gc.isenabled()
        gc.disable()
        try:
            write_semester(conn, schema, "2026SP", frames, datetime.now(UTC))
            assert not gc.isenabled()
        finally:
            gc.enable()
