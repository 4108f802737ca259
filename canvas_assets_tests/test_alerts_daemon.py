"""Alerts from the real daemon: `canvas-assets dev` runs Dagster's webserver, daemon and code
server (with the FreshnessDaemon); the alert sensors deliver to a real HTTP receiver (the
webhook, Slack's Web API through dagster-slack's client, a Teams workflow through
dagster-msteams') and a real SMTP server."""

import json
import os
import signal
import time
from collections.abc import Callable

import psycopg
import pytest
from dagster_graphql import DagsterGraphQLClient
from psycopg import sql

from canvas_devstack.processes import free_port, start_dev, stop_process_group

from .alerting import SMTP_PASSWORD, SMTP_USER
from .conftest import SANDBOX_TOKEN
from .receivers import HttpReceiver, SmtpReceiver
from .stack import services_env

pytestmark = pytest.mark.slow  # the whole local stack with Dagster's daemon
SEMESTER = "2026FA"  # the sandbox's current term
SLACK_TOKEN, HOOK_PASSWORD = "xoxb-9-9-daemonsecret", "hook-daemon-secret"


def _until(what: str, done: Callable[[], bool], proc, log_path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def _alerts(hooks: HttpReceiver, **fields: str | None) -> list[dict]:
    return [a for a in hooks.bodies("/hook") if all(a.get(k) == v for k, v in fields.items())]


def test_the_daemon_alerts_once_per_incident_and_once_per_recovery(
    postgres_url, sandbox, queue, sqs_endpoint, tmp_path
) -> None:
    """Without this, sensors that pass when tests call them could be dead, duplicated or
    failing in the daemon: a failed backfill must reach people once naming its semester and its
    recovery once, a stalled stream once however many ticks see it, a stale current semester
    and Dagster's freshness policy must alert, a webhook that refuses must get the alert later
    without failing a tick, and no secret may be in any message."""
    hooks, smtp = HttpReceiver(refuse=1), SmtpReceiver(SMTP_USER, SMTP_PASSWORD)
    services = services_env(postgres_url, sandbox.url, queue, sqs_endpoint)
    port, log_path = free_port(), tmp_path / "dev.log"
    env = {
        **os.environ, **services,
        "CANVAS_ASSETS_HOME": str(tmp_path / "home"),
        "CANVAS_TARGET_SEMESTERS": SEMESTER,
        "CANVAS_SEMESTER_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_LIVE_EVENTS_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_ALERT_SENSOR_INTERVAL_SECONDS": "5",
        "CANVAS_LIVE_EVENTS_STALL_SECONDS": "30",  # no Live Event ever comes: a stalled stream
        "CANVAS_FRESHNESS_HOURS": "0.02",  # 72 s: the semester goes stale during the test
        "CANVAS_ALERT_WEBHOOK_URL": hooks.url.replace("//", f"//hook:{HOOK_PASSWORD}@") + "/hook",
        "CANVAS_ALERT_SLACK_TOKEN": SLACK_TOKEN,
        "CANVAS_ALERT_SLACK_CHANNEL": "#data-alerts",
        "CANVAS_ALERT_SLACK_API_URL": f"{hooks.url}/slack/api",
        "CANVAS_ALERT_TEAMS_WEBHOOK_URL": f"{hooks.url}/teams/workflow",
        "CANVAS_ALERT_SMTP_HOST": "127.0.0.1",
        "CANVAS_ALERT_SMTP_PORT": str(smtp.port),
        "CANVAS_ALERT_SMTP_STARTTLS": "false",
        "CANVAS_ALERT_SMTP_USER": SMTP_USER,
        "CANVAS_ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
        "CANVAS_ALERT_EMAIL_FROM": "dagster@school.edu",
        "CANVAS_ALERT_EMAIL_TO": "data-team@school.edu",
    }  # fmt: skip
    env.pop("CANVAS_ASSETS_DEV_EXIT_WHEN_READY", None)
    proc = start_dev(["--port", str(port)], env, log_path)
    try:
        _run_the_incidents(hooks, sandbox, proc, log_path, port)
    finally:
        assert stop_process_group(proc, 90.0, signal.SIGINT)
        hooks.stop()
        smtp.stop()

    assert len(_alerts(hooks, kind="stream", status="failed")) == 1  # many ticks saw it
    [failed] = _alerts(hooks, kind="backfill", status="failed")
    assert failed["summary"] == f"canvas: backfill of semester {SEMESTER} failed"
    assert "Canvas rejected the API token" in failed["details"]
    assert failed["url"].startswith(f"http://127.0.0.1:{port}/runs/")
    assert len(_alerts(hooks, semester=SEMESTER, status="recovered", kind="backfill")) == 1
    everything = hooks.bodies("/hook")
    assert hooks.refused == 1  # the first alert was refused, then sent by a later tick
    assert len(hooks.bodies("chat.postMessage")) == len(everything) == len(smtp.messages)
    assert len(hooks.bodies("/teams")) == len(everything)
    texts = [json.dumps(b) for b in hooks.bodies()] + [m.as_string() for m in smtp.messages]
    secrets = [SANDBOX_TOKEN, SLACK_TOKEN, HOOK_PASSWORD, SMTP_PASSWORD]
    assert not [(s, t) for s in secrets for t in texts if s in t]
    with psycopg.connect(services["CANVAS_DAGSTER_PG_URL"]) as conn:
        ticks = conn.execute(sql.SQL("SELECT count(*) FROM job_ticks WHERE status = 'FAILURE'"))
        assert ticks.fetchone() == (0,), "a sensor tick failed"


def _run_the_incidents(hooks: HttpReceiver, sandbox, proc, log_path, port: int) -> None:
    """Imported, then stale (freshness), then a failed backfill, then a good one."""
    _until("the stalled stream's alert", lambda: _alerts(hooks, kind="stream"), proc, log_path)
    _until(
        "the stale semester's and the freshness policy's alerts",
        lambda: _alerts(hooks, kind="freshness", semester=SEMESTER)
        and _alerts(hooks, kind="freshness", semester=None),
        proc, log_path,
    )  # fmt: skip
    client = DagsterGraphQLClient("127.0.0.1", port_number=port)
    sandbox.token = "revoked-in-canvas"
    client.submit_job_execution("canvas_semester_sync", tags={"dagster/partition": SEMESTER})
    _until("the failed backfill's alert", lambda: _alerts(hooks, kind="backfill"), proc, log_path)
    sandbox.token = SANDBOX_TOKEN
    client.submit_job_execution("canvas_semester_sync", tags={"dagster/partition": SEMESTER})
    _until(
        "the recovery",
        lambda: _alerts(hooks, kind="backfill", status="recovered"),
        proc, log_path,
    )  # fmt: skip
    time.sleep(15)  # three more alert ticks: nothing may be repeated
