"""pandera models of the warehouse tables: what a frame must satisfy before it is written.

Each field's ``description`` documents the column: the Element451 field it maps and the Canvas
field it comes from. Rules that depend on the partition being written (the semester and its term
code) or on the other tables of the same partition (references) are added at run time by
``tables.validation`` from the registry's declarations.
"""

from __future__ import annotations

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
# The PostgreSQL type where it is not the one its pandas dtype implies (see sql_type).
INTEGER = {"sql_type": "integer"}
SEMESTER_DOC = "Partition key: the term's SIS id, or `term-<Canvas id>` for a term without one."


def _ends_after_start(df: pd.DataFrame, start: str, end: str) -> pd.Series:
    return df[start].isna() | df[end].isna() | (df[end] >= df[start])


class Strict(pa.DataFrameModel):
    class Config:
        coerce = True
        strict = True


class TermFrame(Strict):
    institution_id: Series[int] = pa.Field(
        unique=True, gt=0, description="Canvas enrollment term id."
    )
    code: Series[str] = pa.Field(
        nullable=True, description="Term code: Canvas sis_term_id (Element451 matches terms on it)."
    )
    name: Series[str] = pa.Field(description="Term name (Canvas name).")
    start_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=_UTC, description="Term start (Canvas start_at)."
    )
    end_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=_UTC, description="Term end (Canvas end_at)."
    )
    status: Series[str] = pa.Field(isin=TERM_STATES, description="Canvas workflow_state.")
    semester: Series[str] = pa.Field(unique=True, description=SEMESTER_DOC)

    @pa.dataframe_check(name="end_at >= start_at")
    def term_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_at", "end_at")


class CourseFrame(Strict):
    semester: Series[str] = pa.Field(description=SEMESTER_DOC)
    institution_id: Series[int] = pa.Field(
        unique=True, gt=0, description="Element451 Institution ID: Canvas course id."
    )
    name: Series[str] = pa.Field(description="Element451 Name: Canvas course name.")
    description: Series[str] = pa.Field(
        nullable=True, description="Element451 Description: Canvas public_description."
    )
    code: Series[str] = pa.Field(nullable=True, description="Element451 Code: Canvas course_code.")
    total_students: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Element451 Total Students: Canvas total_students.",
        metadata=INTEGER,
    )
    departments: Series[str] = pa.Field(
        description="Element451 Departments: JSON list of {institution_id, name} of the course's "
        "Canvas account (account->id, account->name).",
        metadata={"sql_type": "jsonb"},
    )
    status: Series[str] = pa.Field(
        isin=COURSE_STATES, description="Element451 Status: Canvas workflow_state."
    )
    type: Series[str] = pa.Field(
        nullable=True, description="Element451 Type: Canvas course_format."
    )
    term: Series[str] = pa.Field(
        nullable=True, description="Element451 Term: Canvas term->sis_term_id."
    )
    timezone: Series[str] = pa.Field(
        nullable=True, description="Element451 Timezone: Canvas time_zone."
    )
    account_id: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, gt=0, description="Canvas account (sub-account) id of the course."
    )
    sis_course_id: Series[str] = pa.Field(nullable=True, description="Canvas sis_course_id.")
    start_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=_UTC, description="Course start (Canvas start_at)."
    )
    end_at: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True, dtype_kwargs=_UTC, description="Course end (Canvas end_at)."
    )

    @pa.dataframe_check(name="end_at >= start_at")
    def course_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_at", "end_at")


