"""Live Events figures: apply throughput (Canvas answering at once, and at 50 ms a request),
sensor landing throughput from SQS, and SQS → PostgreSQL latency under the real daemon.

"Without hydration" here means the apply's own cost with Canvas answering instantly: events are
signals and REST is truth, so every apply re-reads the courses its events name (a few requests
per course, however many events name it); what is left when those requests cost nothing is the
project's own work (classify, map, validate, write, close the events). "With hydration" is the
same apply with every Canvas request taking 50 ms plus its cost, as in the backfill benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
from psycopg import sql

from canvas_assets.backfill.semester import backfill_semester
from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.route import route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import pending_semesters
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.status import recorded_sync
from canvas_devstack.processes import free_port, start_dev, stop_process_group
from canvas_sandbox import (
    ChangeDriver,
    SandboxServer,
    envelope,
    generate_institution,
    rename_course,
)
from canvas_sandbox import global_id as canvas_global_id

from .harness import ROOT, TOKEN, drop_schema, new_schema

SQS_CREDENTIALS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}


def _backfilled(sandbox: SandboxServer, db_url: str, semesters: list[str]) -> WarehouseResource:
    warehouse = WarehouseResource(url=db_url, schema_name=new_schema())
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN)
    schema = warehouse.table_schema()
    with canvas.session() as session, warehouse.connect() as conn:
        for semester in semesters:  # recorded: only synced semesters take events
            with recorded_sync(warehouse.connect, schema, semester):
                result = backfill_semester(conn, schema, session, semester, datetime.now(UTC))
            assert result.report.ok, result.report.message(semester)
    return warehouse


def apply_throughput(db_url: str, size: str, events: int, latency_ms: float) -> dict:
    """Land the same ``events`` (from the sandbox's change driver) into two warehouses; apply
    one with Canvas answering instantly, the other at ``latency_ms`` per request."""
    institution = generate_institution(size, seed=3)
    semesters = sorted(t["sis_term_id"] for t in institution.terms.values() if t["sis_term_id"])
    out: dict[str, dict] = {}
    with SandboxServer(institution, token=TOKEN, keep_alive=True) as sandbox:
        instant = _backfilled(sandbox, db_url, semesters)
        hydrated = _backfilled(sandbox, db_url, semesters)
        driver = ChangeDriver(institution, None, None, seed=4)
        envelopes: list[dict] = []
        while len(envelopes) < events:
            envelopes += driver.step()
        driver.flush()
        messages = [(f"m-{n}", json.dumps(e)) for n, e in enumerate(envelopes)]
        for label, warehouse, latency, cost in (
            ("instant", instant, 0.0, False),
            ("hydrated", hydrated, latency_ms / 1000, True),
        ):
            sandbox.latency_seconds, sandbox.server_time = latency, cost
            out[label] = _apply_all(sandbox, warehouse, messages, semesters)
            drop_schema(db_url, warehouse.table_schema())
        sandbox.latency_seconds, sandbox.server_time = 0.0, False
    return out


def _apply_all(sandbox, warehouse: WarehouseResource, messages, semesters) -> dict:
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN)
    schema = warehouse.table_schema()
    with canvas.session() as session, warehouse.connect() as conn:
        land_messages(conn, Destinations.one_institution(schema), messages)
        for _ in range(50):
            routed = route_pending(conn, schema, session, ())
            if routed.unresolved == 0:
                break
        terms = fetch_terms(session)
        before = session.stats.requests
        started = time.perf_counter()
        applied = courses = 0
        canvas_seconds = 0.0
        for semester in pending_semesters(conn, schema, set(semesters)):
            result = apply_semester_events(
                conn, schema, session, semester, find_term(terms, semester), datetime.now(UTC)
            )
            applied += result.events
            courses += result.courses_refreshed
            canvas_seconds += result.canvas_seconds
        seconds = time.perf_counter() - started
        requests = session.stats.requests - before
    own = seconds - canvas_seconds  # the same runs, less the REST re-read
    return {
        "events": applied,
        "seconds": seconds,
        "events_per_s": applied / seconds if seconds else float("nan"),
        "canvas_seconds": canvas_seconds,
        "own_seconds": own,
        "own_events_per_s": applied / own if own > 0 else float("nan"),
        "courses_refreshed": courses,
        "canvas_requests": requests,
    }


def landing_throughput(db_url: str, sqs_url: str, messages: int) -> dict:
    """Send ``messages`` Canvas envelopes to a fresh queue; run sensor ticks (poll_queue with the
    sensor's budget) until it is empty; messages landed and acknowledged per second, per tick."""
    client = boto3.client("sqs", endpoint_url=sqs_url, region_name="us-east-1", **SQS_CREDENTIALS)
    url = client.create_queue(QueueName=f"canvas-live-events-bench-{uuid.uuid4().hex[:8]}")[
        "QueueUrl"
    ]
    queue = SQSQueueResource(
        queue_url=url, endpoint_url=sqs_url, region_name="us-east-1", **SQS_CREDENTIALS
    )
    institution = generate_institution("small", seed=5)
    now = datetime.now(UTC)
    bodies = [
        json.dumps(
            envelope(
                institution,
                "course_updated",
                {"course_id": str(canvas_global_id(101 + n % 12)), "name": f"Renamed {n}"},
                event_time=now + timedelta(milliseconds=n),
            )
        )
        for n in range(messages)
    ]
    for start in range(0, messages, 10):
        client.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
            ],
        )
    warehouse = WarehouseResource(url=db_url, schema_name=new_schema())
    ticks, landed, started = [], 0, time.perf_counter()
    with warehouse.connect() as conn:
        while landed < messages and len(ticks) < 100:
            polled = poll_queue(
                queue, queue.client(), conn, Destinations.one_institution(warehouse.table_schema())
            )
            ticks.append({"received": polled.received, "seconds": polled.seconds})
            landed += polled.landed + polled.duplicates
    seconds = time.perf_counter() - started
    drop_schema(db_url, warehouse.table_schema())
    return {
        "messages": landed,
        "seconds": seconds,
        "messages_per_s": landed / seconds,
        "ticks": len(ticks),
        "messages_per_tick": statistics.median(t["received"] for t in ticks),
        "tick_seconds": statistics.median(t["seconds"] for t in ticks),
    }


