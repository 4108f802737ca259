"""Sensors and schedules. Each stays thin; its decisions are pure functions tested directly.

- ``semester_auto_import``: Auto Import Semesters (``plan_auto_import``).
- ``canvas_live_events``: lands SQS messages, then requests apply runs (``poll_queue``,
  ``live_event_run_requests``; routing and apply in ``incremental.py``).
- ``canvas_reconciliation``: nightly re-backfill of current semesters (``current_semesters``).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
from psycopg import sql

from canvas_assets.assets import LIVE_EVENTS_KEY, LIVE_EVENTS_RUN_CONFIG
from canvas_assets.canvas import CanvasResource
from canvas_assets.incremental import RouteResult, pending_semesters, route_pending
from canvas_assets.jobs import semester_sync_job, terms_sync_job
from canvas_assets.live_events import land_messages
from canvas_assets.load import mark_semesters_added
from canvas_assets.partitions import semester_partitions
from canvas_assets.semester import fetch_terms, semester_key
from canvas_assets.settings import SyncSettings, semester_matches
from canvas_assets.sqs import QueueMessage, SQSQueueResource
from canvas_assets.warehouse import WarehouseResource


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


def build_semester_auto_import_sensor(settings: SyncSettings) -> dg.SensorDefinition:
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
        session = canvas.session(context.log)
        try:
            terms = fetch_terms(session)
        finally:
            session.close()
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
        joined = ",".join(plan.new_semesters)
        run_requests = [
            dg.RunRequest(
                run_key=f"auto-import:{key}", partition_key=key, job_name=semester_sync_job.name
            )
            for key in plan.backfill_semesters
        ]
        run_requests.append(
            dg.RunRequest(run_key=f"terms-for:{joined}", job_name=terms_sync_job.name)
        )
        return dg.SensorResult(
            run_requests=run_requests,
            dynamic_partitions_requests=[
                semester_partitions.build_add_request(list(plan.new_semesters))
            ],
        )

    return semester_auto_import


# -- Live Events ------------------------------------------------------------------------------
SENSOR_BUDGET_SECONDS = 20.0  # well under Dagster's 60 s sensor timeout
ROUTING_DEADLINE_SECONDS = 35.0  # no routing look-up starts later; each fails within seconds


@dataclass
class PollResult:
    received: int = 0
    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown: int = 0
    delete_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def poll_queue(
    sqs: SQSQueueResource,
    client,
    conn,
    schema: str,
    budget_seconds: float = SENSOR_BUDGET_SECONDS,
    *,
    after_landing: Callable[[list[QueueMessage]], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> PollResult:
    """Receive batches of 10 until the queue is empty or the budget is spent; land each batch
    (committed) before deleting it from the queue."""
    deadline = clock() + budget_seconds
    totals = PollResult()
    wait = 2  # long-poll first; after a full batch more are likely waiting, so do not wait
    while clock() < deadline:
        messages = sqs.receive(client, wait_seconds=min(wait, int(max(0, deadline - clock()))))
        if not messages:
            if wait == 0:
                wait = 1  # a short poll can miss messages: confirm with a long poll
                continue
            break
        wait = 0 if len(messages) == 10 else 1
        landed = land_messages(conn, schema, [(m.message_id, m.body) for m in messages])
        if after_landing is not None:
            after_landing(messages)
        totals.received += len(messages)
        totals.landed += landed.landed
        totals.duplicates += landed.duplicates
        totals.quarantined += landed.quarantined
        totals.unknown += landed.unknown
        totals.delete_failures += sqs.delete(client, messages)
    return totals


@dataclass(frozen=True)
class ApplyRun:
    """What the sensor needs to know of an earlier Live Events apply run of a semester."""

    run_key: str
    finished: bool
    failed: bool
    end_time: float | None = None
    created_at: float | None = None


LIVE_EVENTS_RUN_TAG = "canvas-assets/source"
RETRY_FIRST_DELAY_SECONDS = 30.0
RETRY_MAX_DELAY_SECONDS = 1800.0
APPLY_MAX_RUNTIME_SECONDS = 3600  # run monitoring ends an apply run that hangs longer
# An unfinished run older than this (a worker that died without run monitoring noticing) no
# longer holds back its semester's applies.
IN_FLIGHT_GIVE_UP_SECONDS = 2 * APPLY_MAX_RUNTIME_SECONDS


def _retry_number(run_key: str, base: str) -> int:
    """0 for ``base`` itself, n for ``base:retry-n``, -1 for another batch's run."""
    if run_key == base:
        return 0
    prefix = f"{base}:retry-"
    if run_key.startswith(prefix) and run_key[len(prefix) :].isdigit():
        return int(run_key[len(prefix) :])
    return -1


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed apply before trying again."""
    return min(RETRY_FIRST_DELAY_SECONDS * 2 ** max(attempts - 1, 0), RETRY_MAX_DELAY_SECONDS)


def live_event_run_requests(
    pending: dict[str, int],
    recent_runs: dict[str, list[ApplyRun]] | None = None,
    now: float | None = None,
) -> list[dg.RunRequest]:
    """One apply run per semester with pending events.

    The run key names the newest pending event, so a tick that finds the same events does not
    launch a second run. Dagster never reuses a run key, so when that run failed (Canvas down,
    a validation failure, a killed worker) its events would wait forever: a retry gets its own
    key, after a growing delay. No run is requested while one for the semester is in flight,
    so two applies of one semester never overlap. ``recent_runs`` lists each semester's
    earlier apply runs, newest first.
    """
    recent_runs = recent_runs or {}
    now = time.time() if now is None else now
    requests = []
    for semester, seq in sorted(pending.items()):
        runs = recent_runs.get(semester, [])
        if any(
            not run.finished and now - (run.created_at or now) < IN_FLIGHT_GIVE_UP_SECONDS
            for run in runs
        ):
            continue
        base = f"live-events:{semester}:{seq}"
        attempts = [(n, r) for r in runs if (n := _retry_number(r.run_key, base)) >= 0]
        run_key = base
        if attempts:
            # Numbered from the highest used, never reused: Dagster skips a used run key.
            number, last = max(attempts, key=lambda pair: pair[0])
            ready_at = (last.end_time or 0.0) + retry_delay(number + 1)
            if last.failed and now < ready_at:
                continue
            run_key = f"{base}:retry-{number + 1}"
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=semester,
                job_name=semester_sync_job.name,
                run_config=LIVE_EVENTS_RUN_CONFIG,
                tags={
                    LIVE_EVENTS_RUN_TAG: "live_events",
                    "dagster/max_runtime": str(APPLY_MAX_RUNTIME_SECONDS),
                },
            )
        )
    return requests


_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
_FINISHED = _FAILED | {dg.DagsterRunStatus.SUCCESS}


def recent_apply_runs(
    instance: dg.DagsterInstance, semesters: Iterable[str]
) -> dict[str, list[ApplyRun]]:
    """Each semester's latest Live Events apply runs, newest first, as ``ApplyRun``s."""
    found: dict[str, list[ApplyRun]] = {}
    for semester in semesters:
        records = instance.get_run_records(
            filters=dg.RunsFilter(
                tags={LIVE_EVENTS_RUN_TAG: "live_events", "dagster/partition": semester}
            ),
            limit=20,
        )
        found[semester] = [
            ApplyRun(
                run_key=record.dagster_run.tags.get("dagster/run_key", ""),
                finished=record.dagster_run.status in _FINISHED,
                failed=record.dagster_run.status in _FAILED,
                end_time=record.end_time,
                created_at=record.create_timestamp.timestamp(),
            )
            for record in records
        ]
    return found


