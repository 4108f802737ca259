"""Map a snapshot to frames and validate one semester partition with pandera, all tables at once.

On top of each model's own rules: every row's ``semester`` is the partition's, a ``term`` column
holds the partition's term code, and each declared reference points at a row of the same
partition (sections → courses, enrollments → courses/sections/users).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

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


def _with_checks(
    schema: pa.DataFrameSchema, extra: dict[str, list[pa.Check]]
) -> pa.DataFrameSchema:
    """``schema`` with ``extra`` checks added to its columns. A shallow copy with new column
    objects where checks are added: the model's cached schema stays as it is, and no deep copy
    per column (a deep copy costs more than the checks)."""
    partition = copy.copy(schema)
    partition.columns = {
        **schema.columns,
        **{
            column: schema.columns[column].update_checks([*schema.columns[column].checks, *checks])
            for column, checks in extra.items()
        },
    }
    return partition


def _row_checks(spec: TableSpec, semester: str, term_code: str | None) -> dict[str, list[pa.Check]]:
    """The partition's checks that look at one row at a time: its semester and term."""
    extra: dict[str, list[pa.Check]] = {
        "semester": [pa.Check(lambda s: s == semester, name=f"semester == {semester!r}")]
    }
    if "term" in spec.model.to_schema().columns:
        extra["term"] = [
            pa.Check(
                (lambda s: s.isna()) if term_code is None else (lambda s: s == term_code),
                name=f"term == {term_code!r}",
            )
        ]
    return extra


def _reference_checks(spec: TableSpec, raw: dict[str, pd.DataFrame]) -> dict[str, list[pa.Check]]:
    return {
        column: [_isin(raw[table]["institution_id"], f"references canvas/{table}")]
        for column, table in spec.references.items()
    }


def _partition_schema(
    spec: TableSpec, semester: str, term_code: str | None, raw: dict[str, pd.DataFrame]
) -> pa.DataFrameSchema:
    """The model's schema plus the checks that depend on the partition being written."""
    extra = _row_checks(spec, semester, term_code)
    for column, checks in _reference_checks(spec, raw).items():
        extra.setdefault(column, []).extend(checks)
    return _with_checks(spec.model.to_schema(), extra)


def chunk_schema(spec: TableSpec, semester: str, term_code: str | None) -> pa.DataFrameSchema:
    """What a chunk of a table's rows can be checked against before the rest of the partition
    is known: every rule of the partition but uniqueness and references (``partition_checks``
    checks those on the whole table's keys)."""
    schema = _with_checks(spec.model.to_schema(), _row_checks(spec, semester, term_code))
    for name, column in schema.columns.items():
        if column.unique:
            schema.columns[name] = copy.copy(column)
            schema.columns[name].unique = False
    return schema


def partition_columns(spec: TableSpec) -> list[str]:
    """The columns ``partition_checks`` needs of every row: the unique ones and references."""
    unique = [name for name, column in spec.model.to_schema().columns.items() if column.unique]
    return list(dict.fromkeys([*unique, *spec.references]))


def partition_checks(spec: TableSpec, raw: dict[str, pd.DataFrame]) -> pa.DataFrameSchema:
    """The rules ``chunk_schema`` leaves out, on the whole table's ``partition_columns``."""
    model = spec.model.to_schema().columns
    references = _reference_checks(spec, raw)
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                model[name].dtype,
                checks=references.get(name, []),
                unique=model[name].unique,
                nullable=True,  # chunk_schema checks nullability, row by row
            )
            for name in partition_columns(spec)
        }
    )


@dataclass
class ChunkedValidation:
    """A table validated chunk by chunk as its rows arrive: each chunk against ``chunk_schema``
    (its rows numbered on from the previous chunks'), then the whole table's
    ``partition_columns`` against ``partition_checks`` once the partition is known."""

    spec: TableSpec
    semester: str
    term_code: str | None
    rows: int = 0
    keys: list[pd.DataFrame] = field(default_factory=list)
    failures: list[pd.DataFrame] = field(default_factory=list)
    failed_ids: list[pd.Series] = field(default_factory=list)  # of the chunks that failed

    def __post_init__(self) -> None:
        self._schema = chunk_schema(self.spec, self.semester, self.term_code)
        self._key_columns = partition_columns(self.spec)

    def validate(self, chunk: pd.DataFrame) -> pd.DataFrame | None:
        """The chunk as validated (coerced), or None when it failed."""
        chunk.index = pd.RangeIndex(self.rows, self.rows + len(chunk))
        self.rows += len(chunk)
        try:
            valid = self._schema.validate(chunk, lazy=True)
        except pa.errors.SchemaErrors as exc:
            self.failures.append(exc.failure_cases)
            self.failed_ids.append(pd.to_numeric(chunk["institution_id"], errors="coerce"))
            return None
        self.keys.append(valid[self._key_columns])
        return valid

    def key_frame(self) -> pd.DataFrame:
        """The ``partition_columns`` of every row that passed its chunk's checks, indexed by
        row number in the table: what ``finish`` checks."""
        if self.keys:
            return pd.concat(self.keys)
        return pd.DataFrame(columns=self._key_columns, dtype="int64")

    def referable_ids(self) -> pd.DataFrame:
        """What other tables' references to this one are checked against: every row's
        ``institution_id``, those of a chunk that failed its own checks too. That chunk is
        reported here; a reference to one of its rows is not dangling, and reporting it as such
        would bury the one failure under a row per reference (every enrollment of a chunk of
        people)."""
        ids = [keys["institution_id"] for keys in self.keys] + self.failed_ids
        return pd.DataFrame({"institution_id": pd.concat(ids) if ids else pd.Series(dtype="int64")})

    def finish(self, raw: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
        """Every failure case of the table, or None when it passed."""
        keys = self.key_frame()
        try:
            partition_checks(self.spec, raw).validate(keys, lazy=True)
        except pa.errors.SchemaErrors as exc:
            self.failures.append(exc.failure_cases)
        return pd.concat(self.failures, ignore_index=True) if self.failures else None


def validate_semester(
    semester: str,
    term_code: str | None,
    raw: dict[str, pd.DataFrame],
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
    chunked: Mapping[str, ChunkedValidation] | None = None,
) -> ValidationReport:
    """Validate every table of one semester partition, collecting all failures (lazy). A table
    in ``chunked`` was validated as its rows arrived: only its partition checks are left, and
    it has no frame in the report."""
    frames: dict[str, pd.DataFrame] = {}
    failures: dict[str, pd.DataFrame] = {}
    chunked = chunked or {}
    for spec in tables:
        if spec.name in chunked:
            cases = chunked[spec.name].finish(raw)
            if cases is not None:
                failures[spec.name] = cases
            continue
        try:
            schema = _partition_schema(spec, semester, term_code, raw)
            frames[spec.name] = schema.validate(raw[spec.name], lazy=True)
        except pa.errors.SchemaErrors as exc:
            failures[spec.name] = exc.failure_cases
    return ValidationReport(frames=frames, failures=failures)
