"""What is wrong, in Dagster's terms: the findings that open incidents (``canvas_assets.alerts``)
and whether an open incident's condition still holds.

- A run that failed once Dagster's retries are spent (``run_findings``): a semester's backfill
  or nightly reconciliation (kind ``check`` when a blocking check failed in it), the Live Events
  apply of each institution in it, the terms refresh of each institution whose step failed. It
  recovers when a later run of the same work succeeds.
- The Imported Semesters card saying ``failed``: the same incident as the semester's failed run
  (subject ``semester <key>``), so a failed backfill is one alert, not three; it recovers when
  the card does and no failed run is left.
- A stream health check failing, a current semester not synced within the freshness window,
  a semester table failing its freshness policy (``stream_findings``, ``freshness_findings``).
- What repeats by itself (the stream, freshness, apply runs, terms refreshes) recovers once it
  has passed for RECOVERY_HOLD, so a flapping stream or an outage is one incident; a semester
  recovers at its next good run.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import dagster as dg
import psycopg

from canvas_assets.alerts.incidents import Finding, Incident
from canvas_assets.defs.apply import APPLY_JOB
from canvas_assets.defs.assets import SOURCE_TAG
from canvas_assets.defs.checks import stream_evaluations
from canvas_assets.defs.freshness import StaleSemester
from canvas_assets.defs.jobs import TERMS_JOB
from canvas_assets.defs.namespace import Namespace
from canvas_assets.live_events.health import StreamHealth, stream_health
from canvas_assets.outcomes import first_line
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES, TERMS
from canvas_assets.warehouse.reads import SemesterSync, schema_created_at

# What runs by itself again and again (the stream, freshness, apply runs, terms refreshes) is
# recovered once it has passed this long: one incidental success between failures (an apply
# run with nothing to do during an outage) must not make a recovery and a new incident.
RECOVERY_HOLD = timedelta(minutes=5)
HELD_KINDS = {"stream", "freshness", "apply", "terms"}
APPLY_SUBJECT, TERMS_SUBJECT, POLICY_SUBJECT = "Live Events apply", "terms refresh", "freshness"
WILL_RETRY_TAG = "dagster/will_retry"  # Dagster's run retries set it on a failed run
PARTITION_TAG = "dagster/partition"
DETAILS_CHARS = 500  # an alert's details stay a line
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def semester_subject(semester: str) -> str:
    return f"semester {semester}"


def asset_link(key: dg.AssetKey, view: str | None = None) -> str:
    return "/assets/" + "/".join(key.path) + (f"?view={view}" if view else "")


def will_retry(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether Dagster's run retries will run it again (the tag is written just after the
    failure event, so a run read before it is read again)."""
    if WILL_RETRY_TAG not in run.tags:
        run = instance.get_run_by_id(run.run_id) or run
    return run.tags.get(WILL_RETRY_TAG) == "true"


def run_error(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first line of what failed the run: a step's error (a ``dg.Failure``'s description),
    else the run's own failure message."""
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    for record in steps.records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        if data is not None and data.user_failure_data and data.user_failure_data.description:
            return data.user_failure_data.description.strip().splitlines()[0]
        if data is not None and data.error is not None:
            return first_line(RuntimeError(data.error.message.split(": ", 1)[-1]))
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    for record in failures.records:
        return first_line(RuntimeError(record.event_log_entry.message or "the run failed"))
    return "the run failed"


