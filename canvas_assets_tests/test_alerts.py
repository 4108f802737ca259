"""Alerts through real parts, in-process: a Dagster instance, PostgreSQL, the Canvas sandbox, an
HTTP receiver for the webhook and Slack's Web API (dagster-slack's client pointed at it), and an
SMTP server that asks for a login. The sensors are called as the daemon calls them;
test_alerts_daemon.py runs them in the daemon itself."""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import dagster as dg
import pytest
import yaml
from psycopg import sql

from canvas_assets.alerts import incidents
from canvas_assets.alerts.incidents import Finding
from canvas_assets.definitions import build_definitions
from canvas_assets.defs.resources import build_resources
from canvas_assets.live_events.land import Destinations, land_messages
from canvas_assets.settings import SettingError, Settings
from canvas_assets.warehouse.status import (
    INTERRUPTED_ERROR,
    mark_semesters_added,
    mark_sync_finished,
    mark_sync_started,
)
from canvas_sandbox import SandboxServer, generate_institution, rename_course

from .alerting import SMTP_PASSWORD, SMTP_USER, UI_URL, Deployment, retries_due_now
from .conftest import SANDBOX_TOKEN
from .receivers import HttpReceiver, SmtpReceiver
from .truth import first_course

SEMESTER = "2026FA"  # the sandbox's current term (today is within its dates ± 14 days)


@pytest.fixture
def hooks() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(refuse=1)  # the first alert finds the webhook down
    yield receiver
    receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver(SMTP_USER, SMTP_PASSWORD)
    yield receiver
    receiver.stop()


@pytest.fixture
def deployment(monkeypatch, hooks, smtp, sandbox, postgres_url, warehouse) -> Deployment:
    env = {
        "CANVAS_BASE_URL": sandbox.url,
        "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_WAREHOUSE_SCHEMA": warehouse.schema_name,
        "CANVAS_TARGET_SEMESTERS": SEMESTER,
    }
    monkeypatch.delenv("CANVAS_LIVE_EVENTS_QUEUE_URL", raising=False)
    return Deployment(monkeypatch, env, hooks, smtp)


def _everything_received(hooks: HttpReceiver, smtp: SmtpReceiver) -> list[str]:
    texts = [json.dumps(body) for body in hooks.bodies()]
    return texts + [message.as_string() for message in smtp.messages]


def test_a_failed_backfill_alerts_once_naming_the_semester_and_its_success_recovers(
    deployment, instance, sandbox, hooks, smtp, db, warehouse
) -> None:
    """Without this, a backfill that failed after its retries would reach nobody (or reach them
    at every tick, or again after a daemon restart), a webhook that was down would lose the
    alert or fail the tick, and nobody would hear that the semester works again."""
    sandbox.token = "revoked-in-canvas"  # Canvas refuses the deployment's token
    failed = deployment.run_semester(instance, SEMESTER)
    assert failed.status.value == "FAILURE"
    deployment.run_failure_tick(instance, failed)
    first = deployment.tick("canvas_alerts", instance)  # the webhook refuses: a SkipReason
    assert "1 refused" in first.skip_message, first.skip_message
    deployment.tick("canvas_alerts", instance)
    assert len(hooks.bodies("/hook")) == 0  # not hammered: tried again after its back-off
    retries_due_now(db, warehouse.schema_name)
    deployment.refresh()  # a restarted daemon: a new code location, no sensor cursor
    deployment.run_failure_tick(instance, failed)  # and the failure seen again
    deployment.tick("canvas_alerts", instance)

    [alert] = hooks.bodies("/hook")
    assert alert["institution"] == "canvas" and alert["semester"] == SEMESTER
    assert (alert["kind"], alert["status"]) == ("backfill", "failed")
    assert alert["summary"] == f"canvas: backfill of semester {SEMESTER} failed"
    assert "Canvas rejected the API token" in alert["details"]
    assert alert["url"] == f"{UI_URL}/runs/{failed.run_id}"
    assert len(hooks.bodies("chat.postMessage")) == 1 and len(smtp.messages) == 1
    assert "backfill of semester 2026FA failed" in hooks.bodies("chat.postMessage")[0]["text"]
    [card] = hooks.bodies("/teams")  # an adaptive card, as Teams workflows take
    content = card["attachments"][0]["content"]
    assert content["type"] == "AdaptiveCard" and "2026FA failed" in json.dumps(content["body"])

    sandbox.token = deployment.secrets[0]
    assert deployment.run_semester(instance, SEMESTER).status.value == "SUCCESS"
    deployment.tick("canvas_alerts", instance)
    deployment.tick("canvas_alerts", instance)
    recovery = hooks.bodies("/hook")[1:]
    assert [(a["status"], a["semester"], a["kind"]) for a in recovery] == [
        ("recovered", SEMESTER, "backfill")
    ]
    assert recovery[0]["summary"] == f"canvas: semester {SEMESTER} recovered"
    assert len(hooks.bodies("chat.postMessage")) == 2 and len(smtp.messages) == 2
    assert len(hooks.bodies("/teams")) == 2
    assert smtp.messages[1]["Subject"] == f"[canvas-assets] RECOVERED: {recovery[0]['summary']}"
    assert not [s for s in deployment.secrets for t in _everything_received(hooks, smtp) if s in t]


