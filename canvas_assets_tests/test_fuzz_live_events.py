"""Fuzzing the Live Events intake: whatever a sender puts in a message, it is landed or
quarantined (or, if PostgreSQL refuses even that, left for SQS's redrive) — never an exception
that fails its batch or the sensor's tick.

Profiles (``CANVAS_RELIABILITY_PROFILE``, see ``reliability.py``): ``ci`` runs a fixed seed with
at least 1,000 generated messages and mixed batches; ``heavy`` ten times more, seed varying.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.sensors.live_events import build_live_events_sensor, queues_followed
from canvas_assets.live_events import land
from canvas_assets.live_events.land import Destinations
from canvas_assets.live_events.parse import (
    EVENT_TIME_RANGE,
    MAX_ID,
    ParsedEvent,
    QuarantineError,
    event_key,
    parse_message,
)
from canvas_assets.live_events.store import storable
from canvas_assets.settings import Settings
from canvas_sandbox import envelope, global_id

from .hostile import ISSUE_BODIES, hostile_messages, valid_envelopes
from .truth import expected_semester, semester_of

pytestmark = pytest.mark.slow  # heavy reliability: generated hostile messages

TALLY: Counter[str] = Counter()


def _check_parsed(event: ParsedEvent) -> None:
    low, high = EVENT_TIME_RANGE
    assert low <= event.event_time < high
    for value in (event.course_id, event.section_id, event.enrollment_id, event.user_id):
        assert value is None or 0 <= value <= MAX_ID
    assert len(event.event_key) == 64


@given(bodies=st.lists(hostile_messages(), min_size=3, max_size=12))
def test_parsing_any_message_either_succeeds_or_gives_a_quarantine_reason(
    bodies: list[str], figures
) -> None:
    """Without this, an input the parser did not foresee (deep nesting, a Unicode digit, a year
    beyond 9999, a 4,301-digit number) raises something other than QuarantineError, which
    escapes per-message handling and fails the whole batch."""
    for body in bodies:
        try:
            event = parse_message(body)
        except QuarantineError as exc:
            assert str(exc)
            TALLY["parse quarantined"] += 1
        else:
            _check_parsed(event)
            TALLY["parse accepted"] += 1
    TALLY["parse batches"] += 1
    figures(
        "fuzz: parse",
        messages=TALLY["parse quarantined"] + TALLY["parse accepted"],
        quarantined=TALLY["parse quarantined"],
        escapes=0,
    )


def _quarantine_reasons(conn: psycopg.Connection, schema: str, raws: list[object]) -> dict:
    keys = {event_key(storable(raw)): raw for raw in raws}
    rows = conn.execute(
        sql.SQL("SELECT raw_key, reason FROM {}.live_event_quarantine WHERE raw_key = ANY(%s)")
        .format(sql.Identifier(schema)),
        (list(keys),),
    ).fetchall()  # fmt: skip
    return {keys[key]: reason for key, reason in rows}


def _landed_keys(conn: psycopg.Connection, schema: str, keys: list[str]) -> set[str]:
    rows = conn.execute(
        sql.SQL("SELECT event_key FROM {}.live_events WHERE event_key = ANY(%s)").format(
            sql.Identifier(schema)
        ),
        (keys,),
    ).fetchall()
    return {key for (key,) in rows}


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[tuple[bool, str]]:
    """1-12 messages, hostile and valid in any order: (is_valid, body)."""
    valid = [(True, json.dumps(e)) for e in draw(st.lists(valid_envelopes(), max_size=4))]
    hostile = [(False, b) for b in draw(st.lists(hostile_messages(), min_size=1, max_size=8))]
    return draw(st.permutations(valid + hostile))


@given(batch=mixed_batches())
def test_a_mixed_batch_lands_every_valid_message_and_accounts_for_every_other(
    batch: list[tuple[bool, str]], warehouse, figures
) -> None:
    """Without this, one hostile message in a batch raises out of the landing call: the batch
    is not acknowledged, comes back after the visibility timeout, crashes again and drags its
    valid neighbours into the dead-letter queue."""
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        result = land.land_messages(
            conn,
            Destinations.one_institution(schema),
            [(f"m{i}", body) for i, (_, body) in enumerate(batch)],
        )
        parts = (result.landed, result.unknown, result.duplicates, result.quarantined)
        assert sum(parts) + result.left_for_redrive == len(batch) == len(result.outcomes)
        assert result.left_for_redrive == 0  # PostgreSQL accepted every quarantine row
        valid = [(body, o) for (ok, body), o in zip(batch, result.outcomes, strict=True) if ok]
        assert all(o.kind in (land.LANDED, land.DUPLICATE) for _, o in valid)
        assert _landed_keys(conn, schema, [o.event_key for _, o in valid]) == {
            o.event_key for _, o in valid
        }
        quarantined = [
            body
            for (_, body), o in zip(batch, result.outcomes, strict=True)
            if o.kind in (land.QUARANTINED, land.ALREADY_QUARANTINED)
        ]
        reasons = _quarantine_reasons(conn, schema, quarantined)
        assert set(reasons) == set(quarantined) and all(reasons.values())
    TALLY["batches"] += 1
    TALLY["messages"] += len(batch)
    TALLY["valid"] += len(valid)
    TALLY["quarantined"] += result.quarantined
    figures(
        "fuzz: mixed batches",
        batches=TALLY["batches"],
        messages=TALLY["messages"],
        valid_messages=TALLY["valid"],
        quarantined=TALLY["quarantined"],
        valid_not_landed=0,
        escapes=0,
    )


def test_the_probes_poison_messages_are_quarantined_by_the_real_sensor(
    canvas, warehouse, db, institution, instance, queue, figures
) -> None:
    """Without this, one poison message in the queue (issue 11: a deeply nested body, "①" as
    root_account_id, year 10000, a 4,301-digit number) makes every tick of canvas_live_events
    raise: nothing lands and the message never leaves the queue — one message stops the
    stream."""
    semester = semester_of(next(t for t in institution.terms.values() if t["sis_term_id"]))
    courses = list(expected_semester(institution, semester)["courses"])
    client = queue.client()
    sent_valid = 0
    for n, body in enumerate(ISSUE_BODIES.values()):
        client.send_message(QueueUrl=queue.queue_url, MessageBody=body)
        for k in range(9):  # one bad message beside nine valid ones, as the probe sent them
            event = envelope(
                institution,
                "course_updated",
                {"course_id": str(global_id(courses[k % len(courses)])), "name": f"n{n}-{k}"},
                event_time=datetime.now(UTC) + timedelta(seconds=n * 10 + k),
            )
            client.send_message(QueueUrl=queue.queue_url, MessageBody=json.dumps(event))
            sent_valid += 1
    settings = Settings.from_env({})
    namespaces = [Namespace(settings.institutions[0])]
    sensor = build_live_events_sensor(settings, queues_followed(settings, namespaces)[0])
    resources = {"warehouse": warehouse, "sqs": queue}
    ticks = 0
    for _ in range(5):  # every tick must return; a few are enough to drain the queue
        sensor(dg.build_sensor_context(instance=instance, resources=resources))
        ticks += 1
        if _depth(queue) == 0:
            break
    schema = sql.Identifier(warehouse.table_schema())
    landed = db.execute(sql.SQL("SELECT count(*) FROM {}.live_events").format(schema)).fetchone()
    reasons = [
        r
        for (r,) in db.execute(
            sql.SQL("SELECT reason FROM {}.live_event_quarantine").format(schema)
        )
    ]
    assert _depth(queue) == 0
    assert landed == (sent_valid,)
    assert len(reasons) == len(ISSUE_BODIES) and all(reasons)
    figures(
        "poison messages through the sensor",
        poison_messages=len(ISSUE_BODIES),
        valid_messages=sent_valid,
        ticks=ticks,
        ticks_raised=0,
        landed=landed[0],
        quarantined=len(reasons),
        left_in_queue=0,
    )


def _depth(queue) -> int:
    attributes = queue.client().get_queue_attributes(
        QueueUrl=queue.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())
