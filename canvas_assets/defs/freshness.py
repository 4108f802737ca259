"""How fresh the semester tables must be. Two measures, because one cannot say both:

- a freshness policy on each semester table (``dg.FreshnessPolicy``, declared with the tables
  in ``defs/assets.py``, evaluated by Dagster's FreshnessDaemon and shown in the UI): the table
  was materialized within CANVAS_FRESHNESS_HOURS. It is asset-level, so any semester's sync
  satisfies it;
- the ``current_semesters_fresh`` check on the Imported Semesters card: every semester running
  now (term dates ± 14 days, as the nightly reconciliation picks them) was synced (backfilled,
  or its Live Events applied) within the same window.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import psycopg

from canvas_assets.defs.checks import as_check_result
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import institution_resource
from canvas_assets.defs.schedules import current_semesters
from canvas_assets.settings import Settings
from canvas_assets.warehouse.reads import semester_syncs, term_dates

FRESH_CHECK = "current_semesters_fresh"


def freshness_window(settings: Settings) -> timedelta:
    return timedelta(hours=settings.freshness_hours)


@dataclass(frozen=True)
class StaleSemester:
    semester: str
    last_synced: datetime | None  # None: never synced

    def describe(self, now: datetime) -> str:
        if self.last_synced is None:
            return f"{self.semester} (never synced)"
        hours = (now - self.last_synced).total_seconds() / 3600
        return f"{self.semester} (last synced {hours:.1f} h ago)"


@dataclass(frozen=True)
class Freshness:
    """An institution's current semesters, and those of them not synced within the window."""

    current: list[str]
    stale: list[StaleSemester]


def semester_freshness(
    conn: psycopg.Connection,
    schema: str,
    partitions: Iterable[str],
    now: datetime,
    window: timedelta,
) -> Freshness:
    """A semester added but never synced is given the window from when it was added (its first
    backfill may be running); one the card does not know at all is stale."""
    current = current_semesters(term_dates(conn, schema), now, partitions)
    card = {row.semester: row for row in semester_syncs(conn, schema)}
    stale = []
    for semester in current:
        row = card.get(semester)
        since = row and (row.last_sync_completed_at or row.added_at)
        if since is None or now - since > window:
            stale.append(StaleSemester(semester, row.last_sync_completed_at if row else None))
    return Freshness(current, stale)


def fresh_check_spec(namespace: Namespace, settings: Settings) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        FRESH_CHECK,
        asset=namespace.key("imported_semesters"),
        description="Every current semester (term dates ± 14 days, as the nightly "
        "reconciliation picks them) was synced, by a backfill or a Live Events apply, within "
        f"the last {settings.freshness_hours:g} h (CANVAS_FRESHNESS_HOURS).",
    )


def fresh_evaluation(
    namespace: Namespace, settings: Settings, found: Freshness, now: datetime
) -> dg.AssetCheckEvaluation:
    return dg.AssetCheckEvaluation(
        asset_key=namespace.key("imported_semesters"),
        check_name=FRESH_CHECK,
        passed=not found.stale,
        metadata={
            "current_semesters": ", ".join(found.current) or "none",
            "stale_semesters": ", ".join(s.describe(now) for s in found.stale) or "none",
            "window_hours": settings.freshness_hours,
        },
        severity=dg.AssetCheckSeverity.WARN,
    )


def institution_freshness(
    context: dg.SensorEvaluationContext | dg.AssetCheckExecutionContext,
    namespace: Namespace,
    settings: Settings,
    now: datetime,
) -> Freshness:
    """The institution's current and stale semesters, read from its warehouse."""
    warehouse = institution_resource(context.resources, namespace, "warehouse")
    partitions = context.instance.get_dynamic_partitions(namespace.partitions.name)
    with warehouse.connect() as conn:
        return semester_freshness(
            conn, warehouse.table_schema(), partitions, now, freshness_window(settings)
        )


def build_fresh_check(namespace: Namespace, settings: Settings) -> dg.AssetChecksDefinition:
    """The check as a runnable definition (the freshness sensor also reports it)."""

    @dg.multi_asset_check(
        specs=[fresh_check_spec(namespace, settings)],
        name=f"{namespace.group}_current_semesters_fresh",
        required_resource_keys={namespace.resource_key("warehouse")},
    )
    def current_semesters_fresh(context: dg.AssetCheckExecutionContext):
        now = datetime.now().astimezone()
        found = institution_freshness(context, namespace, settings, now)
        yield as_check_result(fresh_evaluation(namespace, settings, found, now))

    return current_semesters_fresh
