"""The Live Events sensors: one per queue (the shared queue, and any institution's own queue).

A tick does bounded, quick work and calls no Canvas: it receives from SQS for a few seconds,
lands each message in its institution's schema (a shared queue routes by root account uuid; a
message of no declared institution is quarantined in the shared schema and replayed once the
institution is declared), deletes what it stored, reports each institution's stream health and
decides which apply runs to request (``plan_runs``). Canvas look-ups and applying happen in the
runs (``defs/apply.py``), which never wait for events that may come.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg

from canvas_assets.defs.apply import APPLY_JOB
from canvas_assets.defs.checks import shared_queue_evaluations, stream_evaluations
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import SHARED_QUEUE, SHARED_WAREHOUSE, institution_resource
from canvas_assets.defs.sensors.unreachable import reported_in_one_line
from canvas_assets.live_events import store
from canvas_assets.live_events.health import stream_health
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.poll import PollResult, poll_queue
from canvas_assets.settings import QUEUE_URL_ENV, Settings

HEALTH_EVERY_SECONDS = 300.0  # stream checks are reported this often, or when one changes
# A failing institution, or work that no new event follows, is tried again once per window.
RETRY_WINDOW_SECONDS = 300
APPLY_MAX_RUNTIME_SECONDS = 900  # run monitoring ends an apply run that hangs longer
SHARED_CURSOR = "_shared_queue"  # the shared queue's checks in the cursor (labels are names)
STRAYS_PER_TICK = 500  # quarantined messages of newly declared institutions replayed per tick
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dataclass(frozen=True)
class QueueFollowed:
    """A queue and the institutions whose messages it carries: the shared queue (routing by
    root account uuid, strays kept in the shared schema) or one institution's own."""

    sensor_name: str
    queue_key: str  # the SQS resource
    namespaces: tuple[Namespace, ...]
    shared_schema_key: str | None = None  # the shared schema's warehouse, for strays

    def destinations(self, schemas: dict[str, str], stray_schema: str | None) -> Destinations:
        """Where its messages land: ``schemas`` by institution label (its warehouse's schema);
        ``stray_schema`` is the shared schema (None for a queue of one institution's own, or
        the single institution's)."""
        if stray_schema is None:
            return Destinations.one_institution(schemas[self.namespaces[0].label])
        by_uuid = {
            n.institution.root_account_uuid: schemas[n.label]
            for n in self.namespaces
            if n.institution.root_account_uuid
        }
        return Destinations(by_uuid=by_uuid, stray=stray_schema)


@dataclass(frozen=True)
class InstitutionWork:
    """What a tick knows of an institution: its newest event a run can act on (None: nothing
    to do) and whether its last apply pass failed (with what error)."""

    label: str
    newest: int | None
    failing: bool
    error: str | None = None


@dataclass
class RunPlan:
    requests: list[dg.RunRequest] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)  # "label (its last error)", kept apart


def _apply_request(run_key: str, labels: list[str], retries: int) -> dg.RunRequest:
    tags = {"dagster/max_runtime": str(APPLY_MAX_RUNTIME_SECONDS)}
    if retries:
        tags["dagster/max_retries"] = str(retries)
    return dg.RunRequest(
        run_key=run_key,
        job_name=APPLY_JOB,
        run_config={"ops": {"apply_live_events": {"config": {"institutions": labels}}}},
        tags=tags,
    )


