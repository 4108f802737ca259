"""``canvas_freshness``: reports each institution's ``current_semesters_fresh`` check (see
``defs/freshness.py``) when its outcome changes, and every few minutes otherwise. It reads the
warehouse only; the freshness policies are Dagster's FreshnessDaemon's to evaluate."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime

import dagster as dg
import psycopg

from canvas_assets.defs.freshness import fresh_evaluation, institution_freshness
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.sensors.live_events import health_due
from canvas_assets.outcomes import first_line
from canvas_assets.settings import Settings
from canvas_assets.warehouse import WarehouseError

FRESHNESS_TICK_SECONDS = 60


def build_freshness_sensor(
    settings: Settings, namespaces: Sequence[Namespace]
) -> dg.SensorDefinition:
    @dg.sensor(
        name="canvas_freshness",
        description="Reports whether every current semester (term dates ± 14 days) was synced "
        f"within CANVAS_FRESHNESS_HOURS ({settings.freshness_hours:g} h): the "
        "current_semesters_fresh check on each institution's Imported Semesters card.",
        minimum_interval_seconds=FRESHNESS_TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        required_resource_keys={n.resource_key("warehouse") for n in namespaces},
    )
    def canvas_freshness(
        context: dg.SensorEvaluationContext, **_resources: object
    ) -> dg.SensorResult:
        cursor, now = json.loads(context.cursor or "{}"), datetime.now().astimezone()
        events, lines = [], []
        for namespace in namespaces:
            try:
                found = institution_freshness(context, namespace, settings, now)
            except (WarehouseError, psycopg.Error) as exc:
                lines.append(f"{namespace.label}: warehouse unreachable ({first_line(exc)})")
                continue
            evaluation = fresh_evaluation(namespace, settings, found, now)
            if health_due(cursor.get(namespace.label), [evaluation.passed], time.time()):
                events.append(evaluation)
                cursor[namespace.label] = {"outcomes": [evaluation.passed], "at": time.time()}
            shown = ", ".join(s.describe(now) for s in found.stale) or "none"
            lines.append(
                f"{namespace.label}: {len(found.current)} current semesters, stale: {shown}"
            )
        message = "; ".join(lines) + "."
        return dg.SensorResult(asset_events=events, cursor=json.dumps(cursor), skip_reason=message)

    return canvas_freshness
