"""The single Dagster entry point of canvas-assets: ``defs``, built from the environment when
Dagster loads the code location (``@dg.definitions``: importing this module reads nothing).

``build_definitions(settings)`` builds one institution's code location; several, each with its
own ``CANVAS_INSTITUTION``, can share one Dagster instance (see DEPLOYMENT.md).
"""

import dagster as dg

from canvas_assets.defs.assets import (
    build_semester_tables,
    build_terms_asset,
    imported_semesters_spec,
    live_events_spec,
)
from canvas_assets.defs.checks import build_stream_checks
from canvas_assets.defs.jobs import build_jobs
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import build_resources
from canvas_assets.defs.schedules import build_reconciliation_schedule
from canvas_assets.defs.sensors.auto_import import build_semester_auto_import_sensor
from canvas_assets.defs.sensors.live_events import build_live_events_sensor
from canvas_assets.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    jobs = build_jobs(settings)
    return dg.Definitions(
        assets=[
            build_terms_asset(settings),
            live_events_spec(settings),
            imported_semesters_spec(settings),
            build_semester_tables(settings),
        ],
        asset_checks=[build_stream_checks(Namespace.of(settings), settings)],
        jobs=jobs.all(),
        sensors=[
            build_semester_auto_import_sensor(settings, jobs),
            build_live_events_sensor(settings),
        ],
        schedules=[build_reconciliation_schedule(settings, jobs)],
        resources=build_resources(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
