"""What runs show in the Dagster UI, derived from the table registry: column schemas, table names,
materialization metadata and previews."""

import dagster as dg
import pandas as pd

from canvas_assets.canvas.limiter import CanvasStats
from canvas_assets.tables import TableSpec
from canvas_assets.tables.columns import BOOKKEEPING_COLUMNS, columns, sql_type
from canvas_assets.warehouse import WriteCounts

PARTITIONING = (
    "Partitioned by semester: one partition per Canvas enrollment term (key: the term's SIS id, "
    "or `term-<id>`). A backfill replaces a partition's rows; Live Events apply runs update the "
    "courses they name; rows Canvas no longer returns keep their values and get deleted_at."
)


def column_schema(spec: TableSpec) -> dg.TableSchema:
    """The warehouse table's columns: PostgreSQL types and what each holds (Element451 field)."""
    fields = spec.model.to_schema().columns
    shown = [
        dg.TableColumn(name, sql_type(spec.model, name), description=fields[name].description)
        for name in columns(spec.model)
    ]
    shown += [
        dg.TableColumn(name, kind, description=doc)
        for name, (kind, doc) in BOOKKEEPING_COLUMNS.items()
    ]
    return dg.TableSchema(columns=shown)


def definition_metadata(spec: TableSpec, schema: str) -> dict[str, object]:
    return {
        "dagster/column_schema": column_schema(spec),
        "dagster/table_name": f"{schema}.{spec.name}",
    }


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    """The first rows as a markdown table; missing values are blank, not 'nan'."""
    head = df.head(rows).astype(object)
    return dg.MetadataValue.md(head.where(head.notna(), "").to_markdown(index=False))


def write_metadata(counts: WriteCounts, active_rows: int) -> dict[str, object]:
    """A write's own counts, and the partition's rows once it committed."""
    return {
        "dagster/row_count": active_rows,
        "rows_written": counts.rows,
        "rows_inserted": counts.inserted,
        "rows_updated": counts.updated,
        "rows_removed": counts.removed,
    }


def request_metadata(spec: TableSpec, stats: CanvasStats) -> dict[str, int]:
    """Canvas requests that read this table's objects, and the run's total."""
    return {
        "canvas_requests": stats.requests_for(spec.request_paths),
        "canvas_requests_run_total": stats.requests,
    }


ERROR_SHOWN = 120  # characters of an error's first line on the card (it stays readable)

IMPORTED_SEMESTERS_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("semester", "string"),
        dg.TableColumn(
            "status", "string", description="added, syncing, synced, failed or not targeted"
        ),
        dg.TableColumn("added", "string"),
        dg.TableColumn("started", "string", description="when the last sync started"),
        dg.TableColumn("synced", "string", description="when the last sync completed"),
        dg.TableColumn(
            "error", "string", description="the last error's first line (the run has it all)"
        ),
    ]
)


def _stamp(moment: object) -> str:
    return moment.strftime("%m-%d %H:%M") if moment is not None else ""


def _error_line(error: str | None) -> str:
    line = (error or "").strip().splitlines()[0] if (error or "").strip() else ""
    return line if len(line) <= ERROR_SHOWN else line[: ERROR_SHOWN - 1] + "…"


def imported_semesters(key: dg.AssetKey, rows: list[dict]) -> dg.AssetMaterialization:
    """The Imported Semesters card as a table on its asset, refreshed after each change (times
    in UTC)."""
    records = [
        dg.TableRecord(
            {
                "semester": row["semester"],
                "status": row["status"],
                "added": _stamp(row["added_at"]),
                "started": _stamp(row["started_at"]),
                "synced": _stamp(row["last_sync_completed_at"]),
                "error": _error_line(row["last_error"]),
            }
        )
        for row in rows
    ]
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    return dg.AssetMaterialization(
        key,
        metadata={
            "imported_semesters": dg.MetadataValue.table(records, IMPORTED_SEMESTERS_SCHEMA),
            "dagster/row_count": len(rows),
            **{
                f"semesters_{status.replace(' ', '_')}": count
                for status, count in sorted(by_status.items())
            },
        },
    )
