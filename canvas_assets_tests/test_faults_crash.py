"""Crash injection: SIGKILL the landing/routing/apply process at every stage, many times, while
Canvas keeps changing — then nothing is lost, nothing is applied twice, and the tables equal the
sandbox's own truth.

The process is a forkserver child running ``crash_worker.work`` (one tick's poll and route, and
the apply runs it would launch) that kills itself at a planned stage, or is killed by this test
at a random moment or while PostgreSQL holds its apply mid-commit. A trigger in the test schema
records every change of ``live_events.applied_at``, so an event closed twice would show.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import time
from collections import Counter

import psycopg
import pytest
from psycopg import sql

from canvas_assets.live_events.parse import parse_message
from canvas_sandbox import ChangeDriver

from . import crash_worker
from .backfills import backfill, real_semesters
from .conftest import SANDBOX_TOKEN
from .reliability import scale
from .truth import expected_semester, warehouse_semester

# A hang under injected faults fails fast instead of eating the CI budget.
pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
]  # heavy reliability: SIGKILLs at every stage

STAGES = (
    "received",
    "landing",
    "landed",
    "deleted",
    "routing",
    "route-canvas",
    "apply-canvas",
    "apply-write",
    "random",
)
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(["canvas_assets_tests.crash_worker"])

AUDIT_TABLE = (
    "CREATE TABLE {schema}.applied_audit (seq bigint, was_closed boolean, at timestamptz "
    "DEFAULT now())"
)
AUDIT_FUNCTION = """
CREATE FUNCTION {schema}.audit_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO {schema}.applied_audit (seq, was_closed) VALUES (NEW.seq, OLD.applied_at IS NOT NULL);
  RETURN NEW;
END $$
"""
AUDIT_TRIGGER = """
CREATE TRIGGER audit_applied AFTER UPDATE OF applied_at ON {schema}.live_events FOR EACH ROW
  WHEN (OLD.applied_at IS DISTINCT FROM NEW.applied_at) EXECUTE FUNCTION {schema}.audit_applied()
"""
PAUSE_FUNCTION = """
CREATE FUNCTION {schema}.crash_pause() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(coalesce(nullif(current_setting({setting}, true), ''), '0')::float);
  RETURN NULL;
END $$
"""
PAUSE_TRIGGER = """
CREATE TRIGGER crash_pause BEFORE UPDATE OF applied_at ON {schema}.live_events
  FOR EACH STATEMENT EXECUTE FUNCTION {schema}.crash_pause()
