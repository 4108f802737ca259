"""What the warehouse must hold for a semester, computed straight from the sandbox's own model.

Deliberately independent of ``canvas_assets.tables.mapping``: it reads the sandbox's records, not
the REST JSON, so a mapping or fetching bug shows up as a difference.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from canvas_sandbox import rename_course as renamed_with_event
from canvas_sandbox import send_envelopes

ACTIVE_STUDENT_STATES = {"active", "invited"}
SYNCED_ENROLLMENT_STATES = {"active", "invited", "creation_pending", "completed", "inactive"}
TEACHING_STATES = {"active", "invited", "creation_pending", "completed"}


def _ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def api_state(course: dict) -> str:
    """Canvas's API shows created and claimed courses as unpublished."""
    state = course["workflow_state"]
    return "unpublished" if state in ("created", "claimed") else state


def semester_of(term: dict) -> str:
    return term["sis_term_id"] or f"term-{term['id']}"


def _first_last(user: dict) -> tuple[str | None, str | None]:
    return user.get("first_name"), user.get("last_name")


def expected_semester(institution, semester: str) -> dict[str, dict[int, dict]]:
    """Rows per table, keyed by institution_id, for the non-deleted objects of ``semester``."""
    term = next(t for t in institution.terms.values() if semester_of(t) == semester)
    courses = {
        cid: c
        for cid, c in institution.courses.items()
        if c["enrollment_term_id"] == term["id"] and c["workflow_state"] != "deleted"
    }
    sections = {
        sid: s
        for sid, s in institution.sections.items()
        if s["course_id"] in courses and s.get("workflow_state", "active") != "deleted"
    }
    enrollments = {
        eid: e
        for eid, e in institution.enrollments.items()
        if e["course_id"] in courses and e["enrollment_state"] in SYNCED_ENROLLMENT_STATES
    }
    users = {e["user_id"]: institution.users[e["user_id"]] for e in enrollments.values()}

    def students(**match) -> int:
        return sum(
            1
            for e in institution.enrollments.values()
            if e["type"] == "StudentEnrollment"
            and e["enrollment_state"] in ACTIVE_STUDENT_STATES
            and all(e[k] == v for k, v in match.items())
        )

    out: dict[str, dict[int, dict]] = {
        "courses": {},
        "sections": {},
        "enrollments": {},
        "users": {},
    }
    for cid, c in courses.items():
        account = institution.accounts[c["account_id"]]
        out["courses"][cid] = {
            "name": c["name"],
            "description": c.get("public_description"),
            "code": c["course_code"],
            "total_students": students(course_id=cid),
            "departments": [{"institution_id": account["id"], "name": account["name"]}],
            "status": api_state(c),
            "type": c.get("course_format"),
            "term": term["sis_term_id"],
            "timezone": c.get("time_zone"),
            "account_id": c["account_id"],
            "sis_course_id": c.get("sis_course_id"),
            "start_at": _ts(c.get("start_at")),
            "end_at": _ts(c.get("end_at")),
        }
    for sid, s in sections.items():
        c = courses[s["course_id"]]
        teachers = [
            institution.users[e["user_id"]]
            for e in sorted(institution.enrollments.values(), key=lambda e: e["id"])
            if e["course_section_id"] == sid
            and e["type"] == "TeacherEnrollment"
            and e["enrollment_state"] in TEACHING_STATES
        ]
        unique = list({t["id"]: t for t in teachers}.values())
        out["sections"][sid] = {
            "course_id": s["course_id"],
            "name": s["name"],
            "code": c["course_code"],
            "status": api_state(c),
            "instruction_mode": c.get("course_format"),
            "term": term["sis_term_id"],
            "school": institution.accounts[c["account_id"]]["name"],
            "instructor": ", ".join(" ".join(filter(None, _first_last(t))) for t in unique) or None,
            "instructor_email": ", ".join(t["email"] for t in unique if t.get("email")) or None,
            "current_enrollments": students(course_section_id=sid),
            "timezone": c.get("time_zone"),
            "start_date": _ts(s.get("start_at") or c.get("start_at")),
            "end_date": _ts(s.get("end_at") or c.get("end_at")),
            "sis_section_id": s.get("sis_section_id"),
        }
    for eid, e in enrollments.items():
        grades = e.get("grades") or {}
        out["enrollments"][eid] = {
            "course_id": e["course_id"],
            "section_id": e["course_section_id"],
            "user_id": e["user_id"],
            "role": e["type"],
            "enrollment_status": e["enrollment_state"],
            "current_grade_text": grades.get("current_grade"),
            "current_grade_number": grades.get("current_score"),
            "final_grade_text": grades.get("final_grade"),
            "final_grade_number": grades.get("final_score"),
            "last_lms_activity": _ts(e.get("last_activity_at")),
            "last_attended_date": _ts(e.get("last_attended_at")),
            "total_active_time": e.get("total_activity_time"),
        }
    for uid, u in users.items():
        first, last = _first_last(u)
        out["users"][uid] = {
            "first_name": first,
            "last_name": last,
            "preferred_name": u.get("short_name"),
            "email": u.get("email"),
            "sis_user_id": u.get("sis_user_id"),
            "login_id": u.get("login_id"),
            "source_type": "LMS",
            "source_name": "Canvas",
            "source_date": _ts(u["created_at"]).date(),
        }
    return out


def warehouse_semester(
    conn: psycopg.Connection, schema: str, semester: str, *, include_deleted: bool = False
) -> dict[str, dict[int, dict]]:
    """The active rows of ``semester`` per table, keyed by institution_id, in the same shape."""
    out: dict[str, dict[int, dict]] = {}
    for table in ("courses", "sections", "enrollments", "users"):
        query = sql.SQL("SELECT * FROM {}.{} WHERE semester = %s {}").format(
            sql.Identifier(schema),
            sql.Identifier(table),
            sql.SQL("") if include_deleted else sql.SQL("AND deleted_at IS NULL"),
        )
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            rows = cur.execute(query, (semester,)).fetchall()
        out[table] = {}
        for row in rows:
            key = row.pop("institution_id")
            for meta in ("semester", "source_updated_at", "deleted_at"):
                row.pop(meta)
            if "departments" in row and isinstance(row["departments"], str):
                row["departments"] = json.loads(row["departments"])
            out[table][key] = row
    return out


def first_course(institution, semester: str) -> int:
    """The id of the semester's first course."""
    return next(iter(expected_semester(institution, semester)["courses"]))


def rename_course(institution, semester: str, name: str) -> int:
    """Rename the semester's first course in the sandbox (no event sent); returns its id."""
    course_id = first_course(institution, semester)
    renamed_with_event(institution, course_id, name)
    return course_id


def rename_course_in_canvas(institution, queue, semester: str, name: str) -> int:
    """Rename one of the semester's courses in the sandbox and publish its course_updated event;
    returns the course id."""
    course_id = first_course(institution, semester)
    event = renamed_with_event(institution, course_id, name)
    send_envelopes(queue.client(), queue.queue_url, [event])
    return course_id
