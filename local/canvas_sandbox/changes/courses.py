"""Course changes: create (with a section and a teacher), update, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..institution import Institution, global_id
from .bodies import course_body, enrollment_body, enrollment_state_body, section_body
from .context import ChangeContext
from .enrollments import new_enrollment
from .events import envelope
from .sections import new_section


def create_course(ctx: ChangeContext) -> list[dict]:
    inst, rng = ctx.institution, ctx.rng
    terms = sorted(inst.real_term_ids())
    departments = [a for a in inst.accounts.values() if a["parent_account_id"] not in (None, 1)]
    teachers = [u for u in ctx.live_users() if u["id"] != ctx.actor]
    if not terms or not departments or not teachers:
        return []
    now = ctx.begin()
    term = inst.terms[rng.choice(terms)]
    dept = rng.choice(departments)
    cid = inst.next_id("course")
    code = f"NEW{cid}"
    course = {
        "id": cid,
        "name": f"New Course {cid}",
        "course_code": code,
        "public_description": None,
        "account_id": dept["id"],
        "root_account_id": inst.root_account_id,
        "enrollment_term_id": term["id"],
        "workflow_state": "created",
        "course_format": rng.choice(["online", None]),
        "time_zone": "America/New_York",
        "sis_course_id": None,
        "integration_id": None,
        "start_at": term["start_at"],
        "end_at": term["end_at"],
        "uuid": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40)),
        "created_at": now,
        "updated_at": now,
        "default_view": "modules",
        "is_public": False,
        "license": "private",
        "grading_standard_id": None,
    }
    inst.courses[cid] = course
    section = new_section(ctx, course, course["name"], now)
    teacher = new_enrollment(
        ctx, course, section, rng.choice(teachers), "TeacherEnrollment", "active", now
    )
    where = ("Course", cid)
    return ctx.events(
        [
            ("course_created", course_body(ctx, course), where),
            ("course_section_created", section_body(ctx, section), where),
            ("enrollment_created", enrollment_body(ctx, teacher), where),
            ("enrollment_state_created", enrollment_state_body(ctx, teacher), where),
        ]
    )


def update_course(ctx: ChangeContext) -> list[dict]:
    courses = ctx.live_courses()
    if not courses:
        return []
    course = ctx.rng.choice(courses)
    change = ctx.rng.choice(["rename", "state", "format"])
    course["updated_at"] = ctx.begin()
    if change == "rename":
        course["name"] = f"{course['name'].split(' ~ ')[0]} ~ rev {ctx.institution.version}"
    elif change == "state":
        course["workflow_state"] = (
            "completed" if course["workflow_state"] == "available" else "available"
        )
    else:
        options = [
            f for f in ("on_campus", "online", "blended", None) if f != course["course_format"]
        ]
        course["course_format"] = ctx.rng.choice(options)
    return ctx.events([("course_updated", course_body(ctx, course), ("Course", course["id"]))])


def delete_course(ctx: ChangeContext) -> list[dict]:
    courses = ctx.live_courses()
    if len(courses) < 3:
        return []
    course = ctx.rng.choice(courses)
    course["updated_at"] = ctx.begin()
    course["workflow_state"] = "deleted"  # Canvas reports deletion as course_updated
    return ctx.events([("course_updated", course_body(ctx, course), ("Course", course["id"]))])


def rename_course(institution: Institution, course_id: int, name: str) -> dict:
    """Rename a course as a teacher would in Canvas; returns its course_updated Live Event,
    stamped just after now so that an apply never judges it stale. For demos, tests and
    benchmarks that need one known change."""
    with institution.lock:
        institution.courses[course_id]["name"] = name
    return envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id, institution.shard_id)), "name": name},
        event_time=datetime.now(UTC) + timedelta(seconds=1),
    )
