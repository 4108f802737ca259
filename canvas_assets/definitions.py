"""The single Dagster entry point of canvas-assets: ``defs``, built from the environment when
Dagster loads the code location (``@dg.definitions``: importing this module reads nothing).

One code location serves every institution of the deployment: the entries of
CANVAS_INSTITUTIONS_FILE, or the single institution of the CANVAS_* settings. Each institution
gets its own assets, checks, partitions, backfill job, nightly heal and resources from one
factory (``institution_definitions``); the sensors, the terms refresh and the Live Events apply
job serve them all.
"""

import gc
from functools import lru_cache

from canvas_assets.memory import cyclic_gc_paused

# The code location's modules, classes and Dagster's and pandera's registries live as long as
# the process. Left on, the cyclic collector would walk all of them in every full collection
# it ran while they load, and again in every full collection of a run's later work. So it is
# paused while they load, and they are frozen out of its reach (gc.freeze) before it resumes,
# so that its first collection does not walk them either. Any cyclic garbage the imports left
# is frozen with them, kept for the life of the process. BENCHMARKS.md has what this saved.
with cyclic_gc_paused():
    import dagster as dg

    from canvas_assets.defs.assets import (
        build_semester_tables,
        build_terms_asset,
        imported_semesters_spec,
        live_events_spec,
    )
    from canvas_assets.defs.checks import (
        build_shared_queue_checks,
        build_stream_checks,
        shared_queue_spec,
    )
    from canvas_assets.defs.freshness import build_fresh_check
    from canvas_assets.defs.jobs import Jobs, build_jobs
    from canvas_assets.defs.namespace import Namespace
    from canvas_assets.defs.resources import SHARED_WAREHOUSE, build_resources
    from canvas_assets.defs.schedules import build_reconciliation_schedule
    from canvas_assets.defs.sensors.alerts import build_alerts_sensor, build_run_failure_sensor
    from canvas_assets.defs.sensors.auto_import import build_semester_auto_import_sensor
    from canvas_assets.defs.sensors.freshness import build_freshness_sensor
    from canvas_assets.defs.sensors.live_events import build_live_events_sensor, queues_followed
    from canvas_assets.settings import Settings

    gc.freeze()


def institution_definitions(settings: Settings, namespace: Namespace, jobs: Jobs) -> dg.Definitions:
    """One institution's assets and checks (its lineage in the UI) and its nightly heal."""
    return dg.Definitions(
        assets=[
            build_terms_asset(settings, namespace),
            live_events_spec(settings, namespace),
            imported_semesters_spec(settings, namespace),
            build_semester_tables(settings, namespace),
        ],
        asset_checks=[
            build_stream_checks(namespace, settings),
            build_fresh_check(namespace, settings),
        ],
        schedules=[build_reconciliation_schedule(settings, namespace, jobs)],
    )


def build_definitions(settings: Settings) -> dg.Definitions:
    namespaces = [Namespace(institution) for institution in settings.institutions]
    jobs = build_jobs(namespaces)
    vendor = settings.institutions_file is not None  # a shared queue, and a shared schema
    shared = dg.Definitions(
        assets=[shared_queue_spec()] if vendor else [],
        asset_checks=[build_shared_queue_checks(SHARED_WAREHOUSE)] if vendor else [],
        jobs=jobs.all(),
        sensors=[
            build_semester_auto_import_sensor(settings, namespaces, jobs),
            *(build_live_events_sensor(settings, q) for q in queues_followed(settings, namespaces)),
            build_freshness_sensor(settings, namespaces),
            build_run_failure_sensor(settings, namespaces),
            build_alerts_sensor(settings, namespaces),
        ],
        resources=build_resources(settings),
        # Every job runs its steps in the run's own process: a backfill is one step, and a step
        # subprocess would load the code a second time before the first Canvas request.
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(
        *(institution_definitions(settings, n, jobs) for n in namespaces), shared
    )


@lru_cache(maxsize=1)
def _definitions_for(settings: Settings) -> dg.Definitions:
    return build_definitions(settings)


@dg.definitions
def defs() -> dg.Definitions:
    """Dagster calls this several times in one process (a run loads its job more than once):
    the settings are read each time, the definitions built once for the same settings."""
    return _definitions_for(Settings.from_env())
