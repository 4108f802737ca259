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

from canvas_assets.canvas import CanvasRequestError
from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.commands.cli import main as cli_main
from canvas_assets.defs.apply import APPLY_JOB, build_apply_job
from canvas_assets.defs.sensors.live_events import build_live_events_sensor, queues_followed
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.live_events.poll import poll_queue
from canvas_assets.live_events.route import route_pending
from canvas_assets.live_events.sqs import SQSQueueResource
from canvas_assets.live_events.store import pending_semesters
from canvas_sandbox import ChangeDriver, envelope, global_id, send_envelopes
from canvas_sandbox import rename_course as renamed_with_event
from canvas_sandbox.faults import Faults, PageFault

from .backfills import NAMESPACE, SETTINGS, backfill, real_semesters
from .conftest import SANDBOX_TOKEN
from .truth import (
    expected_semester,
    first_course,
    rename_course_in_canvas,
    warehouse_semester,
)

apply_job = build_apply_job([NAMESPACE])
(FOLLOWED,) = queues_followed(SETTINGS, [NAMESPACE])
APPLY_CONFIG = {"ops": {"apply_live_events": {"config": {"institutions": ["canvas"]}}}}


def sensor():
    return build_live_events_sensor(SETTINGS, FOLLOWED)


def launch(request: dg.RunRequest, canvas, warehouse, instance) -> dg.ExecuteInProcessResult:
    """Run the request the way the daemon would: its config, tags and run key on the run."""
    return apply_job.execute_in_process(
        run_config=request.run_config,
        tags={**request.tags, "dagster/run_key": request.run_key},
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
        raise_on_error=False,
    )


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
        polled = poll_queue(
            queue, queue.client(), conn, Destinations.one_institution(schema), budget_seconds=60
        )
        session = canvas.session()
        # The sensor routes a bounded number of REST look-ups per tick; ticks repeat until done
        # or until a tick makes no progress (Canvas down).
        for _ in range(20):
            routed = route_pending(conn, schema, session, target)
            if routed.unresolved == 0 or routed.routed + routed.skipped + routed.out_of_target == 0:
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


@pytest.mark.slow  # minutes of random changes, the inner loop does without
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


@pytest.mark.slow  # a killed process and SQS's visibility timeout
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
        from canvas_assets.live_events.land import Destinations
        from canvas_assets.live_events.poll import poll_queue
        from canvas_assets.live_events.sqs import SQSQueueResource
        from canvas_assets.warehouse import WarehouseResource
        from canvas_assets_tests.stages import at_stages
        queue = SQSQueueResource(**{queue.model_dump()!r})
        warehouse = WarehouseResource(url={warehouse.url!r}, schema_name={warehouse.schema_name!r})
        def die(stage):
            if stage == "landed":  # landed and committed, not yet deleted
                os.kill(os.getpid(), signal.SIGKILL)
        destinations = Destinations.one_institution({warehouse.table_schema()!r})
        with warehouse.connect() as conn, at_stages(die):
            poll_queue(queue, queue.client(), conn, destinations)
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
    # ...and closed once; events of semesters never imported wait for their first backfill.
    assert all(r[2] for r in rows if r[1] in (None, semester))
    assert all(not r[2] and r[3] is None for r in rows if r[1] not in (None, semester))
    assert_converged(db, warehouse, institution, real_semesters(institution)[:1])


@pytest.mark.slow  # a failed apply, then the visibility timeout
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
    session = canvas.session()
    term = find_term(fetch_terms(session), semester)
    with warehouse.connect() as conn:
        poll_queue(
            queue, queue.client(), conn, Destinations.one_institution(schema), budget_seconds=60
        )
        route_pending(conn, schema, session, ())
        assert semester in pending_semesters(conn, schema)
        sandbox.faults.error_rate = 1.0  # Canvas goes down during the apply
        with pytest.raises(CanvasRequestError, match="HTTP 5"):
            apply_semester_events(conn, schema, session, semester, term, datetime.now(UTC))
    session.close()
    assert warehouse_semester(db, schema, semester) == before
    pending = [r for r in live_event_rows(db, warehouse) if not r[2]]
    assert pending
    sandbox.faults.error_rate = 0.0
    land_and_apply(queue, warehouse, canvas, real_semesters(institution))
    assert all(r[2] for r in live_event_rows(db, warehouse) if r[1] in (None, semester))
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


