"""Enrollment changes: enrol someone (maybe a new user), change a state, change a grade."""

from __future__ import annotations

from typing import Any

from ..institution import ROLE_IDS, letter_grade
from .bodies import enrollment_body, enrollment_state_body, user_body
from .context import ChangeContext, EventSpec
from .users import new_user


def new_enrollment(
    ctx: ChangeContext, course: dict, section: dict, user: dict, kind: str, state: str, now: str
) -> dict:
    inst = ctx.institution
    record: dict[str, Any] = {
        "id": inst.next_id("enrollment"),
        "user_id": user["id"],
        "course_id": course["id"],
        "course_section_id": section["id"],
        "type": kind,
        "role": kind,
        "role_id": ROLE_IDS[kind],
        "enrollment_state": state,
        "created_at": now,
        "updated_at": now,
        "start_at": None,
        "end_at": None,
        "last_activity_at": None,
        "last_attended_at": None,
        "total_activity_time": 0,
        "root_account_id": inst.root_account_id,
        "sis_course_id": course["sis_course_id"],
        "sis_section_id": section["sis_section_id"],
        "sis_user_id": user["sis_user_id"],
        "limit_privileges_to_course_section": False,
    }
    if kind == "StudentEnrollment":
        record["grades"] = {
            "html_url": f"https://sandbox.canvas.local/courses/{course['id']}/grades/{user['id']}",
            "current_score": None,
            "current_grade": None,
            "final_score": None,
            "final_grade": None,
        }
    inst.add_enrollment(record)
    return record


def create_enrollment(ctx: ChangeContext) -> list[dict]:
    inst, rng = ctx.institution, ctx.rng
    courses = [c for c in ctx.live_courses() if ctx.live_sections(c)]
    if not courses:
        return []
    course = rng.choice(courses)
    section = rng.choice(ctx.live_sections(course))
    taken = {inst.enrollments[e]["user_id"] for e in inst.enrollments_by_course[course["id"]]}
    now = ctx.begin()
    specs: list[EventSpec] = []
    existing = [u for u in ctx.live_users() if u["id"] not in taken and u["id"] != ctx.actor]
    if existing and rng.random() < 0.6:
        user = rng.choice(existing)
    else:
        user = new_user(ctx, now)
        specs.append(("user_created", user_body(ctx, user), None))
    kind = rng.choices(["StudentEnrollment", "TaEnrollment", "TeacherEnrollment"], [85, 10, 5])[0]
    state = rng.choices(["active", "invited"], [80, 20])[0]
    enrollment = new_enrollment(ctx, course, section, user, kind, state, now)
    where = ("Course", course["id"])
    specs += [
        ("enrollment_created", enrollment_body(ctx, enrollment), where),
        ("enrollment_state_created", enrollment_state_body(ctx, enrollment), where),
    ]
    return ctx.events(specs)


def update_enrollment(ctx: ChangeContext) -> list[dict]:
    candidates = ctx.live_enrollments()
    if not candidates:
        return []
    enrollment = ctx.rng.choice(candidates)
    options = [
        s
        for s in ("active", "inactive", "completed", "deleted")
        if s != enrollment["enrollment_state"]
    ]
    enrollment["enrollment_state"] = ctx.rng.choices(options, [5] * (len(options) - 1) + [2])[0]
    enrollment["updated_at"] = ctx.begin()
    where = ("Course", enrollment["course_id"])
    return ctx.events(
        [
            ("enrollment_updated", enrollment_body(ctx, enrollment), where),
            ("enrollment_state_updated", enrollment_state_body(ctx, enrollment), where),
        ]
    )


def grade_change(ctx: ChangeContext) -> list[dict]:
    inst, rng = ctx.institution, ctx.rng
    candidates = ctx.live_enrollments({"StudentEnrollment"})
    if not candidates:
        return []
    enrollment = rng.choice(candidates)
    grades = enrollment["grades"]
    old_current, old_final = grades["current_score"], grades["final_score"]
    current = round(rng.uniform(40, 100), 2)
    final = round(current * rng.uniform(0.7, 1.0), 2)
    letters = inst.courses[enrollment["course_id"]].get("grading_standard_id") is not None
    grades.update(
        current_score=current,
        final_score=final,
        current_grade=letter_grade(current) if letters else None,
        final_grade=letter_grade(final) if letters else None,
    )
    enrollment["updated_at"] = now = ctx.begin()
    body = {
        "user_id": ctx.id(enrollment["user_id"]),
        "course_id": ctx.id(enrollment["course_id"]),
        "workflow_state": "active",
        "created_at": enrollment["created_at"],
        "updated_at": now,
        "current_score": current,
        "old_current_score": old_current,
        "final_score": final,
        "old_final_score": old_final,
        "unposted_current_score": current,
        "old_unposted_current_score": old_current,
        "unposted_final_score": final,
        "old_unposted_final_score": old_final,
    }
    return ctx.events(
        [("course_grade_change", body, ("Course", enrollment["course_id"]))], system=True
    )
