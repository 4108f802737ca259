"""The table registry: one declaration per warehouse table.

This is the single list of the semester tables. Assets, asset checks, the fetch plan's per-course
reads, validation, backfill writes, Live Events applies and the migrations test all derive from
it. To add a table: declare it here (model in ``tables.models``, mapping in ``tables.mapping``)
and add a migration that creates it (see ARCHITECTURE.md).
"""

from __future__ import annotations

from canvas_assets.tables import mapping
from canvas_assets.tables.models import (
    CourseFrame,
    EnrollmentFrame,
    SectionFrame,
    TermFrame,
    UserFrame,
)
from canvas_assets.tables.spec import PerCourse, TableSpec

# Enrollments in every state but deleted and rejected are kept.
ENROLLMENT_STATES_FETCHED = ("active", "invited", "creation_pending", "completed", "inactive")

TERMS = TableSpec(
    name="terms",
    model=TermFrame,
    key=("institution_id",),
    reads=("/accounts/:id/terms",),
    description="Canvas enrollment terms (semesters) of the institution, including the default "
    "term. Each term's `semester` is the key of its `semester` partition: the SIS term id, or "
    "`term-<id>` for a term without one.",
)

COURSES = TableSpec(
    name="courses",
    model=CourseFrame,
    rows=mapping.course_rows,
    reads=("/accounts/:id/courses", "/courses/:id"),
    course_column="institution_id",
    upstream="terms",
    description="Canvas courses of one semester, mapped to Element451's Course fields: name, "
    "code, departments, status, format, term, time zone and student count.",
)

SECTIONS = TableSpec(
    name="sections",
    model=SectionFrame,
    rows=mapping.section_rows,
    source=PerCourse("/courses/{course_id}/sections", (("include[]", "total_students"),)),
    course_column="course_id",
    references={"course_id": "courses"},
    upstream="courses",
    description="Canvas course sections of one semester, mapped to Element451's Section fields, "
    "with their instructors, the section's own student count and dates.",
)

ENROLLMENTS = TableSpec(
    name="enrollments",
    model=EnrollmentFrame,
    rows=mapping.enrollment_rows,
    source=PerCourse(
        "/courses/{course_id}/enrollments",
        tuple(("state[]", state) for state in ENROLLMENT_STATES_FETCHED),
        keep=mapping.Enrollment.from_canvas,
    ),
    reads=("/accounts/:id/enrollments/:id",),
    course_column="course_id",
    references={"course_id": "courses", "section_id": "sections", "user_id": "users"},
    upstream="sections",
    staged=True,
    description="Every enrollment of one semester (students, teachers, TAs, observers), mapped to "
    "Element451's Enrollment fields: state, current and final grades, LMS activity.",
)

USERS = TableSpec(
    name="users",
    model=UserFrame,
    rows=mapping.user_rows,
    reads=("/accounts/:id/users", "/users/:id"),
    kept_by=("enrollments", "user_id"),
    upstream="enrollments",
    staged=True,
    shared_rows=True,
    description="The people enrolled in one semester, as Element451 student contacts: names, "
    "preferred name, email, SIS and login ids, source LMS/Canvas.",
)

# In lineage order: each references only tables before it, except enrollments → users, which
# validation checks on the whole partition at once.
SEMESTER_TABLES: tuple[TableSpec, ...] = (COURSES, SECTIONS, ENROLLMENTS, USERS)