def build_live_events_sensor(settings: SyncSettings) -> dg.SensorDefinition:
    @dg.sensor(
        name="canvas_live_events",
        description="Lands Canvas Live Events from CANVAS_LIVE_EVENTS_QUEUE_URL into PostgreSQL, "
        "deletes them from SQS once stored, and requests an apply run per affected semester.",
        minimum_interval_seconds=settings.live_events_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        jobs=[semester_sync_job],
    )
    def canvas_live_events(
        context: dg.SensorEvaluationContext,
        sqs: SQSQueueResource,
        warehouse: WarehouseResource,
        canvas: CanvasResource,
    ) -> dg.SensorResult | dg.SkipReason:
        if not sqs.queue_url:
            return dg.SkipReason("CANVAS_LIVE_EVENTS_QUEUE_URL is not set.")
        schema = warehouse.table_schema()
        started = time.monotonic()
        with warehouse.connect() as conn:
            polled = poll_queue(sqs, sqs.client(), conn, schema)
            # Routing's look-ups must fit in the tick: short timeouts, one retry.
            session = canvas.session(
                context.log, timeout_seconds=5, max_retries=1, max_throttle_retries=1
            )
            try:
                routed = route_pending(
                    conn,
                    schema,
                    session,
                    settings.target_semesters,
                    deadline=started + ROUTING_DEADLINE_SECONDS,
                )
            except Exception:
                # Landed events are safe; routing is retried next tick. Apply runs for events
                # routed earlier must still be requested.
                context.log.exception("Routing landed Live Events failed; retrying next tick.")
                routed = RouteResult()
            finally:
                session.close()
            partitions = set(context.instance.get_dynamic_partitions(semester_partitions.name))
            pending = pending_semesters(conn, schema, partitions)
        asset_events = []
        if polled.received:
            asset_events.append(
                dg.AssetMaterialization(
                    LIVE_EVENTS_KEY, metadata={**polled.as_dict(), **routed.as_dict()}
                )
            )
        runs = live_event_run_requests(pending, recent_apply_runs(context.instance, pending))
        if not runs and not asset_events:
            return dg.SkipReason("No Live Events waiting.")
        return dg.SensorResult(run_requests=runs, asset_events=asset_events)

    return canvas_live_events


