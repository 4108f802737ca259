"""An alerting deployment for the in-process alert tests: the code location's definitions and
resources from the environment (the sandbox, PostgreSQL, every channel pointed at the tests'
receivers: the webhook, Slack's Web API and a Teams workflow at one HTTP receiver, SMTP at
aiosmtpd), and the sensors called as the daemon calls them."""

from __future__ import annotations

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from canvas_assets.definitions import build_definitions
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import build_resources
from canvas_assets.settings import Settings

from .conftest import SANDBOX_TOKEN
from .receivers import HttpReceiver, SmtpReceiver

SLACK_TOKEN = "xoxb-1234-5678-alertsecret"
SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-pass-secret"
HOOK_PASSWORD = "hook-pass-secret"
TEAMS_SIGNATURE = "teams-sig-secret"  # a Teams workflow URL's signature is its credential
UI_URL = "http://dagster.example.edu:3000"


class Deployment:
    """One institution with every channel configured; ``refresh`` reloads the code location
    (a daemon restart reads the definitions anew)."""

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str],
        hooks: HttpReceiver,
        smtp: SmtpReceiver,
    ) -> None:
        hook_address = hooks.url.replace("http://", f"http://hook:{HOOK_PASSWORD}@")
        settings = {
            "CANVAS_API_TOKEN": SANDBOX_TOKEN,
            "CANVAS_ALERT_WEBHOOK_URL": f"{hook_address}/hook",
            "CANVAS_ALERT_SLACK_TOKEN": SLACK_TOKEN,
            "CANVAS_ALERT_SLACK_CHANNEL": "#data-alerts",
            "CANVAS_ALERT_SLACK_API_URL": f"{hooks.url}/slack/api",
            "CANVAS_ALERT_TEAMS_WEBHOOK_URL": f"{hooks.url}/teams/workflow?sig={TEAMS_SIGNATURE}",
            "CANVAS_ALERT_SMTP_HOST": "127.0.0.1",
            "CANVAS_ALERT_SMTP_PORT": str(smtp.port),
            "CANVAS_ALERT_SMTP_STARTTLS": "false",
            "CANVAS_ALERT_SMTP_USER": SMTP_USER,
            "CANVAS_ALERT_SMTP_PASSWORD": SMTP_PASSWORD,
            "CANVAS_ALERT_EMAIL_FROM": "dagster@school.edu",
            "CANVAS_ALERT_EMAIL_TO": "data-team@school.edu",
            "CANVAS_ASSETS_UI_URL": UI_URL,
            **env,
        }
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        self.secrets = [SANDBOX_TOKEN, SLACK_TOKEN, SMTP_PASSWORD, HOOK_PASSWORD, TEAMS_SIGNATURE]
        self.refresh()

    def refresh(self) -> None:
        self.settings = Settings.from_env()
        self.defs = build_definitions(self.settings)
        self.resources = build_resources(self.settings)
        self.namespace = Namespace(self.settings.institutions[0])

    def run_semester(self, instance: dg.DagsterInstance, semester: str) -> dg.DagsterRun:
        if not instance.has_dynamic_partition(self.namespace.partitions.name, semester):
            instance.add_dynamic_partitions(self.namespace.partitions.name, [semester])
        job = self.defs.resolve_job_def(self.namespace.semester_job)
        result = job.execute_in_process(
            partition_key=semester, instance=instance, raise_on_error=False
        )
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        return run

    def run_terms(self, instance: dg.DagsterInstance) -> None:
        job = self.defs.resolve_job_def("canvas_terms_sync")
        assert job.execute_in_process(instance=instance).success

    def run_failure_tick(self, instance: dg.DagsterInstance, run: dg.DagsterRun) -> None:
        """What the daemon hands canvas_alert_run_failures for a failed run."""
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.RUN_FAILURE
        ).records
        context = dg.build_run_status_sensor_context(
            sensor_name="canvas_alert_run_failures",
            dagster_event=records[0].event_log_entry.dagster_event,
            dagster_instance=instance,
            dagster_run=run,
            resources=self.resources,
        )
        self.defs.get_sensor_def("canvas_alert_run_failures")(context)

    def tick(self, name: str, instance: dg.DagsterInstance, cursor: str | None = None):
        context = dg.build_sensor_context(
            instance=instance, resources=self.resources, cursor=cursor
        )
        return self.defs.get_sensor_def(name)(context)


def retries_due_now(db: psycopg.Connection, schema: str) -> None:
    """As if the refused alerts' back-off had passed (the tests do not wait for it)."""
    db.execute(
        sql.SQL(
            "UPDATE {}.alert_deliveries SET next_attempt_at = now() WHERE delivered_at IS NULL"
        ).format(sql.Identifier(schema))
    )