class SectionFrame(Strict):
    semester: Series[str] = pa.Field(description=SEMESTER_DOC)
    institution_id: Series[int] = pa.Field(
        unique=True, gt=0, description="Element451 Institution ID: Canvas section id."
    )
    course_id: Series[int] = pa.Field(gt=0, description="Canvas course id of the section.")
    name: Series[str] = pa.Field(description="Canvas section name.")
    code: Series[str] = pa.Field(nullable=True, description="Element451 Code: course course_code.")
    status: Series[str] = pa.Field(
        nullable=True, isin=COURSE_STATES, description="Element451 Status: course workflow_state."
    )
    instruction_mode: Series[str] = pa.Field(
        nullable=True, description="Element451 Instruction Mode: course course_format."
    )
    term: Series[str] = pa.Field(
        nullable=True, description="Element451 Term: course term->sis_term_id."
    )
    school: Series[str] = pa.Field(
        nullable=True, description="Element451 School: course account->name."
    )
    instructor: Series[str] = pa.Field(
        nullable=True,
        description="Element451 Instructor: first_name + last_name of the section's teachers, "
        "comma-separated.",
    )
    instructor_email: Series[str] = pa.Field(
        nullable=True, description="Element451 Instructor Email: the teachers' emails, same order."
    )
    current_enrollments: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Element451 Current Enrollments: the section's own active/invited students "
        "(Canvas total_students).",
        metadata=INTEGER,
    )
    timezone: Series[str] = pa.Field(
        nullable=True, description="Element451 Timezone: course time_zone."
    )
    start_date: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True,
        dtype_kwargs=_UTC,
        description="Element451 Start Date: section start_at, else course start_at.",
    )
    end_date: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True,
        dtype_kwargs=_UTC,
        description="Element451 End Date: section end_at, else course end_at.",
    )
    sis_section_id: Series[str] = pa.Field(nullable=True, description="Canvas sis_section_id.")

    @pa.dataframe_check(name="end_date >= start_date")
    def section_ends_after_start(cls, df: pd.DataFrame) -> pd.Series:
        return _ends_after_start(df, "start_date", "end_date")


class EnrollmentFrame(Strict):
    semester: Series[str] = pa.Field(description=SEMESTER_DOC)
    institution_id: Series[int] = pa.Field(
        unique=True, gt=0, description="Element451 Institution ID: Canvas enrollment id."
    )
    course_id: Series[int] = pa.Field(gt=0, description="Canvas course id.")
    section_id: Series[int] = pa.Field(gt=0, description="Canvas course_section_id.")
    user_id: Series[int] = pa.Field(gt=0, description="Canvas user id (users.institution_id).")
    role: Series[str] = pa.Field(
        isin=ENROLLMENT_TYPES, description="Enrollment type (Canvas type), e.g. StudentEnrollment."
    )
    enrollment_status: Series[str] = pa.Field(
        isin=ENROLLMENT_STATES,
        description="Element451 Enrollment Status: Canvas enrollment_state.",
    )
    current_grade_text: Series[str] = pa.Field(
        nullable=True, description="Element451 Current Grade (Text): grades->current_grade."
    )
    current_grade_number: Series[float] = pa.Field(
        nullable=True, ge=0, description="Element451 Current Grade (Number): grades->current_score."
    )
    final_grade_text: Series[str] = pa.Field(
        nullable=True, description="Element451 Final Grade (Text): grades->final_grade."
    )
    final_grade_number: Series[float] = pa.Field(
        nullable=True, ge=0, description="Element451 Final Grade (Number): grades->final_score."
    )
    last_lms_activity: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True,
        dtype_kwargs=_UTC,
        description="Element451 Last LMS Activity: Canvas last_activity_at.",
    )
    last_attended_date: Series[pd.DatetimeTZDtype] = pa.Field(
        nullable=True,
        dtype_kwargs=_UTC,
        description="Element451 Last Attended Date: Canvas last_attended_at.",
    )
    total_active_time: Series[pd.Int64Dtype] = pa.Field(
        nullable=True,
        ge=0,
        description="Element451 Total Active Time: Canvas total_activity_time, in seconds.",
    )


class UserFrame(Strict):
    semester: Series[str] = pa.Field(description=SEMESTER_DOC)
    institution_id: Series[int] = pa.Field(
        unique=True, gt=0, description="Canvas user id (Element451 user-identities-canvasid)."
    )
    first_name: Series[str] = pa.Field(
        nullable=True, description="Element451 user-first-name: Canvas first_name."
    )
    last_name: Series[str] = pa.Field(
        nullable=True, description="Element451 user-last-name: Canvas last_name."
    )
    preferred_name: Series[str] = pa.Field(
        nullable=True, description="Element451 user-preferred-name: Canvas short_name."
    )
    email: Series[str] = pa.Field(
        nullable=True, description="Element451 user-email-address: Canvas email."
    )
    sis_user_id: Series[str] = pa.Field(nullable=True, description="Canvas sis_user_id.")
    login_id: Series[str] = pa.Field(nullable=True, description="Canvas login_id.")
    source_type: Series[str] = pa.Field(
        isin=["LMS"], description="Element451 user-sources-source-type: always LMS."
    )
    source_name: Series[str] = pa.Field(
        isin=["Canvas"], description="Element451 user-sources-source-name: always Canvas."
    )
    source_date: Series[object] = pa.Field(
        nullable=True,
        description="Element451 user-sources-source-date: the date the user was created in "
        "Canvas (stable across re-syncs).",
        metadata={"sql_type": "date"},
    )
