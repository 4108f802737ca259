"""Live Events end to end against moto's SQS server, the sandbox over HTTP and real PostgreSQL."""

import json
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from psycopg import sql

from canvas_assets.assets import LIVE_EVENTS_RUN_CONFIG, semester_tables
from canvas_assets.cli import main as cli_main
from canvas_assets.incremental import apply_semester_events, pending_semesters, route_pending
from canvas_assets.sandbox import ChangeDriver, envelope, global_id, send_envelopes
from canvas_assets.semester import fetch_terms, find_term
from canvas_assets.sensors import build_live_events_sensor, poll_queue
from canvas_assets.settings import SyncSettings
from canvas_assets.sqs import SQSQueueResource

from .conftest import SANDBOX_TOKEN
from .test_backfill import backfill, real_semesters
from .truth import expected_semester, warehouse_semester


def queue_depth(queue: SQSQueueResource) -> int:
    attributes = queue.client().get_queue_attributes(
        QueueUrl=queue.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def land_and_apply(queue, warehouse, canvas, partitions, target=()) -> dict:
    """What the sensor and its runs do, called directly."""
    schema = warehouse.table_schema()
    applied = {"events": 0, "applied": 0, "stale": 0}
    with warehouse.connect() as conn:
        polled = poll_queue(queue, queue.client(), conn, schema, budget_seconds=60)
        session = canvas.session()
        # The sensor routes a bounded number of REST look-ups per tick; ticks repeat until done.
        for _ in range(20):
            if route_pending(conn, schema, session, set(partitions), target).unresolved == 0:
                break
        terms = fetch_terms(session)
        for semester in pending_semesters(conn, schema, set(partitions)):
            result = apply_semester_events(
                conn, schema, session, semester, find_term(terms, semester), datetime.now(UTC)
            )
            applied["events"] += result.events
            applied["applied"] += result.applied
            applied["stale"] += result.stale
    return {**polled.as_dict(), **applied}


def assert_converged(db, warehouse, institution, semesters) -> None:
    for semester in semesters:
        expected = expected_semester(institution, semester)
        actual = warehouse_semester(db, warehouse.table_schema(), semester)
        for table in expected:
            assert actual[table] == expected[table], (semester, table)


def live_event_rows(db, warehouse) -> list[tuple]:
    return db.execute(
        sql.SQL(
            "SELECT event_key, semester, applied_at IS NOT NULL, outcome FROM {}.live_events "
            "ORDER BY seq"
        ).format(sql.Identifier(warehouse.table_schema()))
    ).fetchall()


def test_random_changes_with_duplicates_disorder_and_redelivery_converge(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, duplicated, reordered or redelivered events would leave tables wrong."""
    semesters = real_semesters(institution)
    for semester in semesters:
        assert backfill(canvas, warehouse, instance, semester).success
    driver = ChangeDriver(
        institution,
        queue.client(),
        queue.queue_url,
        seed=11,
        duplicate_rate=0.15,
        reorder_rate=0.25,
        follow_wall_clock=True,
    )
    driver.run(200)
    driver.flush()
    # Redelivery: messages received and not deleted come back after the visibility timeout.
    client = queue.client()
    peeked = client.receive_message(
        QueueUrl=queue.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    assert peeked.get("Messages")

    result = land_and_apply(queue, warehouse, canvas, semesters)
    assert result["received"] >= 200
    assert result["duplicates"] > 0
    assert queue_depth(queue) == 0
    assert_converged(db, warehouse, institution, semesters)

    # Every sent message again (a full redelivery of the stream) changes nothing.
    before = {s: warehouse_semester(db, warehouse.table_schema(), s) for s in semesters}
    send_envelopes(client, queue.queue_url, list(driver.sent))
    again = land_and_apply(queue, warehouse, canvas, semesters)
    assert again["landed"] == 0 and again["events"] == 0
    assert {s: warehouse_semester(db, warehouse.table_schema(), s) for s in semesters} == before


def test_older_event_never_overwrites_newer_data_and_deletion_sticks(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, a late event could resurrect a deleted course or restore an old name."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    schema = warehouse.table_schema()
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    course = institution.courses[course_id]
    body = {
        "course_id": str(global_id(course_id)),
        "name": "Old name",
        "workflow_state": "available",
    }
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    stale = envelope(institution, "course_updated", body, event_time=an_hour_ago)
    send_envelopes(queue.client(), queue.queue_url, [stale])
    result = land_and_apply(queue, warehouse, canvas, [semester])
    assert (result["applied"], result["stale"]) == (0, 1)

    # Canvas deletes the course; the deletion event arrives, then a stale update after it.
    with institution.lock:
        course["workflow_state"] = "deleted"
    deleted_at = datetime.now(UTC)
    deletion = envelope(
        institution, "course_updated", {**body, "workflow_state": "deleted"}, event_time=deleted_at
    )
    late_update = envelope(
        institution,
        "course_updated",
        {**body, "name": "Renamed"},
        event_time=deleted_at - timedelta(minutes=5),
    )
    send_envelopes(queue.client(), queue.queue_url, [deletion])
    land_and_apply(queue, warehouse, canvas, [semester])
    send_envelopes(queue.client(), queue.queue_url, [late_update])
    late = land_and_apply(queue, warehouse, canvas, [semester])
    assert late["stale"] == 1
    row = db.execute(
        sql.SQL(
            "SELECT name, deleted_at IS NOT NULL FROM {}.courses WHERE semester = %s "
            "AND institution_id = %s"
        ).format(sql.Identifier(schema)),
        (semester, course_id),
    ).fetchone()
    assert row == (course["name"], True)


def test_crash_between_landing_and_deleting_loses_nothing_and_applies_once(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, a killed sensor would lose events or apply them twice."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    driver = ChangeDriver(
        institution, queue.client(), queue.queue_url, seed=5, follow_wall_clock=True
    )
    driver.run(20)
    driver.flush()
    script = textwrap.dedent(
        f"""
        import os, signal
        from canvas_assets.sensors import poll_queue
        from canvas_assets.sqs import SQSQueueResource
        from canvas_assets.warehouse import WarehouseResource
        queue = SQSQueueResource(**{queue.model_dump()!r})
        warehouse = WarehouseResource(url={warehouse.url!r}, schema_name={warehouse.schema_name!r})
        def die(messages):
            os.kill(os.getpid(), signal.SIGKILL)  # landed and committed, not yet deleted
        with warehouse.connect() as conn:
            poll_queue(queue, queue.client(), conn, {warehouse.table_schema()!r}, after_landing=die)
        """
    )
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert crashed.returncode == -9, crashed.stderr.decode()
    landed_before = live_event_rows(db, warehouse)
    assert landed_before  # the first batch was landed before the kill
    assert queue_depth(queue) > 0  # ...and is still in the queue

    time.sleep(2.5)  # the queue's visibility timeout: SQS redelivers what was not deleted
    result = land_and_apply(queue, warehouse, canvas, real_semesters(institution))
    assert result["duplicates"] >= len(landed_before)
    assert queue_depth(queue) == 0
    rows = live_event_rows(db, warehouse)
    assert [r[0] for r in rows[: len(landed_before)]] == [r[0] for r in landed_before]
    assert len({r[0] for r in rows}) == len(rows)  # each event landed once
    assert all(r[2] for r in rows)  # and closed once
    assert_converged(db, warehouse, institution, real_semesters(institution)[:1])


def test_failed_apply_leaves_events_pending_then_applies_them_once(
    canvas, warehouse, db, institution, instance, queue, sandbox
) -> None:
    """Without this, a crash mid-apply could half-write rows or drop the events."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    schema = warehouse.table_schema()
    driver = ChangeDriver(
        institution, queue.client(), queue.queue_url, seed=3, follow_wall_clock=True
    )
    driver.run(15)
    driver.flush()
    before = warehouse_semester(db, schema, semester)
    sandbox.faults.error_rate = 1.0  # Canvas is down during the apply
    with pytest.raises(Exception, match="HTTP 5"):
        land_and_apply(queue, warehouse, canvas, real_semesters(institution))
    assert warehouse_semester(db, schema, semester) == before
    pending = [r for r in live_event_rows(db, warehouse) if not r[2]]
    assert pending
    sandbox.faults.error_rate = 0.0
    land_and_apply(queue, warehouse, canvas, real_semesters(institution))
    assert all(r[2] for r in live_event_rows(db, warehouse))
    assert_converged(db, warehouse, institution, [semester])


def test_bad_messages_are_quarantined_and_the_stream_goes_on(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, one poison message would block every event behind it."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    client = queue.client()
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    with institution.lock:
        institution.courses[course_id]["name"] = "Éléments d'analyse"
    good = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "name": "Éléments d'analyse"},
        event_time=datetime.now(UTC) + timedelta(seconds=5),
    )
    caliper = {
        "sensor": "x",
        "sendTime": "2026-01-01T00:00:00Z",
        "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p1",
        "data": [],
    }
    foreign = envelope(
        institution,
        "user_updated",
        {"user_id": "30010000000000042", "name": "Someone elsewhere"},
        event_time=datetime.now(UTC),
    )
    bodies = [
        "{broken json",
        json.dumps({"metadata": {"event_name": "course_updated"}}),
        json.dumps({"metadata": {"event_name": "course_updated", "event_time": "2026-01-01"},
                    "body": {"course_id": ["1"]}}),
        json.dumps(caliper),
        json.dumps(envelope(institution, "wiki_page_created", {"wiki_page_id": "1"},
                            event_time=datetime.now(UTC))),
        json.dumps(foreign),
        json.dumps(good),
    ]  # fmt: skip
    for body in bodies:
        client.send_message(QueueUrl=queue.queue_url, MessageBody=body)
    result = land_and_apply(queue, warehouse, canvas, [semester])
    assert (result["quarantined"], result["unknown"], result["landed"]) == (4, 1, 2)
    assert queue_depth(queue) == 0
    schema = sql.Identifier(warehouse.table_schema())
    reasons = [
        r[0]
        for r in db.execute(
            sql.SQL("SELECT reason FROM {}.live_event_quarantine ORDER BY id").format(schema)
        )
    ]
    assert any("not JSON" in r for r in reasons) and any("Caliper" in r for r in reasons)
    outcomes = dict(
        db.execute(
            sql.SQL("SELECT event_name, outcome FROM {}.live_events").format(schema)
        ).fetchall()
    )
    assert outcomes == {
        "wiki_page_created": "unknown_event",
        "user_updated": "skipped",  # another shard's user, not enrolled here: kept global
        "course_updated": "applied",
    }
    name = db.execute(
        sql.SQL("SELECT name FROM {}.courses WHERE institution_id = %s").format(schema),
        (course_id,),
    ).fetchone()
    assert name == ("Éléments d'analyse",)


def test_events_outside_target_semesters_are_acknowledged_and_skipped(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, events for semesters nobody imports would pile up as pending."""
    first, second = real_semesters(institution)[:2]
    assert backfill(canvas, warehouse, instance, first).success
    other_course = next(iter(expected_semester(institution, second)["courses"]))
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(other_course)), "name": "x"},
        event_time=datetime.now(UTC),
    )
    send_envelopes(queue.client(), queue.queue_url, [event])
    land_and_apply(queue, warehouse, canvas, [first, second], target=(first,))
    assert [r[1:] for r in live_event_rows(db, warehouse)] == [(second, True, "out_of_target")]
    assert queue_depth(queue) == 0


def test_events_wait_for_a_semester_partition_that_is_about_to_be_added(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, events arriving before auto-import adds their semester would be dropped."""
    first, second = real_semesters(institution)[:2]
    assert backfill(canvas, warehouse, instance, first).success
    course_id = next(iter(expected_semester(institution, second)["courses"]))
    with institution.lock:
        institution.courses[course_id]["name"] = "Early event"
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "name": "Early event"},
        event_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    send_envelopes(queue.client(), queue.queue_url, [event])
    land_and_apply(queue, warehouse, canvas, [first])  # second is not a partition yet
    assert [r[1:] for r in live_event_rows(db, warehouse)] == [(second, False, None)]
    land_and_apply(queue, warehouse, canvas, [first, second])  # auto-import added it
    assert [r[1:] for r in live_event_rows(db, warehouse)] == [(second, True, "applied")]


def test_sensor_lands_and_requests_an_apply_run_that_updates_the_tables(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, the daemon's sensor and the runs it launches would not be wired together."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    with institution.lock:
        institution.courses[course_id]["name"] = "Changed by a live event"
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "name": "Changed by a live event"},
        event_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    send_envelopes(queue.client(), queue.queue_url, [event])
    sensor = build_live_events_sensor(SyncSettings.from_env({}))
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult)
    assert [r.partition_key for r in result.run_requests] == [semester]
    request = result.run_requests[0]
    assert request.run_config == LIVE_EVENTS_RUN_CONFIG
    assert result.asset_events and result.asset_events[0].metadata["landed"].value == 1
    run = dg.materialize(
        [semester_tables],
        partition_key=semester,
        run_config=request.run_config,
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
    )
    assert run.success
    name = db.execute(
        sql.SQL("SELECT name FROM {}.courses WHERE institution_id = %s").format(
            sql.Identifier(warehouse.table_schema())
        ),
        (course_id,),
    ).fetchone()
    assert name == ("Changed by a live event",)
    again = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SkipReason)