def test_events_wait_until_their_semester_is_a_partition_and_imported(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, events arriving before auto-import adds and backfills their semester would
    be dropped, or would write a few courses into a semester that was never imported."""
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
    land_and_apply(queue, warehouse, canvas, [first, second])  # auto-import added it...
    assert [r[1:] for r in live_event_rows(db, warehouse)] == [(second, False, None)]
    assert not db.execute(
        sql.SQL("SELECT 1 FROM {}.courses WHERE semester = %s").format(
            sql.Identifier(warehouse.table_schema())
        ),
        (second,),
    ).fetchall()
    assert backfill(canvas, warehouse, instance, second).success  # ...and its backfill ran
    land_and_apply(queue, warehouse, canvas, [first, second])
    assert [r[1:] for r in live_event_rows(db, warehouse)] == [(second, True, "applied")]
    assert_converged(db, warehouse, institution, [second])


def test_sensor_lands_and_requests_an_apply_run_that_updates_the_tables(
    canvas, warehouse, db, institution, instance, queue, sandbox
) -> None:
    """Without this, the daemon's sensor and the runs it launches would not be wired together,
    or a tick would call Canvas (slow, and failing with it) instead of leaving that to a run."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = rename_course_in_canvas(institution, queue, semester, "Changed by a live event")
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
    requests_before = len(sandbox.request_log)
    result = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    assert len(sandbox.request_log) == requests_before  # the tick called no Canvas
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    request = result.run_requests[0]
    assert (request.job_name, request.run_config) == (APPLY_JOB, APPLY_CONFIG)
    landed = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert landed[0].metadata["landed"].value == 1
    run = launch(request, canvas, warehouse, instance)
    assert run.success
    name = db.execute(
        sql.SQL("SELECT name FROM {}.courses WHERE institution_id = %s").format(
            sql.Identifier(warehouse.table_schema())
        ),
        (course_id,),
    ).fetchone()
    assert name == ("Changed by a live event",)
    written = [
        e.event_specific_data.materialization
        for e in run.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    ]
    tables = {"courses", "sections", "enrollments", "users"}
    assert {m.partition for m in written if m.asset_key.path[-1] in tables} == {semester}
    again = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SensorResult) and not again.run_requests


def test_replay_command_reports_and_applies_archived_events(
    canvas, warehouse, db, institution, instance, tmp_path, monkeypatch, capsys, sandbox
) -> None:
    """Without this, a dead-letter queue or an archive could not be re-driven."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = first_course(institution, semester)
    event = renamed_with_event(institution, course_id, "Replayed")
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


def test_messages_postgres_refuses_are_quarantined_without_failing_their_batch(
    warehouse, db
) -> None:
    """Without this, one message with a NUL character or an id PostgreSQL cannot hold would
    roll back its whole batch, so its valid neighbours would never land and be redelivered
    until the dead-letter queue took them."""
    schema = warehouse.table_schema()

    def message(course_id: str, name: str = "A course") -> str:
        return json.dumps(
            {
                "metadata": {"event_name": "course_updated", "event_time": "2026-09-01T10:00:00Z"},
                "body": {"course_id": course_id, "name": name},
            }
        )

    batch = [
        ("m1", message("²")),  # a digit to str.isdigit(), not to int()
        ("m2", message(str(2**64))),  # beyond bigint
        ("m3", message("12", name="nul \u0000 inside")),  # jsonb refuses \u0000
        ("m4", message("12")),
        ("m5", message("12", name="lone \ud800 surrogate")),  # not encodable as UTF-8
    ]
    with warehouse.connect() as conn:
        result = land_messages(conn, Destinations.one_institution(schema), batch)
    assert (result.quarantined, result.landed) == (4, 1)
    quarantined = db.execute(
        sql.SQL(
            "SELECT message_id, reason FROM {}.live_event_quarantine ORDER BY message_id"
        ).format(sql.Identifier(schema))
    ).fetchall()
    assert [m for m, _ in quarantined] == ["m1", "m2", "m3", "m5"]
    assert "not valid Unicode" in quarantined[3][1]
    assert "not a Canvas id" in quarantined[0][1] and "bigint" in quarantined[1][1]
    assert "PostgreSQL could not store it" in quarantined[2][1]
    landed = db.execute(
        sql.SQL("SELECT message_id, course_id FROM {}.live_events").format(sql.Identifier(schema))
    ).fetchall()
    assert landed == [("m4", 12)]


@pytest.mark.slow  # a failed apply run, then its retry
def test_a_failed_apply_is_tried_again_in_a_run_of_its_own_and_then_applies(
    canvas, warehouse, db, institution, instance, queue, sandbox
) -> None:
    """Without this, the events of a failed apply run would stay pending until another event
    arrived, or a failing institution would keep failing the runs it shares with others."""
    semester = real_semesters(institution)[0]
    assert backfill(canvas, warehouse, instance, semester).success
    course_id = rename_course_in_canvas(
        institution, queue, semester, "Renamed while Canvas was flaky"
    )
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
    first = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    assert first.run_requests[0].tags["dagster/max_retries"] == "2"  # Dagster's run retries
    sandbox.faults.error_rate = 1.0  # Canvas is down for the apply run
    failed = launch(first.run_requests[0], canvas, warehouse, instance)
    sandbox.faults.error_rate = 0.0
    assert not failed.success
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        assert list(pending_semesters(conn, schema)) == [semester]  # nothing lost
    status = db.execute(
        sql.SQL(
            "SELECT status, last_error FROM {}.semester_sync_status WHERE semester = %s"
        ).format(sql.Identifier(schema)),
        (semester,),
    ).fetchone()
    assert status[0] == "synced" and status[1].startswith("Live Events apply failed")

    retry = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    (alone,) = retry.run_requests  # the failing institution, in a run of its own
    assert (
        alone.run_key.startswith("live-events:canvas:") and "dagster/max_retries" not in alone.tags
    )
    assert launch(alone, canvas, warehouse, instance).success
    name = db.execute(
        sql.SQL("SELECT name FROM {}.courses WHERE semester = %s AND institution_id = %s").format(
            sql.Identifier(schema)
        ),
        (semester, course_id),
    ).fetchone()
    assert name == ("Renamed while Canvas was flaky",)
    again = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(again, dg.SensorResult) and not again.run_requests
    assert db.execute(
        sql.SQL("SELECT last_error FROM {}.semester_sync_status WHERE semester = %s").format(
            sql.Identifier(schema)
        ),
        (semester,),
    ).fetchone() == (None,)


def test_a_course_moved_to_another_term_follows_its_events_to_the_new_semester(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, a course moved to another term would vanish from the old semester and not
    appear in the new one until the next nightly reconciliation."""
    old, new = real_semesters(institution)[:2]
    for semester in (old, new):
        assert backfill(canvas, warehouse, instance, semester).success
    new_term = next(t for t in institution.terms.values() if t["sis_term_id"] == new)
    course_id = next(iter(expected_semester(institution, old)["courses"]))
    with institution.lock:
        institution.courses[course_id]["enrollment_term_id"] = new_term["id"]
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "enrollment_term_id": str(new_term["id"])},
        event_time=datetime.now(UTC) + timedelta(seconds=1),
    )
    send_envelopes(queue.client(), queue.queue_url, [event])
    land_and_apply(queue, warehouse, canvas, [old, new])  # leaves the old semester
    land_and_apply(queue, warehouse, canvas, [old, new])  # the forwarded copy reaches the new
    assert_converged(db, warehouse, institution, [old, new])
    rows = [r[1:] for r in live_event_rows(db, warehouse)]
    assert rows == [(old, True, "applied"), (new, True, "applied")]


