"""The Canvas tables as Dagster assets: terms, Live Events, and per semester the registry's tables.

The semester tables are one multi-asset because they are fetched together (each object once per
run), validated together (they reference each other) and written in one transaction. A run
either backfills the semester or applies its landed Live Events (``mode``).
"""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Literal

import dagster as dg

from canvas_assets.backfill.semester import UnknownSemesterError, backfill_semester, semester_term
from canvas_assets.backfill.terms import refresh_terms
from canvas_assets.canvas import CanvasResource, CanvasSession
from canvas_assets.defs.partitions import CANVAS_API_POOL, semester_partitions
from canvas_assets.defs.reporting import check_results, check_specs, preview, table_key
from canvas_assets.live_events.apply import LiveEventsValidationError, apply_semester_events
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES, TERMS, TableSpec, ValidationReport
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.status import recorded_apply, recorded_sync

TERMS_KEY = table_key(TERMS.name)
LIVE_EVENTS_KEY = table_key("live_events")
GROUP = "canvas"
SEMESTER_TABLES_OP = "canvas_semester_tables"


@dg.asset(key=TERMS_KEY, group_name=GROUP, kinds={"canvas", "postgres"}, pool=CANVAS_API_POOL)
def terms(
    context: dg.AssetExecutionContext, canvas: CanvasResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Canvas enrollment terms (semesters) of the institution, including the default term.

    Each term's ``semester`` is its partition key: the SIS term id, or ``term-<id>``.
    """
    with canvas.session(context.log) as session, warehouse.connect() as conn:
        validated, counts = refresh_terms(
            conn, warehouse.table_schema(), session, datetime.now(UTC)
        )
    return dg.MaterializeResult(
        metadata={
            **counts.as_metadata(),
            **session.stats.as_metadata(),
            "semesters": ", ".join(validated["semester"]),
            "preview": preview(validated),
        }
    )


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

    mode: Literal["backfill", "live_events"] = "backfill"


LIVE_EVENTS_RUN_CONFIG = {"ops": {SEMESTER_TABLES_OP: {"config": {"mode": "live_events"}}}}


def _semester_specs(tables: Sequence[TableSpec]) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            table_key(spec.name),
            deps=[table_key(spec.upstream or TERMS.name), LIVE_EVENTS_KEY],
            description=spec.description,
            group_name=GROUP,
            partitions_def=semester_partitions,
            kinds={"canvas", "postgres"},
        )
        for spec in tables
    ]


def _backfill(
    context: dg.AssetExecutionContext,
    session: CanvasSession,
    warehouse: WarehouseResource,
    tables: Sequence[TableSpec],
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    semester, schema = context.partition_key, warehouse.table_schema()
    with recorded_sync(warehouse.connect, schema, semester), warehouse.connect() as conn:
        try:
            result = backfill_semester(conn, schema, session, semester, datetime.now(UTC), tables)
        except UnknownSemesterError as exc:
            raise dg.Failure(description=str(exc)) from None
        yield from check_results(tables, result.report, result.raw)
        if not result.report.ok:
            raise dg.Failure(description=result.report.message(semester))
    for spec in tables:
        yield dg.MaterializeResult(
            asset_key=table_key(spec.name),
            metadata={
                "semester": semester,
                "mode": "backfill",
                **result.counts[spec.name].as_metadata(),
                "canvas_objects": len(result.raw[spec.name]),
                **session.stats.as_metadata(),
                "preview": preview(result.report.frames[spec.name]),
            },
        )


def _apply(
    context: dg.AssetExecutionContext,
    session: CanvasSession,
    warehouse: WarehouseResource,
    tables: Sequence[TableSpec],
    settings: Settings,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    semester, schema = context.partition_key, warehouse.table_schema()
    with recorded_apply(warehouse.connect, schema, semester), warehouse.connect() as conn:
        try:
            term = semester_term(session, semester)
            applied = apply_semester_events(
                conn, schema, session, semester, term, datetime.now(UTC),
                settings.target_semesters, tables,
            )  # fmt: skip
        except UnknownSemesterError as exc:
            raise dg.Failure(description=str(exc)) from None
        except LiveEventsValidationError as exc:
            yield from check_results(tables, exc.report, {})
            raise dg.Failure(description=str(exc)) from None
    yield from check_results(tables, ValidationReport(applied.frames, {}), applied.frames)
    for spec in tables:
        counts = applied.counts.get(spec.name)
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
        if spec.name in applied.frames:
            metadata["preview"] = preview(applied.frames[spec.name])
        yield dg.MaterializeResult(asset_key=table_key(spec.name), metadata=metadata)


def build_semester_tables(
    settings: Settings, tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> dg.AssetsDefinition:
    """The multi-asset that writes the semester tables, one partition per semester."""

    @dg.multi_asset(
        name=SEMESTER_TABLES_OP,
        specs=_semester_specs(tables),
        check_specs=check_specs(tables),
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
        with canvas.session(context.log) as session:
            if config.mode == "live_events":
                yield from _apply(context, session, warehouse, tables, settings)
            else:
                yield from _backfill(context, session, warehouse, tables)

    return semester_tables