"""


def _install_triggers(conn: psycopg.Connection, schema: str) -> None:
    """An audit row for every change of applied_at, and a pause an apply's commit can be held
    in (when the worker sets crash_worker.PAUSE_SETTING)."""
    names = {"schema": sql.Identifier(schema), "setting": sql.Literal(crash_worker.PAUSE_SETTING)}
    conn.execute(sql.SQL(AUDIT_TABLE).format(**names))
    conn.execute(sql.SQL(AUDIT_FUNCTION).format(**names))
    conn.execute(sql.SQL(AUDIT_TRIGGER).format(**names))
    conn.execute(sql.SQL(PAUSE_FUNCTION).format(**names))
    conn.execute(sql.SQL(PAUSE_TRIGGER).format(**names))


def _paused(postgres_url: str, schema: str) -> bool:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE %s",
            (f"%{schema}%live_events%",),
        ).fetchone()
    return bool(row and row[0])


def _run(config: dict, stage: str | None, rng: random.Random, postgres_url: str) -> bool:
    """One worker, killed at ``stage``; True when it died by SIGKILL."""
    plan = None if stage in (None, "random") else (stage, rng.randint(1, 2))
    process = _context.Process(target=crash_worker.work, args=({**config, "kill": plan},))
    process.start()
    if stage == "random":
        process.join(rng.uniform(0.05, 1.2))
        process.kill()
    elif stage == "apply-write":
        deadline = time.monotonic() + 15
        while process.is_alive() and time.monotonic() < deadline:
            if _paused(postgres_url, config["schema"]):
                process.kill()
                break
            time.sleep(0.05)
    process.join(60)
    if process.exitcode is None:
        process.kill()
        pytest.fail(f"the worker (kill at {stage}) hung")
    if stage is None and process.exitcode != 0:
        pytest.fail(f"a worker with no kill planned exited with {process.exitcode}")
    return process.exitcode == -9


def _drain(config: dict, queue, conn: psycopg.Connection, schema: str, postgres_url: str) -> int:
    """Run clean workers until the queue is empty and nothing is left to route or apply."""
    for rounds in range(1, 15):
        _run(config, None, random.Random(0), postgres_url)
        attributes = queue.client().get_queue_attributes(
            QueueUrl=queue.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        waiting = conn.execute(
            sql.SQL("SELECT count(*) FROM {}.live_events WHERE applied_at IS NULL").format(
                sql.Identifier(schema)
            )
        ).fetchone()
        if not any(int(v) for v in attributes.values()) and waiting == (0,):
            return rounds
        time.sleep(1.0)  # messages of a killed worker come back after the visibility timeout
    pytest.fail("the queue never drained after the crashes")


def test_sigkills_at_every_stage_lose_nothing_and_apply_nothing_twice(
    canvas, warehouse, db, institution, instance, queue, sandbox, postgres_url, figures
) -> None:
    """Without this, a worker killed between receive and land, inside the landing or apply
    transaction, between commit and delete, or mid-routing could lose events (deleted before
    they were stored), land them twice, or apply them twice; and the final tables would drift
    from Canvas."""
    target = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, target).success
    schema = warehouse.table_schema()
    _install_triggers(db, schema)
    config = {
        "queue": queue.model_dump(),
        "warehouse_url": warehouse.url,
        "schema": schema,
        "canvas_url": sandbox.url,
        "token": SANDBOX_TOKEN,
        "target": [target],
    }
    driver = ChangeDriver(
        institution, queue.client(), queue.queue_url, seed=21,
        duplicate_rate=0.1, reorder_rate=0.2, follow_wall_clock=True,
    )  # fmt: skip
    rng = random.Random(4242)
    kills: Counter[str] = Counter()
    attempts = 0
    wanted = scale(ci=len(STAGES), heavy=len(STAGES) * 6)
    while sum(kills.values()) < wanted and attempts < wanted * 3:
        missing = [s for s in STAGES if not kills[s]]
        stage = missing[0] if missing else rng.choice(STAGES)
        driver.run(rng.randint(2, 6))
        driver.flush()
        attempts += 1
        kills[stage] += _run(config, stage, rng, postgres_url)
    assert all(kills[s] for s in STAGES), kills  # every stage was really killed at least once

    time.sleep(2.5)  # the queue's visibility timeout: what the killed workers held comes back
    rounds = _drain(config, queue, db, schema, postgres_url)
    sent = {parse_message(json.dumps(e)).event_key for e in driver.sent}
    landed = [
        key
        for (key,) in db.execute(
            sql.SQL("SELECT event_key FROM {}.live_events WHERE event_key NOT LIKE '%%:%%'").format(
                sql.Identifier(schema)
            )
        )
    ]
    audit = db.execute(
        sql.SQL(
            "SELECT count(*) FILTER (WHERE was_closed), count(*) - count(DISTINCT seq) "
            "FROM {}.applied_audit"
        ).format(sql.Identifier(schema))
    ).fetchone()
    assert set(landed) == sent and len(landed) == len(sent)  # 0 lost, 0 landed twice
    assert audit == (0, 0)  # no event closed twice
    expected = expected_semester(institution, target)
    actual = warehouse_semester(db, schema, target)
    for table in expected:
        assert actual[table] == expected[table], table
    figures(
        "crash injection (SIGKILL)",
        sigkills=sum(kills.values()),
        sigkills_by_stage=dict(sorted(kills.items())),
        workers_started=attempts + rounds,
        events_sent=len(driver.sent),
        distinct_events=len(sent),
        lost=0,
        landed_twice=0,
        applied_twice=0,
        tables_equal_truth=True,
    )
