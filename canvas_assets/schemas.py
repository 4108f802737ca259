"""pandera models of the warehouse tables: what a frame must satisfy before it is written.

Column-level rules live on the models; rules that depend on the partition being written (the
semester and its term code) or on the other tables of the same partition (sections → courses,
enrollments → sections/courses/users) are added by ``validate_semester`` at run time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

# Canvas's API says "unpublished" for created/claimed courses; the raw states are accepted too.
COURSE_STATES = ["unpublished", "created", "claimed", "available", "completed", "deleted"]
ENROLLMENT_STATES = [
    "active",
    "invited",
    "creation_pending",
    "completed",
    "inactive",
    "rejected",
    "deleted",
]
ENROLLMENT_TYPES = [
    "StudentEnrollment",
    "TeacherEnrollment",
    "TaEnrollment",
    "DesignerEnrollment",
    "ObserverEnrollment",
    "StudentViewEnrollment",
]
TERM_STATES = ["active", "deleted"]

_UTC = {"unit": "us", "tz": "UTC"}


def _ends_after_start(df: pd.DataFrame, start: str, end: str) -> pd.Series:
    return df[start].isna() | df[end].isna() | (df[end] >= df[start])


class _Strict(pa.DataFrameModel):
    class Config:
        coerce = True
        strict = True


class TermFrame(_Strict):
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    code: Series[str] = pa.Field(nullable=True)
    name: Series[str]
    start_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    end_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    status: Series[str] = pa.Field(isin=TERM_STATES)
    semester: Series[str] = pa.Field(unique=True)

    @pa.dataframe_check(name="end_at >= start_at")
    def term_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_at", "end_at")


class CourseFrame(_Strict):
    semester: Series[str]
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    name: Series[str]
    description: Series[str] = pa.Field(nullable=True)
    code: Series[str] = pa.Field(nullable=True)
    total_students: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    departments: Series[str]
    status: Series[str] = pa.Field(isin=COURSE_STATES)
    type: Series[str] = pa.Field(nullable=True)
    term: Series[str] = pa.Field(nullable=True)
    timezone: Series[str] = pa.Field(nullable=True)
    account_id: Series[pd.Int64Dtype] = pa.Field(nullable=True, gt=0)
    sis_course_id: Series[str] = pa.Field(nullable=True)
    start_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    end_at: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)

    @pa.dataframe_check(name="end_at >= start_at")
    def course_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_at", "end_at")


class SectionFrame(_Strict):
    semester: Series[str]
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    course_id: Series[int] = pa.Field(gt=0)
    name: Series[str]
    code: Series[str] = pa.Field(nullable=True)
    status: Series[str] = pa.Field(nullable=True, isin=COURSE_STATES)
    instruction_mode: Series[str] = pa.Field(nullable=True)
    term: Series[str] = pa.Field(nullable=True)
    school: Series[str] = pa.Field(nullable=True)
    instructor: Series[str] = pa.Field(nullable=True)
    instructor_email: Series[str] = pa.Field(nullable=True)
    current_enrollments: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)
    timezone: Series[str] = pa.Field(nullable=True)
    start_date: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    end_date: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    sis_section_id: Series[str] = pa.Field(nullable=True)

    @pa.dataframe_check(name="end_date >= start_date")
    def section_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_date", "end_date")


class EnrollmentFrame(_Strict):
    semester: Series[str]
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    course_id: Series[int] = pa.Field(gt=0)
    section_id: Series[int] = pa.Field(gt=0)
    user_id: Series[int] = pa.Field(gt=0)
    role: Series[str] = pa.Field(isin=ENROLLMENT_TYPES)
    enrollment_status: Series[str] = pa.Field(isin=ENROLLMENT_STATES)
    current_grade_text: Series[str] = pa.Field(nullable=True)
    current_grade_number: Series[float] = pa.Field(nullable=True, ge=0)
    final_grade_text: Series[str] = pa.Field(nullable=True)
    final_grade_number: Series[float] = pa.Field(nullable=True, ge=0)
    last_lms_activity: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    last_attended_date: Series[pd.DatetimeTZDtype] = pa.Field(nullable=True, dtype_kwargs=_UTC)
    total_active_time: Series[pd.Int64Dtype] = pa.Field(nullable=True, ge=0)


class UserFrame(_Strict):
    semester: Series[str]
    institution_id: Series[int] = pa.Field(unique=True, gt=0)
    first_name: Series[str] = pa.Field(nullable=True)
    last_name: Series[str] = pa.Field(nullable=True)
    preferred_name: Series[str] = pa.Field(nullable=True)
    email: Series[str] = pa.Field(nullable=True)
    sis_user_id: Series[str] = pa.Field(nullable=True)
    login_id: Series[str] = pa.Field(nullable=True)
    source_type: Series[str] = pa.Field(isin=["LMS"])
    source_name: Series[str] = pa.Field(isin=["Canvas"])
    source_date: Series[object] = pa.Field(nullable=True)


TABLE_MODELS: dict[str, type[_Strict]] = {
    "courses": CourseFrame,
    "sections": SectionFrame,
    "enrollments": EnrollmentFrame,
    "users": UserFrame,
}


def columns(model: type[_Strict]) -> list[str]:
    return list(model.to_schema().columns)


def frame(model: type[_Strict], rows: list[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the model's columns, in order (empty frames too)."""
    return pd.DataFrame.from_records(rows, columns=columns(model))


@dataclass
class ValidationReport:
    """Outcome of validating one semester's four frames."""

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


def validate_semester(
    semester: str, term_code: str | None, raw: dict[str, pd.DataFrame]
) -> ValidationReport:
    """Validate every table of one semester partition, collecting all failures (lazy)."""
    semester_check = pa.Check(lambda s: s == semester, name=f"semester == {semester!r}")
    term_check = pa.Check(
        (lambda s: s.isna()) if term_code is None else (lambda s: s == term_code),
        name=f"term == {term_code!r}",
    )
    courses, sections, users = raw["courses"], raw["sections"], raw["users"]
    extra: dict[str, dict[str, list[pa.Check]]] = {
        "courses": {"term": [term_check]},
        "sections": {
            "term": [term_check],
            "course_id": [_isin(courses["institution_id"], "references canvas/courses")],
        },
        "enrollments": {
            "course_id": [_isin(courses["institution_id"], "references canvas/courses")],
            "section_id": [_isin(sections["institution_id"], "references canvas/sections")],
            "user_id": [_isin(users["institution_id"], "references canvas/users")],
        },
        "users": {},
    }
    frames: dict[str, pd.DataFrame] = {}
    failures: dict[str, pd.DataFrame] = {}
    for table, model in TABLE_MODELS.items():
        schema = model.to_schema()
        updates = {"semester": [semester_check], **extra[table]}
        for column, checks in updates.items():
            schema = schema.update_column(column, checks=[*schema.columns[column].checks, *checks])
        try:
            frames[table] = schema.validate(raw[table], lazy=True)
        except pa.errors.SchemaErrors as exc:
            failures[table] = exc.failure_cases
    return ValidationReport(frames=frames, failures=failures)
