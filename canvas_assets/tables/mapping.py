"""Canvas REST JSON → warehouse rows, following the Element451 Canvas field mapping.

Section-level values replace the guide's course-level ones where Canvas has them: a section's own
dates (falling back to the course's) and the section's own student count. ``departments`` holds
the course's own account (Canvas's sub-account, used by institutions as the department).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import NamedTuple

import pandas as pd

from canvas_assets.tables.spec import SemesterSnapshot, semester_key

INSTRUCTOR_TYPES = ("TeacherEnrollment",)
# Teachers who still teach the section: an inactive teacher is no longer its instructor.
INSTRUCTOR_STATES = ("active", "invited", "creation_pending", "completed")


def _shared(value: object) -> object:
    """A value repeated across a semester's rows (a role, a state, a letter grade): one string
    object for all of them, not one per row."""
    return sys.intern(value) if isinstance(value, str) else value


class Enrollment(NamedTuple):
    """What the warehouse uses of a Canvas enrollment, kept as a tuple: a large semester holds
    hundreds of thousands of them, and Canvas's JSON carries several times more (URLs, SIS ids,
    dates, roles). The embedded user's sortable name is a fallback for an instructor's name and
    orders the fetch's single GETs of people."""

    id: int
    user_id: int
    course_id: int
    course_section_id: int
    type: str | None
    enrollment_state: str | None
    last_activity_at: str | None
    last_attended_at: str | None
    total_activity_time: int | None
    current_grade: str | None
    current_score: float | None
    final_grade: str | None
    final_score: float | None
    user_sortable_name: str | None

    @classmethod
    def from_canvas(cls, enrollment: dict) -> Enrollment:
        grades = enrollment.get("grades")
        grades = grades if isinstance(grades, dict) else {}
        user = enrollment.get("user")
        user = user if isinstance(user, dict) else {}
        return cls(
            id=enrollment["id"],
            user_id=enrollment["user_id"],
            course_id=enrollment["course_id"],
            course_section_id=enrollment["course_section_id"],
            type=_shared(enrollment.get("type")),
            enrollment_state=_shared(enrollment.get("enrollment_state")),
            last_activity_at=enrollment.get("last_activity_at"),
            last_attended_at=enrollment.get("last_attended_at"),
            total_activity_time=enrollment.get("total_activity_time"),
            current_grade=_shared(grades.get("current_grade")),
            current_score=grades.get("current_score"),
            final_grade=_shared(grades.get("final_grade")),
            final_score=grades.get("final_score"),
            user_sortable_name=user.get("sortable_name"),
        )


def enrolled_people(snapshot: SemesterSnapshot) -> dict[int, str]:
    """The people enrolled, with the name Canvas sorts them by in the account user list."""
    return {int(e.user_id): e.user_sortable_name or "" for e in snapshot.objects("enrollments")}


