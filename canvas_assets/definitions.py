"""The single Dagster entry point of canvas-assets: ``defs``, built from the environment once."""

import dagster as dg

from canvas_assets.defs.assets import build_semester_tables, live_events, terms
from canvas_assets.defs.jobs import semester_sync_job, terms_sync_job
from canvas_assets.defs.resources import build_resources
from canvas_assets.defs.schedules import build_reconciliation_schedule
from canvas_assets.defs.sensors.auto_import import build_semester_auto_import_sensor
from canvas_assets.defs.sensors.live_events import build_live_events_sensor
from canvas_assets.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    return dg.Definitions(
        assets=[terms, live_events, build_semester_tables(settings)],
        jobs=[terms_sync_job, semester_sync_job],
        sensors=[
            build_semester_auto_import_sensor(settings),
            build_live_events_sensor(settings),
        ],
        schedules=[build_reconciliation_schedule(settings)],
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
