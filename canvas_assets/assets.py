"""The Canvas tables as Dagster assets: terms, and per semester courses → sections → enrollments
→ users.

The four semester tables are one multi-asset because they are fetched together (each object once
per run), validated together (they reference each other) and written in one transaction.
"""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from canvas_assets.canvas import CanvasError, CanvasResource, CanvasSession
from canvas_assets.incremental import LiveEventsValidationError, apply_semester_events
from canvas_assets.load import (
    SEMESTER_TABLES,
    mark_live_events_applied,
    mark_sync_finished,
    mark_sync_started,
    write_semester,
    write_terms,
)
from canvas_assets.partitions import CANVAS_API_POOL, semester_partitions
from canvas_assets.schemas import (
    TABLE_MODELS,
    TermFrame,
    ValidationReport,
    frame,
    validate_semester,
)
from canvas_assets.semester import (
    fetch_semester,
    fetch_terms,
    find_term,
    snapshot_frames,
    term_row,
)
from canvas_assets.settings import SyncSettings
from canvas_assets.warehouse import WarehouseResource

TERMS_KEY = dg.AssetKey(["canvas", "terms"])
LIVE_EVENTS_KEY = dg.AssetKey(["canvas", "live_events"])
COURSES_KEY = dg.AssetKey(["canvas", "courses"])
SECTIONS_KEY = dg.AssetKey(["canvas", "sections"])
ENROLLMENTS_KEY = dg.AssetKey(["canvas", "enrollments"])
USERS_KEY = dg.AssetKey(["canvas", "users"])
TABLE_KEYS = {
    "courses": COURSES_KEY,
    "sections": SECTIONS_KEY,
    "enrollments": ENROLLMENTS_KEY,
    "users": USERS_KEY,
}
SCHEMA_CHECK = "pandera_schema"
GROUP = "canvas"


def _preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(rows).astype(str).to_markdown(index=False))


