"""Sensors that explain themselves: every tick says what it did, the stream's health is reported
as checks, and a failed look at Canvas is retried at the next tick, not an interval later."""

import json
from datetime import UTC, datetime

import dagster as dg
import pytest
from psycopg import sql

from canvas_assets.canvas import CanvasAuthError, CanvasResource
from canvas_assets.defs.checks import LAG_CHECK, QUARANTINE_CHECK, STALL_CHECK
from canvas_assets.defs.jobs import build_jobs
from canvas_assets.defs.sensors.auto_import import build_semester_auto_import_sensor
from canvas_assets.defs.sensors.live_events import build_live_events_sensor
from canvas_assets.settings import Settings
from canvas_sandbox import envelope, global_id, send_envelopes

from .backfills import real_semesters
from .truth import expected_semester

SETTINGS = Settings(apply_run_window_seconds=0)


def test_a_tick_that_lands_events_says_what_it_did(
    canvas, warehouse, institution, instance, queue
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
    sensor = build_live_events_sensor(SETTINGS)
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
    result = sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    message = result.skip_reason.skip_message
    # The semester was never backfilled: the event waits, and the message says so.
    assert message.startswith("landed 1, 1 quarantined, 0 duplicates; routed 1")
    assert "nothing to apply" in message


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
    sensor = build_live_events_sensor(SETTINGS)
    resources = {"canvas": canvas, "warehouse": warehouse, "sqs": queue}
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


def test_a_rejected_token_fails_the_tick_by_name_and_is_retried_at_the_next_tick(
    sandbox, canvas, warehouse, institution
) -> None:
    """Without this, a rejected token failed the tick with an opaque error and auto-import
    looked again only an interval (5 minutes) later."""
    settings = Settings(semester_sensor_interval_seconds=300)
    sensor = build_semester_auto_import_sensor(settings, build_jobs(settings))
    wrong = CanvasResource(base_url=sandbox.url, api_token="wrong-token")
    with dg.instance_for_test() as instance:
        bad = {"canvas": wrong, "warehouse": warehouse}
        with pytest.raises(CanvasAuthError, match="CANVAS_API_TOKEN"):
            sensor(dg.build_sensor_context(instance=instance, resources=bad))
        assert sensor.minimum_interval_seconds == 30  # the next tick comes 30 s later...
        good = {"canvas": canvas, "warehouse": warehouse}
        result = sensor(dg.build_sensor_context(instance=instance, resources=good))
        assert result.run_requests  # ...and looks at Canvas at once, the failure not counted
        looked = json.loads(result.cursor)["looked_at"]
        instance.add_dynamic_partitions(
            "semester", list(result.dynamic_partitions_requests[0].partition_keys)
        )
        later = sensor(
            dg.build_sensor_context(instance=instance, resources=good, cursor=result.cursor)
        )
        assert isinstance(later, dg.SkipReason)
        assert later.skip_message.startswith("Next look at Canvas terms in")
        assert looked > 0