def test_replay_command_reports_and_applies_archived_events(
    canvas, warehouse, db, institution, instance, tmp_path, monkeypatch, capsys, sandbox
) -> None:
    """Without this, a dead-letter queue or an archive could not be re-driven."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = next(iter(expected_semester(institution, semester)["courses"]))
    with institution.lock:
        institution.courses[course_id]["name"] = "Replayed"
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "name": "Replayed"},
        event_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    lines = [
        json.dumps(event),
        json.dumps({"MessageId": "m-1", "Body": json.dumps(event)}),  # the same event from SQS
        "{not json",
        json.dumps(envelope(institution, "asset_accessed", {"asset_id": "1"},
                            event_time=datetime.now(UTC))),
    ]  # fmt: skip
    archive = tmp_path / "dead-letters.jsonl"
    archive.write_text("\n".join(lines), encoding="utf-8")
    monkeypatch.setenv("CANVAS_BASE_URL", sandbox.url)
    monkeypatch.setenv("CANVAS_API_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("CANVAS_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("CANVAS_WAREHOUSE_SCHEMA", warehouse.schema_name)
    assert cli_main(["events", "replay", str(archive)]) == 0
    assert capsys.readouterr().out.strip() == (
        "read 4: applied 1, duplicate 1, skipped 1, quarantined 1"
    )
    name = db.execute(
        sql.SQL("SELECT name FROM {}.courses WHERE institution_id = %s").format(
            sql.Identifier(warehouse.table_schema())
        ),
        (course_id,),
    ).fetchone()
    assert name == ("Replayed",)
    assert cli_main(["events", "replay", str(archive)]) == 0
    assert "applied 0, duplicate 3, skipped 0, quarantined 1" in capsys.readouterr().out