def _failed_blocking_checks(
    instance: dg.DagsterInstance, run_id: str, partition: str
) -> dict[str, str]:
    """The tables whose blocking checks failed in the run for ``partition``, each with the
    checks that failed (the check's ``failed_checks``)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ).records
    failed: dict[str, str] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if (
            isinstance(evaluation, dg.AssetCheckEvaluation)
            and evaluation.blocking
            and not evaluation.passed
            and (evaluation.partition or "") == partition
        ):
            checks = evaluation.metadata.get("failed_checks")
            failed[evaluation.asset_key.path[-1]] = str(getattr(checks, "value", "") or "")
    return failed


def _semester_finding(
    instance: dg.DagsterInstance, run: dg.DagsterRun, run_at: datetime, error: str
) -> Finding:
    semester = run.tags.get(PARTITION_TAG, "")
    tables = _failed_blocking_checks(instance, run.run_id, semester)
    what = "nightly reconciliation" if run.tags.get(SOURCE_TAG) == "reconciliation" else "backfill"
    if tables:
        kind = "check"
        summary = f"semester {semester} failed its blocking checks on {', '.join(sorted(tables))}"
        checks = "; ".join(f"{table}: {failed}" for table, failed in sorted(tables.items()))
        error = f"{error} Failed checks: {checks}"[:DETAILS_CHARS]
    else:
        kind, summary = what, f"{what} of semester {semester} failed"
    return Finding(
        subject=semester_subject(semester), kind=kind, summary=summary, details=error,
        semester=semester, link=f"/runs/{run.run_id}", run_id=run.run_id, run_at=run_at,
    )  # fmt: skip


def run_findings(
    instance: dg.DagsterInstance, run: dg.DagsterRun, namespaces: Sequence[Namespace]
) -> list[tuple[Namespace, Finding]]:
    """The incidents a failed run opens, with the institution each belongs to."""
    record = instance.get_run_record_by_id(run.run_id)
    run_at = record.create_timestamp if record else datetime.now().astimezone()
    error = run_error(instance, run.run_id)
    by_job = {namespace.semester_job: namespace for namespace in namespaces}
    if run.job_name in by_job and run.tags.get(PARTITION_TAG):
        return [(by_job[run.job_name], _semester_finding(instance, run, run_at, error))]
    link = f"/runs/{run.run_id}"
    if run.job_name == APPLY_JOB:
        config = run.run_config.get("ops", {}).get("apply_live_events", {}).get("config", {})
        labels = set(config.get("institutions", []))
        return [
            (n, Finding(APPLY_SUBJECT, "apply", "Live Events apply failed",
                        _part_of(error, n.label), None, link, run.run_id, run_at))
            for n in namespaces if n.label in labels
        ]  # fmt: skip
    if run.job_name == TERMS_JOB:
        failed = _failed_steps(instance, run.run_id)
        hit = [n for n in namespaces if n.key(TERMS.name).to_python_identifier() in failed]
        return [
            (n, Finding(TERMS_SUBJECT, "terms", "terms refresh failed", error, None, link,
                        run.run_id, run_at))
            for n in hit or namespaces
        ]  # fmt: skip
    return []


def _part_of(error: str, label: str) -> str:
    """An apply failure names each institution (``label: why | ...``): this one's part."""
    for part in error.split(" | "):
        if f"{label}: " in part:
            return part[part.index(f"{label}: ") :]
    return error


def _failed_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
    return {r.event_log_entry.step_key for r in records.records if r.event_log_entry.step_key}


def card_finding(
    instance: dg.DagsterInstance, namespace: Namespace, row: SemesterSync
) -> Finding | None:
    """A semester the card shows failed: its failed run's incident when a run failed it, else
    the card's own (a sync that died unrecorded); None while a run of it is under way or about
    to be retried, which will say how it ends."""
    runs = instance.get_runs(
        filters=dg.RunsFilter(job_name=namespace.semester_job, tags={PARTITION_TAG: row.semester}),
        limit=1,
    )
    if runs and (runs[0].status in IN_FLIGHT or runs[0].is_complete_and_waiting_to_retry):
        return None
    if runs and runs[0].status == dg.DagsterRunStatus.FAILURE:
        return run_findings(instance, runs[0], [namespace])[0][1]
    return Finding(
        subject=semester_subject(row.semester),
        kind="card",
        summary=f"semester {row.semester} is failed on the Imported Semesters card",
        details=first_line(RuntimeError(row.last_error or "failed")),
        semester=row.semester,
        link=asset_link(namespace.key("imported_semesters")),
    )


def _stream_details(check: str, health: StreamHealth, settings: Settings) -> str:
    if check == "lag":
        return (
            f"the oldest landed event has waited {health.oldest_pending_seconds or 0:.0f} s "
            f"(CANVAS_LIVE_EVENTS_MAX_LAG_SECONDS={settings.live_events_max_lag_seconds}); "
            f"{health.pending} pending"
        )
    if check == "stream_flowing":
        if health.since_last_message_seconds is None:
            return "no Live Events message has arrived yet"
        return (
            f"no Live Events message for {health.since_last_message_seconds:.0f} s "
            f"(CANVAS_LIVE_EVENTS_STALL_SECONDS={settings.live_events_stall_seconds})"
        )
    return f"{health.quarantined_last_hour} messages quarantined in the last hour"


