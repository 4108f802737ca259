"""Asset checks: pandera per table and partition (blocking: a failure writes nothing), and the
health of the Live Events stream (lag, quarantine growth, a stalled stream)."""

import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd

from canvas_assets.defs.namespace import Namespace
from canvas_assets.defs.resources import institution_resource
from canvas_assets.live_events import store
from canvas_assets.live_events.health import StreamHealth, stream_health
from canvas_assets.settings import Settings
from canvas_assets.tables import TableSpec, ValidationReport

SCHEMA_CHECK = "pandera_schema"
LAG_CHECK = "lag"
QUARANTINE_CHECK = "quarantine_growth"
STALL_CHECK = "stream_flowing"
UNKNOWN_CHECK = "unknown_institutions"
FAILING_ROWS_SHOWN = 10
# The shared queue of a vendor's deployment: what belongs to no institution is checked here.
SHARED_QUEUE_KEY = dg.AssetKey(["canvas_shared", "live_events_queue"])


def pandera_check_specs(
    namespace: Namespace, tables: Sequence[TableSpec]
) -> list[dg.AssetCheckSpec]:
    """Partitioned like their assets, so each semester has its own result (Dagster 1.13 calls
    partitioned checks a preview; the warning is known and silenced here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [_pandera_spec(namespace, spec) for spec in tables]


def _pandera_spec(namespace: Namespace, spec: TableSpec) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        SCHEMA_CHECK,
        asset=namespace.key(spec.name),
        description=f"pandera {spec.model.__name__}: dtypes, required columns, unique ids, "
        "allowed states, ranges, dates, partition match and references. Blocking: a "
        "semester that fails writes nothing.",
        blocking=True,
        partitions_def=namespace.partitions,
    )


def failing_rows(cases: pd.DataFrame) -> dg.MetadataValue:
    """The first failure cases as a markdown table: row, column, value, check."""
    shown = cases.head(FAILING_ROWS_SHOWN)
    table = pd.DataFrame(
        {
            "row": shown["index"].astype(object).where(shown["index"].notna(), ""),
            "column": shown["column"].fillna("(frame)"),
            "value": shown["failure_case"].astype(str),
            "check": shown["check"].astype(str),
        }
    )
    return dg.MetadataValue.md(table.to_markdown(index=False))


def pandera_evaluations(
    namespace: Namespace,
    tables: Sequence[TableSpec],
    report: ValidationReport,
    rows_checked: dict[str, int],
    semester: str,
    covered: str,
) -> Iterator[dg.AssetCheckEvaluation]:
    """One ``pandera_schema`` evaluation per table, for the semester's partition. ``covered``
    says what the rows checked were (the whole semester, or the courses an apply re-read), so
    an apply's handful of rows never reads as a broken check of the partition."""
    for spec in tables:
        rows = rows_checked.get(spec.name, 0)
        metadata: dict[str, object] = {
            "rows_checked": rows,
            "covered": covered,
            "failed_checks": ", ".join(report.failed_checks(spec.name)) or "none",
        }
        if spec.name in report.failures:
            metadata["failing_rows"] = failing_rows(report.failures[spec.name])
            metadata["failure_cases"] = len(report.failures[spec.name])
        yield dg.AssetCheckEvaluation(
            asset_key=namespace.key(spec.name),
            check_name=SCHEMA_CHECK,
            passed=spec.name not in report.failures,
            metadata=metadata,
            description=f"{rows} row{'' if rows == 1 else 's'} checked: {covered}",
            blocking=True,
            partition=semester,
        )


def as_check_result(evaluation: dg.AssetCheckEvaluation) -> dg.AssetCheckResult:
    """The same outcome, as an asset function yields it (Dagster adds the partition)."""
    return dg.AssetCheckResult(
        asset_key=evaluation.asset_key,
        check_name=evaluation.check_name,
        passed=evaluation.passed,
        metadata=dict(evaluation.metadata),
        severity=evaluation.severity,
        description=evaluation.description,
    )


def stream_check_specs(namespace: Namespace, settings: Settings) -> list[dg.AssetCheckSpec]:
    key = namespace.key("live_events")
    return [
        dg.AssetCheckSpec(
            LAG_CHECK,
            asset=key,
            description="The oldest landed event waiting to be applied is at most "
            f"{settings.live_events_max_lag_seconds} s old (CANVAS_LIVE_EVENTS_MAX_LAG_SECONDS).",
        ),
        dg.AssetCheckSpec(
            QUARANTINE_CHECK,
            asset=key,
            description="No message was quarantined in the last hour (table "
            "live_event_quarantine holds each one with its reason).",
        ),
        dg.AssetCheckSpec(
            STALL_CHECK,
            asset=key,
            description="A message arrived within the last "
            f"{settings.live_events_stall_seconds} s (CANVAS_LIVE_EVENTS_STALL_SECONDS); "
            "Canvas may have stopped publishing, or the stream points elsewhere.",
        ),
    ]


