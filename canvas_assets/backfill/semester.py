"""One semester backfill: fetch → map → validate → write, each step timed.

The backfill is one transaction under the semester's lock
(``warehouse.writes.try_lock_semester``), opened before the fetch so that the staged tables are
written as their rows arrive (``backfill.staging``): a semester that fails validation commits
nothing and keeps what the warehouse held. Meanwhile a Live Events apply leaves the semester to
the next run, and a second backfill of it waits for the commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import psycopg

from canvas_assets.backfill.staging import StagedTable
from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import fetch_semester, semester_term
from canvas_assets.memory import cyclic_gc_paused
from canvas_assets.tables import (
    SEMESTER_TABLES,
    SemesterSnapshot,
    TableSpec,
    ValidationReport,
    semester_frames,
    validate_semester,
)
from canvas_assets.warehouse.writes import (
    StagedRows,
    WriteCounts,
    analyze_tables,
    try_lock_semester,
    write_tables,
)

log = logging.getLogger(__name__)

LOCK_POLL_SECONDS = 1.0
RELEASE_SLICE = 5_000  # objects freed between two chances for the writer's thread to run


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
    # The staged tables' map, validate, copy and upsert, summed: spent while the fetch went on,
    # except for the last chunk (which ``seconds["map"]`` includes).
    staged_seconds: dict[str, float] = field(default_factory=dict)
    # When the checks ended (``time.perf_counter``): the write phase runs from there to the
    # commit.
    checked_at: float = 0.0


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
    are mapped, checked and upserted while the fetch goes on, uncommitted until every check
    has passed."""
    started = time.perf_counter()
    term = semester_term(session, semester)
    snapshot = SemesterSnapshot(semester, term, observed_at)
    with conn.transaction() as transaction:
        # The transaction waits on Canvas between chunks, and through the people's tail: a
        # server's timeout for idle transactions must not end a backfill that is working.
        conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        waited = _take_semester(conn, schema, semester)
        # The fetch's time is Canvas's: the wait for another backfill's commit is shown apart.
        result = _read_and_write(conn, schema, session, snapshot, tables, started + waited)
        if waited:
            result.seconds = {"waited": waited} | result.seconds
        if not result.report.ok:
            raise psycopg.Rollback(transaction)
    result.seconds["write"] = time.perf_counter() - result.checked_at
    if result.report.ok:
        analyze_tables(conn, schema, tables)
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


def _take_semester(conn: psycopg.Connection, schema: str, semester: str) -> float:
    """The semester's lock, once another backfill of it has committed: asked for again every
    ``LOCK_POLL_SECONDS`` rather than waited for in Postgres, so that a run stopped meanwhile
    stops at once. The seconds waited."""
    started, polls = time.perf_counter(), 0
    while not try_lock_semester(conn, schema, semester):
        if polls % 60 == 0:
            log.info(
                "Semester %s is being written by another run: waiting for its commit", semester
            )
        time.sleep(LOCK_POLL_SECONDS)
        polls += 1
    return time.perf_counter() - started if polls else 0.0


def _seconds(phases: dict[str, float]) -> str:
    return ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in phases.items())


def _read_and_write(
    conn: psycopg.Connection,
    schema: str,
    session: CanvasSession,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec],
    started: float,
) -> SemesterBackfill:
    """Fetch → map → validate → write, inside the semester's transaction, each step timed
    (``map`` includes the staged tables' last chunk). The caller commits, or rolls back when a
    check failed."""
    staging = {s.name: StagedTable(conn, schema, s, snapshot) for s in tables if s.staged}

    def stage(table: str, objects: list) -> None:
        if table in staging:
            staging[table].add(objects)

    semester, term, observed_at = snapshot.semester, snapshot.term, snapshot.fetched_at
    snapshot = fetch_semester(session, term, semester, observed_at, tables, on_objects=stage)
    fetched = time.perf_counter()
    with cyclic_gc_paused():  # the rest's rows, with the semester's snapshot held
        result = _check_and_write(conn, schema, snapshot, tables, staging)
    result.seconds = {"fetch": fetched - started} | result.seconds
    return result