def test_no_secret_reaches_any_channel(deployment, instance, hooks, smtp, db, warehouse) -> None:
    """Without this, an error that quotes what it was given (a warehouse URL with its password,
    a bearer token, an OAuth refresh token, the Slack token) would be posted to a channel that
    half the university reads."""
    leaky = (
        f"connect to postgresql://canvas:pg-pass-secret@db.internal/canvas failed; sent "
        f"Authorization: Bearer {deployment.secrets[0]}abcdefgh; refresh_token=rt-secret-123; "
        f"slack {deployment.secrets[1]}; canvas token 7~{'A' * 40}; smtp {SMTP_PASSWORD}"
    )
    # A stream incident stays open while its check passes for the hold: one alert to look at.
    finding = Finding("Live Events stream (lag)", "stream", "stream check lag failing", leaky)
    schema = warehouse.schema_name
    channels = deployment.resources["alerts"].configured()
    assert incidents.raise_incident(db, schema, finding, channels, datetime.now().astimezone())
    for _ in range(2):  # the webhook refuses the first
        deployment.tick("canvas_alerts", instance)
        retries_due_now(db, schema)

    received = _everything_received(hooks, smtp) + [
        b["text"] for b in hooks.bodies("chat.postMessage")
    ]
    assert len(received) == 5  # webhook, Slack (its request and its text), Teams, e-mail
    needles = [*deployment.secrets, "pg-pass-secret", "rt-secret-123", "A" * 40]
    assert not [(n, t) for n in needles for t in received if n in t]
    assert "postgresql://***@db.internal/canvas" in received[0]


def test_a_stalled_stream_alerts_once(deployment, instance, hooks, monkeypatch, queue) -> None:
    """Without this, a Canvas that stopped publishing Live Events would go unnoticed until
    someone opened the UI, or would page people at every tick of the sensor."""
    monkeypatch.setenv("CANVAS_LIVE_EVENTS_QUEUE_URL", queue.queue_url)
    monkeypatch.setenv("CANVAS_LIVE_EVENTS_STALL_SECONDS", "1")
    hooks.refuse = 0
    deployment.refresh()
    deployment.tick("canvas_alerts", instance)  # a stream just set up is not stalled yet
    assert hooks.bodies("/hook") == []
    time.sleep(1.1)  # listened to for longer than the stall limit, and never a message
    for _ in range(3):
        deployment.tick("canvas_alerts", instance)
    alerts = [(a["kind"], a["status"], a["summary"]) for a in hooks.bodies("/hook")]
    assert alerts == [
        ("stream", "failed", "canvas: Live Events stream check stream_flowing failing")
    ]


