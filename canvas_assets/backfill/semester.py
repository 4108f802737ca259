"""One semester backfill: fetch → map → validate → write, each step timed.

The write is one transaction (``warehouse.writes.write_semester``): a semester that fails
validation writes nothing and keeps what the warehouse held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import psycopg

from canvas_assets.backfill.staging import StagedTable
from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import fetch_semester, semester_term
from canvas_assets.tables import (
    SEMESTER_TABLES,
    SemesterSnapshot,
    TableSpec,
    ValidationReport,
    semester_frames,
    validate_semester,
)
from canvas_assets.warehouse.writes import WriteCounts, write_semester

log = logging.getLogger(__name__)


@dataclass
class SemesterBackfill:
    """What a backfill read (the snapshot keeps the term and its courses; the rest is dropped
    once mapped), how many rows each table mapped to, what the checks said (with the validated
    frames of the tables validated whole) and, when they passed, what it wrote. ``previews``
    holds each table's first validated rows."""

    snapshot: SemesterSnapshot
    rows_mapped: dict[str, int]
    report: ValidationReport
    previews: dict[str, pd.DataFrame] = field(default_factory=dict)
    counts: dict[str, WriteCounts] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # The staged tables' map, validate and copy, summed: spent while the fetch went on, except
    # for the last chunk (which ``seconds["map"]`` includes).
    staged_seconds: dict[str, float] = field(default_factory=dict)


def backfill_semester(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    semester: str,
    observed_at: datetime,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> SemesterBackfill:
    """Read the semester from Canvas and, if every table validates, write it. A failed
    validation writes nothing: check ``result.report.ok``. Staged tables (``backfill.staging``)
    are mapped, checked and copied to a temp table while the fetch goes on."""
    started = time.perf_counter()
    term = semester_term(session, semester)
    snapshot = SemesterSnapshot(semester, term, observed_at)
    staging = {s.name: StagedTable(conn, schema, s, snapshot) for s in tables if s.staged}
    try:
        result = _read_and_write(conn, schema, session, snapshot, tables, staging, started)
    finally:
        for staged in staging.values():
            staged.discard()
    log.debug(  # the wall clock at the end: what a benchmark sets against Canvas's last answer
        "Semester %s phases: %s (Canvas: %d requests, %d throttled) done at %.3f; staged: %s",
        semester,
        _seconds(result.seconds),
        session.stats.requests,
        session.stats.throttle_waits,
        time.time(),
        _seconds(result.staged_seconds) or "nothing",
    )
    return result


def _seconds(phases: dict[str, float]) -> str:
    return ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in phases.items())


def _read_and_write(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec],
    staging: dict[str, StagedTable],
    started: float,
) -> SemesterBackfill:
    """Fetch → map → validate → write, each step timed (``map`` includes the staged tables'
    last chunk: mapped, checked and copied)."""
    semester, term, observed_at = snapshot.semester, snapshot.term, snapshot.fetched_at

    def stage(table: str, objects: list) -> None:
        if table in staging:
            staging[table].add(objects)

    snapshot = fetch_semester(session, term, semester, observed_at, tables, on_objects=stage)
    fetched = time.perf_counter()
    staged = {name: table.finish() for name, table in staging.items()}
    raw = semester_frames(snapshot, [spec for spec in tables if spec.name not in staging])
    # Mapped: a large semester's JSON would otherwise stay beside its frames until the end.
    snapshot.per_course, snapshot.users = {}, {}
    mapped = time.perf_counter()
    chunked = {name: table.validation for name, table in staging.items()}
    report = validate_semester(semester, term.get("sis_term_id"), raw, tables, chunked)
    validated = time.perf_counter()
    rows = {name: len(df) for name, df in raw.items()} | {n: v.rows for n, v in chunked.items()}
    previews = dict(report.frames) | {name: table.head for name, table in staging.items()}
    result = SemesterBackfill(snapshot, rows, report, previews)
    del raw  # the validated frames (report.frames) are what is written
    if report.ok:
        result.counts = write_semester(
            conn, schema, semester, report.frames, observed_at, tables, staged
        )
    result.seconds = {
        "fetch": fetched - started,
        "map": mapped - fetched,
        "validate": validated - mapped,
        "write": time.perf_counter() - validated,
    }
    for table in staging.values():
        for phase, seconds in table.seconds.items():
            result.staged_seconds[phase] = result.staged_seconds.get(phase, 0.0) + seconds
    return result