# -- reconciliation -----------------------------------------------------------------------------
RECONCILE_MARGIN = timedelta(days=14)


def current_semesters(
    terms: Iterable[tuple[str, datetime | None, datetime | None]],
    now: datetime,
    partitions: Iterable[str],
) -> list[str]:
    """Partitions whose term runs now (with two weeks' margin either side for late grades)."""
    existing = set(partitions)
    return sorted(
        semester
        for semester, start, end in terms
        if semester in existing
        and start is not None
        and start - RECONCILE_MARGIN <= now
        and (end is None or now <= end + RECONCILE_MARGIN)
    )


def build_reconciliation_schedule(settings: SyncSettings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="canvas_reconciliation",
        cron_schedule=settings.reconcile_cron,
        job=semester_sync_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Re-backfills the current semesters (CANVAS_RECONCILE_CRON, nightly by "
        "default) to heal Live Events that Canvas never delivered.",
    )
    def canvas_reconciliation(
        context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource
    ) -> list[dg.RunRequest] | dg.SkipReason:
        with warehouse.connect() as conn:
            terms = conn.execute(
                sql.SQL(
                    "SELECT semester, start_at, end_at FROM {}.terms WHERE deleted_at IS NULL"
                ).format(sql.Identifier(warehouse.table_schema()))
            ).fetchall()
        now = context.scheduled_execution_time or datetime.now(UTC)
        semesters = current_semesters(
            terms, now, context.instance.get_dynamic_partitions(semester_partitions.name)
        )
        if not semesters:
            return dg.SkipReason("No current semesters to reconcile.")
        stamp = now.strftime("%Y-%m-%dT%H:%M")
        return [dg.RunRequest(run_key=f"reconcile:{s}:{stamp}", partition_key=s) for s in semesters]

    return canvas_reconciliation
