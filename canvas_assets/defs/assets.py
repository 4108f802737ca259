"""The Canvas tables as Dagster assets: terms, Live Events, the Imported Semesters card, and per
semester the registry's tables.

The semester tables are one multi-asset because they are fetched together (each object once per
run), validated together (they reference each other) and written in one transaction. It only
backfills; Live Events are applied by their own job (``defs/apply.py``).
"""

import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from canvas_assets.backfill.semester import SemesterBackfill, backfill_semester
from canvas_assets.backfill.terms import refresh_terms
from canvas_assets.canvas import CanvasError, CanvasResource
from canvas_assets.canvas.fetch import UnknownSemesterError
from canvas_assets.canvas.limiter import CanvasStats
from canvas_assets.defs.checks import as_check_result, pandera_check_specs, pandera_evaluations
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.reporting import (
    PARTITIONING,
    definition_metadata,
    imported_semesters,
    preview,
    request_metadata,
    write_metadata,
)
from canvas_assets.defs.resources import institution_resource, resource_keys
from canvas_assets.outcomes import first_line
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES, TERMS, TableSpec
from canvas_assets.warehouse import WarehouseError, WarehouseResource
from canvas_assets.warehouse.reads import active_rows, sync_status
from canvas_assets.warehouse.status import recorded_sync

SEMESTER_TABLES_OP = "canvas_semester_tables"
SOURCE_TAG = "canvas-assets/source"  # backfill, reconciliation, live_events


@contextlib.contextmanager
def failing_in_one_line(namespace: Namespace) -> Iterator[None]:
    """A Canvas or warehouse error (they name the setting to fix) fails the run with that one
    line, naming the institution when there are several, instead of a traceback wall."""
    try:
        yield
    except (CanvasError, WarehouseError, UnknownSemesterError) as exc:
        where = f"{namespace.name}: " if namespace.name else ""
        raise dg.Failure(description=f"{where}{first_line(exc)}") from None


def _common(settings: Settings, namespace: Namespace) -> dict:
    return {
        "group_name": namespace.group,
        "owners": list(settings.asset_owners),
        "tags": {"source": "canvas", "domain": "academics"},
    }


def build_terms_asset(settings: Settings, namespace: Namespace) -> dg.AssetsDefinition:
    @dg.asset(
        key=namespace.key(TERMS.name),
        description=TERMS.description,
        metadata=definition_metadata(TERMS, namespace.schema),
        kinds={"canvas", "postgres"},
        pool=namespace.canvas_pool,
        required_resource_keys=resource_keys(namespace),
        **_common(settings, namespace),
    )
    def terms(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        canvas = institution_resource(context.resources, namespace, "canvas")
        warehouse = institution_resource(context.resources, namespace, "warehouse")
        schema = warehouse.table_schema()
        with (
            failing_in_one_line(namespace),
            canvas.session(context.log) as session,
            warehouse.connect() as conn,
        ):
            refreshed = refresh_terms(conn, schema, session, datetime.now(UTC))
            active = active_rows(conn, schema, [TERMS.name])[TERMS.name]
        return dg.MaterializeResult(
            metadata={
                **write_metadata(refreshed.counts, active),
                **request_metadata(TERMS, session.stats),
                "semesters": ", ".join(refreshed.terms["semester"]),
                "preview": preview(refreshed.terms),
            }
        )

    return terms


def live_events_spec(settings: Settings, namespace: Namespace) -> dg.AssetSpec:
    return dg.AssetSpec(
        namespace.key("live_events"),
        description="Canvas Live Events of this institution landed from the SQS queue (table "
        "live_events): the incremental changes that feed the semester tables between "
        "backfills. The Live Events sensor materializes it each time it lands messages of the "
        "institution; its checks watch the stream's lag, quarantine growth and silence.",
        kinds={"sqs", "postgres"},
        **_common(settings, namespace),
    )


def imported_semesters_spec(settings: Settings, namespace: Namespace) -> dg.AssetSpec:
    return dg.AssetSpec(
        namespace.key("imported_semesters"),
        deps=[namespace.key(TERMS.name)],
        description="The Imported Semesters card (table semester_sync_status): each semester "
        "with its status (added, syncing, synced, failed), when it was added, when its last "
        "sync started and completed, and the last error. Refreshed by every backfill, Live "
        "Events apply and auto-import.",
        metadata={"dagster/table_name": f"{namespace.schema}.semester_sync_status"},
        kinds={"postgres"},
        **_common(settings, namespace),
    )


def _semester_specs(
    settings: Settings, namespace: Namespace, tables: Sequence[TableSpec]
) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            namespace.key(spec.name),
            deps=[namespace.key(spec.upstream or TERMS.name), namespace.key("live_events")],
            description=f"{spec.description}\n\n{PARTITIONING}",
            metadata=definition_metadata(spec, namespace.schema),
            partitions_def=namespace.partitions,
            kinds={"canvas", "postgres"},
            # Asset-level (any semester's sync satisfies it); defs/freshness.py's check watches
            # each current semester.
            freshness_policy=dg.FreshnessPolicy.time_window(
                fail_window=timedelta(hours=settings.freshness_hours)
            ),
            **_common(settings, namespace),
        )
        for spec in tables
    ]


