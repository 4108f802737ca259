"""One institution's pass in a Live Events apply run: route → apply each semester → record.

A pass takes the institution alone (a session advisory lock: a second run that finds it taken
leaves it to the first), routes its landed events (Canvas look-ups for courses the warehouse has
never seen), then applies every semester with pending events, one transaction each. A semester
another writer holds (a backfill) is left for the next run; a semester that fails (Canvas
refused, validation failed) keeps its events pending, has its error on the Imported Semesters
card, and fails the pass once the other semesters are done. The pass's outcome is recorded in
``live_events_apply_state``, which tells the sensor a failing institution from a healthy one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import UnknownSemesterError, fetch_terms, find_term
from canvas_assets.live_events import store
from canvas_assets.live_events.apply import (
    ApplyResult,
    LiveEventsValidationError,
    apply_semester_events,
)
from canvas_assets.live_events.route import RouteResult, route_pending
from canvas_assets.outcomes import first_line
from canvas_assets.tables import SEMESTER_TABLES, TableSpec, ValidationReport
from canvas_assets.warehouse.reads import active_rows
from canvas_assets.warehouse.status import recorded_apply


@dataclass
class SemesterPass:
    """What applying one semester's events did: the apply's result and the partition's active
    rows afterwards, or the error that kept its events pending (with the failed validation)."""

    semester: str
    result: ApplyResult | None = None
    active: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    failed_validation: ValidationReport | None = None


@dataclass
class InstitutionPass:
    """One institution's pass: routing, each semester applied, and whether it ran at all
    (``taken``: another run holds the institution)."""

    routed: RouteResult = field(default_factory=RouteResult)
    semesters: list[SemesterPass] = field(default_factory=list)
    taken: bool = False
    error: str | None = None

    def failure(self) -> str | None:
        """The pass's failure in one line, or None. Events Canvas could not route count: they
        wait for Canvas as surely as a semester that failed."""
        if self.error:
            return self.error
        errors = [f"{s.semester}: {s.error}" for s in self.semesters if s.error]
        if self.routed.unresolved and self.routed.lookup_error:
            errors.insert(
                0, f"{self.routed.unresolved} events not routed: {self.routed.lookup_error}"
            )
        return "; ".join(errors) or None


@contextlib.contextmanager
def applying_alone(conn: psycopg.Connection, schema: str) -> Iterator[bool]:
    """Hold the institution's apply lock while the block runs; False when another run holds
    it. A session lock, released here or when a killed run's connection goes."""
    name = f"{schema}/live-events-apply"
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)).fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken and not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))


def _apply_semester(
    conn: psycopg.Connection,
    connect: Callable[[], psycopg.Connection],
    schema: str,
    session: CanvasSession,
    semester: str,
    terms: list[dict],
    target_semesters: tuple[str, ...],
    tables: tuple[TableSpec, ...],
) -> SemesterPass:
    """Apply one semester; ``terms`` caches Canvas's term list across the pass's semesters
    (read inside, so Canvas failing to list them is the semester's recorded failure)."""
    outcome = SemesterPass(semester)
    try:
        with recorded_apply(connect, schema, semester):
            if not terms:
                terms.extend(fetch_terms(session))
            term = find_term(terms, semester)
            if term is None:
                raise UnknownSemesterError(semester)
            outcome.result = apply_semester_events(
                conn, schema, session, semester, term, datetime.now(UTC), target_semesters, tables
            )
    except LiveEventsValidationError as exc:
        outcome.error, outcome.failed_validation = first_line(exc), exc.report
    except Exception as exc:  # Canvas or the warehouse: recorded on the card, events pending
        outcome.error = first_line(exc)
    if outcome.result is not None and outcome.result.events:
        outcome.active = active_rows(conn, schema, [spec.name for spec in tables], semester)
    return outcome


def apply_institution(
    connect: Callable[[], psycopg.Connection],
    schema: str,
    session: CanvasSession,
    target_semesters: tuple[str, ...],
    partitions: set[str],
    tables: tuple[TableSpec, ...] = SEMESTER_TABLES,
) -> InstitutionPass:
    """Route and apply what the institution has landed; see the module docstring."""
    found = InstitutionPass()
    with connect() as conn, applying_alone(conn, schema) as alone:
        if not alone:
            found.taken = True
            return found
        try:
            found.routed = route_pending(conn, schema, session, target_semesters)
            terms: list[dict] = []
            for semester in store.pending_semesters(conn, schema, partitions):
                found.semesters.append(
                    _apply_semester(
                        conn, connect, schema, session, semester, terms, target_semesters, tables
                    )
                )
        except Exception as exc:  # the warehouse failed: the whole pass
            found.error = first_line(exc)
        store.record_apply_pass(conn, schema, found.failure())
    return found