def _ts(value: object) -> datetime | None:
    """Any ISO-8601 variant or offset, as UTC. ``datetime.fromisoformat`` reads what Canvas
    writes several times faster than ``pd.Timestamp`` (a large semester parses hundreds of
    thousands of these); anything it does not read goes to pandas."""
    if value in (None, ""):
        return None
    try:
        stamp: datetime = datetime.fromisoformat(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        stamp = pd.Timestamp(value).to_pydatetime()
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _int(value: object) -> int | None:
    return None if value is None else int(value)


def person_name(user: dict) -> tuple[str | None, str | None]:
    """First and last name: Canvas's own fields, else split ``sortable_name`` ("Last, First")."""
    first, last = user.get("first_name"), user.get("last_name")
    if first or last:
        return first, last
    sortable = user.get("sortable_name") or ""
    if "," in sortable:
        last_part, first_part = sortable.split(",", 1)
        return first_part.strip() or None, last_part.strip() or None
    name = (user.get("name") or "").strip()
    if " " in name:
        first_part, last_part = name.rsplit(" ", 1)
        return first_part, last_part
    return (name or None), None


def display_name(user: dict) -> str:
    first, last = person_name(user)
    joined = " ".join(part for part in (first, last) if part)
    return joined or user.get("name") or str(user.get("id"))


def term_row(term: dict) -> dict:
    return {
        "institution_id": int(term["id"]),
        "code": term.get("sis_term_id"),
        "name": term.get("name") or "",
        "start_at": _ts(term.get("start_at")),
        "end_at": _ts(term.get("end_at")),
        "status": term.get("workflow_state") or "active",
        "semester": semester_key(term),
    }


def course_rows(snapshot: SemesterSnapshot) -> Iterator[dict]:
    for course in snapshot.courses:
        term = course.get("term") or snapshot.term
        account_id = _int(course.get("account_id"))
        departments = (
            [{"institution_id": account_id, "name": course.get("account_name")}]
            if account_id is not None
            else []
        )
        yield (
            {
                "semester": snapshot.semester,
                "institution_id": int(course["id"]),
                "name": course.get("name") or "",
                "description": course.get("public_description"),
                "code": course.get("course_code"),
                "total_students": _int(course.get("total_students")),
                "departments": json.dumps(departments, ensure_ascii=False),
                "status": course.get("workflow_state"),
                "type": course.get("course_format"),
                "term": term.get("sis_term_id"),
                "timezone": course.get("time_zone"),
                "account_id": account_id,
                "sis_course_id": course.get("sis_course_id"),
                "start_at": _ts(course.get("start_at")),
                "end_at": _ts(course.get("end_at")),
            }
        )


def _instructors(snapshot: SemesterSnapshot) -> dict[int, list[dict]]:
    """Each section's teachers, as users (the embedded name when the person was not read)."""
    instructors: dict[int, list[dict]] = {}
    enrollments: list[Enrollment] = snapshot.objects("enrollments")
    teaching = [
        e
        for e in enrollments
        if e.type in INSTRUCTOR_TYPES and e.enrollment_state in INSTRUCTOR_STATES
    ]  # sorted once filtered: the teachers are a small share of a semester's enrollments
    for enrollment in sorted(teaching, key=lambda e: int(e.id)):
        user_id = int(enrollment.user_id)
        user = snapshot.users.get(user_id) or {
            "id": user_id,
            "sortable_name": enrollment.user_sortable_name,
        }
        section_teachers = instructors.setdefault(int(enrollment.course_section_id), [])
        if all(u.get("id") != user.get("id") for u in section_teachers):
            section_teachers.append(user)
    return instructors


def section_rows(snapshot: SemesterSnapshot) -> Iterator[dict]:
    courses = {int(c["id"]): c for c in snapshot.courses}
    instructors = _instructors(snapshot)
    for section in snapshot.objects("sections"):
        course = courses.get(int(section["course_id"]), {})
        term = course.get("term") or snapshot.term
        teachers = instructors.get(int(section["id"]), [])
        emails = [t.get("email") for t in teachers if t.get("email")]
        yield (
            {
                "semester": snapshot.semester,
                "institution_id": int(section["id"]),
                "course_id": int(section["course_id"]),
                "name": section.get("name") or "",
                "code": course.get("course_code"),
                "status": course.get("workflow_state"),
                "instruction_mode": course.get("course_format"),
                "term": term.get("sis_term_id"),
                "school": course.get("account_name"),
                "instructor": ", ".join(display_name(t) for t in teachers) or None,
                "instructor_email": ", ".join(emails) or None,
                "current_enrollments": _int(section.get("total_students")),
                "timezone": course.get("time_zone"),
                "start_date": _ts(section.get("start_at") or course.get("start_at")),
                "end_date": _ts(section.get("end_at") or course.get("end_at")),
                "sis_section_id": section.get("sis_section_id"),
            }
        )


def enrollment_rows(snapshot: SemesterSnapshot) -> Iterator[dict]:
    enrollment: Enrollment
    for enrollment in snapshot.objects("enrollments"):
        yield {
            "semester": snapshot.semester,
            "institution_id": int(enrollment.id),
            "course_id": int(enrollment.course_id),
            "section_id": int(enrollment.course_section_id),
            "user_id": int(enrollment.user_id),
            "role": enrollment.type,
            "enrollment_status": enrollment.enrollment_state,
            "current_grade_text": enrollment.current_grade,
            "current_grade_number": enrollment.current_score,
            "final_grade_text": enrollment.final_grade,
            "final_grade_number": enrollment.final_score,
            "last_lms_activity": _ts(enrollment.last_activity_at),
            "last_attended_date": _ts(enrollment.last_attended_at),
            "total_active_time": _int(enrollment.total_activity_time),
        }


def user_row(user: dict, semester: str) -> dict:
    first, last = person_name(user)
    created = _ts(user.get("created_at"))
    return {
        "semester": semester,
        "institution_id": int(user["id"]),
        "first_name": first,
        "last_name": last,
        "preferred_name": user.get("short_name"),
        "email": user.get("email"),
        "sis_user_id": user.get("sis_user_id"),
        "login_id": user.get("login_id"),
        "source_type": "LMS",
        "source_name": "Canvas",
        # The date the contact entered the LMS: stable across re-syncs, unlike the sync time.
        "source_date": created.date() if created is not None else None,
    }


def user_rows(snapshot: SemesterSnapshot) -> Iterator[dict]:
    return (user_row(user, snapshot.semester) for _, user in sorted(snapshot.users.items()))
