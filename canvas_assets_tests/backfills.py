"""Running semester backfills in-process, as Dagster runs them, and reading what they left: the
helpers the backfill, fault, Live Events and UI tests share."""

from datetime import datetime

import dagster as dg
import pandas as pd
import psycopg
from psycopg import sql

from canvas_assets.canvas import CanvasResource
from canvas_assets.defs.assets import build_semester_tables, build_terms_asset
from canvas_assets.defs.namespace import Namespace
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.writes import (
    WriteCounts,
    analyze_tables,
    try_lock_semester,
    write_tables,
)

from .truth import semester_of

SETTINGS = Settings()
# The single institution of the CANVAS_* settings: plain names (canvas/courses, semester).
NAMESPACE = Namespace(SETTINGS.institutions[0])
semester_tables = build_semester_tables(SETTINGS, NAMESPACE)
terms = build_terms_asset(SETTINGS, NAMESPACE)


def real_semesters(institution) -> list[str]:
    return [semester_of(t) for t in institution.terms.values() if t["sis_term_id"]]


def backfill(
    canvas: CanvasResource,
    warehouse: WarehouseResource,
    instance: dg.DagsterInstance,
    semester: str,
) -> dg.ExecuteInProcessResult:
    if not instance.has_dynamic_partition("semester", semester):
        instance.add_dynamic_partitions("semester", [semester])
    return dg.materialize(
        [semester_tables],
        partition_key=semester,
        resources={"canvas": canvas, "warehouse": warehouse},
        instance=instance,
        raise_on_error=False,
    )


def materialization_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict:
    events = [e for e in result.get_asset_materialization_events() if e.asset_key == key]
    assert events, f"no materialization for {key}"
    return {k: v.value for k, v in events[-1].materialization.metadata.items()}


def table_snapshot(conn: psycopg.Connection, schema: str) -> dict[str, list[tuple]]:
    snapshot = {}
    for table in ("courses", "sections", "enrollments", "users"):
        query = sql.SQL("SELECT * FROM {}.{} ORDER BY semester, institution_id").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        snapshot[table] = conn.execute(query).fetchall()
    return snapshot


def write_semester(
    conn: psycopg.Connection,
    schema: str,
    semester: str,
    frames: dict[str, pd.DataFrame],
    observed_at: datetime,
) -> dict[str, WriteCounts]:
    """A semester's write as a backfill makes it, without the fetch: one transaction under the
    semester's lock, then the statistics."""
    with conn.transaction():
        assert try_lock_semester(conn, schema, semester)
        counts = write_tables(conn, schema, semester, frames, observed_at, SEMESTER_TABLES)
    analyze_tables(conn, schema, SEMESTER_TABLES)
    return counts