def test_a_flapping_check_is_one_incident_until_it_has_passed_for_the_hold(db, warehouse) -> None:
    """Without this, a stream check that passes and fails on alternate ticks would send an alert
    and a recovery every few seconds."""
    schema, start = warehouse.schema_name, datetime(2026, 12, 1, 12, 0).astimezone()
    finding = Finding("Live Events stream (lag)", "stream", "lag failing", "waited 900 s")
    hold = timedelta(minutes=10)
    opened = []
    for minute in range(20):  # failing on even minutes, passing on odd ones
        now = start + timedelta(minutes=minute)
        if minute % 2 == 0:
            opened.append(incidents.raise_incident(db, schema, finding, ["webhook"], now))
        [incident] = incidents.open_incidents(db, schema)
        assert not incidents.settle(db, schema, incident, minute % 2 == 0, now, hold, ["webhook"])
    assert opened.count(True) == 1
    [incident] = incidents.open_incidents(db, schema)
    later = start + timedelta(minutes=19)
    assert not incidents.settle(db, schema, incident, False, later + hold / 2, hold, ["webhook"])
    assert incidents.settle(db, schema, incident, False, later + hold, hold, ["webhook"])
    statuses = db.execute(
        sql.SQL("SELECT status FROM {}.alert_deliveries ORDER BY id").format(sql.Identifier(schema))
    ).fetchall()
    assert statuses == [("failed",), ("recovered",)]


def test_a_stale_current_semester_fails_its_check_and_alerts(
    deployment, instance, hooks, db, warehouse
) -> None:
    """Without this, a current semester whose nightly reconciliation stopped (and that no Live
    Event refreshed) would silently age while its table's asset-level policy stays green."""
    hooks.refuse = 0
    deployment.run_terms(instance)
    instance.add_dynamic_partitions(deployment.namespace.partitions.name, [SEMESTER])
    mark_semesters_added(db, warehouse.schema_name, [SEMESTER])
    added = deployment.tick("canvas_freshness", instance)  # its first backfill is not late yet
    assert [e.passed for e in added.asset_events] == [True]
    assert deployment.run_semester(instance, SEMESTER).status.value == "SUCCESS"
    db.execute(  # as if 30 hours had passed since the sync
        sql.SQL(
            "UPDATE {}.semester_sync_status SET last_sync_completed_at = now() - interval '30 h'"
        ).format(sql.Identifier(warehouse.schema_name))
    )
    stale = deployment.tick("canvas_freshness", instance, cursor=added.cursor)
    [evaluation] = stale.asset_events
    assert not evaluation.passed and evaluation.check_name == "current_semesters_fresh"
    assert "2026FA (last synced 30.0 h ago)" in evaluation.metadata["stale_semesters"].value
    deployment.tick("canvas_alerts", instance)
    [alert] = hooks.bodies("/hook")
    assert (alert["kind"], alert["semester"]) == ("freshness", SEMESTER)
    assert alert["summary"] == f"canvas: semester {SEMESTER} not synced within 26 h"


