"""``canvas_reconciliation``: the nightly re-backfill of every institution's semesters running
now, which heals Live Events that Canvas never delivered."""

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import dagster as dg

from canvas_assets.defs.assets import SOURCE_TAG
from canvas_assets.defs.jobs import Jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import institution_resource
from canvas_assets.settings import Settings
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


def _reconcile_requests(
    context: dg.ScheduleEvaluationContext, namespace: Namespace, now: datetime
) -> list[dg.RunRequest]:
    warehouse = institution_resource(context.resources, namespace, "warehouse")
    with warehouse.connect() as conn:
        terms = term_dates(conn, warehouse.table_schema())
    partitions = context.instance.get_dynamic_partitions(namespace.partitions.name)
    stamp = now.strftime("%Y-%m-%dT%H:%M")
    prefix = "reconcile" if namespace.name is None else f"reconcile:{namespace.name}"
    return [
        dg.RunRequest(
            run_key=f"{prefix}:{semester}:{stamp}",
            partition_key=semester,
            job_name=namespace.semester_job,
            tags={SOURCE_TAG: "reconciliation"},
        )
        for semester in current_semesters(terms, now, partitions)
    ]


def build_reconciliation_schedule(
    settings: Settings, namespace: Namespace, jobs: Jobs
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=namespace.suffixed("canvas_reconciliation"),
        cron_schedule=settings.reconcile_cron,
        job=jobs.semesters[namespace.label],
        default_status=dg.DefaultScheduleStatus.RUNNING,
        required_resource_keys={namespace.resource_key("warehouse")},
        description=f"Re-backfills {namespace.label}'s current semesters (CANVAS_RECONCILE_CRON, "
        "nightly by default) to heal Live Events that Canvas never delivered; each run reports "
        "the rows it changed as drift_rows: what the event stream missed.",
    )
    def canvas_reconciliation(
        context: dg.ScheduleEvaluationContext, **_resources: object
    ) -> list[dg.RunRequest] | dg.SkipReason:
        now = context.scheduled_execution_time or datetime.now(UTC)
        return _reconcile_requests(context, namespace, now) or dg.SkipReason(
            "No current semesters to reconcile."
        )

    return canvas_reconciliation