def _materializations(
    namespace: Namespace,
    tables: Sequence[TableSpec],
    result: SemesterBackfill,
    active: dict[str, int],
    stats: CanvasStats,
    reconciliation: bool,
) -> Iterator[dg.MaterializeResult]:
    for spec in tables:
        counts = result.counts[spec.name]
        metadata = {
            **write_metadata(counts, active[spec.name]),
            "canvas_objects": result.rows_mapped[spec.name],
            **request_metadata(spec, stats),
            "preview": preview(result.previews[spec.name]),
        }
        if reconciliation:
            # What the nightly re-read changed is what the Live Events stream missed.
            metadata["drift_rows"] = counts.inserted + counts.updated + counts.removed
        yield dg.MaterializeResult(asset_key=namespace.key(spec.name), metadata=metadata)


def build_semester_tables(
    settings: Settings, namespace: Namespace, tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> dg.AssetsDefinition:
    """The multi-asset that backfills the semester tables, one partition per semester."""

    @dg.multi_asset(
        name=namespace.suffixed(SEMESTER_TABLES_OP),
        specs=_semester_specs(settings, namespace, tables),
        check_specs=pandera_check_specs(namespace, tables),
        partitions_def=namespace.partitions,
        pool=namespace.canvas_pool,
        required_resource_keys=resource_keys(namespace),
    )
    def semester_tables(context: dg.AssetExecutionContext):
        """Backfill one semester from Canvas: fetch, validate, write in one transaction."""
        canvas = institution_resource(context.resources, namespace, "canvas")
        warehouse = institution_resource(context.resources, namespace, "warehouse")
        try:
            yield from _backfill(context, canvas, warehouse, namespace, tables)
        finally:
            log_imported_semesters(context, warehouse, namespace)

    return semester_tables


def _backfill(
    context: dg.AssetExecutionContext,
    canvas: CanvasResource,
    warehouse: WarehouseResource,
    namespace: Namespace,
    tables: Sequence[TableSpec],
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    semester, schema = context.partition_key, warehouse.table_schema()
    with (
        failing_in_one_line(namespace),
        canvas.session(context.log) as session,
        recorded_sync(warehouse.connect, schema, semester),
        warehouse.connect() as conn,
    ):
        result = backfill_semester(conn, schema, session, semester, datetime.now(UTC), tables)
        for evaluation in pandera_evaluations(
            namespace, tables, result.report, result.rows_mapped, semester,
            "the whole semester, read from Canvas by a backfill",
        ):  # fmt: skip
            yield as_check_result(evaluation)
        if not result.report.ok:
            raise dg.Failure(description=result.report.message(semester))
        active = active_rows(conn, schema, [spec.name for spec in tables], semester)
    context.log.info(
        f"Semester {semester}: "
        + ", ".join(f"{phase} {seconds:.1f} s" for phase, seconds in result.seconds.items())
    )
    reconciliation = context.run.tags.get(SOURCE_TAG) == "reconciliation"
    yield from _materializations(namespace, tables, result, active, session.stats, reconciliation)


def log_imported_semesters(
    context: dg.OpExecutionContext | dg.AssetExecutionContext,
    warehouse: WarehouseResource,
    namespace: Namespace,
) -> None:
    """Refresh the Imported Semesters card in the UI; best effort (the warehouse may be the
    thing that failed)."""
    try:
        with warehouse.connect() as conn:
            rows = sync_status(conn, warehouse.table_schema())
    except Exception as exc:  # the run's own error is what matters
        context.log.warning(f"Imported Semesters not refreshed: {exc}")
        return
    context.log_event(imported_semesters(namespace.key("imported_semesters"), rows))