def test_the_alert_sensors_run_by_default_and_skip_saying_so_without_a_channel(
    sandbox, postgres_url, warehouse, instance, monkeypatch
) -> None:
    """Without this, alerts would be off until someone turned the sensors on, and a deployment
    without channels would see silent (or failing) ticks and not know that alerts are off."""
    for name, value in {
        "CANVAS_BASE_URL": sandbox.url, "CANVAS_API_TOKEN": "t",
        "CANVAS_WAREHOUSE_URL": postgres_url, "CANVAS_WAREHOUSE_SCHEMA": warehouse.schema_name,
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    defs, resources = build_definitions(settings), build_resources(settings)
    for name in ("canvas_alerts", "canvas_alert_run_failures", "canvas_freshness"):
        assert defs.get_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    context = dg.build_sensor_context(instance=instance, resources=resources)
    result = defs.get_sensor_def("canvas_alerts")(context)
    assert result.skip_message.startswith("No alert channel is configured")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CANVAS_ALERT_SLACK_TOKEN": "xoxb-1"}, "CANVAS_ALERT_SLACK_CHANNEL"),
        ({"CANVAS_ALERT_SLACK_CHANNEL": "#x"}, "CANVAS_ALERT_SLACK_TOKEN"),
        ({"CANVAS_ALERT_SMTP_HOST": "smtp", "CANVAS_ALERT_EMAIL_TO": "a@b.edu"},
         "CANVAS_ALERT_EMAIL_FROM"),
        ({"CANVAS_ALERT_SMTP_HOST": "smtp", "CANVAS_ALERT_EMAIL_FROM": "a@b.edu"},
         "CANVAS_ALERT_EMAIL_TO"),
        ({"CANVAS_ALERT_SMTP_USER": "u"}, "CANVAS_ALERT_SMTP_PASSWORD"),
        ({"CANVAS_ALERT_EMAIL_TO": "not-an-address"}, "CANVAS_ALERT_EMAIL_TO"),
        ({"CANVAS_FRESHNESS_HOURS": "0"}, "CANVAS_FRESHNESS_HOURS"),
        ({"CANVAS_ASSETS_UI_URL": "dagster:3000"}, "CANVAS_ASSETS_UI_URL"),
    ],
)  # fmt: skip
def test_a_channel_set_up_halfway_stops_the_load_naming_the_variable(env, named) -> None:
    """Without this, a Slack token without a channel (or SMTP without a recipient) would load
    fine and every alert would quietly go nowhere."""
    with pytest.raises(SettingError, match=named):
        Settings.from_env(env)


def test_a_vendors_alert_names_the_one_institution_whose_terms_refresh_failed(
    monkeypatch, hooks, smtp, postgres_url, instance, tmp_path, db
) -> None:
    """Without this, a vendor serving many colleges from one code location would get an alert
    that does not say which college's Canvas failed (or one for every college)."""
    hooks.refuse = 0
    suffix = uuid.uuid4().hex[:6]
    servers, entries = [], []
    for index, name in enumerate(("north", "south")):
        institution = generate_institution("small", seed=7, shard_id=4001 + index)
        servers.append(SandboxServer(institution, token=SANDBOX_TOKEN).start())
        monkeypatch.setenv(f"{name.upper()}_CANVAS_TOKEN", SANDBOX_TOKEN)
        entries.append(
            {"name": name, "base_url": servers[-1].url, "schema": f"{name}_{suffix}",
             "root_account_uuid": institution.root_account_uuid,
             "token_env": f"{name.upper()}_CANVAS_TOKEN"}
        )  # fmt: skip
    path = tmp_path / "institutions.yaml"
    path.write_text(yaml.safe_dump({"institutions": entries}))
    env = {
        "CANVAS_INSTITUTIONS_FILE": str(path), "CANVAS_WAREHOUSE_URL": postgres_url,
        "CANVAS_SHARED_SCHEMA": f"shared_{suffix}",
    }  # fmt: skip
    monkeypatch.delenv("CANVAS_LIVE_EVENTS_QUEUE_URL", raising=False)
    try:
        deployment = Deployment(monkeypatch, env, hooks, smtp)
        servers[1].token = "revoked-in-canvas"  # south's Canvas refuses its token
        job = deployment.defs.resolve_job_def("canvas_terms_sync")
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        deployment.run_failure_tick(instance, instance.get_run_by_id(result.run_id))
        deployment.tick("canvas_alerts", instance)
    finally:
        for server in servers:
            server.stop()
        for schema in (*(e["schema"] for e in entries), f"shared_{suffix}"):
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    [alert] = hooks.bodies("/hook")
    assert (alert["institution"], alert["kind"]) == ("south", "terms")
    assert alert["summary"] == "south: terms refresh failed"
    assert alert["details"].startswith("south: Canvas rejected the API token")


