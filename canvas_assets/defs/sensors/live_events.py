"""``canvas_live_events``: land SQS messages, route them, request one apply run per semester.

The tick is thin: ``poll_queue`` and ``route_pending`` (in ``live_events``) do the work, and
``live_event_run_requests`` decides which apply runs to request (retries included).
"""

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from canvas_assets.canvas import CanvasResource
from canvas_assets.defs.apply import APPLY_JOB
from canvas_assets.defs.checks import stream_evaluations
from canvas_assets.defs.namespace import Namespace
from canvas_assets.live_events.health import stream_health
from canvas_assets.live_events.poll import PollResult, poll_queue
from canvas_assets.live_events.route import RouteResult, route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import pending_semesters
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource

ROUTING_DEADLINE_SECONDS = 35.0  # no routing look-up starts later; each fails within seconds
HEALTH_EVERY_SECONDS = 300.0  # stream checks are reported this often, or when one changes
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


def apply_run_config(settings: Settings) -> dict:
    """Run config of an apply run: keep applying for the configured window."""
    return {
        "ops": {
            "apply_live_events": {
                "config": {"window_seconds": settings.apply_run_window_seconds, "idle_seconds": 60}
            }
        }
    }


def live_event_run_requests(
    settings: Settings,
    pending: dict[str, int],
    recent_runs: dict[str, list[ApplyRun]],
    now: float,
) -> list[dg.RunRequest]:
    """One apply run per semester with pending events; its key names the newest pending event,
    so a tick that finds the same events does not launch a second run. ``recent_runs`` lists
    each semester's earlier apply runs, newest first."""
    namespace = Namespace.of(settings)
    requests = []
    for semester, seq in sorted(pending.items()):
        run_key = _apply_run_key(semester, seq, recent_runs.get(semester, []), now)
        if run_key is None:
            continue
        requests.append(
            dg.RunRequest(
                run_key=run_key,
                partition_key=semester,
                job_name=APPLY_JOB,
                run_config=apply_run_config(settings),
                tags={
                    **namespace.apply_tag(semester),
                    "dagster/max_runtime": str(APPLY_MAX_RUNTIME_SECONDS),
                },
            )
        )
    return requests


_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
_FINISHED = _FAILED | {dg.DagsterRunStatus.SUCCESS}


def recent_apply_runs(
    instance: dg.DagsterInstance, semesters: Iterable[str], settings: Settings
) -> dict[str, list[ApplyRun]]:
    """Each semester's latest Live Events apply runs, newest first, as ``ApplyRun``s."""
    namespace = Namespace.of(settings)
    found: dict[str, list[ApplyRun]] = {}
    for semester in semesters:
        records = instance.get_run_records(
            filters=dg.RunsFilter(tags=namespace.apply_tag(semester)), limit=20
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


def tick_message(
    polled: PollResult, routed: RouteResult, requested: list[str], waiting: list[str]
) -> str:
    """What one tick did, in a line: the tick's message in the UI and its log."""
    runs = [f"requested {', '.join(requested)}"] if requested else []
    if waiting:
        runs.append(f"{', '.join(waiting)} applied by an open run (or retried later)")
    return f"{polled.summary()}; {routed.summary()}; {'; '.join(runs) or 'nothing to apply'}."


def health_due(cursor: str | None, outcomes: list[bool], now: float) -> bool:
    """Report the stream checks when one changed, or every HEALTH_EVERY_SECONDS."""
    if not cursor:
        return True
    last = json.loads(cursor)
    return last.get("outcomes") != outcomes or now - last.get("at", 0) >= HEALTH_EVERY_SECONDS


def _land_and_route(context, sqs, warehouse, canvas, settings, namespace):
    """Poll the queue, route what landed; returns the tick's results and pending semesters."""
    schema = warehouse.table_schema()
    deadline = time.monotonic() + ROUTING_DEADLINE_SECONDS
    # Routing's look-ups must fit in the tick: short timeouts, one retry.
    fail_fast = {"timeout_seconds": 5, "max_retries": 1, "max_throttle_retries": 1}
    with warehouse.connect() as conn, canvas.session(context.log, **fail_fast) as session:
        polled = poll_queue(sqs, sqs.client(), conn, schema)
        if polled.warehouse_error:  # the connection is gone: the next tick starts afresh
            return polled, RouteResult(), {}, None
        try:
            routed = route_pending(
                conn, schema, session, settings.target_semesters, deadline=deadline
            )
        except Exception:
            # Landed events are safe; routing is retried next tick. Apply runs for events
            # routed earlier must still be requested.
            context.log.exception("Routing landed Live Events failed; retrying next tick.")
            routed = RouteResult()
        partitions = set(context.instance.get_dynamic_partitions(namespace.partitions.name))
        pending = pending_semesters(conn, schema, partitions)
        health = stream_health(conn, schema, datetime.now(UTC))
    return polled, routed, pending, health


def build_live_events_sensor(settings: Settings) -> dg.SensorDefinition:
    namespace = Namespace.of(settings)

    @dg.sensor(
        name="canvas_live_events",
        description="Lands Canvas Live Events from CANVAS_LIVE_EVENTS_QUEUE_URL into PostgreSQL, "
        "deletes them from SQS once stored, routes them to semesters, requests an apply run per "
        "affected semester, and reports the stream's health checks.",
        minimum_interval_seconds=settings.live_events_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        job_name=APPLY_JOB,
    )
    def canvas_live_events(
        context: dg.SensorEvaluationContext,
        sqs: SQSQueueResource,
        warehouse: WarehouseResource,
        canvas: CanvasResource,
    ) -> dg.SensorResult | dg.SkipReason:
        if not sqs.queue_url:
            return dg.SkipReason("CANVAS_LIVE_EVENTS_QUEUE_URL is not set: no queue to follow.")
        polled, routed, pending, health = _land_and_route(
            context, sqs, warehouse, canvas, settings, namespace
        )
        recent = recent_apply_runs(context.instance, pending, settings)
        runs = live_event_run_requests(settings, pending, recent, time.time())
        requested = [r.partition_key or "" for r in runs]
        waiting = sorted(set(pending) - set(requested))
        message = tick_message(polled, routed, requested, waiting)
        context.log.info(message)
        events: list = []
        if polled.received:
            metadata = {**polled.as_dict(), **routed.as_dict()}
            events.append(dg.AssetMaterialization(namespace.key("live_events"), metadata=metadata))
        checks = stream_evaluations(namespace, settings, health) if health else []
        outcomes = [check.passed for check in checks]
        cursor = context.cursor
        if checks and health_due(context.cursor, outcomes, time.time()):
            events += checks
            cursor = json.dumps({"outcomes": outcomes, "at": time.time()})
        if runs:
            return dg.SensorResult(run_requests=runs, asset_events=events, cursor=cursor)
        return dg.SensorResult(skip_reason=message, asset_events=events, cursor=cursor)

    return canvas_live_events