def stream_evaluations(
    namespace: Namespace, settings: Settings, health: StreamHealth
) -> list[dg.AssetCheckEvaluation]:
    key = namespace.key("live_events")
    lag, stall = health.oldest_pending_seconds, health.since_last_message_seconds
    return [
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=LAG_CHECK,
            passed=lag is None or lag <= settings.live_events_max_lag_seconds,
            metadata={"oldest_pending_seconds": lag or 0, "pending": health.pending},
            severity=dg.AssetCheckSeverity.WARN,
        ),
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=QUARANTINE_CHECK,
            passed=health.quarantined_last_hour == 0,
            metadata={
                "quarantined_last_hour": health.quarantined_last_hour,
                "quarantined_total": health.quarantined_total,
            },
            severity=dg.AssetCheckSeverity.WARN,
        ),
        dg.AssetCheckEvaluation(
            asset_key=key,
            check_name=STALL_CHECK,
            passed=stall is not None and stall <= settings.live_events_stall_seconds,
            metadata={"seconds_since_last_message": stall if stall is not None else -1},
            severity=dg.AssetCheckSeverity.WARN,
        ),
    ]


def build_stream_checks(namespace: Namespace, settings: Settings) -> dg.AssetChecksDefinition:
    """The stream checks as a runnable definition (the sensor also reports them each tick)."""

    @dg.multi_asset_check(
        specs=stream_check_specs(namespace, settings),
        name=f"{namespace.group}_live_events_health",
        required_resource_keys={namespace.resource_key("warehouse")},
    )
    def live_events_health(context: dg.AssetCheckExecutionContext):
        warehouse = institution_resource(context.resources, namespace, "warehouse")
        with warehouse.connect() as conn:
            health = stream_health(conn, warehouse.table_schema(), datetime.now().astimezone())
        for evaluation in stream_evaluations(namespace, settings, health):
            yield as_check_result(evaluation)

    return live_events_health


def shared_queue_spec() -> dg.AssetSpec:
    return dg.AssetSpec(
        SHARED_QUEUE_KEY,
        description="The shared Live Events queue (CANVAS_LIVE_EVENTS_QUEUE_URL) every partner "
        "institution's Canvas publishes to. Its messages land in the institution whose root "
        "account uuid they name; those of no declared institution, or naming none, are kept in "
        "the shared schema's live_event_quarantine (CANVAS_SHARED_SCHEMA) and replayed into "
        "an institution once it is declared.",
        group_name="canvas_shared",
        kinds={"sqs", "postgres"},
    )


def build_shared_queue_checks(warehouse_key: str) -> dg.AssetChecksDefinition:
    """The shared queue's checks as a runnable definition (the sensor reports them too)."""

    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                UNKNOWN_CHECK,
                asset=SHARED_QUEUE_KEY,
                description="No message waits for an institution that is not declared in "
                "CANVAS_INSTITUTIONS_FILE (its metadata lists the uuids and counts).",
            ),
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=SHARED_QUEUE_KEY,
                description="No message of the shared queue was quarantined in the last hour.",
            ),
        ],
        name="shared_live_events_queue_health",
        required_resource_keys={warehouse_key},
    )
    def shared_queue_health(context: dg.AssetCheckExecutionContext):
        warehouse = getattr(context.resources, warehouse_key)
        schema, since = warehouse.table_schema(), datetime.now(UTC) - timedelta(hours=1)
        with warehouse.connect() as conn:
            unknown = store.unknown_institutions(conn, schema)
            recent = store.quarantined_since(conn, schema, since)
        for evaluation in shared_queue_evaluations(unknown, recent):
            yield as_check_result(evaluation)

    return shared_queue_health


def shared_queue_evaluations(
    unknown: dict[str, int], quarantined_last_hour: int
) -> list[dg.AssetCheckEvaluation]:
    """The shared queue's checks: messages waiting for undeclared institutions, quarantine."""
    waiting = {f"unknown institution {uuid}": count for uuid, count in sorted(unknown.items())}
    return [
        dg.AssetCheckEvaluation(
            asset_key=SHARED_QUEUE_KEY,
            check_name=UNKNOWN_CHECK,
            passed=not unknown,
            metadata={"messages_waiting": sum(unknown.values()), **waiting},
            severity=dg.AssetCheckSeverity.WARN,
        ),
        dg.AssetCheckEvaluation(
            asset_key=SHARED_QUEUE_KEY,
            check_name=QUARANTINE_CHECK,
            passed=quarantined_last_hour == 0,
            metadata={"quarantined_last_hour": quarantined_last_hour},
            severity=dg.AssetCheckSeverity.WARN,
        ),
    ]