def daemon_latency(db_url: str, sqs_url: str, workdir: Path, samples: int) -> dict:
    """``canvas-assets dev`` (webserver + daemon, default sensor interval) against this
    process's sandbox and queue: rename a course in Canvas, publish its event, and time until
    the new name is in PostgreSQL."""
    from canvas_assets.warehouse.embedded import ensure_database

    institution = generate_institution("small", seed=7)
    semester = "2026SP"
    client = boto3.client("sqs", endpoint_url=sqs_url, region_name="us-east-1", **SQS_CREDENTIALS)
    queue_url = client.create_queue(QueueName=f"canvas-live-events-e2e-{uuid.uuid4().hex[:6]}")[
        "QueueUrl"
    ]
    schema, dagster_db = new_schema(), f"dagster_{uuid.uuid4().hex[:8]}"
    ensure_database(db_url, dagster_db)
    dagster_url = db_url.replace("/bench", f"/{dagster_db}", 1)
    with SandboxServer(institution, token=TOKEN, keep_alive=True) as sandbox:
        env = {
            **os.environ,
            "CANVAS_ASSETS_HOME": str(workdir / "e2e-home"),
            "CANVAS_BASE_URL": sandbox.url,
            "CANVAS_API_TOKEN": TOKEN,
            "CANVAS_WAREHOUSE_URL": db_url,
            "CANVAS_WAREHOUSE_SCHEMA": schema,
            "CANVAS_DAGSTER_PG_URL": dagster_url,
            "CANVAS_LIVE_EVENTS_QUEUE_URL": queue_url,
            "AWS_ENDPOINT_URL_SQS": sqs_url,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": SQS_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": SQS_CREDENTIALS["aws_secret_access_key"],
            "CANVAS_TARGET_SEMESTERS": semester,
            "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
        }
        env.pop("CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS", None)  # the default interval
        env.pop("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", None)
        proc = start_dev(["--port", str(free_port())], env, workdir / "e2e-dev.log", cwd=ROOT)
        try:
            latencies = _measure(db_url, schema, semester, institution, client, queue_url, samples)
        finally:
            stop_process_group(proc, 90.0, signal.SIGINT)
    drop_schema(db_url, schema)
    ordered = sorted(latencies)
    return {
        "samples": len(ordered),
        "p50_s": statistics.median(ordered),
        "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max_s": ordered[-1],
        "sensor_interval_s": Settings.model_fields["live_events_sensor_interval_seconds"].default,
    }


def _measure(db_url, schema, semester, institution, client, queue_url, samples) -> list[float]:
    status = sql.SQL("SELECT status FROM {}.semester_sync_status WHERE semester = %s").format(
        sql.Identifier(schema)
    )
    name_of = sql.SQL(
        "SELECT name FROM {}.courses WHERE semester = %s AND institution_id = %s"
    ).format(sql.Identifier(schema))
    term = next(t for t in institution.terms.values() if t["sis_term_id"] == semester)
    course_ids = sorted(
        c["id"]
        for c in institution.courses.values()
        if c["enrollment_term_id"] == term["id"] and c["workflow_state"] != "deleted"
    )
    latencies = []
    with psycopg.connect(db_url, autocommit=True) as conn:
        deadline = time.monotonic() + 600
        while True:
            try:
                if conn.execute(status, (semester,)).fetchone() == ("synced",):
                    break
            except psycopg.errors.UndefinedTable:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the first backfill did not finish in 10 minutes")
            time.sleep(1)
        for n in range(samples):
            course_id = course_ids[n % len(course_ids)]
            name = f"Renamed for latency {n}"
            event = rename_course(institution, course_id, name)
            sent = time.monotonic()
            client.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event))
            while conn.execute(name_of, (semester, course_id)).fetchone() != (name,):
                if time.monotonic() - sent > 300:
                    raise TimeoutError("an event took more than 5 minutes to apply")
                time.sleep(0.2)
            latencies.append(time.monotonic() - sent)
            time.sleep(3 + (n * 7) % 11)  # spread the sends over the sensor's interval
    return latencies
