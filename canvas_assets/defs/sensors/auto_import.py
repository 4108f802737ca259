"""``semester_auto_import``: Target Semesters and Auto Import Semesters, for every institution.

The sensor calls no Canvas. Every CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS it requests a run of
``canvas_terms_sync``, which reads every institution's terms from Canvas into its ``terms``
table. Each tick then reads those tables: every live term that the institution's Target
Semesters admit becomes a partition of the institution's ``semester`` partitions and, unless its
auto-import is off, gets its first backfill (``plan_auto_import`` decides). A backfill that died
where even its failure could not be recorded is marked failed on the card.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from canvas_assets.defs.jobs import Jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.reporting import imported_semesters
from canvas_assets.defs.resources import institution_resource
from canvas_assets.defs.sensors.unreachable import reported_in_one_line
from canvas_assets.institutions import semester_matches
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.reads import live_semesters, sync_status
from canvas_assets.warehouse.status import (
    mark_not_targeted,
    mark_semesters_added,
    mark_targeted_again,
    recover_interrupted_syncs,
)

TICK_SECONDS = 15  # how often the warehouse's terms are looked at for new semesters
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
    semesters: Iterable[str],
    existing_semesters: Iterable[str],
    target_semesters: tuple[str, ...],
    auto_import: bool,
) -> AutoImportPlan:
    """Which live terms' semesters become new partitions, and which of those get a first
    backfill."""
    existing = set(existing_semesters)
    new = {s for s in semesters if s not in existing and semester_matches(s, target_semesters)}
    new_keys = tuple(sorted(new))
    return AutoImportPlan(new_keys, new_keys if auto_import else ())


def terms_refresh_due(cursor: dict, interval: int, now: float) -> bool:
    """True when the last terms refresh was requested ``interval`` seconds ago (or never)."""
    return now - cursor.get("terms_requested_at", 0.0) >= interval


def recover_abandoned_syncs(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, namespace: Namespace
) -> list[str]:
    """Card rows stuck at ``syncing`` with no backfill run in flight (the run died where even
    its failure could not be recorded, e.g. PostgreSQL was down) are marked failed."""
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=namespace.semester_job, statuses=IN_FLIGHT)
    )
    running = {run.tags.get("dagster/partition") for run in runs} - {None}
    with warehouse.connect() as conn:
        recovered = recover_interrupted_syncs(conn, warehouse.table_schema(), running)
    if recovered:
        context.log.warning(
            f"{namespace.label}: marked failed (interrupted, no run in flight): {recovered}"
        )
    return recovered


@dataclass
class _Found:
    """What one tick found for one institution."""

    requests: list[dg.RunRequest]
    partitions: dg.AddDynamicPartitionsRequest | None
    card: dg.AssetMaterialization | None
    lines: list[str]


@dataclass(frozen=True)
class Retargeting:
    """Imported semesters Target Semesters left (now not targeted) or admit again (re-synced)."""

    left: list[str]
    back: list[str]


def _retarget(conn, schema: str, namespace: Namespace) -> Retargeting:
    """Keep the card true when Target Semesters change under imported semesters."""
    targets = namespace.institution.target_semesters
    imported = [row["semester"] for row in sync_status(conn, schema)]
    left = mark_not_targeted(
        conn, schema, [s for s in imported if not semester_matches(s, targets)]
    )
    back = mark_targeted_again(conn, schema, [s for s in imported if semester_matches(s, targets)])
    return Retargeting(left, back)


def _backfills(namespace: Namespace, keys: Sequence[str], prefix: str) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            run_key=f"{prefix}:{namespace.label}:{key}",
            partition_key=key,
            job_name=namespace.semester_job,
        )  # fmt: skip
        for key in keys
    ]


def _lines(namespace: Namespace, plan: AutoImportPlan, moved: Retargeting) -> list[str]:
    label, lines = namespace.label, []
    if plan.new_semesters:
        backfilling = ", ".join(plan.backfill_semesters) or "none (auto import is off)"
        lines.append(f"{label}: added {', '.join(plan.new_semesters)}; backfilling {backfilling}")
    if moved.left:
        lines.append(
            f"{label}: {', '.join(moved.left)} imported but outside Target Semesters now: "
            "marked not targeted; their Live Events are closed as out_of_target"
        )
    if moved.back:
        lines.append(f"{label}: {', '.join(moved.back)} targeted again: re-syncing them")
    return lines


def _institution(context: dg.SensorEvaluationContext, namespace: Namespace) -> _Found:
    warehouse = institution_resource(context.resources, namespace, "warehouse")
    recover_abandoned_syncs(context, warehouse, namespace)
    existing = context.instance.get_dynamic_partitions(namespace.partitions.name)
    institution = namespace.institution
    with warehouse.connect() as conn:
        schema = warehouse.table_schema()
        plan = plan_auto_import(
            live_semesters(conn, schema), existing, institution.target_semesters,
            institution.auto_import,
        )  # fmt: skip
        moved = _retarget(conn, schema, namespace)
        if not (plan.new_semesters or moved.left or moved.back):
            return _Found([], None, None, [])
        mark_semesters_added(conn, schema, plan.new_semesters)
        card = imported_semesters(namespace.key("imported_semesters"), sync_status(conn, schema))
    requests = _backfills(namespace, plan.backfill_semesters, "auto-import")
    # A semester's every return gets its run: the key carries the moment it came back.
    requests += _backfills(namespace, moved.back, f"retarget-{int(time.time())}")
    add = namespace.partitions.build_add_request(list(plan.new_semesters))
    return _Found(
        requests, add if plan.new_semesters else None, card, _lines(namespace, plan, moved)
    )


def build_semester_auto_import_sensor(
    settings: Settings, namespaces: Sequence[Namespace], jobs: Jobs
) -> dg.SensorDefinition:
    interval = settings.semester_sensor_interval_seconds
    keys = {namespace.resource_key("warehouse") for namespace in namespaces}

    @dg.sensor(
        name="semester_auto_import",
        description="Adds a semester partition for every new Canvas term matching the "
        "institution's Target Semesters (CANVAS_TARGET_SEMESTERS) and, unless its auto import "
        "is off (CANVAS_AUTO_IMPORT_SEMESTERS=false), backfills it. Requests a terms refresh "
        f"every {interval} s (CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS) and reads the terms "
        "from the warehouse: it calls no Canvas itself.",
        minimum_interval_seconds=min(TICK_SECONDS, interval),
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=keys,
        jobs=[jobs.terms, *jobs.semesters.values()],
    )
    @reported_in_one_line
    def semester_auto_import(
        context: dg.SensorEvaluationContext, **_resources: object
    ) -> dg.SensorResult:
        cursor, now = json.loads(context.cursor or "{}"), time.time()
        requests: list[dg.RunRequest] = []
        if terms_refresh_due(cursor, interval, now):
            run_key = f"terms:{int(now // interval)}"
            requests.append(dg.RunRequest(run_key=run_key, job_name=jobs.terms.name))
            cursor["terms_requested_at"] = now
        found = [_institution(context, namespace) for namespace in namespaces]
        lines = [line for f in found for line in f.lines]
        for line in lines:
            context.log.info(line)
        return dg.SensorResult(
            run_requests=requests + [r for f in found for r in f.requests],
            dynamic_partitions_requests=[f.partitions for f in found if f.partitions],
            asset_events=[f.card for f in found if f.card],
            cursor=json.dumps(cursor),
            skip_reason=None if requests or lines else "No new semesters in the terms tables.",
        )

    return semester_auto_import
