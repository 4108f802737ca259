"""The Live Events apply job: one short run applies what has landed for a batch of institutions,
then ends; it never waits for events that may come (the sensor requests another run when more
land).

Each institution of the run's config makes one pass (``live_events/passes.py``), side by side
with the others and each with its own Canvas session (its own token, so its own throttle
budget): a slow or failing institution does not hold the others up. Each semester applied
records materializations of the institution's tables (partition = semester) and their pandera
check results, like a backfill does. An institution that failed fails the run once the others
are done, naming it: Dagster's run retries (``dagster/max_retries``) try again at once, and the
sensor keeps a failing institution's later attempts in runs of their own.
"""

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import dagster as dg

from canvas_assets.defs.assets import SOURCE_TAG, log_imported_semesters
from canvas_assets.defs.checks import pandera_evaluations
from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.reporting import preview, write_metadata
from canvas_assets.defs.resources import institution_resource, resource_keys
from canvas_assets.live_events.passes import InstitutionPass, SemesterPass, apply_institution
from canvas_assets.tables import SEMESTER_TABLES, TableSpec, ValidationReport

APPLY_JOB = "canvas_live_events_apply"
# Dagster's run queue launches higher priorities first: a short apply run never waits in the
# queue behind backfills (the nightly reconciliation of every institution queues many at once).
APPLY_RUN_PRIORITY = "10"
MAX_SIDE_BY_SIDE = 8  # institutions applied at once in one run
# A run's Canvas calls fail fast: an institution whose Canvas does not answer is retried by
# Dagster's run retries and the next runs, not by minutes of waiting inside this one.
APPLY_SESSION = {"timeout_seconds": 15, "max_retries": 2, "max_throttle_retries": 6}


class ApplyConfig(dg.Config):
    """``institutions``: the labels (names, or ``canvas`` for the single institution) of the
    institutions this run applies."""

    institutions: list[str]


def _semester_events(
    namespace: Namespace, tables: Sequence[TableSpec], done: SemesterPass
) -> Iterator[dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """A semester's check results and materializations, as a backfill records them."""
    semester = done.semester
    if done.failed_validation is not None:
        covered = "the courses a Live Events apply re-read (it wrote nothing)"
        yield from pandera_evaluations(
            namespace, tables, done.failed_validation, {}, semester, covered
        )
        return
    applied = done.result
    if applied is None or not applied.events:
        return
    rows = {name: len(frame) for name, frame in applied.frames.items()}
    report = ValidationReport(applied.frames, {})
    courses = applied.courses_refreshed
    covered = f"{courses} course{'s' if courses != 1 else ''} re-read by a Live Events apply"
    yield from pandera_evaluations(namespace, tables, report, rows, semester, covered)
    for spec in tables:
        metadata = {
            **write_metadata(applied.counts[spec.name], done.active[spec.name]),
            "events": applied.events,
            "events_applied": applied.applied,
            "events_stale": applied.stale,
            "courses_refreshed": applied.courses_refreshed,
            "courses_gone": applied.courses_gone,
            "people_refreshed": applied.people_refreshed,
            "events_forwarded": applied.forwarded,
        }
        if spec.name in applied.frames:
            metadata["preview"] = preview(applied.frames[spec.name])
        yield dg.AssetMaterialization(
            namespace.key(spec.name), partition=semester, metadata=metadata
        )


def _summary(namespace: Namespace, done: InstitutionPass) -> str:
    if done.taken:
        return f"{namespace.label}: applied by another run."
    applied = sum(s.result.applied for s in done.semesters if s.result is not None)
    text = f"{namespace.label}: {done.routed.summary()}; applied {applied} events"
    semesters = [s.semester for s in done.semesters if s.result is not None and s.result.events]
    if semesters:
        text += f" of {', '.join(semesters)}"
    busy = [s.semester for s in done.semesters if s.result is not None and s.result.semester_busy]
    if busy:
        text += f"; {', '.join(busy)} being backfilled (left for the next run)"
    failure = done.failure()
    return f"{text}; failed: {failure}" if failure else f"{text}."


def _one_institution(
    context: dg.OpExecutionContext, namespace: Namespace, tables: Sequence[TableSpec]
) -> InstitutionPass:
    canvas = institution_resource(context.resources, namespace, "canvas")
    warehouse = institution_resource(context.resources, namespace, "warehouse")
    partitions = set(context.instance.get_dynamic_partitions(namespace.partitions.name))
    with canvas.session(context.log, **APPLY_SESSION) as session:
        return apply_institution(
            warehouse.connect,
            warehouse.table_schema(),
            session,
            namespace.institution.target_semesters,
            partitions,
            tuple(tables),
        )


def build_apply_job(
    namespaces: Sequence[Namespace], tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> dg.JobDefinition:
    by_label = {namespace.label: namespace for namespace in namespaces}

    @dg.op(
        name="apply_live_events",
        description="Apply the landed Live Events of the run's institutions: route them, re-read "
        "the courses they name, validate, write and mark them applied (one transaction per "
        "semester), each institution side by side with its own Canvas session.",
        required_resource_keys=set().union(*(resource_keys(n) for n in namespaces)),
    )
    def apply_live_events(context: dg.OpExecutionContext, config: ApplyConfig) -> None:
        chosen = [by_label[label] for label in config.institutions if label in by_label]
        failures = []
        with ThreadPoolExecutor(max_workers=max(1, min(MAX_SIDE_BY_SIDE, len(chosen)))) as pool:
            passes = {pool.submit(_one_institution, context, n, tables): n for n in chosen}
            for future in as_completed(passes):  # Dagster's events from this thread only
                namespace, done = passes[future], future.result()
                for semester in done.semesters:
                    for event in _semester_events(namespace, tables, semester):
                        context.log_event(event)
                if done.semesters:
                    warehouse = institution_resource(context.resources, namespace, "warehouse")
                    log_imported_semesters(context, warehouse, namespace)
                context.log.info(_summary(namespace, done))
                if done.failure():
                    failures.append(f"{namespace.label}: {done.failure()}")
        if failures:
            raise dg.Failure(description="Live Events not applied for " + " | ".join(failures))

    @dg.job(
        name=APPLY_JOB,
        executor_def=dg.in_process_executor,
        tags={SOURCE_TAG: "live_events", "dagster/priority": APPLY_RUN_PRIORITY},
        description="Applies the landed Live Events of a batch of institutions (requested by "
        f"the Live Events sensor), ahead of queued backfills. Filter the Runs page with the tag "
        f"{SOURCE_TAG}=live_events, or by this job's name.",
    )
    def canvas_live_events_apply() -> None:
        apply_live_events()

    return canvas_live_events_apply