def test_a_backfill_its_blocking_checks_failed_alerts_naming_the_tables(
    deployment, instance, sandbox, hooks
) -> None:
    """Without this, a semester that pandera refused (nothing written) would alert as a plain
    failed run, or as one alert per table, or not say which tables to look at."""
    hooks.refuse = 0
    sandbox.faults.drop_fields = {"/enrollments": ("type",)}  # Canvas drops a required field
    failed = deployment.run_semester(instance, SEMESTER)
    deployment.run_failure_tick(instance, failed)
    deployment.tick("canvas_alerts", instance)
    [alert] = hooks.bodies("/hook")
    assert (alert["kind"], alert["semester"], alert["status"]) == ("check", SEMESTER, "failed")
    assert alert["summary"].startswith(
        f"canvas: semester {SEMESTER} failed its blocking checks on enrollments"
    ), alert["summary"]
    assert "role" in alert["details"]


def test_a_semester_failed_on_the_card_without_a_failed_run_alerts_and_recovers(
    deployment, instance, hooks, db, warehouse
) -> None:
    """Without this, a sync that died where even its failure could not be recorded (the card
    turned `failed` by recover_interrupted_syncs, no failed run to see) would reach nobody."""
    hooks.refuse = 0
    schema = warehouse.schema_name
    mark_sync_started(db, schema, SEMESTER)
    mark_sync_finished(db, schema, SEMESTER, error=INTERRUPTED_ERROR)
    deployment.tick("canvas_alerts", instance)
    mark_sync_finished(db, schema, SEMESTER)  # the next sync went through
    deployment.tick("canvas_alerts", instance)
    alerts = [(a["kind"], a["status"], a["semester"]) for a in hooks.bodies("/hook")]
    assert alerts == [("card", "failed", SEMESTER), ("card", "recovered", SEMESTER)]
    assert hooks.bodies("/hook")[0]["details"] == INTERRUPTED_ERROR.splitlines()[0]
    assert hooks.bodies("/hook")[0]["url"] == f"{UI_URL}/assets/canvas/imported_semesters"


def test_a_failed_live_events_apply_alerts_its_institution_once_after_its_retries(
    deployment, instance, sandbox, institution, hooks, db, warehouse
) -> None:
    """Without this, Live Events that stopped being applied (Canvas refusing the re-reads)
    would go unnoticed while the tables silently fall behind, or a run Dagster is about to
    retry would already alert."""
    hooks.refuse = 0
    assert deployment.run_semester(instance, SEMESTER).status.value == "SUCCESS"
    course_id = first_course(institution, SEMESTER)
    event = rename_course(institution, course_id, "Renamed while Canvas refuses us")
    landing = Destinations.one_institution(warehouse.schema_name)
    land_messages(db, landing, [("message-1", json.dumps(event))])
    sandbox.token = "revoked-in-canvas"
    job = deployment.defs.resolve_job_def("canvas_live_events_apply")
    config = {"ops": {"apply_live_events": {"config": {"institutions": ["canvas"]}}}}
    runs = []
    for will_retry in ("true", "false"):  # Dagster's run retries tag each failed run
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
        instance.add_run_tags(result.run_id, {"dagster/will_retry": will_retry})
        runs.append(instance.get_run_by_id(result.run_id))
        deployment.run_failure_tick(instance, runs[-1])
        deployment.tick("canvas_alerts", instance)
    [alert] = hooks.bodies("/hook")
    assert (alert["institution"], alert["kind"], alert["semester"]) == ("canvas", "apply", None)
    assert alert["summary"] == "canvas: Live Events apply failed"
    assert "Canvas rejected the API token" in alert["details"]
    assert alert["url"] == f"{UI_URL}/runs/{runs[1].run_id}"  # the run after the retries
