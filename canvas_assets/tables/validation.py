"""Map a snapshot to frames and validate one semester partition with pandera, all tables at once.

On top of each model's own rules: every row's ``semester`` is the partition's, a ``term`` column
holds the partition's term code, and each declared reference points at a row of the same
partition (sections → courses, enrollments → courses/sections/users).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

from canvas_assets.tables.columns import frame
from canvas_assets.tables.registry import SEMESTER_TABLES
from canvas_assets.tables.spec import SemesterSnapshot, TableSpec


def semester_frames(
    snapshot: SemesterSnapshot, tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> dict[str, pd.DataFrame]:
    """The snapshot's rows for each table, as frames with the model's columns."""
    return {spec.name: frame(spec.model, spec.rows(snapshot)) for spec in tables if spec.rows}


@dataclass
class ValidationReport:
    """Outcome of validating one semester's frames."""

    frames: dict[str, pd.DataFrame]
    failures: dict[str, pd.DataFrame]

    @property
    def ok(self) -> bool:
        return not self.failures

    def failed_checks(self, table: str) -> list[str]:
        cases = self.failures.get(table)
        if cases is None:
            return []
        names = cases.apply(lambda r: f"{r['column'] or 'frame'}: {r['check']}", axis=1)
        return sorted(set(names))

    def message(self, semester: str, max_rows: int = 5) -> str:
        lines = [f"Semester {semester} failed validation; nothing was written."]
        for table, cases in self.failures.items():
            lines.append(f"- {table}: {', '.join(self.failed_checks(table))}")
            for _, case in cases.head(max_rows).iterrows():
                lines.append(
                    f"    row {case['index']}: {case['column'] or 'frame'} = "
                    f"{case['failure_case']!r} fails {case['check']}"
                )
        return "\n".join(lines)


def _isin(values: pd.Series, name: str) -> pa.Check:
    allowed = set(values.dropna().astype("int64").tolist())
    return pa.Check(lambda s: s.isin(allowed), element_wise=False, name=name)


def _partition_schema(
    spec: TableSpec, semester: str, term_code: str | None, raw: dict[str, pd.DataFrame]
) -> pa.DataFrameSchema:
    """The model's schema plus the checks that depend on the partition being written."""
    extra: dict[str, list[pa.Check]] = {
        "semester": [pa.Check(lambda s: s == semester, name=f"semester == {semester!r}")]
    }
    schema = spec.model.to_schema()
    if "term" in schema.columns:
        extra["term"] = [
            pa.Check(
                (lambda s: s.isna()) if term_code is None else (lambda s: s == term_code),
                name=f"term == {term_code!r}",
            )
        ]
    for column, table in spec.references.items():
        extra.setdefault(column, []).append(
            _isin(raw[table]["institution_id"], f"references canvas/{table}")
        )
    # A shallow copy with new column objects where checks are added: the model's cached schema
    # stays as it is, and no deep copy per column (a deep copy costs more than the checks).
    partition = copy.copy(schema)
    partition.columns = {
        **schema.columns,
        **{
            column: schema.columns[column].update_checks([*schema.columns[column].checks, *checks])
            for column, checks in extra.items()
        },
    }
    return partition


def validate_semester(
    semester: str,
    term_code: str | None,
    raw: dict[str, pd.DataFrame],
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> ValidationReport:
    """Validate every table of one semester partition, collecting all failures (lazy)."""
    frames: dict[str, pd.DataFrame] = {}
    failures: dict[str, pd.DataFrame] = {}
    for spec in tables:
        try:
            schema = _partition_schema(spec, semester, term_code, raw)
            frames[spec.name] = schema.validate(raw[spec.name], lazy=True)
        except pa.errors.SchemaErrors as exc:
            failures[spec.name] = exc.failure_cases
    return ValidationReport(frames=frames, failures=failures)
