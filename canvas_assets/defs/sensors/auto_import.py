"""``semester_auto_import``: Target Semesters and Auto Import Semesters.

Every new Canvas term that Target Semesters admits becomes a ``semester`` partition and, unless
auto-import is off, gets its first backfill (``plan_auto_import`` decides). The sensor looks at
Canvas every CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS; a look that failed (Canvas down, a
rejected token) is tried again at the next tick, ``RETRY_SECONDS`` later.
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms
from canvas_assets.defs.jobs import Jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.reporting import imported_semesters
from canvas_assets.settings import Settings, semester_matches
from canvas_assets.tables import semester_key
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.reads import sync_status
from canvas_assets.warehouse.status import mark_semesters_added, recover_interrupted_syncs

RETRY_SECONDS = 30
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class AutoImportPlan:
    new_semesters: tuple[str, ...]
    backfill_semesters: tuple[str, ...]


def plan_auto_import(
    terms: Iterable[dict],
    existing_semesters: Iterable[str],
    target_semesters: tuple[str, ...],
    auto_import: bool,
) -> AutoImportPlan:
    """Which terms become new partitions, and which of those get a first backfill."""
    existing = set(existing_semesters)
    new: list[str] = []
    for term in terms:
        if term.get("workflow_state", "active") == "deleted":
            continue
        key = semester_key(term)
        if key not in existing and key not in new and semester_matches(key, target_semesters):
            new.append(key)
    new_keys = tuple(sorted(new))
    return AutoImportPlan(new_keys, new_keys if auto_import else ())


def auto_import_requests(plan: AutoImportPlan, jobs: Jobs) -> list[dg.RunRequest]:
    """A first backfill per new semester, and a terms refresh that lists them."""
    requests = [
        dg.RunRequest(run_key=f"auto-import:{key}", partition_key=key, job_name=jobs.semester.name)
        for key in plan.backfill_semesters
    ]
    joined = ",".join(plan.new_semesters)
    requests.append(dg.RunRequest(run_key=f"terms-for:{joined}", job_name=jobs.terms.name))
    return requests


def seconds_until_due(cursor: str | None, interval: int, now: float) -> float:
    """0 when Canvas should be asked now: never asked, or the last successful look is
    ``interval`` seconds old. A failed look leaves the cursor as it was, so it is due again."""
    if not cursor:
        return 0.0
    return max(0.0, json.loads(cursor).get("looked_at", 0.0) + interval - now)


def recover_abandoned_syncs(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, jobs: Jobs
) -> list[str]:
    """Card rows stuck at ``syncing`` with no backfill run in flight (the run died where even
    its failure could not be recorded, e.g. PostgreSQL was down) are marked failed."""
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=jobs.semester.name, statuses=IN_FLIGHT)
    )
    running = {run.tags.get("dagster/partition") for run in runs} - {None}
    with warehouse.connect() as conn:
        recovered = recover_interrupted_syncs(conn, warehouse.table_schema(), running)
    if recovered:
        context.log.warning(f"Marked failed (interrupted, no run in flight): {recovered}")
    return recovered


def build_semester_auto_import_sensor(settings: Settings, jobs: Jobs) -> dg.SensorDefinition:
    namespace = Namespace.of(settings)
    interval = settings.semester_sensor_interval_seconds

    @dg.sensor(
        name="semester_auto_import",
        description="Adds a semester partition for every new Canvas term matching "
        "CANVAS_TARGET_SEMESTERS and, unless CANVAS_AUTO_IMPORT_SEMESTERS=false, backfills it. "
        f"Looks at Canvas every {interval} s (CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS); a failed "
        f"look is retried after {RETRY_SECONDS} s.",
        minimum_interval_seconds=min(RETRY_SECONDS, interval),
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[jobs.semester, jobs.terms],
    )
    def semester_auto_import(
        context: dg.SensorEvaluationContext,
        canvas: CanvasResource,
        warehouse: WarehouseResource,
    ) -> dg.SensorResult | dg.SkipReason:
        recover_abandoned_syncs(context, warehouse, jobs)
        now = time.time()
        wait = seconds_until_due(context.cursor, interval, now)
        if wait > 0:
            return dg.SkipReason(f"Next look at Canvas terms in {wait:.0f} s.")
        with canvas.session(context.log) as session:
            terms = fetch_terms(session)  # a failure fails the tick, named; retried next tick
        cursor = json.dumps({"looked_at": now})
        existing = context.instance.get_dynamic_partitions(namespace.partitions.name)
        plan = plan_auto_import(
            terms, existing, settings.target_semesters, settings.auto_import_semesters
        )
        if not plan.new_semesters:
            return dg.SensorResult(
                skip_reason=f"No new semesters among {len(terms)} Canvas terms.", cursor=cursor
            )
        with warehouse.connect() as conn:
            mark_semesters_added(conn, warehouse.table_schema(), plan.new_semesters)
            card = imported_semesters(
                namespace.key("imported_semesters"), sync_status(conn, warehouse.table_schema())
            )
        context.log.info(
            f"Added semesters {', '.join(plan.new_semesters)}; backfilling "
            f"{', '.join(plan.backfill_semesters) or 'none (CANVAS_AUTO_IMPORT_SEMESTERS=false)'}."
        )
        return dg.SensorResult(
            run_requests=auto_import_requests(plan, jobs),
            dynamic_partitions_requests=[
                namespace.partitions.build_add_request(list(plan.new_semesters))
            ],
            asset_events=[card],
            cursor=cursor,
        )

    return semester_auto_import