def plan_runs(work: Sequence[InstitutionWork], in_flight: set[str], now: float) -> RunPlan:
    """Which apply runs to request: one for the healthy institutions with work that no run is
    applying, and one of its own for each failing institution (so it never fails theirs). Run
    keys name the newest events and the retry window, so Dagster requests each at most once
    per new event or window."""
    plan = RunPlan(in_flight=sorted(w.label for w in work if w.newest and w.label in in_flight))
    window = int(now // RETRY_WINDOW_SECONDS)
    ready = [w for w in work if w.newest is not None and w.label not in in_flight]
    healthy = sorted((w for w in ready if not w.failing), key=lambda w: w.label)
    if healthy:
        seen = ",".join(f"{w.label}={w.newest}" for w in healthy)
        digest = hashlib.sha1(seen.encode()).hexdigest()[:16]
        labels = [w.label for w in healthy]
        plan.requests.append(_apply_request(f"live-events:{digest}:{window}", labels, retries=2))
        plan.requested += labels
    for failing in sorted((w for w in ready if w.failing), key=lambda w: w.label):
        key = f"live-events:{failing.label}:{failing.newest}:{window}"
        plan.requests.append(_apply_request(key, [failing.label], retries=0))
        plan.requested.append(failing.label)
        plan.failing.append(f"{failing.label} ({failing.error or 'failed'})")
    return plan


def institutions_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Institutions an apply run is queued for or applying now."""
    runs = instance.get_runs(filters=dg.RunsFilter(job_name=APPLY_JOB, statuses=IN_FLIGHT))
    labels: set[str] = set()
    for run in runs:
        config = run.run_config.get("ops", {}).get("apply_live_events", {}).get("config", {})
        labels.update(config.get("institutions", []))
    return labels


def health_due(last: dict | None, outcomes: list[bool], now: float) -> bool:
    """Report stream checks when what they show changed (one passed or failed, or the events
    waiting went to none or back), or every HEALTH_EVERY_SECONDS: the check on screen is
    never older than the fact it shows."""
    if not last:
        return True
    return last.get("outcomes") != outcomes or now - last.get("at", 0) >= HEALTH_EVERY_SECONDS


def tick_message(polled: PollResult, replayed: int, plan: RunPlan) -> str:
    """What one tick did, in a line: the tick's message in the UI and its log."""
    text = polled.summary()
    if replayed:
        text += f"; replayed {replayed} quarantined messages of newly declared institutions"
    if plan.requested:
        text += f"; requested an apply of {', '.join(plan.requested)}"
    if plan.in_flight:
        text += f"; {', '.join(plan.in_flight)} being applied"
    if plan.failing:
        text += f"; failing, so in runs of their own: {', '.join(plan.failing)}"
    if not plan.requested and not plan.in_flight:
        text += "; nothing to apply"
    return text + "."


@dataclass
class _Tick:
    """One tick's state while it runs; ``schemas`` are the institutions' (by label)."""

    context: dg.SensorEvaluationContext
    settings: Settings
    followed: QueueFollowed
    cursor: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    schemas: dict[str, str] = field(default_factory=dict)


def _replay_strays(conn: psycopg.Connection, destinations: Destinations) -> int:
    """Land the quarantined messages of institutions declared since (once each)."""
    shared, uuids = destinations.stray, list(destinations.by_uuid)
    strays = store.strays_of(conn, shared, uuids, STRAYS_PER_TICK) if shared and uuids else []
    if not strays:
        return 0
    land_messages(conn, destinations, [(s.message_id, s.raw) for s in strays])
    store.mark_replayed(conn, shared, [s.id for s in strays])
    return len(strays)


def _institution_work(
    tick: _Tick, conn: psycopg.Connection, namespace: Namespace, now: datetime
) -> InstitutionWork:
    """An institution's stream checks (when due) and what a run could do for it."""
    schema = tick.schemas[namespace.label]
    health = stream_health(conn, schema, now)
    checks = stream_evaluations(namespace, tick.settings, health)
    outcomes = [check.passed for check in checks] + [health.pending == 0]
    label = namespace.label
    if health_due(tick.cursor.get(label), outcomes, time.time()):
        tick.events += checks
        tick.cursor[label] = {"outcomes": outcomes, "at": time.time()}
    partitions = set(tick.context.instance.get_dynamic_partitions(namespace.partitions.name))
    newest = store.newest_actionable(conn, schema, partitions)
    state = store.apply_state(conn, schema)
    return InstitutionWork(label, newest, state.consecutive_failures > 0, state.last_error)


def _shared_queue_health(tick: _Tick, conn: psycopg.Connection, stray: str, now: datetime) -> None:
    """The shared queue's checks, when one changed or every HEALTH_EVERY_SECONDS."""
    unknown = store.unknown_institutions(conn, stray)
    recent = store.quarantined_since(conn, stray, now - timedelta(hours=1))
    checks = shared_queue_evaluations(unknown, recent)
    outcomes = [check.passed for check in checks]
    if health_due(tick.cursor.get(SHARED_CURSOR), outcomes, time.time()):
        tick.events += checks
        tick.cursor[SHARED_CURSOR] = {"outcomes": outcomes, "at": time.time()}


def _materializations(tick: _Tick, polled: PollResult) -> None:
    """``live_events`` of each institution the tick stored messages for."""
    for namespace in tick.followed.namespaces:
        stored = polled.stored_by_schema.get(tick.schemas[namespace.label], 0)
        if stored:
            metadata = {"messages_stored": stored, **polled.as_dict()}
            key = namespace.key("live_events")
            tick.events.append(dg.AssetMaterialization(key, metadata=metadata))


def _land_and_plan(tick: _Tick, sqs, shared_warehouse) -> tuple[PollResult, int, RunPlan]:
    followed, resources = tick.followed, tick.context.resources
    warehouses = [institution_resource(resources, n, "warehouse") for n in followed.namespaces]
    for namespace, warehouse in zip(followed.namespaces, warehouses, strict=True):
        warehouse.migrate_once()  # the landing connection writes into each schema
        tick.schemas[namespace.label] = warehouse.table_schema()
    landing = shared_warehouse or warehouses[0]
    stray = shared_warehouse.table_schema() if shared_warehouse is not None else None
    destinations = followed.destinations(tick.schemas, stray)
    with landing.connect() as conn:
        replayed = _replay_strays(conn, destinations)
        polled = poll_queue(sqs, sqs.client(), conn, destinations)
        if polled.warehouse_error:  # the connection is gone: the next tick starts afresh
            return polled, replayed, RunPlan()
        now = datetime.now(UTC)
        work = [_institution_work(tick, conn, n, now) for n in followed.namespaces]
        if stray is not None:
            _shared_queue_health(tick, conn, stray, now)
    plan = plan_runs(work, institutions_in_flight(tick.context.instance), time.time())
    return polled, replayed, plan


def build_live_events_sensor(settings: Settings, followed: QueueFollowed) -> dg.SensorDefinition:
    keys = {followed.queue_key} | {n.resource_key("warehouse") for n in followed.namespaces}
    if followed.shared_schema_key:
        keys.add(followed.shared_schema_key)
    served = ", ".join(n.label for n in followed.namespaces)

    @dg.sensor(
        name=followed.sensor_name,
        description=f"Lands Canvas Live Events of {served} from its SQS queue into PostgreSQL, "
        "deletes them from SQS once stored, reports the stream's health checks, and requests "
        "short apply runs for the institutions with events to apply. It calls no Canvas.",
        minimum_interval_seconds=settings.live_events_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        job_name=APPLY_JOB,
        required_resource_keys=keys,
    )
    @reported_in_one_line
    def canvas_live_events(
        context: dg.SensorEvaluationContext, **_resources: object
    ) -> dg.SensorResult | dg.SkipReason:
        sqs = getattr(context.resources, followed.queue_key)
        if not sqs.queue_url:
            return dg.SkipReason(f"{QUEUE_URL_ENV} is not set: no queue to follow.")
        key = followed.shared_schema_key
        shared = getattr(context.resources, key) if key else None
        tick = _Tick(context, settings, followed, json.loads(context.cursor or "{}"))
        polled, replayed, plan = _land_and_plan(tick, sqs, shared)
        _materializations(tick, polled)
        message = tick_message(polled, replayed, plan)
        context.log.info(message)
        cursor = json.dumps(tick.cursor)
        result = {"asset_events": tick.events, "cursor": cursor}
        if plan.requests:
            return dg.SensorResult(run_requests=plan.requests, **result)
        return dg.SensorResult(skip_reason=message, **result)

    return canvas_live_events


def queues_followed(settings: Settings, namespaces: Sequence[Namespace]) -> list[QueueFollowed]:
    """The shared queue (for the institutions without a queue of their own) and each own queue."""
    followed = []
    shared = tuple(n for n in namespaces if not n.institution.queue_url)
    if shared:
        key = SHARED_WAREHOUSE if settings.institutions_file is not None else None
        followed.append(QueueFollowed("canvas_live_events", SHARED_QUEUE, shared, key))
    for namespace in namespaces:
        if namespace.institution.queue_url:
            followed.append(
                QueueFollowed(
                    namespace.suffixed("canvas_live_events"),
                    namespace.resource_key("sqs"),
                    (namespace,),
                )
            )
    return followed
