"""A staged table's rows mapped, validated and copied to the warehouse while the fetch goes on.

The enrollments are most of a semester's rows, and each course's map from that course's own
objects alone (``TableSpec.staged``). So a backfill does not leave them all for after Canvas's
last answer: every ``STAGE_ROWS`` of them are mapped, checked against ``chunk_schema`` and
copied into a temp table of the backfill's own session, between the fetch's other work. Once the
semester is read, what is left is the last chunk, the checks that need the whole partition
(uniqueness, references) and the write, still one transaction that reads from the temp table.

Nothing reaches the semester's tables before every check has passed: a chunk that fails stops
the copying (its failure cases are kept, and the later chunks still checked, so every failure is
reported), and the temp table is dropped whatever happens.
"""

from __future__ import annotations

import contextlib
import time

import pandas as pd
import psycopg
from psycopg import sql

from canvas_assets.tables import ChunkedValidation, SemesterSnapshot, TableSpec
from canvas_assets.tables.columns import frame
from canvas_assets.warehouse.writes import (
    StagedRows,
    copy_rows,
    create_incoming,
    frame_rows,
    index_incoming,
)

# Objects mapped, checked and copied at a time: large enough that pandera's cost per call is
# small beside its cost per row, small enough that the last chunk is quick.
STAGE_ROWS = 2_000
PREVIEW_ROWS = 5


class StagedTable:
    """One staged table of one backfill: ``add`` each course's objects as they arrive,
    ``finish`` once the fetch is done, ``discard`` in any case."""

    def __init__(
        self, conn: psycopg.Connection, schema: str, spec: TableSpec, snapshot: SemesterSnapshot
    ) -> None:
        self.conn, self.schema, self.spec = conn, schema, spec
        # What the mapping reads of the semester: its key, term and fetch time.
        self._context = SemesterSnapshot(snapshot.semester, snapshot.term, snapshot.fetched_at)
        code = snapshot.term.get("sis_term_id")
        self.validation = ChunkedValidation(spec, snapshot.semester, code)
        self.head = frame(spec.model, [])  # the first rows copied: the materialization's preview
        self._pending: list = []
        self._temp: sql.Identifier | None = None
        self._columns: tuple[str, ...] = ()
        self._copied = 0
        # Time spent on the chunks (most of it while the fetch went on): what the phases of a
        # backfill no longer show apart.
        self.seconds = {"map": 0.0, "validate": 0.0, "copy": 0.0}

    def add(self, objects: list) -> None:
        self._pending.extend(objects)
        if len(self._pending) >= STAGE_ROWS:
            self._flush()

    def _flush(self) -> None:
        started = time.perf_counter()
        self._context.per_course = {self.spec.name: self._pending}
        chunk = frame(self.spec.model, self.spec.rows(self._context))  # type: ignore[misc]
        self._pending = []
        mapped = time.perf_counter()
        valid = self.validation.validate(chunk)
        validated = time.perf_counter()
        if valid is not None and not self.validation.failures:
            self._copy(valid)
        for phase, seconds in (
            ("map", mapped - started),
            ("validate", validated - mapped),
            ("copy", time.perf_counter() - validated),
        ):
            self.seconds[phase] += seconds

    def _copy(self, valid: pd.DataFrame) -> None:
        if self._temp is None:
            name = f"staged_{self.spec.name}"
            self._temp = create_incoming(
                self.conn, self.schema, self.spec.name, name, on_commit_drop=False
            )
            # Indexed before the rows arrive: the index grows with each chunk, during the fetch.
            index_incoming(self.conn, self._temp, self.spec.key)
        if self._copied < PREVIEW_ROWS:
            self.head = pd.concat([self.head, valid]).head(PREVIEW_ROWS)
        columns, rows = frame_rows(valid, self._context.fetched_at)
        copy_rows(self.conn, self._temp, columns, rows)
        self._columns, self._copied = tuple(columns), self._copied + len(valid)

    def finish(self) -> StagedRows:
        """Map, check and copy what is left; the rows staged, to be written only if the
        validation report (``validation.finish``) passes."""
        self._flush()
        if self._temp is None:  # an empty semester (or failed checks: the temp stays unused)
            self._copy(frame(self.spec.model, []))
        return StagedRows(self._temp, self._columns, self._copied)  # type: ignore[arg-type]

    def discard(self) -> None:
        """Drop the temp table if the write did not (a failed check, an error)."""
        if self._temp is None or self.conn.closed:
            return
        # A lost connection took the session's temp table with it.
        with contextlib.suppress(psycopg.OperationalError):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._temp))
