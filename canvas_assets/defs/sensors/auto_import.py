"""``semester_auto_import``: Target Semesters and Auto Import Semesters.

Every new Canvas term that Target Semesters admits becomes a ``semester`` partition and, unless
auto-import is off, gets its first backfill (``plan_auto_import`` decides).
"""

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms
from canvas_assets.defs.jobs import semester_sync_job, terms_sync_job
from canvas_assets.defs.partitions import semester_partitions
from canvas_assets.settings import Settings, semester_matches
from canvas_assets.tables import semester_key
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.status import mark_semesters_added


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


def auto_import_requests(plan: AutoImportPlan) -> list[dg.RunRequest]:
    """A first backfill per new semester, and a terms refresh that lists them."""
    requests = [
        dg.RunRequest(
            run_key=f"auto-import:{key}", partition_key=key, job_name=semester_sync_job.name
        )
        for key in plan.backfill_semesters
    ]
    joined = ",".join(plan.new_semesters)
    requests.append(dg.RunRequest(run_key=f"terms-for:{joined}", job_name=terms_sync_job.name))
    return requests


def build_semester_auto_import_sensor(settings: Settings) -> dg.SensorDefinition:
    @dg.sensor(
        name="semester_auto_import",
        description="Adds a semester partition for every new Canvas term matching "
        "CANVAS_TARGET_SEMESTERS and, unless CANVAS_AUTO_IMPORT_SEMESTERS=false, backfills it.",
        minimum_interval_seconds=settings.semester_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[semester_sync_job, terms_sync_job],
    )
    def semester_auto_import(
        context: dg.SensorEvaluationContext,
        canvas: CanvasResource,
        warehouse: WarehouseResource,
    ) -> dg.SensorResult | dg.SkipReason:
        with canvas.session(context.log) as session:
            terms = fetch_terms(session)
        plan = plan_auto_import(
            terms,
            context.instance.get_dynamic_partitions(semester_partitions.name),
            settings.target_semesters,
            settings.auto_import_semesters,
        )
        if not plan.new_semesters:
            return dg.SkipReason(f"No new semesters among {len(terms)} Canvas terms.")
        with warehouse.connect() as conn:
            mark_semesters_added(conn, warehouse.table_schema(), plan.new_semesters)
        return dg.SensorResult(
            run_requests=auto_import_requests(plan),
            dynamic_partitions_requests=[
                semester_partitions.build_add_request(list(plan.new_semesters))
            ],
        )

    return semester_auto_import
