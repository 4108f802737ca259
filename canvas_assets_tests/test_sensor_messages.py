"""Sensors and runs that explain themselves: every tick says what it did, the stream's health is
reported as checks, and a Canvas that refuses the token fails the run that called it, by name."""

from datetime import UTC, datetime

import dagster as dg
from psycopg import sql

from canvas_assets.canvas import CanvasResource
from canvas_assets.defs.checks import LAG_CHECK, QUARANTINE_CHECK, STALL_CHECK
from canvas_assets.defs.sensors.live_events import build_live_events_sensor, queues_followed
from canvas_assets.warehouse import WarehouseResource
from canvas_sandbox import envelope, global_id, send_envelopes

from .backfills import NAMESPACE, SETTINGS, real_semesters, terms
from .truth import expected_semester

(FOLLOWED,) = queues_followed(SETTINGS, [NAMESPACE])


def test_a_tick_that_lands_events_says_what_it_did(
    warehouse, institution, instance, queue, capfd
) -> None:
    """Without this, a tick that landed events but requested no run showed "SKIPPED: Sensor
    function returned an empty result", and users could not tell the stream was flowing."""
    course = next(iter(expected_semester(institution, real_semesters(institution)[0])["courses"]))
    event = envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course))},
        event_time=datetime.now(UTC),
    )
    send_envelopes(queue.client(), queue.queue_url, [event])
    client = queue.client()
    client.send_message(QueueUrl=queue.queue_url, MessageBody="{not json")
    sensor = build_live_events_sensor(SETTINGS, FOLLOWED)
    resources = {"warehouse": warehouse, "sqs": queue}
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    (logged,) = [line for line in capfd.readouterr().err.splitlines() if "landed 1" in line]
    assert "landed 1, 1 quarantined, 0 duplicates" in logged
    assert "requested an apply of canvas" in logged
    # The next tick finds the run requested (same events): it says there is nothing new.
    again = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert again.run_requests[0].run_key == result.run_requests[0].run_key


def test_stream_health_is_reported_as_checks_on_live_events(
    canvas, warehouse, db, institution, instance, queue
) -> None:
    """Without this, a stuck apply, a growing quarantine or a silent stream would go unseen
    until someone queried the landing tables."""
    client = queue.client()
    client.send_message(QueueUrl=queue.queue_url, MessageBody="{not json")
    course = next(iter(expected_semester(institution, real_semesters(institution)[0])["courses"]))
    event = envelope(
        institution, "course_updated", {"course_id": str(global_id(course))},
        event_time=datetime.now(UTC),
    )  # fmt: skip
    send_envelopes(client, queue.queue_url, [event])
    sensor = build_live_events_sensor(SETTINGS, FOLLOWED)
    resources = {"warehouse": warehouse, "sqs": queue}
    sensor(dg.build_sensor_context(instance=instance, resources=resources))
    # The landed event has waited an hour (its semester was never imported).
    db.execute(
        sql.SQL("UPDATE {}.live_events SET received_at = now() - interval '1 hour'").format(
            sql.Identifier(warehouse.table_schema())
        )
    )
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    checks = {
        e.check_name: e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)
    }
    assert set(checks) == {LAG_CHECK, QUARANTINE_CHECK, STALL_CHECK}
    assert not checks[LAG_CHECK].passed
    assert checks[LAG_CHECK].metadata["oldest_pending_seconds"].value >= 3600
    assert not checks[QUARANTINE_CHECK].passed  # the bad message, a moment ago
    assert checks[STALL_CHECK].passed  # a message arrived within the hour
    again = sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=result.cursor)
    )
    assert not [e for e in again.asset_events if isinstance(e, dg.AssetCheckEvaluation)]


def test_a_rejected_token_fails_the_terms_run_by_name(sandbox, warehouse, instance) -> None:
    """Without this, a rejected token would fail with an opaque error, and nobody would know
    which setting to fix (the sensors call no Canvas: the runs they request do)."""
    wrong = CanvasResource(base_url=sandbox.url, api_token="wrong-token")
    result = dg.materialize(
        [terms], resources={"canvas": wrong, "warehouse": warehouse}, instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    failure = result.failure_data_for_node("canvas__terms")
    assert failure is not None and "CANVAS_API_TOKEN" in failure.error.message


def test_a_live_events_tick_that_cannot_reach_the_warehouse_says_so_in_one_line(
    instance, queue
) -> None:
    """Without this, each tick against an unreachable CANVAS_WAREHOUSE_URL logged a traceback
    wall and the tick's message did not name the setting to fix."""
    unreachable = WarehouseResource(url="postgresql://nobody:hunter2@127.0.0.1:1/x")
    sensor = build_live_events_sensor(SETTINGS, FOLLOWED)
    resources = {"warehouse": unreachable, "sqs": queue}
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message.startswith("Not run: Cannot connect to the warehouse")
    assert "CANVAS_WAREHOUSE_URL" in result.skip_message
    assert "hunter2" not in result.skip_message and "\n" not in result.skip_message


def test_the_lag_check_is_reported_when_the_events_waiting_are_applied(
    institution, warehouse, db, instance, queue
) -> None:
    """Without this, the lag check showed "pending 4" for minutes after those events were
    applied: checks were reported only when one passed or failed anew, or every 5 minutes."""
    course = next(iter(expected_semester(institution, real_semesters(institution)[0])["courses"]))
    event = envelope(
        institution, "course_updated", {"course_id": str(global_id(course))},
        event_time=datetime.now(UTC),
    )  # fmt: skip
    send_envelopes(queue.client(), queue.queue_url, [event])
    sensor = build_live_events_sensor(SETTINGS, FOLLOWED)
    resources = {"warehouse": warehouse, "sqs": queue}

    def lag(result: dg.SensorResult) -> list[dg.AssetCheckEvaluation]:
        return [e for e in result.asset_events if getattr(e, "check_name", None) == LAG_CHECK]

    landed = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert [c.metadata["pending"].value for c in lag(landed)] == [1]
    quiet = sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=landed.cursor)
    )
    assert lag(quiet) == []  # nothing changed: nothing reported
    db.execute(  # the apply run's work: every event applied, the lag check still passing
        sql.SQL("UPDATE {}.live_events SET applied_at = now()").format(
            sql.Identifier(warehouse.table_schema())
        )
    )
    applied = sensor(
        dg.build_sensor_context(instance=instance, resources=resources, cursor=quiet.cursor)
    )
    assert [(c.passed, c.metadata["pending"].value) for c in lag(applied)] == [(True, 0)]