@dg.asset(
    key=TERMS_KEY,
    group_name=GROUP,
    kinds={"canvas", "postgres"},
    pool=CANVAS_API_POOL,
)
def terms(
    context: dg.AssetExecutionContext, canvas: CanvasResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Canvas enrollment terms (semesters) of the institution, including the default term.

    Each term's ``semester`` is its partition key: the SIS term id, or ``term-<id>``.
    """
    observed_at = datetime.now(UTC)
    session = canvas.session(context.log)
    try:
        rows = [term_row(term) for term in fetch_terms(session)]
    finally:
        session.close()
    validated = TermFrame.validate(frame(TermFrame, rows), lazy=True)
    with warehouse.connect() as conn:
        counts = write_terms(conn, warehouse.table_schema(), validated, observed_at)
    return dg.MaterializeResult(
        metadata={
            **counts.as_metadata(),
            **session.stats.as_metadata(),
            "semesters": ", ".join(validated["semester"]),
            "preview": _preview(validated),
        }
    )


_DESCRIPTIONS = {
    "courses": "Canvas courses of one semester (Element451 Course mapping): name, code, "
    "departments, status, format, term, time zone and student count.",
    "sections": "Canvas course sections of one semester (Element451 Section mapping), with "
    "their instructors, the section's own student count and dates.",
    "enrollments": "Every enrollment of one semester (students, teachers, TAs, observers) with "
    "its state, current and final grades and LMS activity.",
    "users": "The people enrolled in one semester, as CRM student contacts: names, preferred "
    "name, email, SIS and login ids, source LMS/Canvas.",
}


live_events = dg.AssetSpec(
    LIVE_EVENTS_KEY,
    description="Canvas Live Events landed from the SQS queue (table live_events): the "
    "incremental changes that feed the semester tables between backfills. Materialized by the "
    "canvas_live_events sensor each time it lands messages.",
    group_name=GROUP,
    kinds={"sqs", "postgres"},
)


class SemesterSyncConfig(dg.Config):
    """``backfill`` re-reads the whole semester from Canvas; ``live_events`` applies the
    semester's landed Live Events (what the canvas_live_events sensor requests)."""

    mode: str = "backfill"


LIVE_EVENTS_RUN_CONFIG = {"ops": {"canvas_semester_tables": {"config": {"mode": "live_events"}}}}


def _check_results(report: ValidationReport, raw: dict[str, pd.DataFrame]):
    for table in SEMESTER_TABLES:
        yield dg.AssetCheckResult(
            asset_key=TABLE_KEYS[table],
            check_name=SCHEMA_CHECK,
            passed=table not in report.failures,
            metadata={
                "failed_checks": ", ".join(report.failed_checks(table)) or "none",
                "rows_checked": len(raw.get(table, ())),
            },
        )


def _semester_term(session: CanvasSession, semester: str) -> dict:
    term = find_term(fetch_terms(session), semester)
    if term is None:
        raise dg.Failure(
            f"Canvas has no enrollment term for semester {semester!r} (no term with that "
            "sis_term_id, or id for term-<id> keys). Remove the partition or fix the term."
        )
    return term


@dg.multi_asset(
    name="canvas_semester_tables",
    specs=[
        dg.AssetSpec(
            TABLE_KEYS[table],
            deps=[upstream, LIVE_EVENTS_KEY],
            description=_DESCRIPTIONS[table],
            group_name=GROUP,
            partitions_def=semester_partitions,
            kinds={"canvas", "postgres"},
        )
        for table, upstream in zip(
            SEMESTER_TABLES,
            [TERMS_KEY, COURSES_KEY, SECTIONS_KEY, ENROLLMENTS_KEY],
            strict=True,
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=TABLE_KEYS[table],
            description=f"pandera {TABLE_MODELS[table].__name__}: dtypes, required columns, unique "
            "ids, allowed states, ranges, dates, partition match and references.",
        )
        for table in SEMESTER_TABLES
    ],
    partitions_def=semester_partitions,
    pool=CANVAS_API_POOL,
)
def semester_tables(
    context: dg.AssetExecutionContext,
    config: SemesterSyncConfig,
    canvas: CanvasResource,
    warehouse: WarehouseResource,
):
    """Backfill one semester from Canvas (or apply its Live Events), validated, in one
    transaction."""
    if config.mode not in ("backfill", "live_events"):
        raise dg.Failure(f"mode must be 'backfill' or 'live_events', got {config.mode!r}.")
    semester = context.partition_key
    schema = warehouse.table_schema()
    observed_at = datetime.now(UTC)
    with warehouse.connect() as conn:
        if config.mode == "live_events":
            yield from _apply_live_events(conn, schema, canvas.session(context.log), semester)
            return
        mark_sync_started(conn, schema, semester)
        session = canvas.session(context.log)
        try:
            try:
                term = _semester_term(session, semester)
                snapshot = fetch_semester(session, term, semester, observed_at)
            finally:
                session.close()
            raw = snapshot_frames(snapshot)
            report = validate_semester(semester, term.get("sis_term_id"), raw)
            yield from _check_results(report, raw)
            if not report.ok:
                raise dg.Failure(description=report.message(semester))
            counts = write_semester(conn, schema, semester, report.frames, observed_at)
        except Exception as exc:
            # Whatever failed, the card says so (not "syncing" forever) and nothing was written.
            mark_sync_finished(conn, schema, semester, error=_failure_message(exc))
            raise
        mark_sync_finished(conn, schema, semester)

    source_counts = {
        "courses": len(snapshot.courses),
        "sections": len(snapshot.sections),
        "enrollments": len(snapshot.enrollments),
        "users": len(snapshot.users),
    }
    for table in SEMESTER_TABLES:
        yield dg.MaterializeResult(
            asset_key=TABLE_KEYS[table],
            metadata={
                "semester": semester,
                "mode": "backfill",
                **counts[table].as_metadata(),
                "canvas_objects": source_counts[table],
                **session.stats.as_metadata(),
                "preview": _preview(report.frames[table]),
            },
        )


def _failure_message(exc: Exception) -> str:
    if isinstance(exc, dg.Failure):
        return exc.description or "failed"
    if isinstance(exc, CanvasError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _apply_live_events(conn, schema: str, session: CanvasSession, semester: str):
    """Apply the semester's landed Live Events (see ``incremental.py``)."""
    try:
        term = _semester_term(session, semester)
        target = SyncSettings.from_env().target_semesters
        applied = apply_semester_events(
            conn, schema, session, semester, term, datetime.now(UTC), target
        )
    except LiveEventsValidationError as exc:
        yield from _check_results(exc.report, {})
        mark_live_events_applied(conn, schema, semester, error=str(exc))
        raise dg.Failure(description=str(exc)) from None
    except Exception as exc:
        mark_live_events_applied(conn, schema, semester, error=_failure_message(exc))
        raise
    finally:
        session.close()
    mark_live_events_applied(conn, schema, semester)
    yield from _live_results(semester, applied, session)


def _live_results(semester: str, applied, session: CanvasSession):
    frames = applied.frames or {}
    empty_report = ValidationReport(frames=frames, failures={})
    yield from _check_results(empty_report, frames)
    for table in SEMESTER_TABLES:
        counts = applied.counts.get(table)
        metadata = {
            "semester": semester,
            "mode": "live_events",
            "events": applied.events,
            "events_applied": applied.applied,
            "events_stale": applied.stale,
            "courses_refreshed": applied.courses_refreshed,
            "courses_gone": applied.courses_gone,
            "events_forwarded": applied.forwarded,
            **(counts.as_metadata() if counts else {}),
            **session.stats.as_metadata(),
        }
        if table in frames:
            metadata["preview"] = _preview(frames[table])
        yield dg.MaterializeResult(asset_key=TABLE_KEYS[table], metadata=metadata)