def stream_findings(
    conn: psycopg.Connection, schema: str, namespace: Namespace, settings: Settings, now: datetime
) -> list[Finding]:
    """The institution's failing stream health checks (those the Live Events sensor reports).
    A stream that never carried a message is stalled once it has been listened to for
    CANVAS_LIVE_EVENTS_STALL_SECONDS, not from the first tick of a new deployment."""
    health = stream_health(conn, schema, now)
    link = asset_link(namespace.key("live_events"), "checks")
    listening = schema_created_at(conn, schema)
    new_stream = health.since_last_message_seconds is None and (
        listening is None or (now - listening).total_seconds() <= settings.live_events_stall_seconds
    )
    return [
        Finding(
            subject=f"Live Events stream ({check.check_name})",
            kind="stream",
            summary=f"Live Events stream check {check.check_name} failing",
            details=_stream_details(check.check_name, health, settings),
            link=link,
        )
        for check in stream_evaluations(namespace, settings, health)
        if not check.passed and not (new_stream and check.check_name == "stream_flowing")
    ]


def freshness_findings(
    instance: dg.DagsterInstance,
    namespace: Namespace,
    settings: Settings,
    stale: list[StaleSemester],
    now: datetime,
) -> list[Finding]:
    """Current semesters not synced within the window, and semester tables failing their
    freshness policy (as Dagster's FreshnessDaemon last evaluated it)."""
    hours = f"{settings.freshness_hours:g} h"
    card = asset_link(namespace.key("imported_semesters"), "checks")
    findings = [
        Finding(
            f"freshness of semester {s.semester}",
            "freshness",
            f"semester {s.semester} not synced within {hours}",
            s.describe(now),
            s.semester,
            card,
        )  # fmt: skip
        for s in stale
    ]
    keys = [namespace.key(spec.name) for spec in SEMESTER_TABLES]
    states = instance.get_freshness_state_records(keys)
    failing = [key.path[-1] for key in keys if key in states and _fails(states[key])]
    if failing:
        findings.append(
            Finding(
                POLICY_SUBJECT,
                "freshness",
                f"{', '.join(failing)} not materialized within {hours} (freshness policy)",
                "no semester of these tables was synced within CANVAS_FRESHNESS_HOURS",
                None,
                asset_link(keys[0]),
            )  # fmt: skip
        )
    return findings


def _fails(record: object) -> bool:
    # Dagster exports no name for the record or its state (a str enum: FAIL when violated).
    return getattr(record, "freshness_state", None) == "FAIL"


def still_failing(
    instance: dg.DagsterInstance,
    namespace: Namespace,
    incident: Incident,
    failing_now: set[str],
) -> bool:
    """Whether an open incident's condition holds: ``failing_now`` are the subjects found
    failing this tick (a failed card's semester among them); a failed run holds until a later
    run of the same work succeeds."""
    if incident.subject in failing_now:
        return True
    if incident.run_id is None or incident.run_at is None:
        return False
    since = incident.run_at
    if incident.subject == APPLY_SUBJECT:
        runs = instance.get_runs(
            filters=dg.RunsFilter(
                job_name=APPLY_JOB, statuses=[dg.DagsterRunStatus.SUCCESS], created_after=since
            ),
            limit=100,
        )
        return not any(namespace.label in _apply_labels(run) for run in runs)
    if incident.subject == TERMS_SUBJECT:
        event = instance.get_latest_materialization_event(namespace.key(TERMS.name))
        return event is None or event.timestamp <= since.timestamp()
    succeeded = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=namespace.semester_job,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            tags={PARTITION_TAG: incident.semester or ""},
            created_after=since,
        ),
        limit=1,
    )
    return not succeeded


def _apply_labels(run: dg.DagsterRun) -> list[str]:
    config = run.run_config.get("ops", {}).get("apply_live_events", {}).get("config", {})
    return list(config.get("institutions", []))


def recovery_hold(incident: Incident) -> timedelta:
    return RECOVERY_HOLD if incident.kind in HELD_KINDS else timedelta(0)
