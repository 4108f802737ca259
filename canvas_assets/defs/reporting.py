"""What runs report to the Dagster UI: materialization metadata and pandera check results."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg
import pandas as pd

from canvas_assets.tables import TableSpec, ValidationReport

KEY_PREFIX = "canvas"
SCHEMA_CHECK = "pandera_schema"


def table_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([KEY_PREFIX, name])


def preview(df: pd.DataFrame, rows: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.md(df.head(rows).astype(str).to_markdown(index=False))


def check_results(
    tables: Sequence[TableSpec], report: ValidationReport, raw: dict[str, pd.DataFrame]
) -> Iterator[dg.AssetCheckResult]:
    """One ``pandera_schema`` result per table."""
    for spec in tables:
        yield dg.AssetCheckResult(
            asset_key=table_key(spec.name),
            check_name=SCHEMA_CHECK,
            passed=spec.name not in report.failures,
            metadata={
                "failed_checks": ", ".join(report.failed_checks(spec.name)) or "none",
                "rows_checked": len(raw.get(spec.name, ())),
            },
        )


def check_specs(tables: Sequence[TableSpec]) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            SCHEMA_CHECK,
            asset=table_key(spec.name),
            description=f"pandera {spec.model.__name__}: dtypes, required columns, unique ids, "
            "allowed states, ranges, dates, partition match and references.",
        )
        for spec in tables
    ]