def _check_and_write(
    conn: psycopg.Connection,
    schema: str,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec],
    staging: dict[str, StagedTable],
) -> SemesterBackfill:
    """Once the fetch is done, a worker thread writes (``_write_in_turn``) while this thread
    maps and checks the tables not staged, then hands it the verdict."""
    started = time.perf_counter()
    staged = {name: table.finish() for name, table in staging.items()}
    last_chunk = time.perf_counter() - started
    rest = [spec for spec in tables if spec.name not in staged]
    verdict: Future[ValidationReport] = Future()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="semester-write") as writer:
        written = writer.submit(
            _write_in_turn, conn, schema, snapshot, tables, rest, staging, staged, verdict
        )
        try:
            result = _map_and_check(snapshot, tables, rest, staging)
        except BaseException as exc:
            verdict.set_exception(exc)
            raise
        result.seconds["map"] += last_chunk
        result.checked_at = time.perf_counter()
        verdict.set_result(result.report)
        result.counts = written.result()
    for table in staging.values():
        for phase, seconds in table.seconds.items():
            result.staged_seconds[phase] = result.staged_seconds.get(phase, 0.0) + seconds
    return result


def _release(snapshot: SemesterSnapshot) -> None:
    """Drop the snapshot's objects but its term and courses, a slice at a time: a large
    semester's, released at once, would hold the interpreter lock from the writer's thread
    (between its statements) for as long as it takes."""
    for objects in snapshot.per_course.values():
        while objects:
            del objects[-RELEASE_SLICE:]
    for user_id in list(snapshot.users):  # one by one: the writer's thread gets its turns
        del snapshot.users[user_id]
    snapshot.per_course = {}


def _write_in_turn(
    conn: psycopg.Connection,
    schema: str,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec],
    rest: Sequence[TableSpec],
    staging: dict[str, StagedTable],
    staged: dict[str, StagedRows],
    verdict: Future[ValidationReport],
) -> dict[str, WriteCounts]:
    """The staged tables' last step (``StagedTable.complete``: the people's upsert, the
    soft-delete) while the checks go on, then, if they passed, the write of ``rest`` (and
    that of a staged table Postgres refused an upsert of): the counts (none if a check
    failed)."""
    semester, observed_at = snapshot.semester, snapshot.fetched_at
    completed = {name: table.complete() for name, table in staging.items()}
    report = verdict.result()
    if not report.ok:
        return {}
    counts = {name: got for name, got in completed.items() if got is not None}
    refused = _specs(tables, [name for name, got in completed.items() if got is None])
    if refused:  # Postgres refused an upsert of theirs: whole again, meeting any error here
        rows = {spec.name: staged[spec.name] for spec in refused}
        counts |= write_tables(conn, schema, semester, {}, observed_at, refused, rows)
        for spec in refused:  # what was upserted before the refusal is unchanged now
            counts[spec.name].add(staging[spec.name].written)
    return counts | write_tables(conn, schema, semester, report.frames, observed_at, rest)


def _specs(tables: Sequence[TableSpec], names: Iterable[str]) -> list[TableSpec]:
    wanted = set(names)
    return [spec for spec in tables if spec.name in wanted]


def _map_and_check(
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec],
    rest: Sequence[TableSpec],
    staging: dict[str, StagedTable],
) -> SemesterBackfill:
    """Map ``rest`` (the tables not staged) and check the whole semester: the report, with the
    frames to write, and the ``map`` and ``validate`` seconds."""
    started = time.perf_counter()
    semester = snapshot.semester
    raw = semester_frames(snapshot, rest)
    _release(snapshot)  # mapped: freed while Postgres upserts the people
    mapped = time.perf_counter()
    chunked = {name: table.validation for name, table in staging.items()}
    # A staged table's ids, for the references to it (enrollments → users).
    targets = {table for spec in tables for table in spec.references.values()}
    referenced = raw | {name: v.referable_ids() for name, v in chunked.items() if name in targets}
    code = snapshot.term.get("sis_term_id")
    report = validate_semester(semester, code, referenced, tables, chunked)
    rows = {name: len(df) for name, df in raw.items()} | {n: v.rows for n, v in chunked.items()}
    previews = dict(report.frames) | {name: table.head for name, table in staging.items()}
    result = SemesterBackfill(snapshot, rows, report, previews)
    result.seconds = {"map": mapped - started, "validate": time.perf_counter() - mapped}
    return result
