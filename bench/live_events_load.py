"""A burst of Live Events, measured stage by stage, each figure with what bounds it.

1. Landing alone: ``--events`` valid messages through ``land_messages`` (parse, store, commit in
   chunks of ``LAND_CHUNK``), as the sensor lands them, without SQS: the project's own rate.
2. The sensor's landing path against moto's SQS server (its own process): ``--queue-events`` of
   the burst sent to a queue, then sensor ticks (``poll_queue`` with the sensor's 20 s budget)
   until it is empty. Per tick: messages landed, and how much of the tick was spent landing; the
   rest is waiting on the queue. moto scans its whole queue on every receive and delete, so it
   is the bound here (real SQS answers a receive in tens of milliseconds).
3. Routing the whole burst, with a share of events naming courses the warehouse has never seen
   (concurrent, budgeted Canvas look-ups, 35 s deadline a tick, as in the sensor; a tick routes
   at most ``ROUTE_BATCH`` events).
4. Applying the imported semester's events (one transaction): events/s, bounded by the Canvas
   re-reads of the courses they name.

    .venv/bin/python bench/live_events_load.py --events 50000 --json /tmp/load.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3

from canvas_assets.backfill.semester import backfill_semester
from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.poll import LAND_CHUNK, poll_queue
from canvas_assets.live_events.route import route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import stream_counts
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.embedded import embedded_database_url
from canvas_assets.warehouse.status import recorded_sync
from canvas_devstack.processes import free_port
from canvas_sandbox import SandboxServer, envelope, generate_institution, global_id

TOKEN = "load-token"
CREDENTIALS = {"aws_access_key_id": "load", "aws_secret_access_key": "load"}
UNKNOWN_SHARE = 0.05  # events naming courses of semesters never imported


def _semesters(institution) -> list[str]:
    return [t["sis_term_id"] for t in institution.terms.values() if t["sis_term_id"]]


def make_bodies(institution, count: int, imported: str, seed: int = 1) -> list[str]:
    """Valid course_updated / enrollment_updated envelopes; most for ``imported``."""
    rng = random.Random(seed)
    term_of = {t["id"]: t["sis_term_id"] for t in institution.terms.values()}
    mine = [c for c in institution.courses.values() if term_of[c["enrollment_term_id"]] == imported]
    others = [
        c for c in institution.courses.values() if term_of[c["enrollment_term_id"]] != imported
    ]
    enrollments = [
        e for e in institution.enrollments.values() if e["course_id"] in {c["id"] for c in mine}
    ]
    now = datetime.now(UTC)
    bodies = []
    for n in range(count):
        stamp = now + timedelta(milliseconds=n)
        if rng.random() < UNKNOWN_SHARE:
            course = rng.choice(others)
            body = {"course_id": str(global_id(course["id"])), "name": f"burst {n}"}
            bodies.append(
                json.dumps(envelope(institution, "course_updated", body, event_time=stamp))
            )
        elif rng.random() < 0.5:
            body = {"course_id": str(global_id(rng.choice(mine)["id"])), "name": f"burst {n}"}
            bodies.append(
                json.dumps(envelope(institution, "course_updated", body, event_time=stamp))
            )
        else:
            e = rng.choice(enrollments)
            body = {
                "enrollment_id": str(global_id(e["id"])),
                "course_id": str(global_id(e["course_id"])),
                "user_id": str(global_id(e["user_id"])),
                "course_section_id": str(e["course_section_id"]),
                "workflow_state": e["enrollment_state"],
                "n": n,
            }
            bodies.append(
                json.dumps(envelope(institution, "enrollment_updated", body, event_time=stamp))
            )
    return bodies


def landing_alone(warehouse: WarehouseResource, bodies: list[str]) -> dict:
    started = time.perf_counter()
    landed = 0
    with warehouse.connect() as conn:
        for start in range(0, len(bodies), LAND_CHUNK):
            chunk = bodies[start : start + LAND_CHUNK]
            result = land_messages(
                conn,
                Destinations.one_institution(warehouse.table_schema()),
                [(f"m{start + i}", b) for i, b in enumerate(chunk)],
            )
            landed += result.landed
    seconds = time.perf_counter() - started
    return {
        "messages": len(bodies),
        "landed": landed,
        "seconds": round(seconds, 2),
        "messages_per_s": round(len(bodies) / seconds),
        "bound": "PostgreSQL + parsing (this project)",
    }


def through_the_queue(
    queue: SQSQueueResource, warehouse: WarehouseResource, bodies: list[str]
) -> dict:
    client = queue.client()
    started = time.perf_counter()

    def send(start: int) -> None:
        entries = [
            {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
        ]
        client.send_message_batch(QueueUrl=queue.queue_url, Entries=entries)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(0, len(bodies), 10)))
    sent_seconds = time.perf_counter() - started
    ticks = []
    with warehouse.connect() as conn:
        while len(ticks) < 500:
            polled = poll_queue(
                queue, queue.client(), conn, Destinations.one_institution(warehouse.table_schema())
            )
            if not polled.received:
                break
            ticks.append(polled)
    landed = sum(t.landed + t.duplicates for t in ticks)
    seconds = sum(t.seconds for t in ticks)
    return {
        "messages": len(bodies), "send_seconds": round(sent_seconds, 1), "ticks": len(ticks),
        "landed": landed, "landed_per_tick_median": statistics.median(t.landed for t in ticks),
        "tick_seconds_median": round(statistics.median(t.seconds for t in ticks), 1),
        "messages_per_s": round(landed / seconds, 1),
        "share_of_tick_landing": round(sum(t.land_seconds for t in ticks) / seconds, 3),
        "bound": "moto's SQS (receive and delete scan the whole queue)",
    }  # fmt: skip


def route_and_apply(
    canvas: CanvasResource, warehouse: WarehouseResource, imported: str, requests_before
) -> dict:
    schema, ticks = warehouse.table_schema(), []
    fail_fast = {"timeout_seconds": 5, "max_retries": 1, "max_throttle_retries": 1}
    with warehouse.connect() as conn:
        while len(ticks) < 50:  # as sensor ticks do, until nothing is left to route
            with canvas.session(**fail_fast) as session:
                began = time.perf_counter()
                routed = route_pending(conn, schema, session, (), deadline=time.monotonic() + 35)
            if not routed.routed + routed.skipped + routed.out_of_target:
                break
            ticks.append((routed, time.perf_counter() - began))
        lookups = requests_before()
        with canvas.session() as session:
            term = find_term(fetch_terms(session), imported)
            began = time.perf_counter()
            applied = apply_semester_events(
                conn, schema, session, imported, term, datetime.now(UTC)
            )
            apply_seconds = time.perf_counter() - began
        waiting = stream_counts(conn, schema, datetime.now(UTC)).pending
    return {
        "route_ticks": len(ticks), "route_seconds": round(sum(s for _, s in ticks), 1),
        "routed": sum(r.routed for r, _ in ticks), "canvas_lookups": lookups,
        "apply_events": applied.events, "apply_courses": applied.courses_refreshed,
        "apply_seconds": round(apply_seconds, 1),
        "events_per_s_applied": round(applied.events / apply_seconds),
        "apply_bound": "Canvas re-reads of the courses named (events are signals)",
        "events_waiting_for_semesters_not_imported": waiting,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--queue-events", type=int, default=2_000, help="of --events, via moto")
    parser.add_argument("--size", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--latency-ms", type=float, default=20.0, help="Canvas latency a request")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="canvas-load-"))
    db_url = embedded_database_url(workdir / "postgres", "load")
    port = free_port()
    server = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    moto = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    institution = generate_institution(args.size, seed=3)
    sandbox = SandboxServer(
        institution, token=TOKEN, latency_seconds=args.latency_ms / 1000
    ).start()
    try:
        time.sleep(2)  # moto's server starting
        figures = run(args, institution, sandbox, db_url, f"http://127.0.0.1:{port}")
    finally:
        sandbox.stop()
        moto.terminate()
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def run(args, institution, sandbox: SandboxServer, db_url: str, sqs_url: str) -> dict:
    imported = _semesters(institution)[-1]
    canvas = CanvasResource(base_url=sandbox.url, api_token=TOKEN)
    warehouse = WarehouseResource(url=db_url, schema_name=f"load_{uuid.uuid4().hex[:8]}")
    schema = warehouse.table_schema()
    with (
        canvas.session() as session,
        warehouse.connect() as conn,
        recorded_sync(warehouse.connect, schema, imported),
    ):
        assert backfill_semester(conn, schema, session, imported, datetime.now(UTC)).report.ok
    bodies = make_bodies(institution, args.events, imported)
    queued, direct = bodies[: args.queue_events], bodies[args.queue_events :]
    client = boto3.client("sqs", endpoint_url=sqs_url, region_name="us-east-1", **CREDENTIALS)
    url = client.create_queue(QueueName=f"canvas-live-events-load-{uuid.uuid4().hex[:6]}")[
        "QueueUrl"
    ]
    queue = SQSQueueResource(
        queue_url=url, endpoint_url=sqs_url, region_name="us-east-1", **CREDENTIALS
    )
    before = sandbox.request_count
    figures = {"events": args.events, "size": args.size, "canvas_latency_ms": args.latency_ms}
    figures["landing_alone"] = landing_alone(warehouse, direct)
    figures["sensor_ticks_on_moto"] = through_the_queue(queue, warehouse, queued)
    figures["route_and_apply"] = route_and_apply(
        canvas, warehouse, imported, lambda: sandbox.request_count - before
    )
    return figures


if __name__ == "__main__":
    main()
