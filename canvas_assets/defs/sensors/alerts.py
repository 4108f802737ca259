"""The alert sensors, running by default; both skip, saying so, when no channel is configured.

- ``canvas_alert_run_failures``, a run-status sensor on failures (what ``dg.run_failure_sensor``
  builds, declared directly because it needs the institutions' warehouses as resources): a run
  that failed once Dagster's retries are spent opens its incidents (``defs/alerting.py``).
- ``canvas_alerts``, every CANVAS_ALERT_SENSOR_INTERVAL_SECONDS: opens the incidents it finds
  (a failed card, a failing stream check, a stale semester, a violated freshness policy),
  recovers those whose condition passed, and sends what is due to every channel within a time
  budget; a channel that refuses is logged and tried again by a later tick.

Incidents and their alerts live in each institution's schema, so a restarted daemon repeats
nothing. Neither sensor calls Canvas; a warehouse that does not answer ends that institution's
part of the tick with the reason, never the tick.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg
import psycopg

from canvas_assets.alerts import incidents
from canvas_assets.alerts.channels import AlertChannels
from canvas_assets.alerts.deliver import deliver_due
from canvas_assets.alerts.messages import Redactor
from canvas_assets.defs.alerting import (
    card_finding,
    freshness_findings,
    recovery_hold,
    run_findings,
    semester_subject,
    still_failing,
    stream_findings,
    will_retry,
)
from canvas_assets.defs.freshness import freshness_window, semester_freshness
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import ALERTS, institution_resource
from canvas_assets.outcomes import Counts, first_line
from canvas_assets.settings import WAREHOUSE_URL_ENV, Settings
from canvas_assets.warehouse import WarehouseError
from canvas_assets.warehouse.reads import semester_syncs

NO_CHANNEL = (
    "No alert channel is configured, so no alert is sent: set CANVAS_ALERT_WEBHOOK_URL, "
    "CANVAS_ALERT_SLACK_TOKEN and CANVAS_ALERT_SLACK_CHANNEL, CANVAS_ALERT_TEAMS_WEBHOOK_URL, "
    "or CANVAS_ALERT_SMTP_HOST (README: Alerts)."
)
SEND_BUDGET_SECONDS = 20.0  # of a tick, for every institution's channels together
ENVIRONMENT_SECRETS = (
    WAREHOUSE_URL_ENV, "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "DAGSTER_POSTGRES_PASSWORD",
)  # fmt: skip


@dataclass
class AlertCounts(Counts):
    opened: int = 0
    recovered: int = 0
    sent: int = 0
    refused: int = 0

    def summary(self) -> str:
        text = f"{self.opened} incidents opened, {self.recovered} recovered, {self.sent} sent"
        return text + (f", {self.refused} refused (tried again later)" if self.refused else "")


def redactor_for(resources: object, namespaces: Sequence[Namespace]) -> Redactor:
    """Hides every secret the code location holds: the channels', each Canvas token, the
    warehouse URL (its password), AWS's and Dagster storage's, read as dg.EnvVar (one that is
    not set hides nothing and fails nothing)."""
    channels: AlertChannels = getattr(resources, ALERTS)
    names = {*ENVIRONMENT_SECRETS, *(n.institution.token_env for n in namespaces)}
    return Redactor([*channels.secrets(), *(dg.EnvVar(name).get_value() for name in sorted(names))])


def _resource_keys(namespaces: Sequence[Namespace]) -> set[str]:
    return {ALERTS} | {namespace.resource_key("warehouse") for namespace in namespaces}


def build_run_failure_sensor(
    settings: Settings, namespaces: Sequence[Namespace]
) -> dg.RunStatusSensorDefinition:
    def canvas_alert_run_failures(
        context: dg.RunStatusSensorContext, **_resources: object
    ) -> dg.SkipReason | None:
        channels: AlertChannels = getattr(context.resources, ALERTS)
        names = channels.configured()
        if not names:
            return dg.SkipReason(NO_CHANNEL)
        run = context.dagster_run
        if will_retry(context.instance, run):  # the retry's outcome is the one that counts
            context.log.info(f"Run {run.run_id} failed and will be retried: no alert yet.")
            return None
        now = datetime.now().astimezone()
        for namespace, finding in run_findings(context.instance, run, namespaces):
            warehouse = institution_resource(context.resources, namespace, "warehouse")
            try:
                with warehouse.connect() as conn:
                    opened = incidents.raise_incident(
                        conn, warehouse.table_schema(), finding, names, now
                    )
            except (WarehouseError, psycopg.Error) as exc:
                context.log.warning(f"{namespace.label}: incident not recorded ({first_line(exc)})")
                continue
            state = "opened (canvas_alerts sends it)" if opened else "already open"
            context.log.info(f"{namespace.label}: {finding.summary}: incident {state}.")
        return None

    return dg.RunStatusSensorDefinition(
        name="canvas_alert_run_failures",
        run_status=dg.DagsterRunStatus.FAILURE,
        run_status_sensor_fn=canvas_alert_run_failures,
        minimum_interval_seconds=settings.alert_sensor_interval_seconds,
        description="Opens an incident for every run of this code location that failed once "
        "Dagster's retries were spent (a backfill or reconciliation names its semester; an "
        "apply or terms refresh its institutions); canvas_alerts sends the alerts. Skips when "
        "no alert channel is configured.",
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=_resource_keys(namespaces),
    )


def _institution_tick(
    context: dg.SensorEvaluationContext,
    settings: Settings,
    namespace: Namespace,
    redactor: Redactor,
    budget_seconds: float,
) -> AlertCounts:
    """Open what is wrong, recover what is not, send what is due, for one institution."""
    channels: AlertChannels = getattr(context.resources, ALERTS)
    names, counts = channels.configured(), AlertCounts()
    warehouse = institution_resource(context.resources, namespace, "warehouse")
    instance, now = context.instance, datetime.now().astimezone()
    partitions = instance.get_dynamic_partitions(namespace.partitions.name)
    with warehouse.connect() as conn:
        schema = warehouse.table_schema()
        open_now = {incident.subject for incident in incidents.open_incidents(conn, schema)}
        failed = [row for row in semester_syncs(conn, schema) if row.status == "failed"]
        found = [
            card_finding(instance, namespace, row)
            for row in failed
            if semester_subject(row.semester) not in open_now
        ]
        if settings.live_events_queue_configured or namespace.institution.queue_url:
            found += stream_findings(conn, schema, namespace, settings, now)
        fresh = semester_freshness(conn, schema, partitions, now, freshness_window(settings))
        found += freshness_findings(instance, namespace, settings, fresh.stale, now)
        findings = [f for f in found if f is not None]
        for finding in findings:
            counts.add(opened=int(incidents.raise_incident(conn, schema, finding, names, now)))
        failing_now = {f.subject for f in findings} | {semester_subject(r.semester) for r in failed}
        for incident in incidents.open_incidents(conn, schema):
            failing = still_failing(instance, namespace, incident, failing_now)
            hold = recovery_hold(incident)
            recovered = incidents.settle(conn, schema, incident, failing, now, hold, names)
            counts.add(recovered=int(recovered))
        sent = deliver_due(
            conn, schema, namespace.label, channels, redactor, settings.ui_url, budget_seconds,
            context.log,
        )  # fmt: skip
    return counts.add(sent)


def build_alerts_sensor(settings: Settings, namespaces: Sequence[Namespace]) -> dg.SensorDefinition:
    @dg.sensor(
        name="canvas_alerts",
        description="One alert per incident and one when it recovers, to every configured "
        "channel (webhook, Slack, Microsoft Teams, e-mail): failed runs (from "
        "canvas_alert_run_failures), a semester failed on the Imported Semesters card, a "
        "failing Live Events stream check, a current semester not synced within "
        "CANVAS_FRESHNESS_HOURS, a violated freshness policy. A refused alert is tried again "
        "by a later tick. Skips when no alert channel is configured.",
        minimum_interval_seconds=settings.alert_sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys=_resource_keys(namespaces),
    )
    def canvas_alerts(context: dg.SensorEvaluationContext, **_resources: object) -> dg.SkipReason:
        channels: AlertChannels = getattr(context.resources, ALERTS)
        if not channels.configured():
            return dg.SkipReason(NO_CHANNEL)
        redactor = redactor_for(context.resources, namespaces)
        deadline = time.monotonic() + SEND_BUDGET_SECONDS
        lines = []
        for namespace in namespaces:
            budget = max(1.0, deadline - time.monotonic())
            try:
                counts = _institution_tick(context, settings, namespace, redactor, budget)
            except (WarehouseError, psycopg.Error) as exc:
                lines.append(f"{namespace.label}: warehouse unreachable ({first_line(exc)})")
                continue
            lines.append(f"{namespace.label}: {counts.summary()}")
        message = "; ".join(lines) + f" (channels: {', '.join(channels.configured())})."
        context.log.info(message)
        return dg.SkipReason(message)

    return canvas_alerts
