"""Section changes: create, rename or re-date."""

from __future__ import annotations

from datetime import timedelta

from ..institution import parse_iso
from .bodies import section_body
from .context import ChangeContext


def new_section(ctx: ChangeContext, course: dict, name: str, now: str) -> dict:
    inst = ctx.institution
    section = {
        "id": inst.next_id("section"),
        "course_id": course["id"],
        "name": name,
        "sis_section_id": None,
        "integration_id": None,
        "start_at": None,
        "end_at": None,
        "created_at": now,
        "updated_at": now,
        "restrict_enrollments_to_section_dates": False,
        "nonxlist_course_id": None,
        "sis_course_id": course["sis_course_id"],
        "workflow_state": "active",
    }
    inst.add_section(section)
    return section


def create_section(ctx: ChangeContext) -> list[dict]:
    courses = ctx.live_courses()
    if not courses:
        return []
    course = ctx.rng.choice(courses)
    now = ctx.begin()
    number = len(ctx.institution.sections_by_course.get(course["id"], [])) + 1
    section = new_section(ctx, course, f"{course['course_code']} Section {number:02d}", now)
    return ctx.events(
        [("course_section_created", section_body(ctx, section), ("Course", course["id"]))]
    )


def update_section(ctx: ChangeContext) -> list[dict]:
    candidates = [s for c in ctx.live_courses() for s in ctx.live_sections(c)]
    if not candidates:
        return []
    section = ctx.rng.choice(candidates)
    section["updated_at"] = now = ctx.begin()
    if ctx.rng.random() < 0.5:
        section["name"] = f"{section['name'].split(' ~ ')[0]} ~ rev {ctx.institution.version}"
    else:
        start = parse_iso(now) + timedelta(days=ctx.rng.randint(0, 20))
        section["start_at"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        section["end_at"] = (start + timedelta(days=ctx.rng.randint(14, 90))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return ctx.events(
        [
            (
                "course_section_updated",
                section_body(ctx, section),
                ("Course", section["course_id"]),
            )
        ]
    )