def test_an_event_canvas_cannot_route_waits_while_the_others_are_applied(
    canvas, warehouse, db, institution, instance, queue, sandbox
) -> None:
    """Without this, one event whose course Canvas cannot show right now (a 5xx on that
    course) would hold up the semester's other events, or be dropped."""
    known, unknown = real_semesters(institution)[:2]
    assert backfill(canvas, warehouse, instance, known).success
    known_course = next(iter(expected_semester(institution, known)["courses"]))
    unknown_course = next(iter(expected_semester(institution, unknown)["courses"]))
    events = [
        envelope(
            institution,
            "course_updated",
            {"course_id": str(global_id(course)), "name": "x"},
            event_time=datetime.now(UTC) + timedelta(seconds=1),
        )
        for course in (known_course, unknown_course)
    ]
    send_envelopes(queue.client(), queue.queue_url, events)
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
    result = sensor()(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    assert queue_depth(queue) == 0
    broken = PageFault(f"/courses/{unknown_course}", page=None, status=503, times=99)
    sandbox.faults.page_faults.append(broken)
    try:
        run = launch(result.run_requests[0], canvas, warehouse, instance)
    finally:
        sandbox.faults = Faults()
    assert not run.success  # the run says what it could not do...
    rows = live_event_rows(db, warehouse)
    assert [(r[1], r[2]) for r in rows] == [(known, True), (None, False)]  # ...and did the rest
    # The failed look-up is counted, so that event is looked up after newer ones next time.
    attempts = db.execute(
        sql.SQL("SELECT course_id, route_attempts FROM {}.live_events ORDER BY seq").format(
            sql.Identifier(warehouse.table_schema())
        )
    ).fetchall()
    assert attempts == [(known_course, 0), (unknown_course, 1)]
    with warehouse.connect() as conn:  # Canvas is back: the held event is routed
        route_pending(conn, warehouse.table_schema(), canvas.session(), ())
    assert sorted(r[1] for r in live_event_rows(db, warehouse)) == sorted([known, unknown])
