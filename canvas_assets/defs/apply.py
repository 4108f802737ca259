"""The Live Events apply job: one run per semester applies its landed events, then keeps applying
the semester's new events for a window, so a busy stream makes one run per semester per window
instead of one per sensor tick (a calm Runs page), at no cost in latency: the open run picks up
newly routed events within seconds.

Each pass with events records materializations of the semester's tables (partition = semester)
and their pandera check results, like a backfill does.
"""

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import dagster as dg
import psycopg

from canvas_assets.backfill.semester import UnknownSemesterError, semester_term
from canvas_assets.canvas import CanvasResource, CanvasSession
from canvas_assets.defs.assets import SOURCE_TAG, log_imported_semesters
from canvas_assets.defs.checks import pandera_evaluations
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.reporting import preview, write_metadata
from canvas_assets.live_events.apply import (
    ApplyResult,
    LiveEventsValidationError,
    apply_semester_events,
)
from canvas_assets.live_events.store import pending_semesters
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES, TableSpec, ValidationReport
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.reads import active_rows
from canvas_assets.warehouse.status import recorded_apply

APPLY_JOB = "canvas_live_events_apply"
POLL_SECONDS = 2.0


class ApplyConfig(dg.Config):
    """``window_seconds``: keep applying the semester's new events this long (0: one pass).
    The run ends early once no event has arrived for ``idle_seconds``."""

    window_seconds: int = 0
    idle_seconds: int = 60


def _report_pass(
    context: dg.OpExecutionContext,
    namespace: Namespace,
    tables: Sequence[TableSpec],
    applied: ApplyResult,
    active: dict[str, int],
    semester: str,
) -> None:
    rows = {name: len(frame) for name, frame in applied.frames.items()}
    report = ValidationReport(applied.frames, {})
    for evaluation in pandera_evaluations(namespace, tables, report, rows, semester):
        context.log_event(evaluation)
    for spec in tables:
        metadata = {
            **write_metadata(applied.counts[spec.name], active[spec.name]),
            "events": applied.events,
            "events_applied": applied.applied,
            "events_stale": applied.stale,
            "courses_refreshed": applied.courses_refreshed,
            "courses_gone": applied.courses_gone,
            "people_refreshed": applied.people_refreshed,
            "events_forwarded": applied.forwarded,
        }
        if spec.name in applied.frames:
            metadata["preview"] = preview(applied.frames[spec.name])
        context.log_event(
            dg.AssetMaterialization(namespace.key(spec.name), partition=semester, metadata=metadata)
        )


def _one_pass(
    context: dg.OpExecutionContext,
    conn: psycopg.Connection,
    session: CanvasSession,
    warehouse: WarehouseResource,
    terms: dict[str, dict],
    settings: Settings,
    tables: Sequence[TableSpec],
) -> int:
    """Apply what is pending now; returns how many events it closed. ``terms`` caches the
    semester's term across passes (read inside the pass, so a failure is recorded)."""
    semester, schema = context.partition_key, warehouse.table_schema()
    namespace = Namespace.of(settings)
    with recorded_apply(warehouse.connect, schema, semester):
        try:
            if semester not in terms:
                terms[semester] = semester_term(session, semester)
            term = terms[semester]
            applied = apply_semester_events(
                conn, schema, session, semester, term, datetime.now(UTC),
                settings.target_semesters, tables,
            )  # fmt: skip
        except UnknownSemesterError as exc:
            raise dg.Failure(description=str(exc)) from None
        except LiveEventsValidationError as exc:
            for evaluation in pandera_evaluations(namespace, tables, exc.report, {}, semester):
                context.log_event(evaluation)
            raise dg.Failure(description=str(exc)) from None
    if applied.events:
        active = active_rows(conn, schema, [spec.name for spec in tables], semester)
        _report_pass(context, namespace, tables, applied, active, semester)
        context.log.info(
            f"Applied {applied.applied} events of {semester} ({applied.stale} stale, "
            f"{applied.courses_refreshed} courses re-read, {applied.people_refreshed} people "
            f"refreshed, {applied.forwarded} forwarded) in "
            f"{applied.seconds:.1f} s, {applied.canvas_seconds:.1f} s of it reading Canvas."
        )
    return applied.events


def _apply_window(
    context: dg.OpExecutionContext,
    config: ApplyConfig,
    session: CanvasSession,
    warehouse: WarehouseResource,
    settings: Settings,
    tables: Sequence[TableSpec],
) -> int:
    semester, schema = context.partition_key, warehouse.table_schema()
    started = last_event = time.monotonic()
    total = 0
    terms: dict[str, dict] = {}
    with warehouse.connect() as conn:
        while True:
            if semester in pending_semesters(conn, schema, {semester}):
                closed = _one_pass(context, conn, session, warehouse, terms, settings, tables)
                total += closed
                last_event = time.monotonic() if closed else last_event
            now = time.monotonic()
            if now - started >= config.window_seconds or now - last_event >= config.idle_seconds:
                return total
            time.sleep(POLL_SECONDS)


def build_apply_job(
    settings: Settings, tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> dg.JobDefinition:
    namespace = Namespace.of(settings)

    @dg.op(
        name="apply_live_events",
        description="Apply the semester's landed Live Events: re-read the courses they name, "
        "validate, write, and mark them applied, in one transaction per pass.",
    )
    def apply_live_events(
        context: dg.OpExecutionContext,
        config: ApplyConfig,
        canvas: CanvasResource,
        warehouse: WarehouseResource,
    ) -> None:
        try:
            with canvas.session(context.log) as session:
                total = _apply_window(context, config, session, warehouse, settings, tables)
            context.log.info(f"Closed {total} events of {context.partition_key} in this run.")
        finally:
            log_imported_semesters(context, warehouse, namespace)

    @dg.job(
        name=APPLY_JOB,
        partitions_def=namespace.partitions,
        tags={SOURCE_TAG: "live_events"},
        description="Applies one semester's landed Live Events (requested by the "
        "canvas_live_events sensor). Filter the Runs page with the tag "
        f"{SOURCE_TAG}=live_events, or by this job's name.",
    )
    def canvas_live_events_apply() -> None:
        apply_live_events()

    return canvas_live_events_apply
