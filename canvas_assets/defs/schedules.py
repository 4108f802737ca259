"""``canvas_reconciliation``: the nightly re-backfill of the semesters running now, which heals
Live Events that Canvas never delivered."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg

from canvas_assets.defs.assets import SOURCE_TAG
from canvas_assets.defs.jobs import Jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.reads import TermDates, term_dates

RECONCILE_MARGIN = timedelta(days=14)


def current_semesters(
    terms: Iterable[TermDates], now: datetime, partitions: Iterable[str]
) -> list[str]:
    """Partitions whose term runs now (with two weeks' margin either side for late grades)."""
    existing = set(partitions)
    return sorted(
        term.semester
        for term in terms
        if term.semester in existing
        and term.start_at is not None
        and term.start_at - RECONCILE_MARGIN <= now
        and (term.end_at is None or now <= term.end_at + RECONCILE_MARGIN)
    )


def build_reconciliation_schedule(settings: Settings, jobs: Jobs) -> dg.ScheduleDefinition:
    namespace = Namespace.of(settings)

    @dg.schedule(
        name="canvas_reconciliation",
        cron_schedule=settings.reconcile_cron,
        job=jobs.semester,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-backfills the current semesters (CANVAS_RECONCILE_CRON, nightly by "
        "default) to heal Live Events that Canvas never delivered; each run reports the rows it "
        "changed as drift_rows: what the event stream missed.",
    )
    def canvas_reconciliation(
        context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        with warehouse.connect() as conn:
            terms = term_dates(conn, warehouse.table_schema())
        now = context.scheduled_execution_time or datetime.now(UTC)
        semesters = current_semesters(
            terms, now, context.instance.get_dynamic_partitions(namespace.partitions.name)
        )
        if not semesters:
            return dg.SkipReason("No current semesters to reconcile.")
        stamp = now.strftime("%Y-%m-%dT%H:%M")
        return [
            dg.RunRequest(
                run_key=f"reconcile:{s}:{stamp}",
                partition_key=s,
                tags={SOURCE_TAG: "reconciliation"},
            )
            for s in semesters
        ]

    return canvas_reconciliation
