"""A staged table's rows mapped, validated and written while the fetch goes on.

The enrollments are most of a semester's rows, and each course's map from that course's own
objects alone (``TableSpec.staged``). So a backfill does not leave them all for after Canvas's
last answer: every ``STAGE_ROWS`` of them are mapped, checked against ``chunk_schema``, copied
into a temp table and upserted into the semester's table, inside the semester's one transaction
(which the backfill opens before it fetches). The people, handed over as the enrollments name
them (``canvas.fetch.PeopleHandOver``), are mapped, checked and copied so too, but upserted once
the fetch is done (``TableSpec.shared_rows``). Once the semester is read, what is left is the
last chunks, the checks that need the whole partition (uniqueness, references), the people's
upsert, marking deleted the rows Canvas no longer lists, and the commit.

Nothing is committed before every check has passed: a chunk that fails stops the writing (its
failure cases are kept, and the later chunks still checked, so every failure is reported), and
a failed check rolls the whole transaction back. The temp tables go with the transaction.
"""

from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import psycopg
from psycopg import sql

from canvas_assets.tables import ChunkedValidation, SemesterSnapshot, TableSpec
from canvas_assets.tables.columns import frame
from canvas_assets.warehouse.writes import (
    Scope,
    StagedRows,
    WriteCounts,
    analyze_incoming,
    append_incoming,
    copy_rows,
    create_incoming,
    frame_rows,
    index_incoming,
    remove_absent,
    semester_has_rows,
    upsert_incoming,
)

# Objects mapped, checked and copied at a time: large enough that pandera's cost per call is
# small beside its cost per row, small enough that the last chunk is quick.
STAGE_ROWS = 2_000
PREVIEW_ROWS = 5


class StagedTable:
    """One staged table of one backfill, made inside the semester's transaction (its temp
    tables go with it): ``add`` its objects as they arrive (each course's, or the people the
    fetch hands over), ``finish`` once the fetch is done, then ``complete``."""

    def __init__(
        self, conn: psycopg.Connection, schema: str, spec: TableSpec, snapshot: SemesterSnapshot
    ) -> None:
        self.conn, self.schema, self.spec = conn, schema, spec
        # What the mapping reads of the semester: its key, term and fetch time.
        self._context = SemesterSnapshot(snapshot.semester, snapshot.term, snapshot.fetched_at)
        code = snapshot.term.get("sis_term_id")
        self.validation = ChunkedValidation(spec, snapshot.semester, code)
        self.head = frame(spec.model, [])  # the first rows copied: the materialization's preview
        # What the upserts wrote, until Postgres refused one (an id listed twice, which the
        # checks report; any other refusal, a deadlock say, is tried again once they passed).
        self.written = WriteCounts()
        self.refused = False
        self._pending: list = []
        name = spec.name
        # Every row copied, for the soft-delete; indexed before the rows arrive, so the index
        # grows with each chunk, during the fetch.
        self._staged = create_incoming(conn, schema, name, f"staged_{name}")
        index_incoming(conn, self._staged, spec.key)
        self._chunk = create_incoming(conn, schema, name, f"chunk_{name}")  # the chunk upserted
        self._columns = (*frame(spec.model, []).columns, "source_updated_at")
        # Made under the semester's lock: rows it does not hold now can only be this backfill's.
        self._held_before = semester_has_rows(conn, schema, name, snapshot.semester)
        self._copied = 0
        # Time spent on the chunks (most of it while the fetch went on): what the phases of a
        # backfill no longer show apart.
        self.seconds = {"map": 0.0, "validate": 0.0, "copy": 0.0, "upsert": 0.0}

    def add(self, objects: list) -> None:
        self._pending.extend(objects)
        if len(self._pending) >= STAGE_ROWS:
            self._flush()

    def _flush(self) -> None:
        started = time.perf_counter()
        if self.spec.source is None:  # the people, which the fetch hands over by id
            self._context.users = {int(user["id"]): user for user in self._pending}
        else:
            self._context.per_course = {self.spec.name: self._pending}
        chunk = frame(self.spec.model, self.spec.rows(self._context))  # type: ignore[misc]
        self._pending = []
        mapped = time.perf_counter()
        valid = self.validation.validate(chunk)
        self.seconds["map"] += mapped - started
        self.seconds["validate"] += time.perf_counter() - mapped
        if valid is not None and not self.validation.failures:
            self._write(valid)

    def _write(self, valid: pd.DataFrame) -> None:
        """Copy the chunk and, unless the table's rows are shared with other semesters'
        writers (``TableSpec.shared_rows``, upserted in ``complete``) or Postgres refused an
        earlier chunk, upsert it."""
        started = time.perf_counter()
        if self._copied < PREVIEW_ROWS:
            self.head = pd.concat([self.head, valid]).head(PREVIEW_ROWS)
        columns, rows = frame_rows(valid, self._context.fetched_at)
        upsert_now = not (self.spec.shared_rows or self.refused)
        copy_rows(self.conn, self._chunk if upsert_now else self._staged, columns, rows)
        self._copied += len(valid)
        copied = time.perf_counter()
        if upsert_now:
            self._upsert(self._chunk)
            append_incoming(self.conn, self._chunk, self._staged, self._columns)
        self.seconds["copy"] += copied - started
        self.seconds["upsert"] += time.perf_counter() - copied

    def _upsert(self, temp: sql.Identifier) -> None:
        """Upsert ``temp``'s rows, counted in ``written``; ``refused`` if Postgres refused."""
        try:
            with self.conn.transaction():  # a savepoint: a refusal leaves the transaction usable
                upserted = upsert_incoming(
                    self.conn, self.schema, self.spec.name, temp, self._columns, self.spec.key
                )
        except psycopg.Error:
            self.refused = True
            return
        self.written.add(upserted)

    def finish(self) -> StagedRows:
        """Map, check and write what is left; every row staged, for the soft-delete (or, if
        Postgres refused a chunk, the whole upsert) once the validation report
        (``validation.finish``) passes."""
        self._flush()
        return StagedRows(self._staged, self._columns, self._copied)

    def complete(self) -> WriteCounts | None:
        """Once ``finish``ed: upsert the rows of a table with ``shared_rows`` (the others' are
        upserted already), mark deleted the semester's rows the fetch did not bring back and
        return the table's counts. ``None``, and nothing marked, when not every row was
        upserted: a chunk failed its checks (the report fails) or Postgres refused an upsert
        (the whole upsert is left for after the checks: ``write_tables`` with the rows
        ``finish`` returned)."""
        if self.refused or self.validation.failures:
            return None
        staged, key, context = self._staged, self.spec.key, self._context
        if self.spec.shared_rows:
            self._upsert(staged)
            if self.refused:
                return None
        removed = 0
        if self._held_before:  # else nothing of the semester's is absent: a first backfill
            analyze_incoming(self.conn, staged, key)
            scope = Scope.semester(context.semester)
            removed = remove_absent(
                self.conn, self.schema, self.spec.name, staged, context.fetched_at, key, scope
            )
        return replace(self.written, rows=self._copied, removed=removed)
