"""``canvas_live_events``: land SQS messages, route them, request one apply run per semester.

The tick is thin: ``poll_queue`` and ``route_pending`` (in ``live_events``) do the work, and
``live_event_run_requests`` decides which apply runs to request (retries included).
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from canvas_assets.canvas import CanvasResource
from canvas_assets.defs.assets import LIVE_EVENTS_KEY, LIVE_EVENTS_RUN_CONFIG
from canvas_assets.defs.jobs import semester_sync_job
from canvas_assets.defs.partitions import semester_partitions
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.route import RouteResult, route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import pending_semesters
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource

ROUTING_DEADLINE_SECONDS = 35.0  # no routing look-up starts later; each fails within seconds
LIVE_EVENTS_RUN_TAG = "canvas-assets/source"
RETRY_FIRST_DELAY_SECONDS = 30.0
RETRY_MAX_DELAY_SECONDS = 1800.0
APPLY_MAX_RUNTIME_SECONDS = 3600  # run monitoring ends an apply run that hangs longer
# An unfinished run older than this (a worker that died without run monitoring noticing) no
# longer holds back its semester's applies.
IN_FLIGHT_GIVE_UP_SECONDS = 2 * APPLY_MAX_RUNTIME_SECONDS


@dataclass(frozen=True)
class ApplyRun:
    """What the sensor needs to know of an earlier Live Events apply run of a semester."""

    run_key: str
    finished: bool
    failed: bool
    end_time: float | None = None
    created_at: float | None = None


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


def _apply_run_key(semester: str, seq: int, runs: list[ApplyRun], now: float) -> str | None:
    """The run key for applying ``semester`` up to event ``seq``, or None to wait.

    Dagster never reuses a run key, so when the run for these events failed (Canvas down, a
    validation failure, a killed worker) a retry gets its own key, after a growing delay. No
    run while one for the semester is in flight, so two applies of one semester never overlap.
    """
    if any(
        not run.finished and now - (run.created_at or now) < IN_FLIGHT_GIVE_UP_SECONDS
        for run in runs
    ):
        return None
    base = f"live-events:{semester}:{seq}"
    attempts = [(n, r) for r in runs if (n := _retry_number(r.run_key, base)) >= 0]
    if not attempts:
        return base
    # Numbered from the highest used, never reused: Dagster skips a used run key.
    number, last = max(attempts, key=lambda pair: pair[0])
    if last.failed and now < (last.end_time or 0.0) + retry_delay(number + 1):
        return None
    return f"{base}:retry-{number + 1}"


def live_event_run_requests(
    pending: dict[str, int],
    recent_runs: dict[str, list[ApplyRun]] | None = None,
    now: float | None = None,
) -> list[dg.RunRequest]:
    """One apply run per semester with pending events; its key names the newest pending event,
    so a tick that finds the same events does not launch a second run. ``recent_runs`` lists
    each semester's earlier apply runs, newest first."""
    recent_runs = recent_runs or {}
    now = time.time() if now is None else now
    requests = []
    for semester, seq in sorted(pending.items()):
        run_key = _apply_run_key(semester, seq, recent_runs.get(semester, []), now)
        if run_key is None:
            continue
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


def build_live_events_sensor(settings: Settings) -> dg.SensorDefinition:
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
        deadline = time.monotonic() + ROUTING_DEADLINE_SECONDS
        # Routing's look-ups must fit in the tick: short timeouts, one retry.
        fail_fast = {"timeout_seconds": 5, "max_retries": 1, "max_throttle_retries": 1}
        with warehouse.connect() as conn, canvas.session(context.log, **fail_fast) as session:
            polled = poll_queue(sqs, sqs.client(), conn, schema)
            try:
                routed = route_pending(
                    conn, schema, session, settings.target_semesters, deadline=deadline
                )
            except Exception:
                # Landed events are safe; routing is retried next tick. Apply runs for events
                # routed earlier must still be requested.
                context.log.exception("Routing landed Live Events failed; retrying next tick.")
                routed = RouteResult()
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
